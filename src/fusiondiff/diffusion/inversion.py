"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli, CVPR 2024, Sec. 3 / Alg. 1).

An image x0 is inverted into the noisy images x_t at the visited timesteps and one noise map z
per step, such that regenerating with those maps reproduces x0 exactly:

1. x_t ~ q(x_t | x0) is drawn **independently** for every visited t (seeded generator);
2. for every step t -> prev, z = (x_prev - μ(x_t)) / σ, where μ, σ are the DDIM step's mean and
   standard deviation (η = 1: DDPM). The last step goes to ᾱ of timestep 0 (< 1) rather than to
   ᾱ = 1, so σ > 0 and its map is defined too (dropping it breaks exact reconstruction).

Index 0 of every stored array is the **noisiest** step (x_T, the first map used), so "early" means
high t (structure) and "late" means low t (texture).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fusiondiff.diffusion.samplers import (
    Denoiser,
    StepCallback,
    check_timesteps,
    ddim_mean_sigma,
    denoise,
    respace_timesteps,
    seeded_noise,
)
from fusiondiff.diffusion.schedules import NoiseSchedule


@dataclass
class Inversion:
    """The result of :func:`invert` for a batch of images.

    Attributes:
        timesteps: the visited timesteps, descending (index 0 = noisiest).
        xs: [K, B, C, H, W], x at each visited timestep (``xs[0]`` is x_T).
        zs: [K, B, C, H, W], the noise map of each step (``zs[i]`` takes ``xs[i]`` to ``xs[i+1]``;
            the last one to the image).
        eta: the η the maps were computed with (regenerate with the same).
        clip_x0: whether x̂0 was clipped to [-1, 1] (regenerate with the same). Clipping keeps the step
            means bounded where ᾱ ≈ 0, which matters when maps of different images are mixed.
    """

    timesteps: list[int]
    xs: torch.Tensor
    zs: torch.Tensor
    eta: float
    clip_x0: bool = False


def inversion_timesteps(num_timesteps: int, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """``steps`` descending timesteps from T-1 that stop above 0 (the chain ends at timestep 0's ᾱ)."""
    if steps < 1 or steps + 1 > num_timesteps:
        raise ValueError(f"steps must be in 1..{num_timesteps - 1}, got {steps}")
    return respace_timesteps(num_timesteps, steps + 1, spacing)[:-1]


def prev_alpha_bars(schedule: NoiseSchedule, ts: list[int]) -> list[float]:
    return [schedule.alpha_bar(t).item() for t in ts[1:]] + [schedule.alpha_bar(0).item()]


@torch.no_grad()
def invert(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    cond: Any = None,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    clip_x0: bool = False,
    noise: torch.Tensor | None = None,
) -> Inversion:
    """Invert a batch of images x0 [B, C, H, W] into x_T and per-step noise maps (see module docstring).

    ``noise`` [K, B, C, H, W] gives the ε of each x_t ~ q(x_t | x0) explicitly (else drawn from ``generator``).
    """
    ts = check_timesteps(schedule, timesteps)
    if ts[-1] < 1:
        raise ValueError("the last inversion timestep must be >= 1 (use inversion_timesteps)")
    if eta <= 0:
        raise ValueError(f"eta must be > 0 for an invertible chain (σ = 0 leaves z undefined), got {eta}")
    if noise is None:
        noise = seeded_noise((len(ts), *x0.shape), generator, x0.device, x0.dtype)
    if noise.shape != (len(ts), *x0.shape):
        raise ValueError(f"noise must be [{len(ts)}, {', '.join(map(str, x0.shape))}], got {tuple(noise.shape)}")
    batch_t = [torch.full((x0.shape[0],), t, dtype=torch.long) for t in ts]
    xs = torch.stack([schedule.q_sample(x0, bt, noise[i].to(x0.dtype)) for i, bt in enumerate(batch_t)])

    zs = torch.empty_like(xs)
    prevs = prev_alpha_bars(schedule, ts)
    for i, t in enumerate(ts):
        eps, x0_hat = denoise(denoiser, schedule, xs[i], t, cond, clip_x0)
        mean, sigma = ddim_mean_sigma(x0_hat, eps, schedule.alpha_bar(t).item(), prevs[i], eta)
        target = xs[i + 1] if i + 1 < len(ts) else x0
        zs[i] = (target - mean) / sigma
    return Inversion(ts, xs, zs, eta, clip_x0)


@torch.no_grad()
def regenerate(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_start: torch.Tensor,
    zs: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    cond: Any = None,
    eta: float = 1.0,
    skip: int = 0,
    clip_x0: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the reverse chain from ``x_start`` (= ``xs[skip]``) with the maps ``zs`` (all K of them).

    ``skip`` starts at step index ``skip`` (the paper's T_skip): the first ``skip`` maps are unused.
    ``callback(i, t, x_t, x0_hat)`` sees every visited step (e.g. to save a strip of intermediates).
    """
    ts = check_timesteps(schedule, timesteps)
    if zs.shape[0] != len(ts):
        raise ValueError(f"{zs.shape[0]} noise maps for {len(ts)} timesteps")
    if not 0 <= skip < len(ts):
        raise ValueError(f"skip must be in 0..{len(ts) - 1}, got {skip}")
    prevs = prev_alpha_bars(schedule, ts)
    x = x_start
    for i in range(skip, len(ts)):
        eps, x0_hat = denoise(denoiser, schedule, x, ts[i], cond, clip_x0)
        if callback is not None:
            callback(i, ts[i], x, x0_hat)
        mean, sigma = ddim_mean_sigma(x0_hat, eps, schedule.alpha_bar(ts[i]).item(), prevs[i], eta)
        x = mean + sigma * zs[i]
    return x
