"""What the network predicts (ε, x0 or v) and how to turn its output into ε̂ for the samplers.

v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x0 (Salimans & Ho 2022, Sec. 4). With ε-prediction x̂0 =
(x_t - sqrt(1-ᾱ) ε̂)/sqrt(ᾱ) amplifies errors by 1/sqrt(ᾱ), which is ~4e4 at the last step of
FusionDiff's cosine schedule (ᾱ ≈ 6e-10), so few-step deterministic sampling needs x0- or
v-prediction there; the conversions below are exact, so the samplers only ever see ε̂.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fusiondiff.diffusion.schedules import NoiseSchedule, _gather
from fusiondiff.filters import max_filter

PREDICTIONS = ("eps", "x0", "v", "blend")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    return prediction


def disagreement_gate(sources: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """Where the sources [B, N, C, H, W] disagree: (max - min over sources, max over channels) / ``scale``,
    clipped to [0, 1] and widened by one pixel (3x3 max), [B, 1, H, W]. Zero only where the sources are equal
    (in a 3x3 neighbourhood), so a gated correction is exactly zero there."""
    spread = (sources.amax(1) - sources.amin(1)).amax(1, keepdim=True)
    return max_filter((spread / scale).clamp(0, 1), 1)


def blend_sources(out: torch.Tensor, sources: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """x̂0 = Σ_i softmax(logits)_i · source_i [+ gate · residual]: ``out`` [B, N, H, W] (one weight map per
    source) or [B, N + C, H, W] (the weight maps and a C-channel correction), sources [B, N, C, H, W] ->
    [B, C, H, W]. The ``blend`` prediction: with N channels every output pixel is a convex combination of the
    sources (where the weights saturate, a source pixel is copied exactly); with N + C the correction may
    leave that hull where the sources disagree (:func:`disagreement_gate`), which includes the focus
    boundaries where no source holds the right pixels, but on real pairs also most textured areas (one
    source is blurred there; NOTES.md, session 8). Where the sources agree the output is still their blend.

    ``prior`` [B, N, H, W] is added to the logits (the "residual" of blend models lives in logit space; the
    multi-focus task's ``decision_map`` prior makes a zero network output reproduce the decision map).
    """
    n, c = sources.shape[1], sources.shape[2]
    if out.shape[1] not in (n, n + c):
        raise ValueError(f"blend prediction needs {n} (or {n} + {c}) output channels for {n} sources, got {out.shape[1]}")
    logits, residual = out[:, :n], (out[:, n:] if out.shape[1] > n else None)
    if prior is not None:
        logits = logits + prior.to(logits.dtype)
    weights = torch.softmax(logits.float(), dim=1).to(sources.dtype)
    fused = (weights[:, :, None] * sources).sum(1)
    if residual is not None:
        fused = fused + disagreement_gate(sources).to(residual.dtype) * residual
    return fused


@dataclass(frozen=True)
class Conditioning:
    """How a model's sources become its diffusion variable and its network input; the model's task supplies
    the callables (:meth:`fusiondiff.tasks.Task.conditioning`), so this module knows no task.

    base: sources [B, N, C, H, W] -> the residual base [B, C', H, W] (None: diffuse the image itself).
        Residual diffusion (as in residual-learning fusion models, e.g. Rif-Diff) starts the model at the
        quality of the base and leaves it only the correction to learn.
    condition: (sources, base) -> what the network sees as ``cond`` (None: the sources unchanged).
    logit_prior: blend models: sources -> logits [B, N, H, W] added to the network's (None: no prior).
    confine: blend models: (x̂0, sources) -> x̂0 kept only where the task allows the network to act (e.g. near
        focus boundaries) and a classical result elsewhere (None: the blend everywhere).
    finish: (sampled image, sources) -> the pipeline's output, applied once to the sampler's result at
        inference and never in training (where it could zero the loss's gradient; None: the result as is).
    scope: a context manager factory the pipeline enters around one call (the multi-focus task's computes
        the decision map once per call instead of once per use; None: nothing).
    """

    base: Callable[[torch.Tensor], torch.Tensor] | None = None
    condition: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    logit_prior: Callable[[torch.Tensor], torch.Tensor] | None = None
    confine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    finish: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    scope: Callable[[], AbstractContextManager] | None = None

    def prepare(self, sources: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(residual base or None, network condition), the base computed once."""
        base = self.base(sources) if self.base is not None else None
        return base, (self.condition(sources, base) if self.condition is not None else sources)

    def blend(self, logits: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """:func:`blend_sources` with this conditioning's logit prior (and confinement)."""
        fused = blend_sources(logits, sources, None if self.logit_prior is None else self.logit_prior(sources))
        return fused if self.confine is None else self.confine(fused, sources)


def to_diffused(target: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    """The variable the diffusion runs on: the image, or its residual to ``base`` (which keeps the target's
    leading channels: restoration sources carry an extra mask channel)."""
    return target if base is None else target - base[:, : target.shape[1]]


def from_diffused(sample: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    """Inverse of :func:`to_diffused`, clamped to the image range [-1, 1]."""
    if base is not None:
        sample = sample + base[:, : sample.shape[1]]
    return sample.clamp(-1, 1)


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

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        prediction: str = "eps",
        conditioning: Conditioning | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.net, self.schedule, self.prediction = net, schedule, check_prediction(prediction)
        self.conditioning, self.autocast = conditioning or Conditioning(), autocast

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """ε̂ in the dtype of x_t; the network runs in its own dtype (so samplers may keep float64 state), or
        under autocast to ``autocast`` (e.g. bfloat16: its convolutions and matrix products in that dtype)."""
        param = next(self.net.parameters(), None) if isinstance(self.net, nn.Module) else None
        net_dtype = param.dtype if param is not None else x_t.dtype
        # no autocast context at all without one: a disabled context would also switch off a caller's autocast
        with torch.autocast(x_t.device.type, dtype=self.autocast) if self.autocast is not None else nullcontext():
            out = self.net(x_t.to(net_dtype), t, cond)
        out = out.to(x_t.dtype)
        if self.prediction == "blend":
            out = self.conditioning.blend(out, cond.to(x_t.dtype))
        return eps_from_output(self.schedule, self.prediction, x_t, t, out)
