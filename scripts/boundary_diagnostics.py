"""Where a boundary model changes real pairs, and what that costs in Q^AB/F (NOTES.md, session 8).

    python scripts/boundary_diagnostics.py --dataset $DATA/lytro --model runs/boundary/model.safetensors

Per dataset: the mean Q^AB/F of the model minus the decision map's, for the model as it is and with its
output kept only within R px of a decision-map boundary (the decision map elsewhere; R = --reach values);
the share of pixels where the model's disagreement gate is open (> 0.5); and how many 128 px grid cells lie
within 16 px of a decision-map boundary (what windowed inference would have to run).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from fusiondiff.data.datasets import load_sources
from fusiondiff.data.pairing import find_samples
from fusiondiff.diffusion.parameterization import disagreement_gate
from fusiondiff.focus import decision_weights
from fusiondiff.metrics import fusion
from fusiondiff.tasks import load_pipeline
from fusiondiff.tasks.multifocus import decision_map


def near_boundary(sources: torch.Tensor, reach: int) -> torch.Tensor:
    """[H, W] float: 1 within ``reach`` px of a change of the decision map's choice."""
    choice = decision_weights(sources[None].float())[0, :, 0]
    k = 2 * reach + 1
    spread = F.max_pool2d(choice[None], k, 1, reach)[0] + F.max_pool2d(-choice[None], k, 1, reach)[0]
    return (spread.amax(0) > 0).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--reach", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    deltas = {"model": [], **{f"within {r} px": [] for r in args.reach}}
    gate_open, cells, total_cells = [], 0, 0
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
    n = len(gate_open)
    print(f"{args.dataset}: {n} pairs")
    for name, values in deltas.items():
        print(f"  Q^AB/F - decision map, {name}: {sum(values) / n:+.5f}")
    print(f"  gate open (> 0.5): {100 * sum(gate_open) / n:.1f} % of pixels")
    print(f"  128 px cells within 16 px of a decision-map boundary: {cells} of {total_cells}")


if __name__ == "__main__":
    main()
