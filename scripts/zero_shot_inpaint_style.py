"""Figures of zero-shot inpainting and style fusion through an unconditional prior (the scores come from
``python scripts/evaluate.py task=zero_shot suite=inpaint`` / ``suite=style``, which build the same outputs).

    python scripts/zero_shot_inpaint_style.py     # the shipped prior: docs/zero_shot_inpaint.png, docs/style_fusion.png

Inpainting, one row per photo: masked input | every method of the inpaint suite | clean. Style fusion, one row
per order (coffee -> rocket, rocket -> coffee): content | strengths 0 ... 1 | style.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fusiondiff.data import write_image
from fusiondiff.tasks import get_task


def row(tiles: list[torch.Tensor]) -> torch.Tensor:
    gap = torch.ones(3, tiles[0].shape[-2], 3)
    return torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default=None, help="our bundle, a diffusers dir or hub id (default: the shipped prior)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--inpaint-out", type=Path, default=Path("docs/zero_shot_inpaint.png"))
    parser.add_argument("--style-out", type=Path, default=Path("docs/style_fusion.png"))
    args = parser.parse_args()
    cfg = OmegaConf.create({"prior": args.prior, "size": args.size, "steps": [args.steps], "seed": 0, "suite_seed": 0})
    task = get_task("zero_shot")

    cfg.suite = "inpaint"
    ev = task.evaluation(cfg)
    rows = []
    for item in ev.items:
        d = {"name": item.name, **item.load()}
        masked = d["target"] * (1 - d["mask"]) + d["mask"]  # white hole for display
        rows.append(row([masked, *(m.run(d) for m in ev.methods), d["target"]]))
    write_image(args.inpaint_out, torch.cat(rows, dim=-2))
    print(f"wrote {args.inpaint_out}: masked | {' | '.join(m.label for m in ev.methods)} | clean")

    cfg.suite = "style"
    ev = task.evaluation(cfg)
    data = [{"name": it.name, **it.load()} for it in ev.items]
    rows = []
    for pair in dict.fromkeys(d["pair"] for d in data):
        mine = [d for d in data if d["pair"] == pair]
        rows.append(row([mine[0]["content"], *(ev.methods[0].run(d) for d in mine), mine[0]["style"]]))
    write_image(args.style_out, torch.cat(rows, dim=-2))
    print(f"wrote {args.style_out}: content | r = {', '.join(str(d['ratio']) for d in mine)} | style")


if __name__ == "__main__":
    main()
