"""Grid of zero-shot noise-space fusions: one row per mode, one column per ratio (0, 0.3, 0.5, 0.7, 1).

    python scripts/zero_shot_figure.py --out docs/zero_shot_grid.png   # the shipped unconditional prior

The two inputs default to 96 px crops of scikit-image's ``coffee`` and ``rocket`` photos; the
prior must be an unconditional model (``experiment=unconditional_quickstart``). Prints the
inversion check (PSNR of each input regenerated from its own maps) and seconds per step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fusiondiff.data import load_sources, write_image
from fusiondiff.data.datasets import heldout_pair
from fusiondiff.metrics import psnr
from fusiondiff.zero_shot import RULES, NoiseSpaceFusion, half_mask, load_prior

RATIOS = (0.0, 0.3, 0.5, 0.7, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default=None, help="our bundle, a diffusers dir or hub id (default: the shipped prior)")
    parser.add_argument("--images", nargs=2, default=None, help="two image files (default: coffee and rocket)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/zero_shot_grid.png"))
    args = parser.parse_args()
    fuser = NoiseSpaceFusion(load_prior(args.prior))
    images = load_sources(args.images) if args.images else heldout_pair(args.size)
    start = time.perf_counter()
    inv = fuser.invert(images, steps=args.steps, seed=args.seed)
    print(f"inversion of 2 images: {(time.perf_counter() - start) / args.steps:.3f} s per step (one batched call)")
    for i, rec in enumerate(fuser.reconstruct(inv)):
        print(f"inversion check, image {i + 1}: PSNR {psnr(rec, images[i]).item():.2f} dB")
    h, w = images.shape[-2:]
    pad_c, pad_r = torch.ones(3, h, 3), torch.ones(3, 3, 1)
    rows = []
    for mode in tuple(RULES):
        mask = half_mask(h, w) if mode == "mask" else None
        tiles = [fuser.fuse(inv, [1 - r, r], mode, skip=args.skip, mask=mask)[0] for r in RATIOS]
        rows.append(torch.cat([t for tile in tiles for t in (tile, pad_c)][:-1], dim=-1))
        print(f"{mode}: done")
    grid = torch.cat([t for row in rows for t in (row, pad_r.expand(3, 3, row.shape[-1]))][:-1], dim=-2)
    print(write_image(args.out, grid))


if __name__ == "__main__":
    main()
