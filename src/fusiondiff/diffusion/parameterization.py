"""What the network predicts (ε, x0 or v) and how to turn its output into ε̂ for the samplers.

v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x0 (Salimans & Ho 2022, Sec. 4). With ε-prediction x̂0 =
(x_t - sqrt(1-ᾱ) ε̂)/sqrt(ᾱ) amplifies errors by 1/sqrt(ᾱ), which is ~4e4 at the last step of
FusionDiff's cosine schedule (ᾱ ≈ 6e-10), so few-step deterministic sampling needs x0- or
v-prediction there; the conversions below are exact, so the samplers only ever see ε̂.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fusiondiff.diffusion.schedules import NoiseSchedule, _gather

PREDICTIONS = ("eps", "x0", "v", "blend")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    return prediction


# a soft decision-map prior: the chosen source starts at weight e^2/(1+e^2) ≈ 0.88 (at +8 the saturated
# softmax left no gradient; NOTES.md)
BLEND_PRIOR_LOGIT = 2.0


def blend_sources(logits: torch.Tensor, sources: torch.Tensor, prior: bool | str = False) -> torch.Tensor:
    """x̂0 = Σ_i softmax(logits)_i · source_i: logits [B, N, H, W] (one weight map per source), sources
    [B, N, C, H, W] -> [B, C, H, W]. The ``blend`` prediction: every output pixel is a convex combination of
    the sources at that pixel (where the weights saturate, a source pixel is copied exactly).

    ``prior="decision_map"`` adds BLEND_PRIOR_LOGIT to the logit of the source the classical decision map
    picks (the "residual" of blend models lives in logit space): a zero network output reproduces the
    decision map, and the network learns where to overturn it.
    """
    if logits.shape[1] != sources.shape[1]:
        raise ValueError(f"blend prediction needs one output channel per source ({sources.shape[1]}), got {logits.shape[1]}")
    if prior == "decision_map":
        from fusiondiff.fusion.classical import decision_weights

        logits = logits + BLEND_PRIOR_LOGIT * decision_weights(sources.float())[:, :, 0].to(logits.dtype)
    elif prior:
        raise ValueError(f"prediction=blend supports residual=false or decision_map (a logit prior), got {prior!r}")
    weights = torch.softmax(logits.float(), dim=1).to(sources.dtype)
    return (weights[:, :, None] * sources).sum(1)


def training_target(
    schedule: NoiseSchedule, prediction: str, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The regression target of the network for (x0, ε, t) (``blend``: x0, after :func:`blend_sources`)."""
    if prediction == "eps":
        return eps
    if prediction in ("x0", "blend"):
        return x0
    check_prediction(prediction)
    ab = _gather(schedule.alphas_cumprod, t, x0)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def eps_from_output(
    schedule: NoiseSchedule, prediction: str, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """ε̂ from the network output (computed in float64 so the samplers can invert it exactly)."""
    if prediction == "eps":
        return out
    check_prediction(prediction)
    ab = _gather(schedule.alphas_cumprod, t, x_t.double())
    x, o = x_t.double(), out.double()
    if prediction in ("x0", "blend"):  # blend: ``out`` is already the blended x̂0
        eps = (x - ab.sqrt() * o) / (1 - ab).sqrt()
    else:  # v: ε = sqrt(1-ᾱ) x_t + sqrt(ᾱ) v
        eps = (1 - ab).sqrt() * x + ab.sqrt() * o
    return eps.to(out.dtype)


class EpsDenoiser(nn.Module):
    """``denoiser(x_t, t, cond) -> ε̂`` around a network that predicts ε, x0 or v."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, prediction: str = "eps", blend_prior: bool | str = False) -> None:
        super().__init__()
        self.net, self.schedule, self.prediction = net, schedule, check_prediction(prediction)
        self.blend_prior = blend_prior

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """ε̂ in the dtype of x_t; the network runs in its own dtype (so samplers may keep float64 state)."""
        param = next(self.net.parameters(), None) if isinstance(self.net, nn.Module) else None
        net_dtype = param.dtype if param is not None else x_t.dtype
        out = self.net(x_t.to(net_dtype), t, cond).to(x_t.dtype)
        if self.prediction == "blend":
            out = blend_sources(out, cond.to(x_t.dtype), self.blend_prior)
        return eps_from_output(self.schedule, self.prediction, x_t, t, out)


RESIDUAL_CLASSICAL = ("average", "laplacian_pyramid", "guided_filter", "decision_map")
RESIDUAL_INPAINT = ("telea", "navier_stokes")  # = fusiondiff.data.degradations.OPENCV_INPAINT
RESIDUALS = (False, True, "mean", "hdr_merge", *RESIDUAL_INPAINT, *RESIDUAL_CLASSICAL)


def check_residual(residual: bool | str) -> bool | str:
    if residual not in RESIDUALS:
        raise ValueError(f"unknown residual {residual!r}; valid: false, true (= mean), {', '.join(map(str, RESIDUALS[2:]))}")
    return residual


def residual_base(sources: torch.Tensor, residual: bool | str = "mean") -> torch.Tensor:
    """The base the diffusion's residual is taken against, from sources [B, N, C, H, W] -> [B, C', H, W].

    ``mean`` (or True): the mean of the sources. A classical method's name (``decision_map``,
    ``guided_filter``, ...): its fusion (:mod:`fusiondiff.fusion.classical`), so the model starts at that
    method's quality and learns the correction. ``hdr_merge``: the μ-law tonemapped exposure-weighted
    merge of HDR sources (see :func:`fusiondiff.data.hdr.merge_estimate`). ``telea`` /
    ``navier_stokes``: restoration sources with their hole filled by that OpenCV inpainting
    (:func:`fusiondiff.data.degradations.inpaint_fill`).
    """
    if residual in RESIDUAL_INPAINT:
        from fusiondiff.data.degradations import inpaint_fill

        return inpaint_fill(sources, residual)
    if residual == "hdr_merge":
        from fusiondiff.data.hdr import merge_estimate

        return merge_estimate(sources)
    if residual in RESIDUAL_CLASSICAL:
        from fusiondiff.fusion.classical import get_classical

        return get_classical(residual)(sources).to(sources.dtype)
    return sources.mean(1)


def split_residual(prediction: str, residual: bool | str) -> tuple[bool | str, bool | str]:
    """(residual in image space, logit prior of blend models) for a model's ``prediction`` / ``residual``."""
    return (False, residual) if prediction == "blend" else (residual, False)


def to_diffused(
    target: torch.Tensor, sources: torch.Tensor, residual: bool | str, base: torch.Tensor | None = None
) -> torch.Tensor:
    """The variable the diffusion runs on: the image, or its residual to a base computed from the sources.

    Residual diffusion (as in residual-learning fusion models, e.g. Rif-Diff) starts the model at
    the quality of the base (averaging for multi-focus) and leaves it only the correction to learn.
    The base keeps the target's leading channels (restoration sources carry an extra mask channel).
    ``base``: :func:`residual_base` when already computed.
    """
    if not residual:
        return target
    base = residual_base(sources, check_residual(residual)) if base is None else base
    return target - base[:, : target.shape[1]]


def network_condition(sources: torch.Tensor, residual: bool | str, base: torch.Tensor | None = None) -> torch.Tensor:
    """The sources as the network sees them. With an inpainting residual (``telea`` / ``navier_stokes``) the
    degraded image's holes are filled by that base, so the network sees the fill it corrects (with grey holes
    it would have to emulate OpenCV's fill to predict the residual; NOTES.md, session 5); the mask channel
    stays. Any other residual: the sources unchanged."""
    if residual not in RESIDUAL_INPAINT:
        return sources
    base = residual_base(sources, residual) if base is None else base
    return torch.cat([base[:, None].to(sources.dtype), sources[:, :, base.shape[1] :]], 2)


def base_and_condition(sources: torch.Tensor, residual: bool | str) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The residual base (None without residual diffusion), computed once, and :func:`network_condition`."""
    base = residual_base(sources, residual) if residual else None
    return base, network_condition(sources, residual, base)


def from_diffused(
    sample: torch.Tensor, sources: torch.Tensor, residual: bool | str, base: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`to_diffused`, clamped to the image range [-1, 1]."""
    if residual:
        base = residual_base(sources, check_residual(residual)) if base is None else base
        sample = sample + base[:, : sample.shape[1]]
    return sample.clamp(-1, 1)
