"""Side-by-side figure of the built-in example: source A | source B | fused | ground truth.

    python scripts/example_figure.py --model runs/quickstart/model.safetensors --steps 10 --out docs/quickstart_example.png

Prints PSNR / SSIM of the fused image and of the average of the sources against the ground truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusiondiff.data import load_sources, read_image, write_image
from fusiondiff.metrics import psnr, ssim
from fusiondiff.tasks import load_pipeline
from fusiondiff.tasks.multifocus import EXAMPLE_SOURCES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/quickstart_example.png"))
    args = parser.parse_args()
    sources = load_sources(list(EXAMPLE_SOURCES))
    target = read_image(EXAMPLE_SOURCES[0].parent / "example_GT.png")
    fused = load_pipeline(args.model)(sources, steps=args.steps)
    fused = torch.round((fused + 1) * 127.5) / 127.5 - 1  # score what is saved as 8-bit
    for name, img in (("fused", fused), ("average", sources.mean(0))):
        print(f"{name}: PSNR {psnr(img, target):.2f} dB, SSIM {ssim(img, target):.4f}")
    pad = torch.ones(3, sources.shape[-2], 4)
    write_image(args.out, torch.cat([sources[0], pad, sources[1], pad, fused, pad, target], dim=-1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
