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


def _mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A region mask [H, W], [1, H, W] or [B, 1, H, W] as float64 [B, 1, H, W] (None: the whole image)."""
    if mask is None:
        return None
    m = mask.double().to(like.device)
    while m.dim() < 4:
        m = m[None]
    if m.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask is {tuple(m.shape[-2:])}, the images are {tuple(like.shape[-2:])}")
    if (m.flatten(1).sum(1) == 0).any():
        raise ValueError("the mask selects no pixel")
    return m.expand(like.shape[0], 1, *like.shape[-2:])


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of [B, C, H, W] values over all channels and the pixels of ``mask`` (all without)."""
    if mask is None:
        return values.flatten(1).mean(1)
    weights = mask.expand_as(values)
    return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)


def psnr(fused: torch.Tensor, target: torch.Tensor, data_range: float = 2.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) in dB over all channels; inf for identical images.
    ``mask`` (1 = scored): the MSE over those pixels only (e.g. a boundary band)."""
    x, y, unbatched = _pair(fused, target)
    mse = masked_mean((x - y).pow(2), _mask(mask, x))
    out = 10 * torch.log10(data_range**2 / mse)
    return out[0] if unbatched else out


def ssim(fused: torch.Tensor, target: torch.Tensor, data_range: float = 2.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03.

    Borders: the local statistics are computed only where the whole window fits ('valid'),
    which equals scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``, whose map is averaged after cropping the same 5-pixel border.
    Images must be at least 11 x 11. ``mask``: the SSIM map averaged over those pixels (the windows centred
    on them).
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
    m = _mask(mask, x)
    out = masked_mean(smap, None if m is None else m[..., 5:-5, 5:-5])
    return out[0] if unbatched else out
