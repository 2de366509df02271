"""Image filters shared by data synthesis and the classical fusion baselines (one implementation each).

Images are [C, H, W] or [B, C, H, W]; kernels are 2-D and normalised to sum 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian of standard deviation ``sigma`` on (2r+1)^2 taps (r = ceil(3 sigma) by default)."""
    radius = max(1, int(math.ceil(3 * sigma))) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum()


def gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64); the SSIM window is its outer product."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def separable_correlate(x: torch.Tensor, k1d: torch.Tensor, padding: int | None = None) -> torch.Tensor:
    """Correlate [N, C, H, W] with the outer product k1d ⊗ k1d, zero padding (default 'same'; 0 gives 'valid')."""
    k = k1d.to(dtype=x.dtype, device=x.device)
    c, r = x.shape[1], k.numel() // 2 if padding is None else padding
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


def disk_kernel(radius: float) -> torch.Tensor:
    """Normalised anti-aliased disk (defocus blur) of the given radius in pixels."""
    r = max(1, int(math.ceil(radius)))
    y, x = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    k = (radius + 0.5 - torch.sqrt(x**2 + y**2)).clamp(0, 1)
    return k / k.sum()


def motion_kernel(length: float, angle: float) -> torch.Tensor:
    """Normalised linear motion-blur kernel of ``length`` px at ``angle`` radians (anti-aliased line)."""
    r = max(1, int(math.ceil(length / 2)))
    y, x = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    along, across = x * c + y * s, -x * s + y * c
    k = (1 - across.abs()).clamp(0, 1) * (length / 2 + 0.5 - along.abs()).clamp(0, 1)
    return k / k.sum()


def blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter with a 2-D kernel (kornia ``filter2d``), reflected borders (replicated if the image is too small)."""
    import kornia  # lazily: the inference path does not need it

    unbatched = image.dim() == 3
    x = image[None] if unbatched else image
    border = "reflect" if min(x.shape[-2:]) > kernel.shape[-1] // 2 else "replicate"
    out = kornia.filters.filter2d(x, kernel[None].to(x.dtype), border_type=border)
    return out[0] if unbatched else out


def unsharp_mask(image: torch.Tensor, sigma: float = 2.0, amount: float = 1.0) -> torch.Tensor:
    """Unsharp masking: image + amount * (image - Gaussian blur of std ``sigma``); not clipped."""
    return image + amount * (image - blur(image, gaussian_kernel(sigma)))


def noise_sigma(image: torch.Tensor) -> float:
    """Robust estimate of additive white noise's std in [C, H, W] (Donoho's MAD rule): the median absolute
    finest diagonal Haar coefficient / 0.6745, averaged over the channels; in the image's own units."""
    x = image[:, : image.shape[1] // 2 * 2, : image.shape[2] // 2 * 2].double()
    hh = (x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 2
    return float((hh.flatten(1).abs().median(1).values / 0.6745).mean())


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over a (2r+1)^2 window (zeros outside) via an integral image: O(1) per pixel for any radius."""
    h, w = x.shape[-2:]
    s = F.pad(x.double(), (radius + 1, radius, radius + 1, radius)).cumsum(-2).cumsum(-1)
    k = 2 * radius + 1
    out = s[..., k:, k:] - s[..., :-k, k:] - s[..., k:, :-k] + s[..., :-k, :-k]
    return out[..., :h, :w].to(x.dtype)


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a (2r+1)^2 square of [..., H, W], -inf outside the image: ``max_pool2d(x, 2r+1, 1, r)``
    exactly, as two separable passes of elementwise maxima over doubling spans (O(log r) per pixel; much
    faster than max_pool2d on CPU)."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    for dim, pad in ((-1, (radius, radius, 0, 0)), (-2, (0, 0, radius, radius))):
        n = x.shape[dim]
        m, span = F.pad(x, pad, value=float("-inf")), 1
        while 2 * span <= k:  # m[i] = max of the padded row over [i, i + span)
            m = torch.maximum(m.narrow(dim, 0, m.shape[dim] - span), m.narrow(dim, span, m.shape[dim] - span))
            span *= 2
        x = torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, k - span, n))  # [i, i + span) and [i + k - span, i + k)
    return x


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a 0/1 [B, C, H, W] map by a (2r+1)^2 square: 1 where any pixel within ``radius``
    (Chebyshev) is set (:func:`max_filter`)."""
    return max_filter(mask, radius)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window of [B, C, H, W], counting only pixels inside the image."""
    if radius <= 0:
        return x
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.device)
    return _box_sum(x, radius) / _box_sum(ones, radius)


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the channel mean, [B, C, H, W] -> [B, 1, H, W]: Sobel kernels divided by
    8 (a ramp rising by 1 per pixel gives 1), replicated borders, and sqrt(gx² + gy² + 1e-8) so that its
    gradient stays finite on flat areas (it is used in a training loss)."""
    gray = F.pad(image.mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=image.dtype, device=image.device)[None, None] / 8
    return (F.conv2d(gray, kx) ** 2 + F.conv2d(gray, kx.transpose(-1, -2)) ** 2 + 1e-8).sqrt()


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al. 2010 guided filter with a gray guide [B, 1, H, W] and any src [B, C, H, W]."""
    radius = max(0, min(radius, (min(guide.shape[-2:]) - 1) // 2))
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_i * mean_p
    var = box_mean(guide * guide, radius) - mean_i**2
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)
