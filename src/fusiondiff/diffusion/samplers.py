"""Deterministic (and optionally stochastic) samplers over a ``denoiser(x_t, t, cond) -> ε̂``.

Every sampler has the signature of :func:`ddim_sample`::

    sampler(denoiser, schedule, cond, timesteps, *, x_T=None, shape=None,
            generator=None, clip_x0=True, callback=None, **options) -> x0

``timesteps`` is a descending 1-D sequence of integer timesteps (from
:func:`respace_timesteps`), so the number of steps is chosen per call. The
network always sees the original timestep values; respacing only changes which
of them are visited (Nichol & Dhariwal 2021, Sec. 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from fusiondiff.diffusion.schedules import NoiseSchedule
from fusiondiff.registry import Registry

SPACINGS = ("uniform", "quadratic")


class Denoiser(Protocol):
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor: ...


# callback(step_index, t, x_t, x0_hat)
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def respace_timesteps(num_timesteps: int, steps: int | None = None, spacing: str = "uniform") -> torch.Tensor:
    """A descending subset of ``0..T-1`` with ``steps`` entries, always starting at T-1 and ending at 0.

    ``uniform`` spaces the steps evenly; ``quadratic`` (DDIM paper, App. D.2) puts more of
    them near t = 0. ``steps=None`` or ``steps=T`` gives every timestep.
    """
    T = int(num_timesteps)
    steps = T if steps is None else int(steps)
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T} for a schedule with T={T}, got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    if steps == 1:
        return torch.tensor([T - 1], dtype=torch.long)
    frac = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    if spacing == "quadratic":
        frac = frac**2
    ts = torch.round(frac * (T - 1)).long()
    # Rounding may merge neighbours for steps close to T: nudge duplicates upwards.
    for i in range(1, steps):
        if ts[i] <= ts[i - 1]:
            ts[i] = ts[i - 1] + 1
    if ts[-1] > T - 1:  # only possible after nudging; fall back to the exact set
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long()
    return ts.flip(0)


def _initial_noise(
    x_T: torch.Tensor | None,
    shape: Sequence[int] | None,
    cond: Any,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if x_T is not None:
        return x_T
    if shape is None:
        if not isinstance(cond, torch.Tensor) or cond.dim() != 5:
            raise ValueError("give x_T or shape when cond is not a [B, N, C, H, W] tensor")
        b, _, c, h, w = cond.shape
        shape = (b, c, h, w)
    device = cond.device if isinstance(cond, torch.Tensor) else torch.device("cpu")
    dtype = cond.dtype if isinstance(cond, torch.Tensor) else torch.float32
    return seeded_noise(shape, generator, device, dtype)


def seeded_noise(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """N(0, 1) of ``shape``, drawn on the generator's device (so one seed gives the same numbers whatever the
    target) and moved to ``device``: the one helper for every seeded draw of the samplers, inversion and inpainting."""
    draw_on = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)


def denoise(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    t: int,
    cond: Any,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ε̂ and x̂0 at timestep t; with clipping, ε̂ is recomputed from the clipped x̂0."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = denoiser(x, tt, cond)
    x0 = schedule.predict_x0(x, tt, eps)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = schedule.predict_eps(x, tt, x0)
    return eps, x0


def check_timesteps(schedule: NoiseSchedule, timesteps: Sequence[int] | torch.Tensor) -> list[int]:
    ts = [int(t) for t in torch.as_tensor(timesteps).flatten().tolist()]
    if not ts:
        raise ValueError("timesteps is empty")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError("timesteps must be strictly decreasing (use respace_timesteps)")
    if ts[0] >= schedule.num_timesteps or ts[-1] < 0:
        raise ValueError(f"timesteps must lie in 0..{schedule.num_timesteps - 1}")
    return ts


# update(x_t, ε̂, x̂0, ᾱ_t, ᾱ_prev) -> x_prev
StepUpdate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]


def _sample_loop(
    update: StepUpdate,
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    timesteps: Sequence[int] | torch.Tensor,
    x_T: torch.Tensor | None,
    shape: Sequence[int] | None,
    generator: torch.Generator | None,
    clip_x0: bool,
    callback: StepCallback | None,
) -> torch.Tensor:
    """The loop every sampler shares: denoise at t, then step to the next visited timestep (ᾱ = 1 after the last).

    The chain state is float64 (the network still runs in its own dtype): at FusionDiff's ᾱ_{T-1} = 6e-10,
    x̂0 = (x_t − sqrt(1−ᾱ) ε̂) / sqrt(ᾱ) amplifies float32 rounding of x_t and ε̂ ~4e4 times, to ~1e-2
    (about one 8-bit grey level) for x0-, v- and blend models at 1 step. The result has x_T's dtype.
    """
    ts = check_timesteps(schedule, timesteps)
    x = _initial_noise(x_T, shape, cond, generator)
    out_dtype = x.dtype
    if x.device.type != "mps":  # no float64 on Apple GPUs
        x = x.double()
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps, x0 = denoise(denoiser, schedule, x, t, cond, clip_x0)
        x = update(x, eps, x0, schedule.alpha_bar(t).item(), schedule.alpha_bar(t_prev).item())
        if callback is not None:
            callback(i, t, x, x0)
    return x.to(out_dtype)


def ddim_mean_sigma(x0: torch.Tensor, eps: torch.Tensor, ab: float, ab_prev: float, eta: float) -> tuple[torch.Tensor, float]:
    """Mean and standard deviation of the DDIM step t -> prev (Song et al. 2021, Eqs. 12 and 16).

    σ = η sqrt((1-ᾱ_prev)/(1-ᾱ_t)) sqrt(1-ᾱ_t/ᾱ_prev); η = 1 is the DDPM posterior (Ho et al. 2020).
    """
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
    return ab_prev**0.5 * x0 + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps, sigma


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    timesteps: Sequence[int] | torch.Tensor,
    *,
    x_T: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
    callback: StepCallback | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12); η = 0 is deterministic, η = 1 matches DDPM's variance.

    The last visited timestep steps to ᾱ = 1, i.e. returns x̂0. ``generator`` seeds both x_T
    (when not given) and the per-step noise for η > 0.
    """

    def update(x: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, ab: float, ab_prev: float) -> torch.Tensor:
        x_next, sigma = ddim_mean_sigma(x0, eps, ab, ab_prev, eta)
        if sigma > 0:
            x_next = x_next + sigma * seeded_noise(x.shape, generator, x.device, x.dtype)
        return x_next

    return _sample_loop(update, denoiser, schedule, cond, timesteps, x_T, shape, generator, clip_x0, callback)


@torch.no_grad()
def fusiondiff_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    timesteps: Sequence[int] | torch.Tensor,
    *,
    x_T: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """FusionDiff's sampler (Li et al. 2023, Eq. 7): the DDPM posterior mean with the noise term dropped.

    Over a respaced subset the step uses the respaced β'_t = 1 - ᾱ_t / ᾱ_prev (Nichol & Dhariwal
    2021, Sec. 4). It is written with x̂0 (Ho et al. 2020, Eq. 7), which equals FusionDiff's
    ε-form 1/sqrt(α_t) (x_t - β_t / sqrt(1-ᾱ_t) ε̂) exactly when x̂0 is not clipped.
    """

    def update(x: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, ab: float, ab_prev: float) -> torch.Tensor:
        beta = 1 - ab / ab_prev
        return ab_prev**0.5 * beta / (1 - ab) * x0 + (1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab) * x

    return _sample_loop(update, denoiser, schedule, cond, timesteps, x_T, shape, generator, clip_x0, callback)


SAMPLERS = Registry("sampler", {"ddim": ddim_sample, "fusiondiff": fusiondiff_sample})


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """Look a sampler up by name; unknown names list the valid ones."""
    return SAMPLERS[name]
