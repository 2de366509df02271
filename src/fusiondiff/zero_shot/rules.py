"""Fusion rules in the edit-friendly DDPM noise space (over :class:`fusiondiff.diffusion.Inversion`).

Maps are stacked as [N, K, B, C, H, W]: N images, K steps with **index 0 the noisiest** (high t,
where structure is decided) and K-1 the cleanest (low t, texture). Weights are one per image and
sum to 1; for two images a ratio r gives weights (1 - r, r). Every rule returns each input
exactly when its weight is 1, so r = 0 and r = 1 reproduce image A and image B.

Rules:

* ``linear``: Σ w_i z_i / sqrt(Σ w_i²), which keeps the variance of independent equal-variance maps
  (plain mixing at r = 0.5 shrinks it to 0.71x); ``slerp=True`` interpolates on the sphere instead.
* ``cross_fade``: B's weight moves along diffusion time, from A's structure (noisy steps) to B's
  texture (clean steps); r shifts the crossover: r = 0.5 is a linear ramp over the steps.
* ``feature_selective``: per location, the map with the larger weighted local magnitude wins (soft
  selection ∝ w_i rms_i^sharpness over the channels and the 9x9 window around it, the element itself
  excluded), renormalised to keep the variance.
* ``layer_selective``: first third of the steps (structure) all from the image the ratio favours,
  middle third ``linear``, last third ``feature_selective``.
* ``mask``: a spatial mask in [0, 1] (1 = image A), e.g. :func:`half_mask`, mixed variance-preservingly.
* ``style``: style fusion of content A with style B at strength r: x_T and the structure steps from A,
  the last ``round(r K / 4)`` (texture) steps from B, and on A's steps the per-channel mean and std of the
  maps moved towards B's by r (:func:`style_map`). r = 0 reproduces A.

The starting point x_start (``xs[skip]``) is fused by the rule of its step (``style``: A's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fusiondiff.diffusion.inversion import Inversion
from fusiondiff.errors import ConfigError
from fusiondiff.registry import Registry

Tensor = torch.Tensor


def ratio_weights(ratio: float) -> Tensor:
    """Weights (1 - r, r) of two images."""
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"fusion ratio must be in [0, 1], got {ratio}")
    return torch.tensor([1.0 - ratio, ratio], dtype=torch.float64)


def _check_weights(weights: Sequence[float] | Tensor, n: int) -> Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() != n:
        raise ConfigError(f"{w.numel()} weights for {n} images")
    if (w < 0).any() or abs(w.sum().item() - 1) > 1e-6:
        raise ConfigError(f"weights must be >= 0 and sum to 1, got {w.tolist()}")
    return w


def _bcast(w: Tensor, like: Tensor) -> Tensor:
    return w.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def mix_linear(maps: Tensor, weights: Tensor, slerp: bool = False) -> Tensor:
    """Variance-preserving weighted sum of maps [N, ...] (or slerp of two maps)."""
    w = weights.to(maps.device)
    if slerp:
        if maps.shape[0] != 2:
            raise ConfigError("slerp fuses exactly two maps")
        a, b, r = maps[0], maps[1], w[1].item()
        cos = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        if omega.abs() < 1e-4:
            return (1 - r) * a + r * b
        return (torch.sin((1 - r) * omega) * a + torch.sin(r * omega) * b) / torch.sin(omega)
    return (_bcast(w, maps) * maps).sum(0) / w.pow(2).sum().sqrt().to(maps.dtype)


def mix_feature_selective(maps: Tensor, weights: Tensor, sharpness: float = 4.0, radius: int = 4) -> Tensor:
    """Per location, soft selection of the map with the larger weighted local magnitude; variance-preserving.

    The magnitude is the RMS of each map over the channels and the (2r+1)² window around a location,
    **without** the element itself: the selection is smooth in space and independent of the value it
    selects, so for independent unit-variance maps Σ a_i z_i / sqrt(Σ a_i²) keeps unit variance exactly.
    Weights a_i ∝ w_i·rms_i^sharpness. Selecting the larger |z| per element (and per channel) instead
    inflates the std to ~1.27 and gives grain and colour noise (see NOTES.md). Maps without two spatial
    dims fall back to per-element |z_i|.
    """
    w = _bcast(weights.to(maps.device), maps)
    energy = maps.pow(2)
    if maps.dim() >= 4 and radius > 0:
        energy = energy.mean(-3, keepdim=True)  # one selection for all channels of a location
        flat = energy.reshape(-1, 1, *maps.shape[-2:])
        ring = torch.ones(1, 1, 2 * radius + 1, 2 * radius + 1, dtype=maps.dtype, device=maps.device)
        ring[..., radius, radius] = 0
        count = F.conv2d(torch.ones_like(flat[:1]), ring, padding=radius)
        energy = (F.conv2d(flat, ring, padding=radius) / count).reshape(energy.shape).expand_as(maps)
    score = w * energy.pow(sharpness / 2)
    total = score.sum(0, keepdim=True)
    sel = torch.where(total > 0, score / total.clamp_min(1e-300), w.expand_as(score))
    return (sel * maps).sum(0) / sel.pow(2).sum(0).sqrt().clamp_min(1e-12)


def mix_mask(maps: Tensor, mask: Tensor) -> Tensor:
    """m z_A + (1 - m) z_B over sqrt(m² + (1 - m)²), with m broadcast to [..., H, W]."""
    if maps.shape[0] != 2:
        raise ConfigError("mask fusion combines exactly two images")
    m = mask.to(maps.dtype).to(maps.device)
    if m.min() < 0 or m.max() > 1:
        raise ConfigError("mask values must lie in [0, 1]")
    if m.shape[-2:] != maps.shape[-2:]:
        raise ConfigError(f"mask is {tuple(m.shape[-2:])}, the maps are {tuple(maps.shape[-2:])}")
    return (m * maps[0] + (1 - m) * maps[1]) / (m**2 + (1 - m) ** 2).sqrt()


def half_mask(height: int, width: int, left: str = "A", softness: float = 0.0) -> Tensor:
    """Left/right split mask [H, W] (1 = image A on the ``left``), with an optional soft seam (fraction of W)."""
    x = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    m = (0.5 - x) / softness + 0.5 if softness > 0 else (x < 0.5).double()
    m = m.clamp(0, 1)
    m = m if left == "A" else 1 - m
    return m.expand(height, width).clone()


def cross_fade_weight(step: int, num_steps: int, ratio: float) -> float:
    """Image B's weight at step index ``step`` (0 = noisiest): clamp(s - (1.5 - 2r) + 0.5, 0, 1), s = step/(K-1).

    r = 0 gives 0 everywhere (A), r = 1 gives 1 everywhere (B), r = 0.5 ramps from A to B over the steps.
    """
    s = step / max(num_steps - 1, 1)
    return min(max(s - (1.5 - 2 * ratio) + 0.5, 0.0), 1.0)


def style_map(a: Tensor, b: Tensor, step: int, num_steps: int, ratio: float) -> Tensor:
    """The ``style`` rule for one step: B's map on the last round(r K / 4) steps, else A's map with its
    per-channel statistics (over H, W) moved towards B's: (1 - r) z_A + r AdaIN(z_A; z_B).

    K/4 rather than K/2 B-steps at full strength: with the shipped prior, K/2 carried B's structure over A's
    (content LPIPS 0.60 at r = 1 vs 0.48; statistics alone changed little: style distance 0.09 vs 0.05;
    NOTES.md, session 3)."""
    if ratio <= 0:
        return a
    if step >= num_steps - round(ratio * num_steps / 4):
        return b
    dims = (-2, -1)
    mu_a, sd_a = a.mean(dims, keepdim=True), a.std(dims, keepdim=True).clamp_min(1e-8)
    matched = (a - mu_a) / sd_a * b.std(dims, keepdim=True) + b.mean(dims, keepdim=True)
    return (1 - ratio) * a + ratio * matched


class Rule:
    """A noise-space fusion rule: how the N maps of one step are combined (``mix``) and how many images it
    takes. Subclasses set ``name`` and ``images`` (None: any N >= 2; 2: exactly two) and implement ``mix``."""

    name = "rule"
    images: int | None = None

    def check(self, n: int, mask: Tensor | None = None) -> None:
        """Raise a clear error before any compute if the rule cannot fuse ``n`` images (with ``mask``)."""
        if self.images is not None and n != self.images:
            count = {2: "two"}.get(self.images, str(self.images))
            raise ConfigError(f"{self.name} combines exactly {count} images, got {n}")

    def mix(self, maps: Tensor, step: int, num_steps: int, weights: Tensor, mask: Tensor | None, slerp: bool) -> Tensor:
        raise NotImplementedError

    def start(self, xs: Tensor, step: int, num_steps: int, weights: Tensor, mask: Tensor | None, slerp: bool) -> Tensor:
        """The fused starting point x_start from the N images' x at step ``skip`` (default: the rule of that step)."""
        return self.mix(xs, step, num_steps, weights, mask, slerp)


RULES = Registry("noise-space fusion mode")


def _rule(cls: type[Rule]) -> type[Rule]:
    RULES.register(cls.name, cls())
    return cls


@_rule
class Linear(Rule):
    name = "linear"

    def mix(self, maps, step, num_steps, weights, mask, slerp):
        return mix_linear(maps, weights, slerp)


@_rule
class CrossFade(Rule):
    name, images = "cross_fade", 2

    def mix(self, maps, step, num_steps, weights, mask, slerp):
        self.check(maps.shape[0])
        wb = cross_fade_weight(step, num_steps, weights[1].item())
        return mix_linear(maps, torch.tensor([1 - wb, wb], dtype=torch.float64), slerp)


@_rule
class FeatureSelective(Rule):
    name = "feature_selective"

    def mix(self, maps, step, num_steps, weights, mask, slerp):
        return mix_feature_selective(maps, weights)


@_rule
class LayerSelective(Rule):
    name = "layer_selective"

    def mix(self, maps, step, num_steps, weights, mask, slerp):
        third = step * 3 // max(num_steps, 1)
        if third == 0:
            return maps[int(weights.argmax())]
        return mix_linear(maps, weights, slerp) if third == 1 else mix_feature_selective(maps, weights)


@_rule
class Mask(Rule):
    name, images = "mask", 2

    def check(self, n: int, mask: Tensor | None = None) -> None:
        if n != 2:
            raise ConfigError("mask fusion combines exactly two images")
        if mask is None:
            raise ConfigError("mode=mask needs a mask (e.g. half_mask(H, W) or a mask image)")

    def mix(self, maps, step, num_steps, weights, mask, slerp):
        self.check(maps.shape[0], mask)
        return mix_mask(maps, mask)


@_rule
class Style(Rule):
    name, images = "style", 2

    def check(self, n: int, mask: Tensor | None = None) -> None:
        if n != 2:
            raise ConfigError("style fusion combines exactly two images: content A and style B")

    def mix(self, maps, step, num_steps, weights, mask, slerp):
        self.check(maps.shape[0])
        return style_map(maps[0], maps[1], step, num_steps, weights[1].item())

    def start(self, xs, step, num_steps, weights, mask, slerp):
        return xs[0]  # x_T and the structure come from the content image


MODES = tuple(RULES)


def fuse_step(maps: Tensor, step: int, num_steps: int, weights: Tensor, mode: str,
              mask: Tensor | None = None, slerp: bool = False) -> Tensor:  # fmt: skip
    """Fuse the N maps of one step [N, B, C, H, W] by ``mode`` (see module docstring)."""
    return RULES[mode].mix(maps, step, num_steps, weights, mask, slerp)


def fuse_inversions(
    inversions: Sequence[Inversion],
    weights: Sequence[float] | Tensor,
    mode: str = "linear",
    skip: int = 0,
    mask: Tensor | None = None,
    slerp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Fused (x_start, zs) of N inversions made with the same timesteps and η: regenerate with
    ``regenerate(denoiser, schedule, x_start, zs, timesteps, skip=skip)``.

    Every fused map (including those of the last steps) is used; maps before ``skip`` are unused.
    """
    if len(inversions) < 2:
        raise ConfigError("noise-space fusion needs at least two inversions")
    first = inversions[0]
    for inv in inversions[1:]:
        same = inv.timesteps == first.timesteps and inv.eta == first.eta and inv.clip_x0 == first.clip_x0
        if not same or inv.zs.shape != first.zs.shape:
            raise ConfigError("all inversions must share timesteps, eta and image size (invert them as one batch)")
    k = len(first.timesteps)
    if not 0 <= skip < k:
        raise ConfigError(f"skip must be in 0..{k - 1}, got {skip}")
    w = _check_weights(weights, len(inversions))
    xs = torch.stack([inv.xs for inv in inversions])
    zs = torch.stack([inv.zs for inv in inversions])
    rule = RULES[mode]
    rule.check(len(inversions), mask)
    fused_zs = torch.stack([rule.mix(zs[:, i], i, k, w, mask, slerp) for i in range(k)])
    x_start = rule.start(xs[:, skip], skip, k, w, mask, slerp)
    return x_start, fused_zs
