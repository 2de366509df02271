"""HDR reconstruction metrics (Kalantari & Ramamoorthi 2017 benchmark conventions).

Inputs are linear HDR radiance tensors [B, 3, H, W] or [3, H, W], normalised to [0, 1] as in
the benchmark. "-l" metrics compare linear values, "-mu" metrics compare μ-law tonemapped
values T(H) = log(1 + μH) / log(1 + μ) with μ = 5000. SSIM uses images scaled by 255 (data
range 255), the benchmark's MATLAB convention.
"""

from __future__ import annotations

import math

import torch

from fusiondiff.metrics.perceptual import lpips_distance
from fusiondiff.metrics.reference import psnr, ssim

MU = 5000.0


def mu_law(hdr: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """T(H) = log(1 + μ H) / log(1 + μ) for H in [0, 1]."""
    if hdr.min() < 0:
        raise ValueError("HDR values must be >= 0 for μ-law tonemapping")
    return torch.log1p(mu * hdr) / math.log1p(mu)


def inverse_mu_law(x: torch.Tensor, mu: float = MU) -> torch.Tensor:
    return torch.expm1(x * math.log1p(mu)) / mu


def psnr_l(fused: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of linear HDR values in [0, 1]."""
    return psnr(fused, target, data_range=1.0)


def psnr_mu(fused: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of μ-law tonemapped values (μ = 5000)."""
    return psnr(mu_law(fused), mu_law(target), data_range=1.0)


def ssim_l(fused: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of linear values scaled by 255 (data range 255)."""
    return ssim(fused * 255, target * 255, data_range=255.0)


def ssim_mu(fused: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of μ-law values scaled by 255 (data range 255)."""
    return ssim(mu_law(fused) * 255, mu_law(target) * 255, data_range=255.0)


def lpips_mu(fused: torch.Tensor, target: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS between μ-law tonemapped images (mapped to [-1, 1])."""
    return lpips_distance(mu_law(fused) * 2 - 1, mu_law(target) * 2 - 1, net=net)
