"""Restoration: one degraded image (inpainting, denoising, deblurring, super-resolution) -> the clean image.

A restoration sample's single source is ``concat(degraded image, hole mask)`` (:mod:`fusiondiff.data.degradations`).
The task's knowledge: the classical baselines per degradation (OpenCV Telea / Navier-Stokes inpainting,
non-local means, unsharp masking), the ``telea`` / ``navier_stokes`` residual bases with their network
condition (the degraded image with its holes filled by that base), the ``restore`` inference mode and the
evaluation on held-out synthetic degradations or a folder of test pairs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fusiondiff.data.degradations import split_restoration_source
from fusiondiff.diffusion.inpainting import keep_known
from fusiondiff.errors import ConfigError
from fusiondiff.filters import noise_sigma, unsharp_mask
from fusiondiff.registry import Registry
from fusiondiff.tasks.base import Task, load_pipeline, mean_base, register_task

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from fusiondiff.evaluation import Evaluation

log = logging.getLogger(__name__)


OPENCV_INPAINT = Registry("OpenCV inpainting method", {"telea": "INPAINT_TELEA", "navier_stokes": "INPAINT_NS"})


def opencv_inpaint(image: torch.Tensor, mask: torch.Tensor, method: str = "telea", radius: int = 3) -> torch.Tensor:
    """OpenCV inpainting (on 8 bits) of image [C, H, W] in [-1, 1] inside ``mask`` [1, H, W] (1 = hole); the
    known pixels are returned exactly as given. The classical baselines of restoration (Telea, Navier-Stokes)."""
    import cv2
    import numpy as np

    flag = getattr(cv2, OPENCV_INPAINT[method])
    hole = mask[0] > 0.5
    if not hole.any():
        return image.clone()
    img = ((image.detach().float().cpu().permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    filled = cv2.inpaint(np.ascontiguousarray(img), hole.cpu().numpy().astype(np.uint8) * 255, radius, flag)
    filled = torch.from_numpy(filled.reshape(img.shape)).permute(2, 0, 1).to(image) / 127.5 - 1
    return torch.where(hole.to(image.device), filled, image)


def nl_means_denoise(image: torch.Tensor) -> torch.Tensor:
    """scikit-image's non-local means on [C, H, W] in [-1, 1] with h = 0.8 sigma, sigma estimated from the
    image (:func:`~fusiondiff.filters.noise_sigma`): the classical denoising baseline."""
    from skimage.restoration import denoise_nl_means

    sigma = noise_sigma((image + 1) / 2)
    img = ((image.detach().double().cpu() + 1) / 2).permute(1, 2, 0).numpy()
    out = denoise_nl_means(img, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True,
                           channel_axis=-1)  # fmt: skip
    return torch.from_numpy(out).permute(2, 0, 1).to(image) * 2 - 1


def unsharp_restore(image: torch.Tensor) -> torch.Tensor:
    """Unsharp masking (Gaussian std 2, amount 1) clipped to [-1, 1]: the classical baseline for a blur whose
    kernel is unknown."""
    return unsharp_mask(image, 2.0, 1.0).clamp(-1, 1)


# classical baselines per degradation, image [C, H, W] -> [C, H, W] (inpainting: opencv_inpaint, which needs
# the mask; sr: the bicubic input itself)
CLASSICAL_RESTORATION = {"noise": {"nl_means": nl_means_denoise}, "blur": {"unsharp_mask": unsharp_restore}, "sr": {}}


def inpaint_fill(sources: torch.Tensor, method: str = "telea", radius: int = 3) -> torch.Tensor:
    """Restoration sources [B, 1, C + 1, H, W] -> [B, C, H, W]: the degraded image with its hole filled by
    :func:`opencv_inpaint` (``telea`` or ``navier_stokes``); images without a hole are returned as they are.
    The ``residual: telea`` / ``navier_stokes`` base of ``task=restoration``: the model starts at that
    classical fill and learns the rest."""
    degraded, mask = split_restoration_source(sources)
    return torch.stack([opencv_inpaint(d, m, method, radius) for d, m in zip(degraded, mask, strict=True)])


def inpaint_condition(sources: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    """The network's view for an inpainting residual: the degraded image's holes filled by the base (with grey
    holes it would have to emulate OpenCV's fill to predict the residual; NOTES.md, session 5); the mask stays."""
    return torch.cat([base[:, None].to(sources.dtype), sources[:, :, base.shape[1] :]], 2)


class RestorationTask(Task):
    name = "restoration"

    def residual_bases(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        fills = {name: (lambda sources, name=name: inpaint_fill(sources, name)) for name in OPENCV_INPAINT}
        return {"mean": mean_base, **fills}

    def network_condition(self, residual: str) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None:
        return inpaint_condition if residual in OPENCV_INPAINT else None

    def baselines(self) -> dict[str, Callable[..., torch.Tensor]]:
        """``fn(degraded [C, H, W], mask [1, H, W]) -> restored`` for every degradation's classical method."""
        out: dict[str, Callable[..., torch.Tensor]] = {name: (lambda d, m, name=name: opencv_inpaint(d, m, name))
                                                       for name in OPENCV_INPAINT}  # fmt: skip
        for methods in CLASSICAL_RESTORATION.values():
            out.update({name: (lambda d, m, fn=fn: fn(d)) for name, fn in methods.items()})
        return out

    def modes(self) -> dict[str, Callable[[DictConfig], list[Path]]]:
        return {"restore": restore}

    def evaluation(self, cfg: DictConfig) -> Evaluation:
        """Suites: ``synthetic`` (default): ``num`` (200) patches of ``size`` (64) px of scikit-image's held-out
        photos (coffee, rocket) degraded by ``kind`` with ``suite_seed`` (7; validation uses 1); ``folder``:
        your own test pairs (``degraded/``, ``clean/``, ``mask/`` for inpainting; whole images, any sizes).
        Methods: ``identity`` (the degraded input; for ``sr`` bicubic upsampling), the kind's classical
        baselines, and models (their known pixels kept for inpainting; run over same-size batches with one
        seeded generator). Metrics: PSNR, SSIM, LPIPS (AlexNet), LPIPS-VGG (a second perceptual network as a
        cross-check), SF and AG of the output. Paired intervals against the best baseline per metric (for
        inpainting the best OpenCV fill; otherwise the best of identity and the classical method)."""
        from fusiondiff.data.degradations import DEGRADATIONS, Degrader, PairedRestorationFolder, SyntheticRestoration
        from fusiondiff.evaluation import Evaluation, Item
        from fusiondiff.evaluation.core import batched

        kind, suite = cfg.get("kind") or "inpaint", cfg.get("suite") or "synthetic"
        if kind not in DEGRADATIONS:
            raise ConfigError(f"unknown kind {kind!r}; valid: {', '.join(DEGRADATIONS)}")
        if suite == "synthetic":
            from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS

            num, size, seed = cfg.get("num") or 200, cfg.get("size") or 64, cfg.get("suite_seed") or 7
            data = SyntheticRestoration(Degrader([kind]), photos=list(SKIMAGE_HELDOUT_PHOTOS), num_samples=num, crop_size=size,
                                        deterministic=True, seed=seed)  # fmt: skip
            about = f"{kind}: {len(data)} held-out {size} px patches of {', '.join(SKIMAGE_HELDOUT_PHOTOS)} (seed {seed})"
        elif suite == "folder":
            if not cfg.get("dataset"):
                raise ConfigError("suite=folder needs dataset=<folder with degraded/, clean/ and (inpainting) mask/>")
            data = PairedRestorationFolder(cfg.dataset)
            about = f"{kind}: {len(data)} images of `{cfg.dataset}`"
        else:
            raise ConfigError(f"unknown suite {suite!r} for task restoration; valid: synthetic, folder")

        def loader(i: int):
            def load() -> dict:
                item = data[i]
                degraded, mask = split_restoration_source(item["sources"][None])
                if kind == "inpaint" and not mask.any():
                    raise ConfigError(
                        f"kind=inpaint needs a hole in every image ({item['name']} has none: a mask/ folder); else choose kind="
                    )
                return {"sources": item["sources"], "target": item["target"], "degraded": degraded[0], "mask": mask[0]}

            return load

        names = [data.items[i][0] if suite == "folder" else f"restoration_{i:06d}" for i in range(len(data))]
        items = [Item(name, loader(i)) for i, name in enumerate(names)][: cfg.get("max_images") or None]
        if kind == "inpaint":
            classical = {name: (lambda d, name=name: opencv_inpaint(d["degraded"], d["mask"], name)) for name in OPENCV_INPAINT}
            pool = list(classical)  # the grey-hole input is no baseline for inpainting
        else:
            classical = {name: (lambda d, fn=fn: fn(d["degraded"])) for name, fn in CLASSICAL_RESTORATION[kind].items()}
            pool = ["identity", *classical]
        baselines = {"identity": lambda d: d["degraded"], **classical}

        def model_run(pipe, sampler, tiling):
            def run_batch(everything: list[dict]) -> list[torch.Tensor]:
                out: list[torch.Tensor | None] = [None] * len(everything)
                shapes: dict[tuple, list[int]] = {}
                for k, d in enumerate(everything):
                    shapes.setdefault(tuple(d["sources"].shape), []).append(k)
                for idx in shapes.values():
                    restored = pipe(torch.stack([everything[k]["sources"] for k in idx]), sampler, seed=cfg.seed, tiling=tiling)
                    for k, r in zip(idx, restored.cpu(), strict=True):
                        d = everything[k]
                        out[k] = keep_known(r, d["degraded"], d["mask"]) if kind == "inpaint" else r
                return out

            return batched(run_batch, items)

        methods = self.methods(cfg, baselines, model_run, list(baselines))
        table = restoration_metrics()
        metrics = [table[name] for name in (cfg.get("metrics") or RESTORATION_METRIC_NAMES)]
        return Evaluation(about, items, methods, metrics, baseline=cfg.get("baseline") or "best", baselines=pool,
                          figure=restoration_figure, extra={"kind": kind})  # fmt: skip


def restore(cfg: DictConfig) -> list[Path]:
    """``mode=restore``: a trained restoration model on ``input`` (+ optional hole ``mask``) -> ``output``, or on
    every image of ``input_dir`` (``degraded/`` with optional ``mask/`` and ``clean/``, or plain images) ->
    ``output_dir/<name>.png``, logging PSNR / SSIM where ``clean/`` has the reference."""
    from fusiondiff.data.degradations import load_degraded, restoration_files
    from fusiondiff.data.io import check_outputs, read_image, write_image
    from fusiondiff.metrics import psnr, ssim
    from fusiondiff.pipeline import SamplerConfig, Tiling, check_precision, resolve_device
    from fusiondiff.progress import eta

    if cfg.input and cfg.input_dir:
        raise ConfigError("give either input=<image> or input_dir=<folder>, not both")
    if not cfg.input and not cfg.input_dir:
        raise ConfigError("mode=restore needs ckpt=<model> and input=<degraded image> (and mask=<hole mask> for "
                         "inpainting) or input_dir=<folder: degraded/ + optional mask/, clean/; or plain images>")  # fmt: skip
    sampler, tiling = SamplerConfig.from_config(cfg.sampler).check(), Tiling.from_config(cfg).check()
    device = resolve_device(cfg.device)
    precision = check_precision(cfg.precision, device)
    if cfg.input_dir:
        out_dir = Path(cfg.output_dir)
        jobs = [(d, m, out_dir / f"{stem}.png", c) for stem, d, m, c in restoration_files(cfg.input_dir)]
    else:
        jobs = [(Path(cfg.input), cfg.mask, Path(cfg.output), None)]
    every_source = [p for path, mask_path, _, clean_path in jobs for p in (path, mask_path, clean_path) if p]
    todo = [job for job in jobs if check_outputs([job[2]], every_source, cfg.bit_depth, cfg.overwrite, bool(cfg.input_dir))]
    if len(todo) < len(jobs):
        log.info("%d of %d outputs exist and are kept (overwrite=true replaces them)", len(jobs) - len(todo), len(jobs))
    sizes = [load_degraded(path, mask_path).shape[-2:] for path, mask_path, _, _ in todo]  # every input decodes
    pipe = load_pipeline(cfg.ckpt, device=device, task="restoration", precision=precision)
    sampler.check(pipe.schedule.num_timesteps)
    for h, w in sizes:
        pipe.check_sources(1, h, w)
    written = []
    begin = time.perf_counter()
    for k, (path, mask_path, out, clean_path) in enumerate(todo, 1):
        sources = load_degraded(path, mask_path, channels=pipe.channels)
        start = time.perf_counter()
        restored = pipe(sources, sampler, seed=cfg.seed, tiling=tiling).cpu()
        degraded, mask = split_restoration_source(sources[None])
        if mask.any():
            restored = keep_known(restored, degraded[0], mask[0])
        written.append(write_image(out, restored, bit_depth=cfg.bit_depth))
        score = ""
        if clean_path is not None:
            clean = read_image(clean_path, pipe.channels)[None]
            if clean.shape[1:] != restored.shape:
                log.warning("%s: size %s differs from %s's; not scored", clean_path, tuple(clean.shape[1:]), path)
            else:
                score = f", PSNR {psnr(restored[None], clean).item():.2f} dB, SSIM {ssim(restored[None], clean).item():.4f}"
        took = time.perf_counter() - start
        log.info("[%d/%d] restored %s -> %s (%.1f s%s, %s)", k, len(todo), path, out, took, score, eta(begin, k, len(todo)))
    return written


def restoration_metrics() -> Registry:
    """The restoration metrics by name: reference ones on the whole image, SF / AG of the output (0..255)."""
    from fusiondiff.evaluation import Metric
    from fusiondiff.metrics import lpips_distance, psnr, ssim
    from fusiondiff.metrics.fusion import average_gradient, spatial_frequency, to_255

    def ref(fn):
        return lambda out, d: float(fn(out[None], d["target"][None]).double().flatten()[0])

    return Registry("restoration metric", {
        "psnr": Metric("psnr", ref(psnr), needs=("target",)),
        "ssim": Metric("ssim", ref(ssim), needs=("target",)),
        "lpips": Metric("lpips", ref(lpips_distance), needs=("target",)),  # AlexNet, LPIPS's default
        "lpips_vgg": Metric("lpips_vgg", ref(lambda x, y: lpips_distance(x, y, net="vgg")), needs=("target",)),
        "sf": Metric("sf", lambda out, d: float(spatial_frequency(to_255(out, quantise=False)))),
        "ag": Metric("ag", lambda out, d: float(average_gradient(to_255(out, quantise=False)))),
    })  # fmt: skip


RESTORATION_METRIC_NAMES = ("psnr", "ssim", "lpips", "lpips_vgg", "sf", "ag")


def restoration_figure(evaluation: Evaluation, path: Path) -> Path:
    """Columns: every method, then the clean image; rows: the 4 largest holes (inpainting; else the first 4
    items), 3x nearest-neighbour enlarged, rows padded to the widest."""
    from fusiondiff.data.io import write_image

    everything = [{"name": it.name, **it.load()} for it in evaluation.items]
    order = range(len(everything))
    if evaluation.extra.get("kind") == "inpaint":
        order = sorted(order, key=lambda k: -float(everything[k]["mask"].mean()))
    rows = [torch.cat([*(m.run(everything[k]) for m in evaluation.methods), everything[k]["target"]], dim=-1)
            for k in list(order)[:4]]  # fmt: skip
    width = max(r.shape[-1] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=-1.0) for r in rows]  # black right margin
    grid = torch.nn.functional.interpolate(torch.cat(rows, dim=-2)[None], scale_factor=3, mode="nearest")[0]
    return write_image(path, grid)


TASK = register_task(RestorationTask)
