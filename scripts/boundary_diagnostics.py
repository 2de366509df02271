"""Where a boundary model changes real pairs, and what that costs in Q^AB/F (NOTES.md, session 8).

    python scripts/boundary_diagnostics.py --dataset $DATA/lytro --model runs/boundary/model.safetensors

Per dataset: the mean Q^AB/F of the model minus the decision map's, for the model as it is and with its
output kept only within R px of a decision-map boundary (the decision map elsewhere; R = --reach values);
the share of pixels where the model's disagreement gate is open (> 0.5); how many 128 px grid cells lie
within 16 px of a decision-map boundary; and the share of pixels and of 32 / 64 px tiles where the boundary gate
of ``decision_boundary`` models is open (what windowed inference of such a model would have to run).

``--snap T ...`` (decision_boundary models) instead sweeps the threshold of their last step
(tasks/multifocus.py snap_to_decision_map; T = 0: no snapping) on tuning data only: ``--dataset`` pairs (for
NYU-D only the held-out pairs 81-100, which no model trained on) scored by Q^AB/F and Q_CB against the decision
map, or with ``--layered N`` N layered scenes from scikit-image's *training* photos (seed 99; the benchmark's
photos are held out) scored by PSNR inside the boundary band. Prints, per T, the mean difference to the
decision map with its paired 95 % interval and the share of pixels the model changed:

    python scripts/boundary_diagnostics.py --dataset $DATA/nyud100 --model <bundle> --snap 0 0.03 0.06 0.1
    python scripts/boundary_diagnostics.py --layered 40 --model <bundle> --snap 0 0.03 0.06 0.1

``--edges E ...`` adds, for every T, the edge guard of the same last step with tolerance E (the share of the
sharpest source's local edge energy a departure may remove; snap_to_decision_map's ``edges``):

    python scripts/boundary_diagnostics.py --layered 40 --model <bundle> --snap 0.03 --edges 0.25 0.5 1

``--views SHIFT GAIN`` (with ``--layered``) moves each source by up to SHIFT px and exposes it by 1 ± GAIN on its
own, as real pairs differ (LayeredDefocus ``shift`` / ``gain``); layered scenes are also scored by Q^AB/F.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
import torch.nn.functional as F

from fusiondiff.data.datasets import load_sources
from fusiondiff.data.pairing import find_samples
from fusiondiff.diffusion.parameterization import disagreement_gate
from fusiondiff.evaluation.reports import paired_difference
from fusiondiff.focus import decision_weights
from fusiondiff.metrics import fusion
from fusiondiff.tasks import load_pipeline
from fusiondiff.tasks.multifocus import NYUD_HELDOUT, boundary_gate, decision_map, snap_to_decision_map

TILES = (32, 64)


def near_boundary(sources: torch.Tensor, reach: int) -> torch.Tensor:
    """[H, W] float: 1 within ``reach`` px of a change of the decision map's choice."""
    choice = decision_weights(sources[None].float())[0, :, 0]
    k = 2 * reach + 1
    spread = F.max_pool2d(choice[None], k, 1, reach)[0] + F.max_pool2d(-choice[None], k, 1, reach)[0]
    return (spread.amax(0) > 0).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--model", required=True)
    parser.add_argument("--reach", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--snap", type=float, nargs="+", help="sweep the snap threshold of a decision_boundary model")
    parser.add_argument("--layered", type=int, default=0, help="with --snap: N layered scenes from training photos")
    parser.add_argument("--views", type=float, nargs=2, default=(0.0, 0.0), metavar=("SHIFT", "GAIN"),
                        help="with --layered: each source moved by <= SHIFT px, exposed by 1 +- GAIN")  # fmt: skip
    parser.add_argument("--edges", type=float, nargs="+", default=[], help="with --snap: edge-guard tolerances to add")
    args = parser.parse_args()
    if args.snap:
        return snap_sweep(args)
    if not args.dataset:
        parser.error("--dataset is required (or --snap with --layered N)")
    pipe = load_pipeline(args.model)
    deltas = {"model": [], **{f"within {r} px": [] for r in args.reach}}
    gate_open, cells, total_cells = [], 0, 0
    confined = {"pixels": [], **{f"{t} px tiles": [] for t in TILES}}  # where a decision_boundary model may act
    for sample in find_samples(args.dataset):
        sources = load_sources(sample.sources, 3)
        dm, out = decision_map(sources), pipe(sources).cpu()
        a, b = fusion.to_255(sources)

        def qabf(x: torch.Tensor, a: torch.Tensor = a, b: torch.Tensor = b) -> float:
            return fusion.SOURCE_METRICS["qabf"](a, b, fusion.to_255(x)).item()

        base = qabf(dm)
        deltas["model"].append(qabf(out) - base)
        for r in args.reach:
            m = near_boundary(sources, r)
            deltas[f"within {r} px"].append(qabf(m * out + (1 - m) * dm) - base)
        gate_open.append((disagreement_gate(sources[None])[0, 0] > 0.5).float().mean().item())
        near = near_boundary(sources, 16)
        h, w = near.shape
        grid = [near[y : y + 128, x : x + 128].any().item() for y in range(0, h, 128) for x in range(0, w, 128)]
        cells, total_cells = cells + sum(grid), total_cells + len(grid)
        acting = (boundary_gate(decision_weights(sources[None].float()))[0] > 0).float()  # [1, H, W]
        confined["pixels"].append(acting.mean().item())
        for t in TILES:
            confined[f"{t} px tiles"].append((F.max_pool2d(acting[None], t, t, ceil_mode=True) > 0).float().mean().item())
    n = len(gate_open)
    print(f"{args.dataset}: {n} pairs")
    for name, values in deltas.items():
        print(f"  Q^AB/F - decision map, {name}: {sum(values) / n:+.5f}")
    print(f"  gate open (> 0.5): {100 * sum(gate_open) / n:.1f} % of pixels")
    print(f"  128 px cells within 16 px of a decision-map boundary: {cells} of {total_cells}")
    shares = ", ".join(f"{100 * sum(v) / n:.0f} % of the {k}" for k, v in confined.items())
    print(f"  boundary gate > 0 (where decision_boundary models act; mean over pairs): {shares}")


def snap_sweep(args: argparse.Namespace) -> None:
    pipe = load_pipeline(args.model)
    if pipe.conditioning.finish is None:
        raise SystemExit(f"{args.model} has no last step to tune (not a residual=decision_boundary model)")
    pipe.conditioning = replace(pipe.conditioning, finish=None)  # the raw confined output; snapped below
    if args.layered:
        from fusiondiff.data.datasets import SKIMAGE_TRAIN_PHOTOS, skimage_photos
        from fusiondiff.data.layered import LayeredDefocus
        from fusiondiff.metrics.reference import psnr

        scenes = LayeredDefocus(photos=skimage_photos(SKIMAGE_TRAIN_PHOTOS[:6]), num_samples=args.layered, size=(256, 384),
                                deterministic=True, seed=99, min_band=0.005, shift=args.views[0], gain=args.views[1])  # fmt: skip
        items = (scenes[i] for i in range(len(scenes)))
        about = f"{args.layered} layered scenes from training photos (views {args.views}), PSNR in the boundary band"

        def scores(item: dict, fused: torch.Tensor) -> dict[str, float]:
            a, b = fusion.to_255(item["sources"])
            return {"psnr_band": psnr(fused, item["target"], mask=item["band"]).item(),
                    "qabf": fusion.SOURCE_METRICS["qabf"](a, b, fusion.to_255(fused)).item()}  # fmt: skip
    else:
        samples = find_samples(args.dataset)
        if any(s.name.startswith("NYU-D") for s in samples):
            samples = [s for s in samples if s.name in NYUD_HELDOUT]
        items = ({"sources": load_sources(s.sources, 3)} for s in samples)
        about = f"{args.dataset}: {len(samples)} pairs"

        def scores(item: dict, fused: torch.Tensor) -> dict[str, float]:
            a, b = fusion.to_255(item["sources"])
            f = fusion.to_255(fused)
            return {name: fusion.SOURCE_METRICS[name](a, b, f).item() for name in ("qabf", "qcb")}

    rows: list[dict] = []  # the evaluation's row format: method, image, metrics (paired with reports.paired_difference)
    variants = [(t, e) for t in [0.0, *args.snap] for e in [0.0, *args.edges]]
    label = lambda t, e: f"snap {t:g}" + (f" edges {e:g}" if e else "")  # noqa: E731
    for index, item in enumerate(items):
        sources = item["sources"]
        dm, raw = decision_map(sources), pipe(sources).cpu()
        rows.append({"method": "decision_map", "image": index, **scores(item, dm)})
        for t, e in variants:
            fused = snap_to_decision_map(raw[None], sources[None], t, e)[0] if t or e else raw
            changed = ((fused - dm).abs().amax(0) > 0.5 / 127.5).float().mean().item()
            rows.append({"method": label(t, e), "image": index, "changed": changed, **scores(item, fused)})
    print(about)
    names = [k for k in rows[0] if k not in ("method", "image")]
    for t, e in variants:
        cells = []
        for name in names:
            d = paired_difference(rows, label(t, e), "decision_map", name, lower_is_better=False)
            cells.append(f"{name} {d['mean']:+.4f} ± {d['ci95']:.4f}")
        share = 100 * statistics.mean(r["changed"] for r in rows if r["method"] == label(t, e))
        print(f"  {label(t, e):<20} - decision map: {', '.join(cells)}; pixels changed {share:.1f} %")


if __name__ == "__main__":
    main()
