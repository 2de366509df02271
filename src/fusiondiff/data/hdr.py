"""Multi-exposure HDR data: Radiance/OpenEXR IO, the Kalantari layout, network inputs, a synthetic scene generator.

Kalantari layout (Kalantari & Ramamoorthi, SIGGRAPH 2017)::

    <root>/Training/<scene>/  *.tif (three LDRs, sorted by name, 8- or 16-bit), exposure.txt, HDRImg.hdr
    <root>/Test/<scene>/      the same

``exposure.txt`` holds one EV per line (negative and fractional values allowed). Exposure times are
taken relative to the shortest one, t_i = 2^(EV_i - min EV), so the radiance estimate H_i = LDR_i^γ / t_i
lies in [0, 1] and ``HDRImg.hdr`` is in the same units (the usual convention of deghosting code).

Tensors handed to the models follow the framework's [-1, 1] convention:

* sources [3, 6, H, W]: per exposure concat(LDR, LDR^γ / t) mapped from [0, 1] to [-1, 1]; the middle
  exposure is the reference;
* target [3, H, W]: the μ-law tonemapped HDR (μ = 5000) mapped to [-1, 1].
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fusiondiff.data.io import ImageError, atomic_write_bytes, read_image, write_image
from fusiondiff.errors import InputError, MissingInputError
from fusiondiff.metrics.hdr import MU, inverse_mu_law, mu_law

GAMMA = 2.2
LDR_SUFFIXES = (".tif", ".tiff", ".png")


# ----------------------------------------------------------------------------- IO
def read_hdr_image(path: str | os.PathLike) -> torch.Tensor:
    """A Radiance ``.hdr`` or OpenEXR ``.exr`` file as float32 RGB [3, H, W] (linear, unclipped)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"HDR image not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".exr":
        import OpenEXR

        try:
            with OpenEXR.File(str(path)) as handle:
                channels = handle.channels()
                if "RGB" in channels:
                    rgb = np.asarray(channels["RGB"].pixels, dtype=np.float32)
                elif all(c in channels for c in "RGB"):
                    rgb = np.stack([np.asarray(channels[c].pixels, dtype=np.float32) for c in "RGB"], -1)
                else:
                    raise ImageError(f"{path}: EXR without R, G, B channels (has {sorted(channels)})")
        except ImageError:
            raise
        except Exception as err:
            raise ImageError(f"cannot read {path} as OpenEXR: {err}") from err
    elif suffix == ".hdr":
        import cv2

        # IMREAD_ANYDEPTH keeps float32; the default flag would silently return 8-bit
        bgr = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if bgr is None or bgr.dtype != np.float32:
            raise ImageError(f"cannot read {path} as a Radiance HDR image (corrupt or not RGBE)")
        rgb = bgr[..., ::-1]
    else:
        raise ImageError(f"{path}: unknown HDR format {suffix!r}; use .hdr or .exr")
    out = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    check_hdr(out, str(path))
    return out


def check_hdr(hdr: torch.Tensor, name: str = "HDR image") -> None:
    if hdr.dim() != 3 or hdr.shape[0] != 3:
        raise ImageError(f"{name}: expected RGB [3, H, W], got {tuple(hdr.shape)}")
    if not torch.isfinite(hdr).all():
        raise ImageError(f"{name} contains NaN or infinite values")
    if hdr.min() < 0:
        raise ImageError(f"{name} has negative radiance ({hdr.min().item():.3g}); HDR values must be >= 0")


def write_hdr_image(path: str | os.PathLike, hdr: torch.Tensor) -> Path:
    """Write float32 RGB [3, H, W] as ``.hdr`` (Radiance RGBE) or ``.exr`` (OpenEXR, ZIP, float32), atomically."""
    path = Path(path)
    check_hdr(hdr.detach().float().cpu(), str(path))
    rgb = np.ascontiguousarray(hdr.detach().float().cpu().permute(1, 2, 0).numpy())
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".exr":
        import OpenEXR

        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"RGB": rgb}) as handle:
            handle.write(str(tmp))
    elif suffix == ".hdr":
        import cv2

        if not cv2.imwrite(str(tmp), rgb[..., ::-1]):
            raise ImageError(f"OpenCV could not write {path}")
    else:
        raise ImageError(f"{path}: unknown HDR format {suffix!r}; use .hdr or .exr")
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path


def tonemap_preview(hdr: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """μ-law tonemapped [3, H, W] in [-1, 1] (for a PNG preview): values above 1 are clipped."""
    return mu_law(hdr.clamp(0, 1), mu) * 2 - 1


def read_ldr(path: str | os.PathLike) -> torch.Tensor:
    """An 8- or 16-bit LDR as float32 RGB [3, H, W] in [0, 1] (16-bit stays 16-bit; see :func:`read_image`)."""
    return (read_image(path, channels=3) + 1) / 2


def write_ldr(path: str | os.PathLike, ldr: torch.Tensor, bit_depth: int = 16) -> Path:
    """Write [3, H, W] in [0, 1] as an 8- or 16-bit image (TIFF/PNG), atomically."""
    return write_image(path, ldr * 2 - 1, bit_depth)


def read_exposures(path: str | os.PathLike) -> list[float]:
    """EVs from ``exposure.txt``: one number per non-empty line (e.g. ``-2``, ``0.5``, ``+1.5``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"exposure file not found: {path} (one EV per line, e.g. -2, 0, 2)")
    values = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        try:
            values.append(float(text))  # the whole token, not its first character
        except ValueError as err:
            raise InputError(f"{path}, line {k}: {text!r} is not a number (one EV per line)") from err
        if not math.isfinite(values[-1]):
            raise InputError(f"{path}, line {k}: EV must be finite, got {text!r}")
    return values


# ----------------------------------------------------------------------------- scenes
@dataclass
class HDRScene:
    name: str
    ldrs: torch.Tensor  # [3, 3, H, W] in [0, 1], sorted by file name
    evs: list[float]
    hdr: torch.Tensor | None  # [3, H, W] linear, in the units of the shortest exposure

    @property
    def times(self) -> torch.Tensor:
        """Exposure times relative to the shortest: 2^(EV - min EV)."""
        evs = torch.tensor(self.evs, dtype=torch.float32)
        return torch.pow(2.0, evs - evs.min())


def load_scene(folder: str | os.PathLike, num_exposures: int = 3, require_hdr: bool = True) -> HDRScene:
    """One scene of the Kalantari layout (see module docstring); clear errors for anything missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"scene folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in LDR_SUFFIXES and not p.name.startswith("."))
    if len(files) != num_exposures:
        raise InputError(
            f"{folder}: expected {num_exposures} LDR exposures (*.tif), found {len(files)}: {[p.name for p in files]}"
        )
    evs = read_exposures(folder / "exposure.txt")
    if len(evs) != num_exposures:
        raise InputError(f"{folder / 'exposure.txt'}: {len(evs)} EV values for {num_exposures} exposures")
    ldrs = [read_ldr(p) for p in files]
    sizes = {tuple(x.shape) for x in ldrs}
    if len(sizes) != 1:
        raise InputError(f"{folder}: exposures differ in size: {sorted(sizes)}")
    hdr_path = folder / "HDRImg.hdr"
    hdr = None
    if hdr_path.is_file() or require_hdr:
        hdr = read_hdr_image(hdr_path)
        if tuple(hdr.shape) != tuple(ldrs[0].shape):
            raise InputError(f"{hdr_path} is {tuple(hdr.shape)}, the exposures are {tuple(ldrs[0].shape)}")
    return HDRScene(folder.name, torch.stack(ldrs), evs, hdr)


def scene_folders(root: str | os.PathLike, split: str | None = None) -> list[Path]:
    """Scene folders under ``root/split`` (or ``root`` itself when split is None), sorted."""
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise MissingInputError(f"HDR data folder not found: {base} (expected <root>/Training/<scene>/ and <root>/Test/<scene>/)")
    folders = sorted(p for p in base.iterdir() if p.is_dir() and (p / "exposure.txt").exists())
    if not folders:
        raise MissingInputError(f"no scenes (folders with exposure.txt) under {base}")
    return folders


def hdr_sources(ldrs: torch.Tensor, times: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Network inputs [N, 6, H, W] in [-1, 1]: per exposure concat(LDR, LDR^γ / t), each mapped from [0, 1]."""
    t = times.to(ldrs.dtype).reshape(-1, 1, 1, 1)
    linear = (ldrs.clamp(0, 1) ** gamma / t).clamp(0, 1)
    return torch.cat([ldrs, linear], dim=1) * 2 - 1


def hdr_target(hdr: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """The μ-law tonemapped HDR in [-1, 1] (values above 1 clipped)."""
    return tonemap_preview(hdr, mu)


def target_to_hdr(x: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """Inverse of :func:`hdr_target`: linear HDR in [0, 1]."""
    return inverse_mu_law(((x.clamp(-1, 1) + 1) / 2), mu)


def _smooth_field(h: int, w: int, scale: int, gen: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(1, 1, max(2, h // scale), max(2, w // scale), generator=gen)
    field = F.interpolate(coarse, (h, w), mode="bicubic", align_corners=False)[0, 0]
    return (field - field.min()) / (field.max() - field.min()).clamp_min(1e-8)


def synthesize_scene(
    photo: torch.Tensor,
    gen: torch.Generator,
    evs: Sequence[float] = (-2.0, 0.0, 2.0),
    stops: float = 9.0,
    motion: int = 6,
    noise: float = 0.004,
    gamma: float = GAMMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LDR exposures [N, 3, H, W] in [0, 1], HDR [3, H, W]) from a photo [3, H, W] in [-1, 1].

    Radiance = photo linearised (inverse γ) × a smooth illumination field spanning ``stops`` stops
    (so highlights are at least 2^8 times the shadows) × a few bright highlight blobs, normalised to the
    shortest exposure's range. Each exposure: radiance × t, shot + read noise, clipping, γ response.
    With ``motion`` > 0 an elliptical object moves by up to that many pixels in the non-reference
    exposures (ghosts); the HDR ground truth has the reference's geometry.
    """
    _, h, w = photo.shape
    albedo = ((photo.float().clamp(-1, 1) + 1) / 2) ** gamma * 0.9 + 0.02
    illum = torch.pow(2.0, stops * _smooth_field(h, w, 48, gen) - stops)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for _ in range(3):  # highlights (lamps, sky patches)
        cy, cx = torch.rand(2, generator=gen) * torch.tensor([h, w])
        r = (0.04 + 0.08 * torch.rand(1, generator=gen).item()) * min(h, w)
        illum = illum + 1.5 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    radiance = albedo * illum
    radiance = radiance / torch.quantile(radiance.flatten(), 0.999).clamp_min(1e-8)  # shortest exposure: ~0.1 % clipped
    times = torch.pow(2.0, torch.tensor(evs, dtype=torch.float32) - min(evs))
    ref = len(evs) // 2
    obj = None
    if motion > 0:
        cy, cx = (0.3 + 0.4 * torch.rand(2, generator=gen)) * torch.tensor([h, w])
        ry, rx = (0.12 + 0.12 * torch.rand(2, generator=gen)) * min(h, w)
        obj = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
    ldrs = []
    for i, t in enumerate(times):
        scene = radiance
        if obj is not None and i != ref:
            dy, dx = (torch.randint(-motion, motion + 1, (2,), generator=gen) + (i - ref) * motion // 2).tolist()
            moved, moved_obj = torch.roll(radiance, (dy, dx), (-2, -1)), torch.roll(obj, (dy, dx), (-2, -1))
            scene = radiance * (1 - moved_obj) + moved * moved_obj
        signal = scene * t
        noisy = signal + torch.randn(signal.shape, generator=gen) * (noise * signal.clamp_min(0).sqrt() + noise / 4)
        ldrs.append(noisy.clamp(0, 1) ** (1 / gamma))
    return torch.stack(ldrs), radiance


def write_scene(
    folder: str | os.PathLike, ldrs: torch.Tensor, hdr: torch.Tensor, evs: Sequence[float], bit_depth: int = 16
) -> Path:
    """Write one scene in the Kalantari layout (``input_<k>.tif``, ``exposure.txt``, ``HDRImg.hdr``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, ldr in enumerate(ldrs, 1):
        write_ldr(folder / f"input_{k}.tif", ldr, bit_depth)
    atomic_write_bytes(folder / "exposure.txt", "".join(f"{ev:g}\n" for ev in evs).encode())
    write_hdr_image(folder / "HDRImg.hdr", hdr)
    return folder


# ----------------------------------------------------------------------------- dataset
class KalantariDataset(Dataset):
    """Crops (training) or whole scenes (``crop_size=None``) of a Kalantari-layout folder.

    Items are ``{"sources": [3, 6, p, p], "target": [3, p, p], "name": str}`` (see module docstring).
    Training crops are enumerated with ``stride`` over every scene, then flipped / rotated at random.
    Scenes are decoded on first use and kept in memory (float16).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "Training",
        crop_size: int | None = 128,
        stride: int | None = 64,
        augment: bool = True,
        gamma: float = GAMMA,
        mu: float = MU,
        max_scenes: int | None = None,
        center_crop: bool = False,
    ) -> None:
        self.folders = scene_folders(root, split)[:max_scenes]
        self.crop_size, self.augment, self.gamma, self.mu = crop_size, augment, gamma, mu
        self.center_crop = center_crop
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.index: list[tuple[int, int, int]] = []
        for s, folder in enumerate(self.folders):
            h, w = self._load(s)[1].shape[-2:]
            if crop_size is None:
                self.index.append((s, 0, 0))
                continue
            if h < crop_size or w < crop_size:
                raise InputError(f"{folder} is {h}x{w}, smaller than crop_size={crop_size}")
            if center_crop:
                self.index.append((s, (h - crop_size) // 2, (w - crop_size) // 2))
                continue
            step = stride or crop_size
            ys = sorted({*range(0, h - crop_size + 1, step), h - crop_size})
            xs = sorted({*range(0, w - crop_size + 1, step), w - crop_size})
            self.index.extend((s, y, x) for y in ys for x in xs)

    def _load(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        if s not in self._cache:
            scene = load_scene(self.folders[s])
            sources = hdr_sources(scene.ldrs, scene.times, self.gamma)
            self._cache[s] = (sources.half(), hdr_target(scene.hdr, self.mu).half())
        return self._cache[s]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, y, x = self.index[i]
        sources, target = self._load(s)
        if self.crop_size is not None:
            p = self.crop_size
            sources, target = sources[..., y : y + p, x : x + p], target[..., y : y + p, x : x + p]
        sources, target = sources.float(), target.float()
        if self.augment:
            k = int(torch.randint(0, 4, (1,)))
            flip = bool(torch.randint(0, 2, (1,)))
            sources, target = torch.rot90(sources, k, (-2, -1)), torch.rot90(target, k, (-2, -1))
            if flip:
                sources, target = sources.flip(-1), target.flip(-1)
        return {"sources": sources.contiguous(), "target": target.contiguous(), "name": self.folders[s].name}


def make_synthetic_hdr(
    root: str | os.PathLike,
    num_train: int = 24,
    num_test: int = 6,
    size: int | tuple[int, int] = 192,
    seed: int = 0,
    evs: Sequence[float] = (-2.0, 0.0, 2.0),
    motion: int = 6,
    bit_depth: int = 16,
    train_photos: Sequence[str] | None = None,
    test_photos: Sequence[str] | None = None,
) -> Path:
    """Write ``root/Training`` and ``root/Test`` scenes in the Kalantari layout from scikit-image photos.

    Training scenes use the training photos, test scenes the held-out ones (coffee, rocket), each a
    random crop resized to ``size`` (int or (H, W)) with its own illumination, highlights and motion.
    """
    from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS, SKIMAGE_TRAIN_PHOTOS, skimage_photos

    h, w = (size, size) if isinstance(size, int) else size
    root = Path(root)
    gen = torch.Generator().manual_seed(seed)
    for split, count, names in (("Training", num_train, train_photos or SKIMAGE_TRAIN_PHOTOS),
                                ("Test", num_test, test_photos or SKIMAGE_HELDOUT_PHOTOS)):  # fmt: skip
        photos = skimage_photos(names)
        for k in range(count):
            photo = photos[k % len(photos)]
            ph, pw = photo.shape[-2:]
            frac = 0.6 + 0.4 * torch.rand(1, generator=gen).item()
            ch, cw = int(ph * frac), int(pw * frac)
            y = int(torch.randint(0, ph - ch + 1, (1,), generator=gen))
            x = int(torch.randint(0, pw - cw + 1, (1,), generator=gen))
            crop = F.interpolate(
                photo[None, :, y : y + ch, x : x + cw], (h, w), mode="bilinear", antialias=True, align_corners=False
            )[0]
            ldrs, hdr = synthesize_scene(crop, gen, evs=evs, motion=motion)
            write_scene(root / split / f"scene_{k:03d}", ldrs, hdr, evs, bit_depth)
    return root


def synthetic_kalantari(
    root: str | os.PathLike, generate: dict | None = None, split: str = "Training", augment: bool = True, **kwargs
) -> KalantariDataset:
    """A :class:`KalantariDataset` over synthetic scenes, generated into ``root`` first if it holds none.

    ``generate`` holds the arguments of :func:`make_synthetic_hdr`; a folder that already has scenes is
    used as it is (delete it to regenerate).
    """
    root = Path(root)
    if not (root / "Training").is_dir() or not (root / "Test").is_dir():
        make_synthetic_hdr(root, **(generate or {}))
    return KalantariDataset(root, split=split, augment=augment, **kwargs)
