"""Zero-shot inpainting with any unconditional prior ``denoiser(x_t, t, cond) -> ε̂``.

``mask`` is 1 in the hole (generated) and 0 where the image is known. Both methods end by copying the
known region of ``x0`` exactly, so the output equals the input outside the hole.

* :func:`repaint` (Lugmayr et al., CVPR 2022): at every reverse step the known region is replaced by
  a fresh forward-noised copy of the input at the next noise level, and only the hole keeps the model's
  step. Optional resampling: after every ``jump_length`` steps the chain is pushed back up
  ``jump_length`` levels by the forward process and denoised again, ``resample - 1`` times per jump
  point, so the hole can harmonise with the known region.
* :func:`edit_friendly_inpaint`: the input's edit-friendly inversion (:func:`~fusiondiff.diffusion.invert`)
  supplies x_T and the noise maps of the known region; the hole gets fresh N(0, 1) maps. The whole image
  is regenerated with these maps, so the known region follows its own trajectory (near-exact, and
  consistent with what grows in the hole) instead of being pasted at every step.

Both use the inversion's step convention (:func:`~fusiondiff.diffusion.inversion_timesteps`): the chain
ends at the ᾱ of timestep 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fusiondiff.diffusion.inversion import Inversion, prev_alpha_bars, regenerate
from fusiondiff.diffusion.samplers import Denoiser, check_timesteps, ddim_mean_sigma, denoise, seeded_noise
from fusiondiff.diffusion.schedules import NoiseSchedule


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return seeded_noise(like.shape, generator, like.device, like.dtype)


def keep_known(generated: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (1 = hole) x generated + (1 - mask) x known: the known pixels exactly as given."""
    return mask * generated + (1 - mask) * known


def _check(x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[None]
    if mask.shape[-2:] != x0.shape[-2:] or mask.shape[1] != 1:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the image {tuple(x0.shape)} (one channel, same H, W)")
    return mask.to(x0.dtype)


@torch.no_grad()
def repaint(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    mask: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    cond: Any = None,
    eta: float = 1.0,
    jump_length: int = 1,
    resample: int = 1,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
) -> torch.Tensor:
    """RePaint: fill the hole (``mask`` = 1) of images x0 [B, C, H, W] with the prior; see the module docstring."""
    ts = check_timesteps(schedule, timesteps)
    if jump_length < 1 or resample < 1:
        raise ValueError(f"jump_length and resample must be >= 1, got {jump_length} and {resample}")
    m = _check(x0, mask)
    k = len(ts)
    abars = [schedule.alpha_bar(t).item() for t in ts] + [prev_alpha_bars(schedule, ts)[-1]]

    def known(level: int) -> torch.Tensor:
        return abars[level] ** 0.5 * x0 + (1 - abars[level]) ** 0.5 * _randn(x0, generator)

    x = m * _randn(x0, generator) + (1 - m) * known(0)
    jumps_left = {level: resample - 1 for level in range(jump_length, k, jump_length)}
    level = 0
    while level < k:
        eps, x0_hat = denoise(denoiser, schedule, x, ts[level], cond, clip_x0)
        mean, sigma = ddim_mean_sigma(x0_hat, eps, abars[level], abars[level + 1], eta)
        x = m * (mean + sigma * _randn(x0, generator)) + (1 - m) * known(level + 1)
        level += 1
        if jumps_left.get(level, 0) > 0:  # back up jump_length levels through q(x_j | x_level)
            jumps_left[level] -= 1
            back = level - jump_length
            ratio = abars[back] / abars[level]
            x = ratio**0.5 * x + (1 - ratio) ** 0.5 * _randn(x0, generator)
            level = back
    return keep_known(x, x0, m)


@torch.no_grad()
def edit_friendly_inpaint(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    inv: Inversion,
    x0: torch.Tensor,
    mask: torch.Tensor,
    cond: Any = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Regenerate the inversion ``inv`` of x0 with fresh noise maps (and x_T) in the hole; see the module docstring."""
    m = _check(x0, mask)
    if inv.xs.shape[1:] != x0.shape:
        raise ValueError(f"the inversion is of images {tuple(inv.xs.shape[1:])}, x0 is {tuple(x0.shape)}")
    x_start = m * _randn(x0, generator) + (1 - m) * inv.xs[0]
    zs = torch.stack([m * _randn(x0, generator) + (1 - m) * z for z in inv.zs])
    x = regenerate(denoiser, schedule, x_start, zs, inv.timesteps, cond, eta=inv.eta, clip_x0=inv.clip_x0)
    return keep_known(x, x0, m)
