"""Unconditional models: priors of single images (``task=unconditional``), used zero-shot.

An unconditional ε-model has no sources to fuse; its use is the noise space of :mod:`fusiondiff.zero_shot`.
So this task owns the zero-shot inference modes ``noise_fusion``, ``style_fusion`` and ``inpaint``, which
take any prior (one trained here, a diffusers pixel model or Stable Diffusion: ``prior=``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fusiondiff.errors import ConfigError
from fusiondiff.progress import Progress
from fusiondiff.tasks.base import Task, register_task

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from fusiondiff.evaluation import Evaluation

log = logging.getLogger(__name__)
STYLE_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


class UnconditionalTask(Task):
    name = "unconditional"
    aliases = ("zero_shot",)

    def residual_bases(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        return {}  # no sources, so no residual base

    def modes(self) -> dict[str, Callable[[DictConfig], list[Path]]]:
        return {"noise_fusion": noise_fusion, "style_fusion": style_fusion, "inpaint": inpaint}

    def evaluation(self, cfg: DictConfig) -> Evaluation:
        """``task=zero_shot``: the prior at ``prior`` (default: the shipped one) on ``size`` (96) px crops of the
        held-out photos coffee and rocket, ``steps`` (50) inversion steps.

        * suite ``inpaint`` (default): a seeded stroke/box hole of 15-30 % per photo (``suite_seed``, 0);
          methods ``telea`` (OpenCV), ``repaint``, ``repaint_j10_r5`` (resampling jumps), ``edit_friendly``;
          PSNR and LPIPS against the photo; paired against ``telea``.
        * suite ``style``: content -> style for both orders at strengths 0, 0.25, 0.5, 0.75, 1 (the ``style``
          rule); the content distance (LPIPS to A) and the style distance (VGG16 Gram matrices to B).
        """
        from fusiondiff.data.datasets import heldout_pair
        from fusiondiff.data.degradations import random_hole_mask
        from fusiondiff.evaluation import Evaluation, Item, Method, Metric
        from fusiondiff.metrics import lpips_distance, psnr
        from fusiondiff.tasks.restoration import opencv_inpaint
        from fusiondiff.zero_shot import NoiseSpaceFusion, load_prior

        float32_only(cfg)
        suite, size = cfg.get("suite") or "inpaint", cfg.get("size") or 96
        steps, seed = (cfg.get("steps") or [None])[0] or 50, cfg.get("suite_seed") or 0
        images = heldout_pair(size)
        fuser = NoiseSpaceFusion(load_prior(cfg.get("prior")))
        if suite == "inpaint":
            masks = [
                random_hole_mask(size, size, torch.Generator().manual_seed(seed + k), coverage=(0.15, 0.3)) for k in range(2)
            ]
            items = [Item(name, lambda k=k: {"sources": images[k : k + 1], "target": images[k], "mask": masks[k]})
                     for k, name in enumerate(("coffee", "rocket"))]  # fmt: skip

            def prior_inpaint(**opts):
                return lambda d: fuser.inpaint(d["target"], d["mask"], steps=steps, seed=cfg.seed, **opts)

            methods = [
                Method("telea", lambda d: opencv_inpaint(d["target"] * (1 - d["mask"]), d["mask"], "telea")),
                Method("repaint", prior_inpaint(), "model", steps),
                Method("repaint_j10_r5", prior_inpaint(jump_length=10, resample=5), "model", steps),
                Method("edit_friendly", prior_inpaint(method="edit_friendly"), "model", steps),
            ]
            metrics = [Metric("psnr", lambda out, d: psnr(out, d["target"]).item(), needs=("target",)),
                       Metric("lpips", lambda out, d: lpips_distance(out, d["target"]).item(), needs=("target",))]  # fmt: skip
            about = f"zero-shot inpainting: {size} px coffee and rocket, a seeded 15-30 % hole each (seed {seed}), {steps} steps"
            return Evaluation(about, items, methods, metrics, baseline=cfg.get("baseline") or "telea")
        if suite == "style":
            from fusiondiff.metrics.style import content_distance, style_distance

            combos = [(a, b, r) for a, b in ((0, 1), (1, 0)) for r in STYLE_STRENGTHS]
            label = ("coffee", "rocket")

            def pair(a: int, b: int, r: float):
                return lambda: {"sources": images[[a, b]], "content": images[a], "style": images[b], "ratio": r, "pair": (a, b)}

            items = [Item(f"{label[a]}_to_{label[b]}_r{r:.2f}", pair(a, b, r)) for a, b, r in combos]
            inversions: dict = {}

            def style(d):
                if d["pair"] not in inversions:
                    inversions[d["pair"]] = fuser.invert(d["sources"], steps=steps, seed=cfg.seed)
                return fuser.fuse(inversions[d["pair"]], [1 - d["ratio"], d["ratio"]], "style")[0]

            metrics = [Metric("content", lambda out, d: content_distance(out, d["content"]).item()),
                       Metric("style", lambda out, d: style_distance(out, d["style"]).item())]  # fmt: skip
            strengths = ", ".join(map(str, STYLE_STRENGTHS))
            about = f"style fusion: {size} px coffee and rocket, both orders, strengths {strengths}, {steps} steps"
            return Evaluation(about, items, [Method("style", style, "model", steps)], metrics)
        raise ConfigError(f"unknown suite {suite!r} for task zero_shot; valid: inpaint, style")


def load_mask(spec: str, height: int, width: int) -> torch.Tensor:
    """``left_right`` / ``right_left`` split, or a mask image (white = first image) of the sources' size, as [H, W] in [0, 1]."""
    from fusiondiff.data.io import read_image
    from fusiondiff.zero_shot import half_mask

    if spec in ("left_right", "right_left"):
        return half_mask(height, width, left="A" if spec == "left_right" else "B")
    mask = (read_image(spec, channels=1)[0] + 1) / 2
    if mask.shape != (height, width):
        raise ConfigError(f"mask {spec} is {tuple(mask.shape)}, the images are {(height, width)}; resize it to match")
    return mask.double()


def check_numbers(section, ints: dict[str, int], floats: dict[str, float], prefix: str = "fusion") -> None:
    """Whole numbers and reals of a config section, each at least its minimum (keys that are absent or null
    are skipped): ``fusion.steps=0`` is refused as such, not through a later consequence."""
    for key, low in {**ints, **floats}.items():
        value = section.get(key)
        if value is None:
            continue
        whole = key in ints
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise ConfigError(f"{prefix}.{key} must be a {'whole number' if whole else 'number'} >= {low}, got {value!r}")
        if not value >= low:
            raise ConfigError(f"{prefix}.{key} must be >= {low}, got {value}")


def float32_only(cfg: DictConfig) -> None:
    """The zero-shot modes run their prior in float32: refuse ``precision=bf16`` rather than ignore it."""
    from fusiondiff.pipeline import check_precision

    if check_precision(cfg.get("precision") or "fp32") != "fp32":
        raise ConfigError(f"precision={cfg.precision} is for trained models (infer.py fuse / hdr / restore and their "
                          "evaluations); the zero-shot prior runs in float32: drop precision=")  # fmt: skip


def noise_fusion(cfg: DictConfig) -> list[Path]:
    """Zero-shot fusion of ``cfg.inputs`` (or the jobs of ``fusion.input_yaml``) in the noise space of ``cfg.prior``."""
    from omegaconf import OmegaConf

    from fusiondiff.data.datasets import read_sources
    from fusiondiff.data.io import check_outputs, to_channels, write_image
    from fusiondiff.metrics import psnr
    from fusiondiff.pipeline import resolve_device
    from fusiondiff.zero_shot import RULES, NoiseSpaceFusion, Prompts, load_prior, ratio_weights
    from fusiondiff.zero_shot.jobs import NoiseFusionJob, jobs_from_yaml

    float32_only(cfg)
    fusion = OmegaConf.to_container(cfg.fusion, resolve=True)
    input_yaml = fusion.pop("input_yaml", None)
    if input_yaml:
        if cfg.inputs:
            raise ConfigError("give either inputs=[...] or fusion.input_yaml=..., not both")
        jobs = jobs_from_yaml(input_yaml, fusion, Path(cfg.output))
    else:
        if not cfg.inputs or len(cfg.inputs) < 2:
            raise ConfigError("mode=noise_fusion needs inputs=[a.png,b.png,...] (two or more images) or fusion.input_yaml=...")
        jobs = [NoiseFusionJob([Path(p) for p in cfg.inputs], Path(cfg.output), fusion)]
    every_source = [p for job in jobs for p in job.images]
    loaded = []
    for job in jobs:  # validate everything before the (slow) model load
        f = job.fusion
        check_numbers(f, ints={"steps": 1, "skip": 0, "strip_frames": 1}, floats={"eta": 0.0, "cfg_src": 0.0})
        if not 0 <= f["skip"] < f["steps"]:
            raise ConfigError(f"fusion.skip must be in 0..{f['steps'] - 1} (fusion.steps={f['steps']}), got {f['skip']}")
        if f["mode"] not in RULES:
            raise ConfigError(f"unknown fusion.mode {f['mode']!r}; valid: {', '.join(RULES)}")
        f["weights"] = list(f["weights"]) if f["weights"] else ratio_weights(float(f["ratio"])).tolist()
        if len(f["weights"]) != len(job.images):
            raise ConfigError(f"{len(f['weights'])} weights for {len(job.images)} images (set fusion.weights=[...] for N > 2)")
        out = job.output
        outputs = [out] + ([out.with_name(f"{out.stem}_strip{out.suffix}")] if f["save_strip"] else [])
        if f["save_reconstructions"]:
            outputs += [out.with_name(f"{out.stem}_reconstruction_{i + 1}{out.suffix}") for i in range(len(job.images))]
        check_outputs(outputs, every_source, cfg.bit_depth, cfg.overwrite)
        images = read_sources(job.images, resize=cfg.resize)
        if f["mode"] == "mask" and f["mask"]:
            load_mask(f["mask"], *images[0].shape[-2:])
        loaded.append(images if len(jobs) == 1 else None)
    prior = load_prior(cfg.prior, device=resolve_device(cfg.device))
    log.info("prior: %s", prior.name)
    for job, images in zip(jobs, loaded, strict=True):
        prior.check_size(*(images or read_sources(job.images, resize=cfg.resize))[0].shape[-2:])
    written = []
    for k, (job, images) in enumerate(zip(jobs, loaded, strict=True), 1):
        f = job.fusion
        evaluations = 2 * f["steps"] - f["skip"] + (f["steps"] if f["save_reconstructions"] else 0)
        progress = Progress(evaluations, f"noise fusion {k}/{len(jobs)}: network evaluations")
        prompts = Prompts(f["prompt_src"] or "", f["prompt_tar"], float(f["cfg_src"]), f["cfg_tar"])
        fuser = NoiseSpaceFusion(prior, prompts, on_step=progress.advance)
        images = images or read_sources(job.images, resize=cfg.resize)
        images = torch.stack([to_channels(im, prior.channels) for im in images])
        mask = load_mask(f["mask"], *images.shape[-2:]) if f["mode"] == "mask" and f["mask"] else None
        start = time.perf_counter()
        inv = fuser.invert(images, steps=f["steps"], eta=f["eta"], seed=cfg.seed)
        t_inv = time.perf_counter() - start
        fused, frames = fuser.fuse(inv, f["weights"], f["mode"], skip=f["skip"], mask=mask, slerp=f["slerp"],
                                   strip_frames=f["strip_frames"] if f["save_strip"] else 0)  # fmt: skip
        out = job.output
        written.append(write_image(out, fused, bit_depth=cfg.bit_depth))
        log.info(
            "noise fusion (%s, weights %s, skip %d) -> %s (inversion %.2f s/step for %d images, total %.1f s)",
            f["mode"], [round(w, 3) for w in f["weights"]], f["skip"], out, t_inv / f["steps"], len(job.images),
            time.perf_counter() - start,
        )  # fmt: skip
        if frames:
            strip_path = out.with_name(f"{out.stem}_strip{out.suffix}")
            written.append(write_image(strip_path, torch.cat(frames, dim=-1), bit_depth=cfg.bit_depth))
            log.info("x0 estimates at %d of the %d regeneration steps -> %s", len(frames), f["steps"] - f["skip"], strip_path)
        if f["save_reconstructions"]:
            recs = fuser.reconstruct(inv).cpu()
            for i, path in enumerate(job.images):
                rec_path = out.with_name(f"{out.stem}_reconstruction_{i + 1}{out.suffix}")
                written.append(write_image(rec_path, recs[i], bit_depth=cfg.bit_depth))
                score = psnr(recs[i], images[i]).item()
                log.info("inversion check: %s regenerated with PSNR %.2f dB -> %s", path.name, score, rec_path)
        progress.close()
    return written


def style_fusion(cfg: DictConfig) -> list[Path]:
    """``mode=style_fusion``: the structure of ``content`` with the appearance of ``style`` (``fusion.ratio`` =
    strength), the ``style`` rule of :func:`noise_fusion`."""
    from omegaconf import open_dict

    if not cfg.content or not cfg.style:
        raise ConfigError("mode=style_fusion needs content=<image A> and style=<image B> (fusion.ratio = style strength)")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.inputs, cfg.fusion.mode = [cfg.content, cfg.style], "style"
    return noise_fusion(cfg)


def inpaint(cfg: DictConfig) -> list[Path]:
    """Zero-shot inpainting of ``input`` inside ``mask`` (white = hole) with the unconditional ``prior``."""
    from fusiondiff.data.degradations import read_mask
    from fusiondiff.data.io import check_outputs, read_image, to_channels, write_image
    from fusiondiff.pipeline import resolve_device
    from fusiondiff.zero_shot import INPAINT_METHODS, NoiseSpaceFusion, Prompts, load_prior

    float32_only(cfg)
    if not cfg.input or not cfg.mask:
        raise ConfigError("mode=inpaint needs input=<image> and mask=<hole mask image, white = hole>")
    opts = cfg.inpaint
    if opts.method not in INPAINT_METHODS:
        raise ConfigError(f"unknown inpaint.method {opts.method!r}; valid: {', '.join(INPAINT_METHODS)}")
    check_numbers(opts, ints={"steps": 1, "jump_length": 1, "resample": 1}, floats={"eta": 0.0}, prefix="inpaint")
    check_outputs([Path(cfg.output)], [cfg.input, cfg.mask], cfg.bit_depth, cfg.overwrite)
    image = read_image(cfg.input)
    mask = read_mask(cfg.mask, *image.shape[-2:])
    prior = load_prior(cfg.prior, device=resolve_device(cfg.device))
    image = to_channels(image, prior.channels)
    prompt, guidance = cfg.fusion.prompt_tar or cfg.fusion.prompt_src or "", float(cfg.fusion.cfg_tar or cfg.fusion.cfg_src)
    steps, jump = opts.steps, opts.jump_length
    jumps = (opts.resample - 1) * jump * len(range(jump, steps, jump))  # repaint's resampling passes
    evaluations = 2 * steps if opts.method == "edit_friendly" else steps + jumps
    progress = Progress(evaluations, "inpainting: network evaluations")
    fuser = NoiseSpaceFusion(prior, Prompts(prompt, None, guidance), on_step=progress.advance)
    start = time.perf_counter()
    filled = fuser.inpaint(image, mask, steps=opts.steps, method=opts.method, jump_length=opts.jump_length,
                           resample=opts.resample, eta=opts.eta, seed=cfg.seed)  # fmt: skip
    progress.close()
    out = write_image(Path(cfg.output), filled, bit_depth=cfg.bit_depth)
    log.info("inpainted %s (%s, %.1f %% hole) -> %s (%.1f s)", cfg.input, opts.method, 100 * mask.mean().item(), out,
             time.perf_counter() - start)  # fmt: skip
    return [out]


TASK = register_task(UnconditionalTask)
