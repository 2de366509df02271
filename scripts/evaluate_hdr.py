"""HDR evaluation on Kalantari-layout scenes: a trained model against the classical baselines.

    python scripts/evaluate_hdr.py --model runs/hdr_quickstart/model.safetensors --root data/hdr_synthetic \
        --split Test --steps 4 --figure docs/hdr_example.png

Methods: the model (DDIM, ``--steps``, SWNE windows of ``--tile-size`` px), ``linear_merge``
(Debevec-style weighted merge with the known γ response, no alignment), ``reference`` (the middle
exposure's radiance estimate alone: no ghosts, clipped highlights), and ``mertens`` (exposure fusion; a
display-referred image, scored as if it were the μ-law image, for reference only). Metrics on whole
scenes, HDR clipped to [0, 1]: PSNR-μ, PSNR-L, SSIM-μ. Prints a Markdown table (mean over scenes) and
writes ``--out`` as JSON (per scene and mean).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fusiondiff.data import write_image
from fusiondiff.data.hdr import (
    hdr_sources,
    linear_merge,
    load_scene,
    mertens_fusion,
    reference_estimate,
    scene_folders,
    target_to_hdr,
    tonemap_preview,
)
from fusiondiff.inference import FusionPipeline
from fusiondiff.metrics.hdr import inverse_mu_law, psnr_l, psnr_mu, ssim_mu

METRICS = {"PSNR-mu": psnr_mu, "PSNR-L": psnr_l, "SSIM-mu": ssim_mu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HDR bundle or .ckpt (task=hdr); omit for the baselines only")
    parser.add_argument("--root", default="data/hdr_synthetic")
    parser.add_argument("--split", default="Test")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--tile-overlap", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/hdr_eval.json"))
    parser.add_argument(
        "--figure", type=Path, default=None, help="write exposures | linear merge | model | GT of the first scene"
    )
    args = parser.parse_args()

    pipe = FusionPipeline.from_file(args.model) if args.model else None
    if pipe is not None and pipe.config.get("task", {}).get("name") != "hdr":
        raise SystemExit(f"{args.model} is not an HDR model (task=hdr)")
    rows: dict[str, dict[str, list[float]]] = {}
    seconds: list[float] = []
    per_scene = []
    for k, folder in enumerate(scene_folders(args.root, args.split)):
        scene = load_scene(folder)
        gt = scene.hdr.clamp(0, 1)
        sources = hdr_sources(scene.ldrs, scene.times)
        outputs = {
            "linear_merge": linear_merge(scene.ldrs, scene.times).clamp(0, 1),
            "reference": target_to_hdr(reference_estimate(sources)),
            "mertens": inverse_mu_law(mertens_fusion(scene.ldrs)),
        }
        if pipe is not None:
            start = time.perf_counter()
            fused = pipe(sources, steps=args.steps, seed=args.seed, tile_size=args.tile_size, tile_overlap=args.tile_overlap)
            seconds.append(time.perf_counter() - start)
            outputs = {"model": target_to_hdr(fused), **outputs}
        scores = {m: {name: float(fn(out, gt)) for name, fn in METRICS.items()} for m, out in outputs.items()}
        per_scene.append({"scene": scene.name, **scores})
        for method, values in scores.items():
            for name, v in values.items():
                rows.setdefault(method, {}).setdefault(name, []).append(v)
        print(f"{scene.name}: " + ", ".join(f"{m} {s['PSNR-mu']:.2f}" for m, s in scores.items()) + " dB PSNR-mu")
        if k == 0 and args.figure is not None:
            tiles = [x * 2 - 1 for x in scene.ldrs] + [tonemap_preview(outputs["linear_merge"])]
            tiles += [tonemap_preview(outputs["model"])] if "model" in outputs else []
            tiles += [tonemap_preview(gt)]
            pad = torch.ones(3, gt.shape[1], 4)
            print(write_image(args.figure, torch.cat([t for tile in tiles for t in (tile, pad)][:-1], dim=-1)))
    means = {m: {n: sum(v) / len(v) for n, v in vals.items()} for m, vals in rows.items()}
    print(f"\n{len(per_scene)} scenes of {args.root}/{args.split}" + (f", model: {args.steps} DDIM steps" if pipe else ""))
    print("\n| method | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for method, vals in means.items():
        print(
            f"| {method} | " + " | ".join(f"{vals[n]:.4f}" if n.startswith("SSIM") else f"{vals[n]:.2f}" for n in METRICS) + " |"
        )
    if seconds:
        print(f"\nmodel: {sum(seconds) / len(seconds):.2f} s per scene on average")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"mean": means, "scenes": per_scene, "seconds": seconds, "args": vars(args)}, indent=1, default=str)
    )


if __name__ == "__main__":
    main()
