"""Zero-shot inpainting and style fusion through an unconditional prior: example figures and scores.

    python scripts/zero_shot_inpaint_style.py          # the shipped prior, writes docs/zero_shot_inpaint.png
                                                       # and docs/style_fusion.png

Inputs: 96 px centre crops of scikit-image's held-out ``coffee`` and ``rocket`` photos (``--size``).

Inpainting (one row per photo, a seeded random stroke/box hole of 15-30 %): masked input | OpenCV Telea |
RePaint | RePaint with resampling (``--jump`` / ``--resample``) | edit-friendly | clean. Prints PSNR and
LPIPS against the clean photo and the seconds per image.

Style fusion (content = coffee, style = rocket, and the reverse): one column per strength r; prints
the content distance (LPIPS to A) and the style distance (VGG16 Gram matrices to B) per r.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fusiondiff.data import write_image
from fusiondiff.data.degradations import opencv_inpaint, random_hole_mask
from fusiondiff.metrics import lpips_distance, psnr
from fusiondiff.metrics.style import content_distance, style_distance
from fusiondiff.priors import load_prior
from fusiondiff.zero_shot import NoiseSpaceFusion

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from zero_shot_figure import default_pair

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default=None, help="our bundle, a diffusers dir or hub id (default: the shipped prior)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--jump", type=int, default=10)
    parser.add_argument("--resample", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inpaint-out", type=Path, default=Path("docs/zero_shot_inpaint.png"))
    parser.add_argument("--style-out", type=Path, default=Path("docs/style_fusion.png"))
    args = parser.parse_args()

    fuser = NoiseSpaceFusion(load_prior(args.prior))
    images = default_pair(args.size)
    gap = torch.ones(3, args.size, 3)

    rows, scores = [], {}
    for k, image in enumerate(images):
        mask = random_hole_mask(args.size, args.size, torch.Generator().manual_seed(args.seed + k), coverage=(0.15, 0.3))
        masked = image * (1 - mask) + mask  # white hole for display
        results = {"telea": opencv_inpaint(image * (1 - mask), mask, "telea")}
        for name, opts in (("repaint", {}), (f"repaint_j{args.jump}_r{args.resample}", {"jump_length": args.jump,
                           "resample": args.resample}), ("edit_friendly", {"method": "edit_friendly"})):  # fmt: skip
            start = time.perf_counter()
            results[name] = fuser.inpaint(image, mask, steps=args.steps, seed=args.seed, **opts)
            scores.setdefault(f"{name} s/image", []).append(time.perf_counter() - start)
        for name, out in results.items():
            scores.setdefault(f"{name} PSNR", []).append(psnr(out, image).item())
            scores.setdefault(f"{name} LPIPS", []).append(lpips_distance(out, image).item())
        tiles = [masked, *results.values(), image]
        rows.append(torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=-1))
    write_image(args.inpaint_out, torch.cat(rows, dim=-2))
    print(f"wrote {args.inpaint_out}: masked | {' | '.join(results)} | clean")
    print("| method | PSNR | LPIPS | s/image |\n|---|---|---|---|")
    for name in results:
        mean = {m: sum(scores[f"{name} {m}"]) / len(images) for m in ("PSNR", "LPIPS")}
        sec = scores.get(f"{name} s/image")
        sec_str = f"{sum(sec) / len(sec):.1f}" if sec else "<0.01"
        print(f"| {name} | {mean['PSNR']:.2f} | {mean['LPIPS']:.4f} | {sec_str} |")

    rows = []
    print("\n| content -> style | r | content distance (LPIPS to A) | style distance (Gram to B) |\n|---|---|---|---|")
    for a, b, label in ((0, 1, "coffee -> rocket"), (1, 0, "rocket -> coffee")):
        inv = fuser.invert(images[[a, b]], steps=args.steps, seed=args.seed)
        outs = []
        for r in STRENGTHS:
            out = fuser.fuse(inv, [1 - r, r], "style")[0]
            outs.append(out)
            c, s = content_distance(out, images[a]).item(), style_distance(out, images[b]).item()
            print(f"| {label} | {r:.2f} | {c:.4f} | {s:.4f} |")
        tiles = [images[a], *outs, images[b]]
        rows.append(torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=-1))
    write_image(args.style_out, torch.cat(rows, dim=-2))
    print(f"wrote {args.style_out}: content | r = {', '.join(map(str, STRENGTHS))} | style")


if __name__ == "__main__":
    main()
