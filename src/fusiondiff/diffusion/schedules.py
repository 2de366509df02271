"""Noise schedules and the closed-form maths of the forward process.

Timesteps are integers ``t`` in ``0 .. T-1``; ``alphas_cumprod[t]`` is ᾱ of the
(t+1)-th noising step, as in guided-diffusion and FusionDiff's code. All arrays are
float64 on the CPU; :func:`_gather` casts the values needed by a batch to the
dtype and device of the tensor they act on.
"""

from __future__ import annotations

import math

import torch

from fusiondiff.registry import Registry


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule, Nichol & Dhariwal 2021 Eq. 17 (used by FusionDiff with T=2000)."""

    def f(t: float) -> float:
        return math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_timesteps: int, beta_start: float | None = None, beta_end: float | None = None) -> torch.Tensor:
    """Linear schedule of Ho et al. 2020, rescaled so any T spans the same noise range as T=1000.

    Betas are capped at 0.999 (only reached for T < 50).
    """
    scale = 1000.0 / num_timesteps
    beta_start = min(1e-4 * scale, 0.999) if beta_start is None else beta_start
    beta_end = min(0.02 * scale, 0.999) if beta_end is None else beta_end
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast over ``like`` (B, ...), in like's dtype and device."""
    out = values[t.long().cpu()].to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


class NoiseSchedule:
    """β, α and ᾱ of a discrete DDPM forward process (float64, CPU; not an nn.Module)."""

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not torch.all((betas > 0) & (betas < 1)):
            raise ValueError("betas must be a non-empty 1-D sequence with every value in (0, 1)")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.num_timesteps})"

    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    def alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        """ᾱ_t as float64, with ᾱ_{-1} = 1 (the clean image) for t = -1."""
        t = torch.as_tensor(t, dtype=torch.long)
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return padded[t + 1]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε (Ho et al. 2020, Eq. 4)."""
        ab = _gather(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1-ᾱ_t) ε) / sqrt(ᾱ_t)."""
        ab = _gather(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1-ᾱ_t)."""
        ab = _gather(self.alphas_cumprod, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def make_schedule(name: str = "cosine", num_timesteps: int = 2000, **kwargs: float) -> NoiseSchedule:
    """Build a schedule by name (``cosine`` or ``linear``); extra kwargs go to the beta function."""
    betas = SCHEDULES[name]
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    return NoiseSchedule(betas(num_timesteps, **kwargs))


SCHEDULES = Registry("noise schedule", {"cosine": cosine_betas, "linear": linear_betas})
