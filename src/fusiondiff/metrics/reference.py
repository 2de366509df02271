"""Reference-based metrics (fused vs ground truth): PSNR and SSIM.

Contract: tensors [B, C, H, W] or [C, H, W], any value range given by ``data_range``
(2.0 for the framework's [-1, 1] images, 1.0 for [0, 1], 255 for 8-bit). Colour images are
scored per channel and averaged. Computation is in float64; the result is a float64
tensor of shape [B] (a 0-d tensor for unbatched input).
"""

from __future__ import annotations

import torch

from fusiondiff.filters import gaussian_1d, separable_correlate


def _pair(fused: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if fused.shape != target.shape:
        raise ValueError(f"fused {tuple(fused.shape)} and target {tuple(target.shape)} differ in shape")
    if fused.dim() not in (3, 4):
        raise ValueError(f"expected [C, H, W] or [B, C, H, W], got shape {tuple(fused.shape)}")
    unbatched = fused.dim() == 3
    if unbatched:
        fused, target = fused[None], target[None]
    if not (torch.isfinite(fused).all() and torch.isfinite(target).all()):
        raise ValueError("inputs contain NaN or Inf")
    return fused.double(), target.double(), unbatched


def psnr(fused: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) in dB over all channels; inf for identical images."""
    x, y, unbatched = _pair(fused, target)
    mse = (x - y).pow(2).flatten(1).mean(1)
    out = 10 * torch.log10(data_range**2 / mse)
    return out[0] if unbatched else out


def ssim(fused: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """SSIM (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03.

    Borders: the local statistics are computed only where the whole window fits ('valid'),
    which equals scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``, whose map is averaged after cropping the same 5-pixel border.
    Images must be at least 11 x 11.
    """
    x, y, unbatched = _pair(fused, target)
    b, c, h, w = x.shape
    if h < 11 or w < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 px, got {h}x{w}")
    g = gaussian_1d().to(x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def filt(z: torch.Tensor) -> torch.Tensor:
        return separable_correlate(z, g, padding=0)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    out = smap.flatten(2).mean(2).mean(1)
    return out[0] if unbatched else out
