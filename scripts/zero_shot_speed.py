"""Seconds per inversion step of N images (one batched network call per step) for zero-shot priors.

    python scripts/zero_shot_speed.py                       # tiny (unet_tiny, random) and the shipped prior
    python scripts/zero_shot_speed.py --prior path/or/hub-id --sizes 256 512

Prints a Markdown table with the machine, torch version and thread count.
"""

from __future__ import annotations

import argparse
import time

import torch
from omegaconf import OmegaConf

from fusiondiff.diffusion import make_schedule
from fusiondiff.machine import cpu_name
from fusiondiff.models import ConditionalUNet
from fusiondiff.zero_shot import NoiseSpaceFusion
from fusiondiff.zero_shot.priors import OwnPrior, load_prior


def tiny_prior() -> OwnPrior:
    """The unet_tiny config (as in tests) with random weights: the per-step cost of the smallest model."""
    cfg = OmegaConf.to_container(OmegaConf.load("conf/model/unet_tiny.yaml"))  # unresolved ${task.*} are replaced:
    net_cfg = {**{k: v for k, v in cfg.items() if k != "_target_"}, "image_channels": 3, "num_sources": 0}
    config = {"net": net_cfg}
    return OwnPrior(ConditionalUNet(**net_cfg), make_schedule("cosine", 2000), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", action="append", default=None, help="extra priors (ours, diffusers dir or hub id)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    priors = {"tiny (unet_tiny, random)": tiny_prior(), "shipped (unconditional_quickstart)": load_prior(None)}
    for spec in args.prior or []:
        priors[spec] = load_prior(spec)
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU")
    print("\n| prior | params | size | images | s / step |\n|---|---|---|---|---|")
    for name, prior in priors.items():
        net = getattr(prior, "net", None) or prior.unet
        params = sum(p.numel() for p in net.parameters()) / 1e6
        fuser = NoiseSpaceFusion(prior)
        for size in args.sizes:
            x = torch.rand(args.images, prior.channels, size, size) * 2 - 1
            fuser.invert(x, steps=2)  # warm-up
            start = time.perf_counter()
            fuser.invert(x, steps=args.steps)
            per_step = (time.perf_counter() - start) / args.steps
            print(f"| {name} | {params:.2f} M | {size} | {args.images} | {per_step:.3f} |")


if __name__ == "__main__":
    main()
