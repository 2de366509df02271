"""Multi-focus fusion: N differently focused photos of one scene -> one all-in-focus image.

The task's knowledge in one place: the classical baselines (for N >= 2 sources, gray or colour, any size:
sources [N, C, H, W] or batched [B, N, C, H, W] in [-1, 1] -> [C, H, W] / [B, C, H, W]), the residual bases
(``mean`` and every baseline by name) and the ``decision_map`` logit prior of blend models, the ``fuse``
inference mode and the evaluation (paired folders with or without ground truth, held-out synthetic pairs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from fusiondiff.errors import ConfigError, InputError
from fusiondiff.filters import blur, box_mean, dilate, gaussian_kernel, gradient_magnitude, guided_filter, max_filter
from fusiondiff.focus import decision_weights, gray, remember_focus, select_max
from fusiondiff.models.bundle import ASSETS
from fusiondiff.registry import Registry
from fusiondiff.tasks.base import Task, load_pipeline, mean_base, register_task

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from fusiondiff.diffusion.parameterization import Conditioning
    from fusiondiff.evaluation import Evaluation, Metric

log = logging.getLogger(__name__)
Tensor = torch.Tensor

# a soft decision-map prior: the chosen source starts at weight e^2/(1+e^2) ≈ 0.88 (at +8 the saturated
# softmax left no gradient; NOTES.md)
BLEND_PRIOR_LOGIT = 2.0


def _batched(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def wrapper(sources: Tensor, **kwargs) -> Tensor:
        if sources.dim() == 4:
            return wrapper(sources[None], **kwargs)[0]
        if sources.dim() != 5 or sources.shape[1] < 2 or sources.shape[2] not in (1, 3):
            raise InputError(
                f"sources must be [N, C, H, W] or [B, N, C, H, W] with N >= 2 and C in (1, 3), got {tuple(sources.shape)}"
            )
        if not torch.isfinite(sources).all():
            raise InputError("sources contain NaN or Inf")
        return fn(sources.float(), **kwargs).clamp(-1, 1)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


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
        choose = select_max(gray(lap.abs()))  # one decision for all colour channels
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
    luma = gray(flat)
    lap = F.conv2d(
        F.pad(luma, (1, 1, 1, 1), mode="replicate"), torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]], device=x.device)
    )
    saliency = blur(lap.abs(), gaussian_kernel(saliency_sigma, saliency_radius))
    masks = select_max(saliency.reshape(b, n, 1, h, w)).reshape(b * n, 1, h, w)
    w_base = guided_filter(luma, masks, r1, eps1).reshape(b, n, 1, h, w)
    w_detail = guided_filter(luma, masks, r2, eps2).reshape(b, n, 1, h, w)

    def normalise(wt: Tensor) -> Tensor:
        wt = wt.clamp_min(0)
        total = wt.sum(1, keepdim=True)
        return torch.where(total > 1e-8, wt / total.clamp_min(1e-8), torch.full_like(wt, 1.0 / n))

    fused = (normalise(w_base) * base.reshape(b, n, c, h, w)).sum(1) + (normalise(w_detail) * detail.reshape(b, n, c, h, w)).sum(
        1
    )
    return fused * 2 - 1


@_batched
def decision_map(sources: Tensor, radius: int = 3, consistency_radius: int = 7) -> Tensor:
    """Focus-measure fusion: copy, per pixel, the source chosen by :func:`decision_weights`."""
    return _decision_copy(sources, decision_weights(sources, radius, consistency_radius))


def _decision_copy(sources: Tensor, weights: Tensor) -> Tensor:
    """The decision map's image from its one-hot ``weights``: :func:`decision_map` without the input checks."""
    return (weights.to(sources.dtype) * sources).sum(1)


CLASSICAL_METHODS = Registry(
    "multi-focus baseline",
    {
        "average": average,
        "laplacian_pyramid": laplacian_pyramid,
        "guided_filter": guided_filter_fusion,
        "decision_map": decision_map,
    },
)


def get_classical(name: str) -> Callable[..., Tensor]:
    return CLASSICAL_METHODS[name]


def decision_map_prior(sources: Tensor) -> Tensor:
    """The ``decision_map`` logit prior of blend models: BLEND_PRIOR_LOGIT on the source the decision map
    picks, so a zero network output reproduces the decision map and the network learns where to overturn it."""
    return BLEND_PRIOR_LOGIT * decision_weights(sources.float())[:, :, 0]


BOUNDARY_RADIUS = 8  # px around a decision-map switch where the ``decision_boundary`` model may act (blur 1-10 px)
ISLAND_RADIUS = 0  # px (0: off): with 15 (2 x the consistency radius) MFFW Q^AB/F rose but the band lost 0.65 dB


def boundary_gate(weights: Tensor, radius: int = BOUNDARY_RADIUS, islands: int = ISLAND_RADIUS) -> Tensor:
    """Where a model may overturn the decision map: 1 within ``radius`` px of a pixel where the one-hot
    ``weights`` [B, N, 1, H, W] switch source, tapering to 0 over the next 2 px, exactly 0 beyond, [B, 1, H, W].

    With ``islands`` > 0 it is also 0 farther than ``radius`` px from every switch of the weights after a
    second majority filter of that radius: a small island of the other source that the decision map's own
    filter left (on real pairs often a patch of a different exposure inside an object) is no focus
    boundary, and a model smoothing it away loses Q^AB/F (NOTES.md, session 13); the island stays as the
    decision map has it."""

    def near_switch(w: Tensor) -> Tensor:
        return dilate(((max_filter(w, 1) + max_filter(-w, 1)).amax(1, keepdim=True) > 0.5).float(), radius)

    w = weights[:, :, 0].float()
    near = near_switch(w)
    if islands:
        near = near * near_switch(select_max(box_mean(w, islands)))
    return F.avg_pool2d(near, 5, 1, 2, count_include_pad=False)


def confine_to_boundaries(fused: Tensor, sources: Tensor) -> Tensor:
    """The ``decision_boundary`` confinement: the classical decision map, exactly, farther than
    BOUNDARY_RADIUS (+2) px from its own source switches; the model's x̂0 near them (where the defocus spread
    of a blurred foreground leaves no source right)."""
    weights = decision_weights(sources.float())
    gate = boundary_gate(weights).to(fused.dtype)
    copy = _decision_copy(sources, weights).to(fused.dtype)
    return copy + gate * (fused - copy)


BOUNDARY_SNAP = 0.03  # [-1, 1] units: smaller departures from the decision map are dropped (inference only)
BOUNDARY_EDGES = 0.0  # (0: off) share of the sharpest source's local edge energy the last step lets a model remove


def source_edge_energy(images: Tensor) -> Tensor:
    """Local edge energy, [B, N, C, H, W] -> [B, N, 1, H, W]: the squared Sobel gradient magnitude of each
    image's channel mean, averaged over 3x3 pixels."""
    b, n = images.shape[:2]
    flat = images.flatten(0, 1).float()
    return box_mean(gradient_magnitude(flat) ** 2, 1).reshape(b, n, 1, *images.shape[-2:])


def snap_to_decision_map(
    fused: Tensor, sources: Tensor, threshold: float = BOUNDARY_SNAP, edges: float = BOUNDARY_EDGES
) -> Tensor:
    """The ``decision_boundary`` model's last step at inference: where its output departs from the decision
    map by less than ``threshold`` (largest channel difference) it is the decision map exactly, from
    2 x ``threshold`` on the model's own, linear in between. A halo correction replaces a blurred foreground
    by background (a large change); the small departures are mostly a softening of textured detail next to
    a switch, which costs Q^AB/F on real pairs (NOTES.md, session 11).

    ``edges`` > 0 also withholds departures that smooth away structure a source holds: where the output's
    local edge energy (:func:`source_edge_energy`) falls short of the sharpest source's by a share ``s`` of
    it, the departure is kept by 1 - s / ``edges`` (dropped from ``edges`` on): smoothing an island of the other
    source or one line of a double edge (misregistered sources) leaves a shortfall. Off by default: measured
    in session 14 it also withholds a good part of the halo corrections (no tolerance kept 90 % of the band
    gain on tuning scenes) and recovered at most a third of the MFFW Q^AB/F loss (README, NOTES.md)."""
    copy = _decision_copy(sources, decision_weights(sources.float())).to(fused.dtype)
    change = fused - copy
    keep = (
        ((change.abs().amax(1, keepdim=True) - threshold) / threshold).clamp(0, 1)
        if threshold
        else torch.ones_like(change[:, :1])
    )
    if edges:
        sharpest = source_edge_energy(sources).amax(1)
        shortfall = (sharpest - source_edge_energy((copy + keep * change)[:, None])[:, 0]).clamp_min(0)
        keep = keep * (1 - shortfall / (edges * sharpest + 1e-6)).clamp(0, 1).to(keep.dtype)
    return copy + keep * change


def _classical_base(name: str) -> Callable[[Tensor], Tensor]:
    fn = CLASSICAL_METHODS[name]
    return lambda sources: fn(sources).to(sources.dtype)


class MultiFocusTask(Task):
    name = "multifocus"

    def residual_bases(self) -> dict[str, Callable[[Tensor], Tensor]]:
        return {"mean": mean_base, **{name: _classical_base(name) for name in CLASSICAL_METHODS}}

    def logit_priors(self) -> dict[str, Callable[[Tensor], Tensor]]:
        # decision_boundary: the same prior, the output confined to decision-map boundaries (confine_to_boundaries)
        return {"decision_map": decision_map_prior, "decision_boundary": decision_map_prior}

    def conditioning(self, prediction: str, residual: bool | str | None) -> Conditioning:
        base = replace(super().conditioning(prediction, residual), scope=remember_focus)
        if prediction == "blend" and residual == "decision_boundary":
            return replace(base, confine=confine_to_boundaries, finish=snap_to_decision_map)
        return base

    def baselines(self) -> dict[str, Callable[..., Tensor]]:
        return dict(CLASSICAL_METHODS)

    def modes(self) -> dict[str, Callable[[DictConfig], list[Path]]]:
        return {"fuse": fuse}

    def evaluation(self, cfg: DictConfig) -> Evaluation:
        """Suites: ``paired`` (default; a folder of any :func:`~fusiondiff.data.pairing.find_samples` layout,
        ground truth optional; default Lytro) and ``synthetic`` (held-out generated pairs with ground truth
        from scikit-image's coffee and rocket, never trained on). Fused images are quantised to 8 bits (as if
        saved as PNG) before scoring; fusion metrics use 0..255, reference metrics [-1, 1].

        In the paired (where every pair has a ground truth), synthetic and layered suites the method
        ``ground_truth`` scores the truth like a fused image: what a
        perfect fusion gets on the source-based metrics (on layered scenes the truth scores a lower Q^AB/F than
        the decision map, which keeps the sources' halo edges: README "Defocus boundaries")."""
        from fusiondiff.evaluation import Evaluation, Item
        from fusiondiff.evaluation.core import batched

        suite = cfg.get("suite") or "paired"
        channels = 3 if cfg.get("channels") == 3 else None
        if suite == "paired":
            from fusiondiff.data.datasets import load_sources
            from fusiondiff.data.io import read_image
            from fusiondiff.data.pairing import find_samples

            dataset = cfg.get("dataset") or f"{cfg.paths.data_dir}/mfif/lytro"
            samples = find_samples(dataset)[: cfg.get("max_images") or None]

            def loader(sample):
                def load() -> dict:
                    sources = load_sources(sample.sources, channels=channels)
                    target = read_image(sample.target, sources.shape[1]) if sample.target is not None else None
                    return {"sources": sources, "target": target}

                return load

            items = [Item(sample.name, loader(sample)) for sample in samples]
            has_target, stored = any(s.target is not None for s in samples), True
            about = f"Dataset `{dataset}`, {len(items)} images"
        elif suite == "synthetic":
            from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS, SyntheticMultiFocus

            num, size, seed = cfg.get("num") or 32, cfg.get("size") or 128, cfg.get("suite_seed") or 123
            data = SyntheticMultiFocus(photos=SKIMAGE_HELDOUT_PHOTOS, num_samples=num, crop_size=size, deterministic=True,
                                       seed=seed)  # fmt: skip
            items = [Item(f"synthetic_{i:06d}", lambda i=i: data[i]) for i in range(len(data))][: cfg.get("max_images") or None]
            has_target, stored = True, False
            about = f"{len(items)} held-out synthetic pairs, {size} px, photos {', '.join(SKIMAGE_HELDOUT_PHOTOS)} (seed {seed})"
        elif suite == "layered":
            data = layered_benchmark(cfg)
            items = [Item(f"layered_{i:06d}", lambda i=i: data[i]) for i in range(len(data))]
            items = items[: cfg.get("max_images") or None]
            has_target, stored = True, False
            about = (f"{len(items)} held-out layered defocus scenes, {data.sizes[0]}-{data.sizes[1]} px, "
                     f"{len(data.photos)} held-out photos (seed {data.seed}); *_band: inside the boundary band")  # fmt: skip
        elif suite in ("stack", "misaligned"):
            return stack_evaluation(self, cfg, suite, channels)
        else:
            raise ConfigError(f"unknown suite {suite!r} for task multifocus; valid: {', '.join(SUITES)}")
        baselines = {name: (lambda d, fn=fn: fn(d["sources"])) for name, fn in CLASSICAL_METHODS.items()}
        baselines |= external_baselines()
        if suite != "paired" or samples and all(s.target is not None for s in samples):
            baselines["ground_truth"] = lambda d: d["target"]  # the reference: what perfect fusion scores
        elif "ground_truth" in (cfg.get("methods") or ()):
            raise ConfigError(f"method ground_truth needs a ground truth for every pair; {dataset} has pairs without one")

        def model_run(pipe, sampler, tiling):
            if stored or suite == "layered":  # one image at a time, as infer.py fuses a folder (layered: sizes vary)
                return lambda d: pipe(d["sources"], sampler, seed=cfg.seed, tiling=tiling).cpu()

            def run_batch(everything: list[dict]) -> list[Tensor]:  # generated pairs: batches of 8, one seed each
                sources = torch.stack([d["sources"] for d in everything])
                out = [pipe(sources[i : i + 8], sampler, seed=cfg.seed, tiling=tiling).cpu() for i in range(0, len(sources), 8)]
                return list(torch.cat(out))

            return batched(run_batch, items)

        default = [*CLASSICAL_METHODS, "fusiondiff"]
        methods = self.methods(cfg, baselines, model_run, default, channels)
        default_metrics = LAYERED_METRICS if suite == "layered" else DEFAULT_METRICS if stored else SYNTHETIC_METRICS
        names = list(cfg.get("metrics") or default_metrics)
        metrics = [m for m in fusion_metrics(names, quantise=stored) if has_target or "target" not in m.needs]
        metrics = [m for m in metrics if suite == "layered" or "band" not in m.needs]
        labels = [m.label for m in methods]
        baseline = cfg.get("baseline") or ("decision_map" if "decision_map" in labels else None)
        return Evaluation(about, items, methods, metrics, baseline=baseline)


SUITES = ("paired", "synthetic", "layered", "stack", "misaligned")


def external_baselines() -> dict[str, Callable[[dict], Tensor]]:
    """enfuse (focus-stacking settings) and enfuse after align_image_stack, where they are installed."""
    from fusiondiff.evaluation import external

    out = {}
    if external.available("enfuse"):
        out["enfuse"] = lambda d: external.enfuse(d["sources"])
        if external.available("align_image_stack"):
            out["enfuse_align"] = lambda d: external.enfuse(d["sources"], align=True)
    return out


def stack_benchmark(cfg: DictConfig):
    """Held-out generated focus stacks with ground truth: ``frames`` focal planes (default 8), 3-4 layers,
    blur up to 10 px between the nearest and farthest plane, ``num`` scenes (default 100) of ``size`` px
    (default 192-256); photos as in :func:`layered_benchmark` (held out of every training set)."""
    bench = layered_benchmark(cfg)
    from fusiondiff.data.layered import LayeredDefocus

    size = cfg.get("size") or (192, 256)
    return LayeredDefocus(photos=bench.photos, num_samples=cfg.get("num") or 100, size=size, planes=cfg.get("frames") or 8,
                          layers=(3, 4), deterministic=True, seed=cfg.get("suite_seed") or 2027)  # fmt: skip


def misaligned_pairs(cfg: DictConfig) -> list:
    """``dataset`` pairs (default Lytro; ``layered``: the held-out generated pairs of suite ``layered``, exactly
    registered by construction) with source B moved by a known similarity (seeded per pair: a shift
    of 2-4 px in a random direction, a rotation of up to 1 degree, a scale change of up to 1 %; ``move=false``:
    not moved), stored in 8 bits. ``registered=true``: B is first registered to A by the pair's own ECC
    estimate (real pairs are misregistered by focus breathing; this removes it, so the test measures only the
    recovery of the known move). Each item keeps the unmoved pair, the exact transform and the margin
    outside which every pixel is covered by both sources (the region the scores use)."""
    import math

    import cv2
    import numpy as np

    from fusiondiff.data.io import read_array
    from fusiondiff.data.pairing import find_samples
    from fusiondiff.evaluation import Item

    dataset = cfg.get("dataset") or f"{cfg.paths.data_dir}/mfif/lytro"
    seed = cfg.get("suite_seed") or 17
    if dataset == "layered":  # generated pairs, registered exactly by construction (a clean set)
        scenes = layered_benchmark(cfg)
        names = [f"layered_{i:06d}" for i in range(len(scenes))][: cfg.get("max_images") or None]

        def arrays(index):
            return [((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for x in scenes[index]["sources"]]
    else:
        samples = [s for s in find_samples(dataset) if len(s.sources) == 2][: cfg.get("max_images") or None]
        names = [s.name for s in samples]

        def arrays(index):
            return [read_array(p) for p in samples[index].sources]

    def preregister(a, b):  # B in A's geometry by the pair's own ECC estimate; its largest corner displacement
        from fusiondiff import align

        (small_a, scale), (small_b, _) = align.working_image(a), align.working_image(b)
        matrix = align.rescale(align.register_pair(small_a, small_b, align.AlignConfig("ecc"))[0], scale)
        h, w = a.shape[:2]
        b = align.warp_to_reference(b, matrix, h, w, border=cv2.BORDER_REFLECT)[0]
        corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float).T
        moved = matrix @ corners
        return b, float(np.abs(moved[:2] / moved[2] - corners[:2]).max())

    def loader(index):
        def load() -> dict:
            a, b = arrays(index)
            h, w = a.shape[:2]
            extra = 0.0
            if cfg.get("registered"):
                b, extra = preregister(a, b)
            rng = np.random.default_rng(seed * 1000 + index)
            shift, direction = rng.uniform(2, 4), rng.uniform(0, 2 * math.pi)
            angle, scale = math.radians(rng.uniform(-1, 1)), 1 + rng.uniform(-0.01, 0.01)
            centre = np.array([w / 2, h / 2])
            rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            offset = centre + shift * np.array([math.cos(direction), math.sin(direction)]) - rot @ centre
            m = np.vstack([np.hstack([rot, offset[:, None]]), [0, 0, 1]])  # moved B at p = B at m p
            if cfg.get("move") is False:  # the pairs as they are: what registration changes on them
                m = np.eye(3)
            moved = cv2.warpAffine(b, m[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
            moved = moved[:, :, None] if moved.ndim == 2 else moved
            corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float).T
            to_frame = np.linalg.inv(m)  # reference (A) pixel -> moved-B pixel: the convention of fusiondiff.align
            margin = int(math.ceil(max(np.abs((t @ corners)[:2] - corners[:2]).max() for t in (m, to_frame)) + extra)) + 2
            to = lambda x: torch.from_numpy(np.ascontiguousarray(x).astype(np.float32) / 255).permute(2, 0, 1) * 2 - 1  # noqa: E731
            sources = torch.stack([to(a), to(moved)])
            channels_ = 3 if cfg.get("channels") == 3 else None
            original = torch.stack([to(a), to(b)])
            if channels_:
                from fusiondiff.data.io import to_channels

                sources, original = to_channels(sources, channels_), to_channels(original, channels_)
            return {"sources": sources, "original": original, "matrix": to_frame, "margin": margin, "arrays": [a, moved]}

        return load

    return [Item(name, loader(i)) for i, name in enumerate(names)]


def stack_evaluation(task: MultiFocusTask, cfg: DictConfig, suite: str, channels: int | None) -> Evaluation:
    """Suites ``stack`` (generated N-frame stacks with ground truth: PSNR/SSIM/LPIPS) and ``misaligned``
    (pairs with B moved by a known similarity; every method without alignment, after ``align=ecc`` and after
    the exact inverse warp, scored by Q^AB/F and Q_CB against the unmoved pair inside the region both
    sources cover). Methods: the classical ones (N frames natively), ``fusiondiff`` / ``model:<file>`` (an
    N-frame model natively, a 2-source model chained), ``chained:<file>`` (any model fused pair by pair, to
    compare an N-frame model with chaining itself) and enfuse where it is installed."""
    import numpy as np

    from fusiondiff.align import AlignConfig
    from fusiondiff.evaluation import Evaluation, Item, Method
    from fusiondiff.evaluation.core import model_label, run_label
    from fusiondiff.pipeline import SamplerConfig, Tiling
    from fusiondiff.stacking import MARGINS, chained, fuse_stack

    sampler, tiling = SamplerConfig.from_config(cfg.sampler).check(), Tiling.from_config(cfg).check()
    if suite == "stack":
        data = stack_benchmark(cfg)
        items = [Item(f"stack_{i:06d}", lambda i=i: data[i]) for i in range(len(data))][: cfg.get("max_images") or None]
        about = (f"{len(items)} held-out generated focus stacks of {data.planes} frames, {data.sizes[0]}-{data.sizes[1]} px, "
                 f"{len(data.photos)} held-out photos (seed {data.seed})")  # fmt: skip
        default = [*CLASSICAL_METHODS, "fusiondiff"]
    else:
        items = misaligned_pairs(cfg)
        moved = ("B as it is (move=false)" if cfg.get("move") is False
                 else "B moved by a known similarity (2-4 px, <= 1 deg, <= 1 % scale)")  # fmt: skip
        if cfg.get("registered"):
            moved = "B first registered to A by the pair's own ECC estimate, then " + moved.replace("B ", "", 1)
        about = (f"{len(items)} pairs of `{cfg.get('dataset') or 'lytro'}` with {moved}; scored against the unmoved pair "
                 "inside the region both cover")  # fmt: skip
        default = ["decision_map", "fusiondiff"]

    fusers: list[tuple[str, Callable[[Tensor], Tensor], int, str]] = []  # label, fuser, margin, kind
    extern = external_baselines()
    for spec in [str(x) for x in (cfg.get("methods") or default)]:
        if spec in CLASSICAL_METHODS:
            fusers.append((spec, CLASSICAL_METHODS[spec], MARGINS[spec], "baseline"))
        elif spec in extern:
            fusers.append((spec, lambda s, spec=spec: extern[spec]({"sources": s}), 0, "baseline"))
        elif spec == "fusiondiff" or spec.startswith(("model:", "chained:")):
            path = cfg.get("ckpt") if spec == "fusiondiff" else spec.split(":", 1)[1]
            pipe = load_pipeline(path, task="multifocus", precision=cfg.get("precision") or "fp32")
            s = replace_steps(sampler, pipe)
            label = run_label(model_label(path, shipped=spec == "fusiondiff"), s, pipe.precision)

            def run(x, pipe=pipe, s=s):
                from fusiondiff.data.io import to_channels

                return pipe(to_channels(x, pipe.channels), s, seed=cfg.seed, tiling=tiling).cpu()

            if spec.startswith("chained:") or pipe.num_sources is not None:
                fusers.append((label + (" chained" if pipe.num_sources is None else ""), chained(run, pipe.num_sources or 2),
                               MARGINS["model"], "model"))  # fmt: skip
            else:
                fusers.append((label, run, MARGINS["model"], "model"))
        else:
            valid = ", ".join([*CLASSICAL_METHODS, *extern, "fusiondiff", "model:<file>", "chained:<file>"])
            raise ConfigError(f"unknown method {spec!r} for suite {suite}; valid: {valid}")

    methods = []
    if suite == "stack":
        methods = [Method(label, lambda d, fn=fn: fn(d["sources"]), kind) for label, fn, _, kind in fusers]
        names = list(cfg.get("metrics") or ("psnr", "ssim", "lpips"))
        metrics = fusion_metrics(names, quantise=False)
        baseline = cfg.get("baseline") or ("decision_map" if any(m.label == "decision_map" for m in methods) else None)
        return Evaluation(about, items, methods, metrics, baseline=baseline)

    aligns = [str(a) for a in (cfg.get("aligns") or ("none", "ecc", "exact"))]
    for label, fn, margin, kind in fusers:
        for how in aligns:
            if label == "enfuse_align" and how != "none":
                continue  # it aligns itself (align_image_stack)
            if how == "none":
                run_fn = lambda d, fn=fn: fn(d["sources"])  # noqa: E731
            elif how in ("ecc", "homography", "exact"):

                def run_fn(d, fn=fn, margin=margin, how=how):
                    config = AlignConfig("ecc" if how == "exact" else how, reference="first")
                    matrices = [np.eye(3), d["matrix"]] if how == "exact" else None
                    return fuse_stack(d["arrays"], fn, config, margin=margin, matrices=matrices).fused.clamp(-1, 1)
            else:
                raise ConfigError(f"unknown entry {how!r} in aligns; valid: none, ecc, homography, exact")
            methods.append(Method(f"{label} | align={how}", run_fn, kind))
    metrics = misaligned_metrics([str(m) for m in (cfg.get("metrics") or ("qabf", "qcb"))])
    first = methods[0].label if methods else None
    return Evaluation(about, items, methods, metrics, baseline=cfg.get("baseline") or first)


def replace_steps(sampler, pipe):
    from dataclasses import replace

    return replace(sampler, steps=int(sampler.steps or pipe.default_steps)).check(pipe.schedule.num_timesteps)


def misaligned_metrics(names: list[str]) -> list[Metric]:
    """Source-based fusion metrics of the fused image against the unmoved pair, inside the margin both cover."""
    from fusiondiff.evaluation import Metric
    from fusiondiff.metrics import fusion

    def metric(name):
        fn = fusion.SOURCE_METRICS[name]

        def score(out, d):
            m = d["margin"]
            a, b = (fusion.to_255(x[..., m:-m, m:-m]) for x in d["original"])
            return fn(a, b, fusion.to_255(out[..., m:-m, m:-m])).item()

        return Metric(name, score)

    unknown = [n for n in names if n not in fusion.SOURCE_METRICS]
    if unknown:
        valid = ", ".join(fusion.SOURCE_METRICS)
        raise ConfigError(f"suite misaligned scores source-based metrics only; unknown: {unknown}; valid: {valid}")
    return [metric(n) for n in names]


DEFAULT_METRICS = ("qabf", "qcb", "qcv", "mi", "nmi", "ssim_fusion", "psnr_fusion", "entropy", "sf", "ag", "sd", "ei", "psnr",
                   "ssim", "lpips")  # fmt: skip


SYNTHETIC_METRICS = ("psnr", "ssim", "lpips", "sf", "ag")
LAYERED_METRICS = ("psnr", "ssim", "lpips", "psnr_band", "ssim_band", "lpips_band", "qabf", "qcb")

# NYU-D photos held out of the layered training data for the benchmark (the shipped blend model was trained on
# all 100 NYU-D pairs: on these photos it has an advantage, not a handicap)
NYUD_HELDOUT = tuple(f"NYU-D ({k})" for k in range(81, 101))


def layered_benchmark(cfg: DictConfig):
    """The held-out layered defocus benchmark: scikit-image's held-out photos (coffee, rocket) and, with
    ``photo_folder`` (e.g. ``$DATA/nyud100/full_clear``), its NYU-D photos 81-100; 200 scenes of 256-384 px,
    2 focal planes, 2-3 layers, blur radius 1-10 px, every scene with a band of >= 0.5 % of its pixels."""
    from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS, skimage_photos
    from fusiondiff.data.io import read_image
    from fusiondiff.data.layered import LayeredDefocus

    photos = skimage_photos(SKIMAGE_HELDOUT_PHOTOS)
    folder = cfg.get("photo_folder")
    if folder:
        from fusiondiff.data.io import IMAGE_EXTENSIONS

        files = [p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem in NYUD_HELDOUT]
        if not files:
            raise ConfigError(f"photo_folder={folder} holds none of the held-out photos {NYUD_HELDOUT[0]} ... {NYUD_HELDOUT[-1]}")
        photos += [read_image(p, 3) for p in files]
    size = cfg.get("size") or (256, 384)
    return LayeredDefocus(photos=photos, num_samples=cfg.get("num") or 200, size=size, deterministic=True,
                          seed=cfg.get("suite_seed") or 2026, min_band=0.005)  # fmt: skip


def fusion_metrics(names: list[str], quantise: bool = True) -> list[Metric]:
    """Multi-focus metrics by name: the source-based fusion metrics (two sources), the fused-only ones and the
    reference ones (need ``target``). ``quantise``: on the fused image as an 8-bit file would store it (stored
    test images); else on the float output (generated suites, where every method stays in float)."""
    from fusiondiff.evaluation import Metric
    from fusiondiff.metrics import REFERENCE_METRICS, fusion

    def source_metric(name, fn):
        def score(out, d):
            s255 = fusion.to_255(d["sources"], quantise)
            if len(s255) != 2:
                raise ConfigError(f"{name} is defined for two sources; this dataset has {len(s255)}")
            return fn(s255[0], s255[1], fusion.to_255(out, quantise)).item()

        return Metric(name, score)

    table = {name: source_metric(name, fn) for name, fn in fusion.SOURCE_METRICS.items()}
    table.update({name: Metric(name, lambda out, d, fn=fn: fn(fusion.to_255(out, quantise)).item())
                  for name, fn in fusion.FUSED_ONLY_METRICS.items()})  # fmt: skip

    def reference_metric(name, fn, band=False):
        def score(out, d):
            fused = (fusion.to_255(out) / 127.5 - 1).float() if quantise else out.float()
            return (fn(fused, d["target"].float(), mask=d["band"]) if band else fn(fused, d["target"].float())).item()

        return Metric(name, score, needs=("target", "band") if band else ("target",))

    table.update({name: reference_metric(name, fn) for name, fn in REFERENCE_METRICS.items()})
    table.update({f"{name}_band": reference_metric(f"{name}_band", REFERENCE_METRICS[name], band=True)
                  for name in ("psnr", "ssim", "lpips")})  # fmt: skip
    registry = Registry("metric", table)
    return [registry[name] for name in names]


EXAMPLE_SOURCES = (ASSETS / "example_A.png", ASSETS / "example_B.png")


STACK_METHODS = ("model", *CLASSICAL_METHODS)


def _stack_outputs(out: Path, cfg: DictConfig, align_method: str) -> dict[str, Path]:
    """The files a stack job writes next to its fused image ``out`` (as the config asks)."""
    extra = {}
    if cfg.depth:
        extra |= {"depth": out.with_name(f"{out.stem}_depth.png"), "depth_npy": out.with_name(f"{out.stem}_depth.npy"),
                  "depth_preview": out.with_name(f"{out.stem}_depth_preview.png")}  # fmt: skip
    if cfg.valid_mask:
        extra["valid"] = out.with_name(f"{out.stem}_valid.png")
    if align_method != "none":
        extra["transforms"] = out.with_name(f"{out.stem}.transforms.json")
    return extra


def fuse(cfg: DictConfig) -> list[Path]:
    """``mode=fuse``: fuse ``inputs`` (a list of frames, a folder of frames or a glob; default: the built-in
    example pair) -> ``output``, or every sample of ``input_dir`` -> ``output_dir/<name>.png``, with
    ``method`` (``model``: the trained model at ``ckpt``, default the shipped bundle; or a classical method).

    Any number of frames: the classical methods take N natively, a 2-source model is chained. ``align``
    (none | ecc | homography) registers the frames to a reference first; ``depth`` / ``valid_mask`` write the
    depth map and the valid-region mask beside the output (:mod:`fusiondiff.stacking`). A pair with the model,
    no alignment and no extra outputs runs exactly as before (one call of the model on the whole pair).

    Everything is checked before the first fusion: settings, outputs (writable, not a source, not replaced
    without ``overwrite=true``; a folder run keeps the outputs that exist), every input (decodes, sizes,
    count) and the model file."""
    from fusiondiff.align import AlignConfig
    from fusiondiff.data.datasets import check_source_files, read_sources
    from fusiondiff.data.io import check_outputs
    from fusiondiff.data.pairing import find_samples
    from fusiondiff.data.stacks import stack_files
    from fusiondiff.pipeline import SamplerConfig, Tiling, check_precision, resolve_device
    from fusiondiff.progress import eta

    if cfg.inputs and cfg.input_dir:
        raise ConfigError("give either inputs=[a,b,...] (or a folder / glob of frames) or input_dir=..., not both")
    if cfg.method not in STACK_METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; valid: {', '.join(STACK_METHODS)}")
    sampler, tiling = SamplerConfig.from_config(cfg.sampler).check(), Tiling.from_config(cfg).check()
    aligning = AlignConfig.from_config(cfg.align)
    device = resolve_device(cfg.device)
    precision = check_precision(cfg.precision, device)
    if cfg.input_dir:
        out_dir = Path(cfg.output_dir)
        jobs = [(s.name, list(s.sources), out_dir / f"{s.name}.png") for s in find_samples(cfg.input_dir)]
    else:
        inputs = (
            stack_files(cfg.inputs if isinstance(cfg.inputs, str) else list(cfg.inputs)) if cfg.inputs else list(EXAMPLE_SOURCES)
        )
        jobs = [(inputs[0].stem, inputs, Path(cfg.output))]
    for _, paths, _ in jobs:
        aligning.check(len(paths))
    every_source = [p for _, paths, _ in jobs for p in paths]
    todo = []
    for job in jobs:
        extra = _stack_outputs(job[2], cfg, aligning.method)
        if check_outputs([job[2], *extra.values()], every_source, cfg.bit_depth, cfg.overwrite, bool(cfg.input_dir)):
            todo.append(job)
    if len(todo) < len(jobs):
        log.info("%d of %d outputs exist and are kept (overwrite=true replaces them)", len(jobs) - len(todo), len(jobs))
    extras = cfg.method != "model" or aligning.method != "none" or cfg.depth or cfg.valid_mask
    checked = None
    if len(todo) == 1 and (extras or len(todo[0][1]) > 2):  # one stack: its check also keeps what registration needs
        from fusiondiff.stacking import check_frames

        name, paths, _ = todo[0]
        checked = check_frames(paths, aligning)
        shapes = {name: (len(paths), *checked[1][:2])}
    else:
        shapes = {name: check_source_files(paths, cfg.resize) for name, paths, _ in todo}  # decoded now, one at a time
    pipe = None
    if cfg.method == "model":
        pipe = load_pipeline(cfg.ckpt, device=device, precision=precision)
        sampler.check(pipe.schedule.num_timesteps)
        for n, h, w in shapes.values():  # a longer stack is chained through a fixed-arity model; a shorter one is refused
            pipe.check_sources(n if pipe.num_sources is None else min(n, pipe.num_sources), h, w)
        log.info("model: %s", cfg.ckpt or "the bundled multi-focus model")
    written = []
    begin = time.perf_counter()
    for k, (name, paths, out) in enumerate(todo, 1):
        start = time.perf_counter()
        if extras or len(paths) != (pipe.num_sources or len(paths)):
            written += fuse_stack_job(cfg, pipe, paths, out, aligning, sampler, tiling, checked)
        else:
            from fusiondiff.data.io import write_image

            images = read_sources(paths, resize=cfg.resize)
            fused = fuse_images(pipe, images, [Path(p).name for p in paths], sampler, seed=cfg.seed, tiling=tiling)
            written.append(write_image(out, fused, bit_depth=cfg.bit_depth))
        log.info("[%d/%d] %s -> %s (%.1f s, %s)", k, len(todo), name, out, time.perf_counter() - start, eta(begin, k, len(todo)))
    return written


def stack_fuser(method: str, pipe=None, sampler=None, seed: int = 0, tiling=None) -> tuple[Callable[[Tensor], Tensor], int]:
    """The fuser of N frames for ``method`` (a classical method, or ``model``: ``pipe``, chained when it takes
    a fixed number of sources) and the tile margin it needs (:data:`fusiondiff.stacking.MARGINS`)."""
    from fusiondiff.data.io import to_channels
    from fusiondiff.stacking import MARGINS, chained

    if method != "model":
        fn = CLASSICAL_METHODS[method]
        return fn, MARGINS[method]

    def run(sources: Tensor) -> Tensor:
        return pipe(to_channels(sources, pipe.channels), sampler, seed=seed, tiling=tiling).cpu()

    return (run if pipe.num_sources is None else chained(run, pipe.num_sources)), MARGINS["model"]


def fuse_stack_job(cfg: DictConfig, pipe, paths: list[Path], out: Path, aligning, sampler, tiling, checked=None) -> list[Path]:
    """One stack: fuse (:func:`fusiondiff.stacking.fuse_stack`) and write the fused image with the reference
    frame's EXIF/ICC, and the depth map, valid mask and transforms the config asks for."""
    import json

    import numpy as np

    from fusiondiff.data.io import atomic_write_bytes, write_image
    from fusiondiff.data.stacks import read_metadata
    from fusiondiff.stacking import depth_preview, fuse_stack

    fn, margin = stack_fuser(cfg.method, pipe, sampler, cfg.seed, tiling)
    channels = pipe.channels if pipe is not None else None
    result = fuse_stack(paths, fn, aligning, margin=margin, depth=bool(cfg.depth), channels=channels, checked=checked)
    extra = _stack_outputs(out, cfg, aligning.method)
    metadata = read_metadata(paths[result.reference])
    written = [write_image(out, result.fused, bit_depth=cfg.bit_depth, metadata=metadata)]
    if result.depth is not None:
        import cv2

        ok, png = cv2.imencode(".png", result.depth.astype(np.uint16))
        written.append(atomic_write_bytes(extra["depth"], png.tobytes()))
        import io as bytes_io

        buffer = bytes_io.BytesIO()
        np.save(buffer, result.depth)
        written.append(atomic_write_bytes(extra["depth_npy"], buffer.getvalue()))
        preview = torch.from_numpy(depth_preview(result.depth, len(paths))).permute(2, 0, 1).float() / 127.5 - 1
        written.append(write_image(extra["depth_preview"], preview))
    if "valid" in extra:
        written.append(write_image(extra["valid"], torch.from_numpy(result.valid)[None].float() * 2 - 1))
    uncovered = 1 - float(result.valid.mean())
    if uncovered > 0:
        log.info("%.2f %% of the output is not covered by every frame (filled from the neighbouring frames%s)",
                 100 * uncovered, "; valid_mask=true writes the mask" if "valid" not in extra else "")  # fmt: skip
    if "transforms" in extra:
        report = {
            "reference": result.reference,
            "align": {"method": aligning.method, "motion": aligning.motion},
            "matrix_convention": "maps reference pixel (x, y, 1) to frame pixel coordinates",
            "valid_fraction": float(result.valid.mean()),
            "frames": [r.as_dict() for r in result.registrations],
        }
        written.append(atomic_write_bytes(extra["transforms"], (json.dumps(report, indent=1) + "\n").encode()))
    return written


def fuse_images(pipe, images: list[Tensor], names: list[str], sampler, **kwargs) -> Tensor:
    """Fuse source images that may mix gray and colour with a trained pipeline. A gray model gets gray
    sources. A colour model gets the gray sources replicated, and its output keeps its brightness but takes
    its colour from the colour sources (:func:`~fusiondiff.data.io.transfer_chroma`): a gray source that
    happens to win a flat region (a sky) would otherwise leave a gray patch. Mixed sources get a notice."""
    from fusiondiff.data.io import to_channels, transfer_chroma

    colour = [im for im in images if im.shape[0] == 3]
    gray = [name for im, name in zip(images, names, strict=True) if im.shape[0] == 1]
    if pipe.channels == 1:
        if colour:
            log.warning("this model fuses gray images: the colour sources are converted to gray")
        return pipe(torch.stack([to_channels(im, 1) for im in images]), sampler, **kwargs).cpu()
    fused = pipe(torch.stack([to_channels(im, 3) for im in images]), sampler, **kwargs).cpu()
    if gray and colour:
        log.warning("gray source(s) %s: fusing the brightness of every source, the colour of the colour ones", ", ".join(gray))
        fused = transfer_chroma(fused, torch.stack(colour).mean(0))
    return fused


TASK = register_task(MultiFocusTask)
