"""Sliding-window noise estimation: run a denoiser on overlapping windows and blend ε̂.

:func:`tiled_denoiser` wraps any ``denoiser(x_t, t, cond)`` so that every call sees at most
``window x window`` pixels (plus the network's own padding); the sampler is unchanged. The
noise estimates of overlapping windows are averaged with uniform or smooth weights
(Yan et al. 2024, "sliding-window noise estimation"). Memory is bounded by the window and
``batch`` (windows evaluated together), not by the image.
"""

from __future__ import annotations

from typing import Any

import torch

from fusiondiff.diffusion.samplers import Denoiser

BLENDS = ("uniform", "smooth")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels, ``stride`` apart, covering ``0..size-1``."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
    if stride > window:
        raise ValueError(f"stride ({stride}) larger than window ({window}) would leave gaps")
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def blend_weights(h: int, w: int, blend: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel weight of one window: ones, or a separable Hann-like bump that never reaches 0."""
    if blend == "uniform":
        return torch.ones(h, w, device=device, dtype=dtype)
    if blend == "smooth":

        def bump(n: int) -> torch.Tensor:
            pos = (torch.arange(n, device=device, dtype=dtype) + 0.5) / n
            return torch.sin(torch.pi * pos).clamp_min(1e-3)

        return bump(h)[:, None] * bump(w)[None, :]
    raise ValueError(f"unknown blend {blend!r}; valid: {', '.join(BLENDS)}")


def _crop_cond(cond: Any, top: int, left: int, size_h: int, size_w: int) -> Any:
    """Crop every spatial tensor in ``cond`` (tensors with the image's last two dims)."""
    if isinstance(cond, torch.Tensor):
        return cond[..., top : top + size_h, left : left + size_w]
    if isinstance(cond, dict):
        return {k: _crop_cond(v, top, left, size_h, size_w) for k, v in cond.items()}
    return cond


def _stack_cond(conds: list[Any]) -> Any:
    first = conds[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(conds, dim=0)
    if isinstance(first, dict):
        return {k: _stack_cond([c[k] for c in conds]) for k in first}
    return first


def tiled_denoiser(
    denoiser: Denoiser,
    window: int,
    stride: int | None = None,
    blend: str = "smooth",
    batch: int = 1,
) -> Denoiser:
    """Wrap ``denoiser`` so that it is evaluated on overlapping windows (stride defaults to window*3/4)."""
    stride = max(1, (window * 3) // 4) if stride is None else stride
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; valid: {', '.join(BLENDS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")

    def tiled(x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        b, _, h, w = x_t.shape
        if h <= window and w <= window:
            return denoiser(x_t, t, cond)
        wh, ww = min(window, h), min(window, w)
        boxes = [(i, j) for i in window_starts(h, window, stride) for j in window_starts(w, window, stride)]
        weight = blend_weights(wh, ww, blend, x_t.device, x_t.dtype)
        out = torch.zeros_like(x_t)
        norm = torch.zeros(h, w, device=x_t.device, dtype=x_t.dtype)
        for k in range(0, len(boxes), batch):
            chunk = boxes[k : k + batch]
            xs = torch.cat([x_t[..., i : i + wh, j : j + ww] for i, j in chunk], dim=0)
            cs = _stack_cond([_crop_cond(cond, i, j, wh, ww) for i, j in chunk])
            ts = t.repeat(len(chunk))
            eps = denoiser(xs, ts, cs)
            for n, (i, j) in enumerate(chunk):
                out[..., i : i + wh, j : j + ww] += eps[n * b : (n + 1) * b] * weight
                norm[i : i + wh, j : j + ww] += weight
        return out / norm

    return tiled
