"""Crops of real multi-focus pairs at focus boundaries: source A | source B | decision map | each model.

    python scripts/boundary_figure.py --dataset $DATA/lytro --crop lytro-05:150,250,96 --crop ... \
        --model src/fusiondiff/assets/multifocus_blend.safetensors --model runs/boundary/model.safetensors \
        --out docs/boundary_crops.png

``--crop NAME:Y,X,SIZE`` picks a SIZE x SIZE window at row Y, column X of sample NAME (as the dataset names it);
each row of the figure is one crop, enlarged ``--zoom`` times (nearest neighbour) so halos stay visible.
Every model fuses the whole pair with its own default step count, then the window is cut out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from fusiondiff.data.datasets import load_sources
from fusiondiff.data.io import write_image
from fusiondiff.data.pairing import find_samples
from fusiondiff.tasks import load_pipeline
from fusiondiff.tasks.multifocus import decision_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--crop", action="append", required=True, help="NAME:Y,X,SIZE")
    parser.add_argument("--model", action="append", default=[], help="bundle or .ckpt (repeatable)")
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/boundary_crops.png"))
    args = parser.parse_args()
    samples = {s.name: s for s in find_samples(args.dataset)}
    pipes = [load_pipeline(m) for m in args.model]
    rows = []
    for spec in args.crop:
        name, box = spec.rsplit(":", 1)
        if name not in samples:
            parser.error(f"no sample {name!r} in {args.dataset}; some: {', '.join(list(samples)[:5])}")
        y, x, size = (int(v) for v in box.split(","))
        sources = load_sources(samples[name].sources, channels=3)
        outputs = [sources[0], sources[1], decision_map(sources)] + [pipe(sources).cpu() for pipe in pipes]
        tiles = [o[:, y : y + size, x : x + size] for o in outputs]
        tiles = [F.interpolate(t[None], scale_factor=args.zoom, mode="nearest")[0] for t in tiles]
        pad = torch.ones(3, tiles[0].shape[1], 4)
        rows.append(torch.cat([t for tile in tiles for t in (tile, pad)][:-1], dim=-1))
    gap = torch.ones(3, 4, rows[0].shape[-1])
    figure = torch.cat([r for row in rows for r in (row, gap)][:-1], dim=-2)
    print(write_image(args.out, figure))


if __name__ == "__main__":
    main()
