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
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from fusiondiff.errors import ConfigError, InputError
from fusiondiff.filters import blur, box_mean, gaussian_kernel, guided_filter
from fusiondiff.focus import decision_weights, gray, select_max
from fusiondiff.models.bundle import ASSETS
from fusiondiff.registry import Registry
from fusiondiff.tasks.base import Task, load_pipeline, mean_base, register_task

if TYPE_CHECKING:
    from omegaconf import DictConfig

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
    return (decision_weights(sources, radius, consistency_radius) * sources).sum(1)


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


def _classical_base(name: str) -> Callable[[Tensor], Tensor]:
    fn = CLASSICAL_METHODS[name]
    return lambda sources: fn(sources).to(sources.dtype)


class MultiFocusTask(Task):
    name = "multifocus"

    def residual_bases(self) -> dict[str, Callable[[Tensor], Tensor]]:
        return {"mean": mean_base, **{name: _classical_base(name) for name in CLASSICAL_METHODS}}

    def logit_priors(self) -> dict[str, Callable[[Tensor], Tensor]]:
        return {"decision_map": decision_map_prior}

    def baselines(self) -> dict[str, Callable[..., Tensor]]:
        return dict(CLASSICAL_METHODS)

    def modes(self) -> dict[str, Callable[[DictConfig], list[Path]]]:
        return {"fuse": fuse}

    def evaluation(self, cfg: DictConfig) -> Evaluation:
        """Suites: ``paired`` (default; a folder of any :func:`~fusiondiff.data.pairing.find_samples` layout,
        ground truth optional; default Lytro) and ``synthetic`` (held-out generated pairs with ground truth
        from scikit-image's coffee and rocket, never trained on). Fused images are quantised to 8 bits (as if
        saved as PNG) before scoring; fusion metrics use 0..255, reference metrics [-1, 1]."""
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
        else:
            raise ConfigError(f"unknown suite {suite!r} for task multifocus; valid: paired, synthetic, layered")
        baselines = {name: (lambda d, fn=fn: fn(d["sources"])) for name, fn in CLASSICAL_METHODS.items()}

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
    from fusiondiff.pipeline import SamplerConfig, Tiling, resolve_device
    from fusiondiff.progress import eta

    if cfg.inputs and cfg.input_dir:
        raise ConfigError("give either inputs=[a,b,...] (or a folder / glob of frames) or input_dir=..., not both")
    if cfg.method not in STACK_METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; valid: {', '.join(STACK_METHODS)}")
    sampler, tiling = SamplerConfig.from_config(cfg.sampler).check(), Tiling.from_config(cfg).check()
    aligning = AlignConfig.from_config(cfg.align)
    device = resolve_device(cfg.device)
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
    shapes = {name: check_source_files(paths, cfg.resize) for name, paths, _ in todo}  # decoded now, one at a time
    pipe = None
    if cfg.method == "model":
        pipe = load_pipeline(cfg.ckpt, device=device)
        sampler.check(pipe.schedule.num_timesteps)
        for n, h, w in shapes.values():  # a longer stack is chained through a fixed-arity model; a shorter one is refused
            pipe.check_sources(n if pipe.num_sources is None else min(n, pipe.num_sources), h, w)
        log.info("model: %s", cfg.ckpt or "the bundled multi-focus model")
    written = []
    begin = time.perf_counter()
    for k, (name, paths, out) in enumerate(todo, 1):
        start = time.perf_counter()
        stack = (cfg.method != "model" or aligning.method != "none" or cfg.depth or cfg.valid_mask
                 or len(paths) != (pipe.num_sources or len(paths)))  # fmt: skip
        if stack:
            written += fuse_stack_job(cfg, pipe, paths, out, aligning, sampler, tiling)
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


def fuse_stack_job(cfg: DictConfig, pipe, paths: list[Path], out: Path, aligning, sampler, tiling) -> list[Path]:
    """One stack: fuse (:func:`fusiondiff.stacking.fuse_stack`) and write the fused image with the reference
    frame's EXIF/ICC, and the depth map, valid mask and transforms the config asks for."""
    import json

    import numpy as np

    from fusiondiff.data.io import atomic_write_bytes, write_image
    from fusiondiff.data.stacks import read_metadata
    from fusiondiff.stacking import depth_preview, fuse_stack

    fn, margin = stack_fuser(cfg.method, pipe, sampler, cfg.seed, tiling)
    channels = pipe.channels if pipe is not None else None
    result = fuse_stack(paths, fn, aligning, margin=margin, depth=bool(cfg.depth), channels=channels)
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
