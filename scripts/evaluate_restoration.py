"""Restoration evaluation on held-out synthetic degradations: trained models against the classical baselines.

    python scripts/evaluate_restoration.py --models runs/restoration/model.safetensors \
        --kind inpaint --num 200 --size 64 --steps 1 2 --figure docs/restoration_example.png

Test set: patches of scikit-image's held-out photos (coffee, rocket; never trained on) degraded by
:class:`fusiondiff.data.degradations.Degrader` with ``--kind`` and a seed (``--seed``, default 7) that
differs from the validation set's (1), so checkpoint selection never saw these samples. ``--folder`` scores
your own test pairs instead (``degraded/``, ``clean/``, and ``mask/`` for inpainting; whole images, any sizes).

Methods: ``identity`` (the degraded input as it is; for ``sr`` this is bicubic upsampling), the classical
baselines of the kind (``inpaint``: OpenCV's ``telea`` and ``navier_stokes``, radius 3; ``noise``:
scikit-image's non-local means ``nl_means`` with the noise level estimated from the image; ``blur``:
``unsharp_mask``, Gaussian sigma 2, amount 1, as the kernel is unknown), and every model at every step count in
``--steps`` (its known pixels kept for inpainting). Metrics on whole images against the clean patch: PSNR,
SSIM, LPIPS (AlexNet, real weights), LPIPS-VGG (the VGG16 backbone: a second perceptual network as a
cross-check), and the sharpness scores SF and AG of the output. Each model's paired difference to the best
baseline per metric (for inpainting the best OpenCV fill; otherwise the best of identity and the classical
method) on the same patches is printed with a 95 % interval, so a "win" of a few 1e-4 can be told from noise.
Prints a Markdown table (means) with seconds per image and writes ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fusiondiff.data import write_image
from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS
from fusiondiff.data.degradations import (
    CLASSICAL_RESTORATION,
    DEGRADATIONS,
    OPENCV_INPAINT,
    Degrader,
    PairedRestorationFolder,
    SyntheticRestoration,
    opencv_inpaint,
    split_restoration_source,
)
from fusiondiff.inference import FusionPipeline
from fusiondiff.metrics import lpips_distance, psnr, ssim
from fusiondiff.metrics.fusion import average_gradient, spatial_frequency

METRICS = {
    "PSNR": psnr,
    "SSIM": ssim,
    "LPIPS": lpips_distance,  # AlexNet, LPIPS's default
    "LPIPS-VGG": lambda x, y: lpips_distance(x, y, net="vgg"),  # a second perceptual network as a cross-check
}
SHARPNESS = {"SF": spatial_frequency, "AG": average_gradient}


def to255(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the 0..255 range of the fusion metrics (SF, AG)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).double()


def model_label(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "model.safetensors" else p.stem


def restore_all(pipe: FusionPipeline, sources: list[torch.Tensor], steps: int, seed: int) -> list[torch.Tensor]:
    """The pipeline on every item's sources [1, C + 1, H, W], items of one size batched together."""
    out: list[torch.Tensor | None] = [None] * len(sources)
    shapes: dict[tuple, list[int]] = {}
    for k, src in enumerate(sources):
        shapes.setdefault(tuple(src.shape), []).append(k)
    for idx in shapes.values():
        restored = pipe(torch.stack([sources[k] for k in idx]), steps=steps, seed=seed).cpu()
        for k, r in zip(idx, restored, strict=True):
            out[k] = r
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[], help="restoration bundles / .ckpt (task=restoration)")
    parser.add_argument("--kind", default="inpaint", choices=DEGRADATIONS)
    parser.add_argument("--folder", type=Path, default=None,
                        help="your own test pairs instead (degraded/, clean/, mask/ for inpainting): whole images")  # fmt: skip
    parser.add_argument("--num", type=int, default=200, help="test patches")
    parser.add_argument("--size", type=int, default=64, help="patch side in px")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--spread-seeds", type=int, default=0,
                        help="also sample each model with this many extra seeds and print the per-pixel std of the "
                             "outputs across seeds (inside the holes for inpainting): how much initial noise leaks")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/restoration_eval.json"))
    parser.add_argument("--figure", type=Path, default=None,
                        help="columns: degraded, baselines, models, clean; rows: the 4 largest holes, 3x enlarged")  # fmt: skip
    args = parser.parse_args()

    if args.folder is not None:
        data = PairedRestorationFolder(args.folder)
        about = f"{len(data)} images of {args.folder}"
    else:
        data = SyntheticRestoration(Degrader([args.kind]), photos=list(SKIMAGE_HELDOUT_PHOTOS), num_samples=args.num,
                                    crop_size=args.size, deterministic=True, seed=args.seed)  # fmt: skip
        about = f"{len(data)} held-out {args.size} px patches of {', '.join(SKIMAGE_HELDOUT_PHOTOS)} (seed {args.seed})"
    items = [data[i] for i in range(len(data))]
    sources = [it["sources"] for it in items]
    clean = [it["target"] for it in items]
    split = [split_restoration_source(src[None]) for src in sources]
    degraded, mask = [d[0] for d, _ in split], [m[0] for _, m in split]
    if args.kind == "inpaint" and not all(m.any() for m in mask):
        raise SystemExit("--kind inpaint needs a hole in every image (--folder: a mask/ folder); else choose --kind")

    outputs: dict[str, list[torch.Tensor]] = {"identity": degraded}
    spread: dict[str, float] = {}
    seconds: dict[str, float] = {"identity": 0.0}
    if args.kind == "inpaint":
        classical = {name: (lambda d, m, name=name: opencv_inpaint(d, m, name)) for name in OPENCV_INPAINT}
        baselines = list(OPENCV_INPAINT)  # the grey-hole input is no baseline for inpainting
    else:
        classical = {name: (lambda d, m, fn=fn: fn(d)) for name, fn in CLASSICAL_RESTORATION[args.kind].items()}
        baselines = ["identity", *classical]
    for name, fn in classical.items():
        start = time.perf_counter()
        outputs[name] = [fn(d, m) for d, m in zip(degraded, mask, strict=True)]
        seconds[name] = (time.perf_counter() - start) / len(items)
    for path in args.models:
        pipe = FusionPipeline.from_file(path)
        if pipe.config.get("task", {}).get("name") != "restoration":
            raise SystemExit(f"{path} is not a restoration model (task=restoration)")
        for steps in args.steps:
            label = f"{model_label(path)} ({steps} step{'s' if steps > 1 else ''})"
            start = time.perf_counter()
            restored = restore_all(pipe, sources, steps, seed=0)
            seconds[label] = (time.perf_counter() - start) / len(items)
            if args.kind == "inpaint":  # the known pixels are the input's
                restored = [m * r + (1 - m) * d for r, m, d in zip(restored, mask, degraded, strict=True)]
            outputs[label] = restored
            if args.spread_seeds:
                runs = [restored, *(restore_all(pipe, sources, steps, seed=k) for k in range(1, args.spread_seeds + 1))]
                num = den = 0.0
                for k, m in enumerate(mask):
                    std = torch.stack([run[k] for run in runs]).std(0)
                    where = m.expand_as(std) if args.kind == "inpaint" else torch.ones_like(std)
                    num, den = num + float((std * where).sum()), den + float(where.sum())
                spread[label] = num / den

    table, per_image = {}, {}
    for method, outs in outputs.items():
        per_image[method] = {
            name: torch.stack([fn(o[None], c[None]).double().flatten()[0] for o, c in zip(outs, clean, strict=True)])
            for name, fn in METRICS.items()
        }
        row = {name: float(v.mean()) for name, v in per_image[method].items()}
        row.update({name: float(torch.stack([fn(to255(o)) for o in outs]).mean()) for name, fn in SHARPNESS.items()})
        row["s/image"] = seconds[method]
        table[method] = row
    clean_sharpness = {name: float(torch.stack([fn(to255(c)) for c in clean]).mean()) for name, fn in SHARPNESS.items()}

    cols = [*METRICS, *SHARPNESS, "s/image"]
    print(f"{args.kind}: {about}")
    print("| method | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for method, row in table.items():
        print(f"| {method} | " + " | ".join(f"{row[c]:.4f}" if c != "s/image" else f"{row[c]:.3f}" for c in cols) + " |")
    sharp = " | ".join(f"{clean_sharpness[c]:.4f}" for c in SHARPNESS)
    print("| clean (reference) | " + "– | " * len(METRICS) + sharp + " | – |")
    if spread:
        print(f"\nStd across {args.spread_seeds + 1} seeds: " + ", ".join(f"{m} {v:.4f}" for m, v in spread.items()))
    paired = {}
    if args.models:
        # a model against the best baseline on the same images: mean paired difference with a 95 % interval
        print(f"\nPaired differences, model - best of {', '.join(baselines)} per metric (mean ± 1.96 SE over the images):")
        for method in outputs:
            if method == "identity" or method in baselines:
                continue
            paired[method] = {}
            for name in METRICS:
                lower_better = name.startswith("LPIPS")
                base = (min if lower_better else max)(baselines, key=lambda m: table[m][name])
                d = per_image[method][name] - per_image[base][name]
                half = 1.96 * float(d.std()) / len(d) ** 0.5 if len(d) > 1 else float("nan")
                paired[method][name] = {"vs": base, "mean": float(d.mean()), "ci95": half}
            diffs = [f"{n} {v['mean']:+.4f} ± {v['ci95']:.4f} (vs {v['vs']})" for n, v in paired[method].items()]
            print(f"- {method}: " + ", ".join(diffs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": args.kind, "data": about, "num": len(items), "means": table, "paired": paired,
                                    "seed_spread": spread, "clean_sharpness": clean_sharpness}, indent=2))  # fmt: skip
    print(f"wrote {args.out}")
    if args.figure is not None:
        # the 4 images with the largest holes (inpainting; else the first 4), 3x nearest-neighbour enlarged
        order = sorted(range(len(items)), key=lambda k: -float(mask[k].mean())) if args.kind == "inpaint" else range(len(items))
        rows = [torch.cat([*(outputs[m][k] for m in outputs), clean[k]], dim=-1) for k in list(order)[:4]]
        width = max(r.shape[-1] for r in rows)
        rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=-1.0) for r in rows]  # black right margin
        grid = torch.nn.functional.interpolate(torch.cat(rows, dim=-2)[None], scale_factor=3, mode="nearest")[0]
        write_image(args.figure, grid)
        print(f"wrote {args.figure}: columns {' | '.join([*outputs, 'clean'])}")


if __name__ == "__main__":
    main()
