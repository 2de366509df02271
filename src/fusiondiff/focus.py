"""Focus measures: which of N sources is sharp where (the maths shared by the classical decision map, the
decision-map network's extra inputs and the blend models' logit prior).

Sources are [B, N, C, H, W] in [-1, 1]; C is 1 or 3 (colour is measured on its BT.601 luma).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from fusiondiff.data.io import to_channels
from fusiondiff.filters import box_mean

Tensor = torch.Tensor


def gray(x: Tensor) -> Tensor:
    """[..., C, H, W] -> [..., 1, H, W] luma (BT.601) or the gray channel."""
    return to_channels(x, 1)


def select_max(activity: Tensor) -> Tensor:
    """One-hot [B, N, 1, H, W] of the source with the largest activity (first on ties). Elementwise
    comparisons, equal to ``one_hot(argmax(1))`` for finite input and ~15x faster on CPU (argmax over a
    strided dimension of size N is slow there)."""
    best = activity[:, 0]
    index = torch.zeros(best.shape, dtype=torch.int16, device=activity.device)
    for i in range(1, activity.shape[1]):
        better = activity[:, i] > best
        best = torch.where(better, activity[:, i], best)
        index = torch.where(better, torch.tensor(i, dtype=torch.int16, device=activity.device), index)
    return torch.stack([index == i for i in range(activity.shape[1])], 1).to(activity.dtype)


def sum_modified_laplacian(image: Tensor, radius: int = 3) -> Tensor:
    """SML focus measure (Nayar & Nakagawa 1994): windowed sum of |d2/dx2| + |d2/dy2| of [B, 1, H, W]."""
    p = F.pad(image, (1, 1, 1, 1), mode="replicate")
    center = p[..., 1:-1, 1:-1]
    ml = (2 * center - p[..., 1:-1, :-2] - p[..., 1:-1, 2:]).abs() + (2 * center - p[..., :-2, 1:-1] - p[..., 2:, 1:-1]).abs()
    return box_mean(ml, radius)


_MEMO: list[dict] = []  # one dict per open remember_focus() scope; _focus caches in the innermost


@contextmanager
def remember_focus():
    """Within this scope the focus measure and decision weights of the same sources are computed once.

    One model call needs the decision map several times for the same sources (a blend model's logit prior,
    its network's inputs, its confinement, its last step), partly on copies of them;
    :class:`fusiondiff.pipeline.FusionPipeline` opens this scope around a call (its task's
    ``Conditioning.scope``). The last result is kept with a reference to its input and reused for that
    tensor or any input equal to it (same shape, dtype, device and values; no copy is made, so a 24 MP pair
    costs no extra memory). Code inside the scope must therefore not modify sources in place, nor the
    returned tensors. Nothing is kept after the scope (timing the classical decision map, or a model call,
    never reuses an earlier call's work).
    """
    _MEMO.append({})
    try:
        yield
    finally:
        _MEMO.pop()


def _focus(sources: Tensor, radius: int, consistency_radius: int) -> tuple[Tensor, Tensor]:
    """(SML [B, N, 1, H, W], decision weights [B, N, 1, H, W]) of sources (see :func:`remember_focus`)."""
    memo = _MEMO[-1] if _MEMO else None
    last = memo.get((radius, consistency_radius)) if memo is not None else None
    if last is not None and last[0].shape == sources.shape and last[0].dtype == sources.dtype:
        if last[0] is sources or (last[0].device == sources.device and torch.equal(last[0], sources)):
            return last[1]
    b, n, c, h, w = sources.shape
    sml = sum_modified_laplacian(gray(sources.reshape(b * n, c, h, w)), radius).reshape(b, n, 1, h, w)
    votes = select_max(sml)
    smoothed = box_mean(votes.reshape(b, n, h, w), consistency_radius).reshape(b, n, 1, h, w)  # majority filter
    outputs = (sml, select_max(smoothed))
    if memo is not None:
        memo[(radius, consistency_radius)] = (sources, outputs)
    return outputs


def decision_weights(sources: Tensor, radius: int = 3, consistency_radius: int = 7) -> Tensor:
    """One-hot [B, N, 1, H, W]: per pixel the source with the largest SML, after a majority (consistency) filter."""
    return _focus(sources, radius, consistency_radius)[1]


def focus_features(sources: Tensor, radius: int = 3, consistency_radius: int = 7) -> Tensor:
    """Per source, [B, N, 2, H, W]: the decision map's one-hot choice (:func:`decision_weights`) and the
    source's share of the SML focus measure, SML_i / Σ_j SML_j (1/N where all are flat): what the decision
    map decided and how sure the focus measure is. Inputs of :class:`fusiondiff.models.DecisionMapUNet`."""
    sml, weights = _focus(sources, radius, consistency_radius)
    total = sml.sum(1, keepdim=True)
    share = torch.where(total > 1e-8, sml / total.clamp_min(1e-8), torch.full_like(sml, 1.0 / sources.shape[1]))
    return torch.cat([weights, share], dim=2)
