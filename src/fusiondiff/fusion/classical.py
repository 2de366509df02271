"""Classical multi-focus fusion baselines (no training), for N >= 2 sources, gray or colour, any size.

Every method takes sources [N, C, H, W] (or batched [B, N, C, H, W]) in [-1, 1] and returns the
fused image [C, H, W] (or [B, C, H, W]) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fusiondiff.data.io import to_channels
from fusiondiff.filters import blur, box_mean, gaussian_kernel

Tensor = torch.Tensor


def _batched(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def wrapper(sources: Tensor, **kwargs) -> Tensor:
        if sources.dim() == 4:
            return wrapper(sources[None], **kwargs)[0]
        if sources.dim() != 5 or sources.shape[1] < 2 or sources.shape[2] not in (1, 3):
            raise ValueError(
                f"sources must be [N, C, H, W] or [B, N, C, H, W] with N >= 2 and C in (1, 3), got {tuple(sources.shape)}"
            )
        if not torch.isfinite(sources).all():
            raise ValueError("sources contain NaN or Inf")
        return fn(sources.float(), **kwargs).clamp(-1, 1)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def _gray(x: Tensor) -> Tensor:
    """[..., C, H, W] -> [..., 1, H, W] luma (BT.601) or the gray channel."""
    return to_channels(x, 1)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:
    """He et al. 2010 guided filter with a gray guide [B, 1, H, W] and any src [B, C, H, W]."""
    radius = max(0, min(radius, (min(guide.shape[-2:]) - 1) // 2))
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_i * mean_p
    var = box_mean(guide * guide, radius) - mean_i**2
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def _select_max(activity: Tensor) -> Tensor:
    """One-hot [B, N, 1, H, W] of the source with the largest activity (first on ties)."""
    return F.one_hot(activity.argmax(1), activity.shape[1]).permute(0, 4, 1, 2, 3).to(activity.dtype)


@_batched
def average(sources: Tensor) -> Tensor:
    """Pixel-wise mean of the sources."""
    return sources.mean(1)


@_batched
def laplacian_pyramid(sources: Tensor, levels: int = 5) -> Tensor:
    """Laplacian-pyramid fusion (Burt & Adelson 1983): max-|coefficient| detail selection, averaged base."""
    b, n, c, h, w = sources.shape
    x = sources.reshape(b * n, c, h, w)
    gauss = [x]
    while len(gauss) < levels and min(gauss[-1].shape[-2:]) >= 8:
        gauss.append(blur(gauss[-1], gaussian_kernel(1.0, 2))[..., ::2, ::2])

    def up(z: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(z, size=size, mode="bilinear", align_corners=False)

    fused = gauss[-1].reshape(b, n, c, *gauss[-1].shape[-2:]).mean(1)
    for k in range(len(gauss) - 2, -1, -1):
        size = tuple(gauss[k].shape[-2:])
        lap = (gauss[k] - up(gauss[k + 1], size)).reshape(b, n, c, *size)
        choose = _select_max(_gray(lap.abs()))  # one decision for all colour channels
        fused = up(fused, size) + (choose * lap).sum(1)
    return fused


@_batched
def guided_filter_fusion(
    sources: Tensor,
    base_radius: int = 15,
    saliency_radius: int = 5,
    saliency_sigma: float = 5.0,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
) -> Tensor:
    """GFF, Li, Kang & Hu, IEEE TIP 2013: two-scale decomposition, Laplacian saliency, guided-filtered weights.

    Images are processed in [0, 1] (the paper's epsilon values assume it); the guide is the
    gray version of each source.
    """
    b, n, c, h, w = sources.shape
    x = (sources + 1) / 2
    flat = x.reshape(b * n, c, h, w)
    base = box_mean(flat, base_radius)
    detail = flat - base
    gray = _gray(flat)
    lap = F.conv2d(
        F.pad(gray, (1, 1, 1, 1), mode="replicate"), torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]], device=x.device)
    )
    saliency = blur(lap.abs(), gaussian_kernel(saliency_sigma, saliency_radius))
    masks = _select_max(saliency.reshape(b, n, 1, h, w)).reshape(b * n, 1, h, w)
    w_base = guided_filter(gray, masks, r1, eps1).reshape(b, n, 1, h, w)
    w_detail = guided_filter(gray, masks, r2, eps2).reshape(b, n, 1, h, w)

    def normalise(wt: Tensor) -> Tensor:
        wt = wt.clamp_min(0)
        total = wt.sum(1, keepdim=True)
        return torch.where(total > 1e-8, wt / total.clamp_min(1e-8), torch.full_like(wt, 1.0 / n))

    fused = (normalise(w_base) * base.reshape(b, n, c, h, w)).sum(1) + (normalise(w_detail) * detail.reshape(b, n, c, h, w)).sum(
        1
    )
    return fused * 2 - 1


def sum_modified_laplacian(gray: Tensor, radius: int = 3) -> Tensor:
    """SML focus measure (Nayar & Nakagawa 1994): windowed sum of |d2/dx2| + |d2/dy2| of [B, 1, H, W]."""
    p = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    center = p[..., 1:-1, 1:-1]
    ml = (2 * center - p[..., 1:-1, :-2] - p[..., 1:-1, 2:]).abs() + (2 * center - p[..., :-2, 1:-1] - p[..., 2:, 1:-1]).abs()
    return box_mean(ml, radius)


def decision_weights(sources: Tensor, radius: int = 3, consistency_radius: int = 7) -> Tensor:
    """One-hot [B, N, 1, H, W]: per pixel the source with the largest SML, after a majority (consistency) filter."""
    b, n, c, h, w = sources.shape
    gray = _gray(sources.reshape(b * n, c, h, w))
    sml = sum_modified_laplacian(gray, radius).reshape(b, n, 1, h, w)
    votes = _select_max(sml)
    smoothed = box_mean(votes.reshape(b, n, h, w), consistency_radius).reshape(b, n, 1, h, w)  # majority filter
    return _select_max(smoothed)


def focus_features(sources: Tensor, radius: int = 3, consistency_radius: int = 7) -> Tensor:
    """Per source, [B, N, 2, H, W]: the decision map's one-hot choice (:func:`decision_weights`) and the
    source's share of the SML focus measure, SML_i / Σ_j SML_j (1/N where all are flat): what the decision
    map decided and how sure the focus measure is. Inputs of :class:`fusiondiff.models.DecisionMapUNet`."""
    b, n, c, h, w = sources.shape
    sml = sum_modified_laplacian(_gray(sources.reshape(b * n, c, h, w)), radius).reshape(b, n, 1, h, w)
    total = sml.sum(1, keepdim=True)
    share = torch.where(total > 1e-8, sml / total.clamp_min(1e-8), torch.full_like(sml, 1.0 / n))
    return torch.cat([decision_weights(sources, radius, consistency_radius), share], dim=2)


@_batched
def decision_map(sources: Tensor, radius: int = 3, consistency_radius: int = 7) -> Tensor:
    """Focus-measure fusion: copy, per pixel, the source chosen by :func:`decision_weights`."""
    return (decision_weights(sources, radius, consistency_radius) * sources).sum(1)


CLASSICAL_METHODS: dict[str, Callable[..., Tensor]] = {
    "average": average,
    "laplacian_pyramid": laplacian_pyramid,
    "guided_filter": guided_filter_fusion,
    "decision_map": decision_map,
}


def get_classical(name: str) -> Callable[..., Tensor]:
    try:
        return CLASSICAL_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown classical method {name!r}; valid: {', '.join(CLASSICAL_METHODS)}") from None
