"""Score a model against averaging on held-out synthetic multi-focus pairs (PSNR / SSIM vs ground truth).

The pairs come from scikit-image photos that the quickstart never trains on (coffee, rocket):

    python scripts/score_synthetic.py --model runs/quickstart/model.safetensors --steps 10 --num 32

Prints a Markdown table; the numbers in the README come from this command.
"""

from __future__ import annotations

import argparse
import time

import torch

from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS, SyntheticMultiFocus
from fusiondiff.inference import FusionPipeline
from fusiondiff.metrics import lpips_distance, psnr, ssim
from fusiondiff.metrics.fusion import average_gradient, spatial_frequency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle or checkpoint (default: the shipped bundle)")
    parser.add_argument("--num", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, nargs="+", default=[10])
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    data = SyntheticMultiFocus(
        photos=SKIMAGE_HELDOUT_PHOTOS, num_samples=args.num, crop_size=args.size, deterministic=True, seed=args.seed
    )
    batch = [data[i] for i in range(len(data))]
    sources = torch.stack([b["sources"] for b in batch])
    target = torch.stack([b["target"] for b in batch])
    pipe = FusionPipeline.from_file(args.model)

    rows = [("averaging", sources.mean(1), 0.0)]
    for steps in args.steps:
        start = time.perf_counter()
        fused = torch.cat(
            [pipe(sources[i : i + 8], sampler=args.sampler, steps=steps, seed=args.seed) for i in range(0, len(batch), 8)]
        )
        rows.append((f"fusiondiff {args.sampler} {steps} steps", fused, (time.perf_counter() - start) / len(batch)))

    print(f"{args.num} held-out synthetic pairs, {args.size}x{args.size} px, photos {', '.join(SKIMAGE_HELDOUT_PHOTOS)}\n")
    print("| method | PSNR (dB) | SSIM | LPIPS | SF | AG | s / pair |")
    print("|---|---|---|---|---|---|---|")

    def sharpness(images: torch.Tensor) -> tuple[float, float]:
        x = ((images.clamp(-1, 1) + 1) * 127.5).double()
        return (
            torch.stack([spatial_frequency(i) for i in x]).mean().item(),
            torch.stack([average_gradient(i) for i in x]).mean().item(),
        )

    for name, fused, sec in [*rows, ("ground truth (sharpness reference)", target, 0.0)]:
        p, s, lp = psnr(fused, target), ssim(fused, target), lpips_distance(fused, target)
        sf, ag = sharpness(fused)
        cells = [
            f"{p.mean():.2f} ± {p.std():.2f}",
            f"{s.mean():.4f} ± {s.std():.4f}",
            f"{lp.mean():.4f}",
            f"{sf:.2f}",
            f"{ag:.2f}",
        ]
        print(f"| {name} | {' | '.join(cells)} | {sec:.3f} |")


if __name__ == "__main__":
    main()
