"""``infer(cfg)``: fuse images named on the command line, or every sample of a folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fusiondiff.data.datasets import load_sources
from fusiondiff.data.io import read_image, write_image
from fusiondiff.data.pairing import find_samples
from fusiondiff.inference import FusionPipeline

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLE_SOURCES = (ASSETS / "example_A.png", ASSETS / "example_B.png")
SAMPLER_KEYS = ("name", "steps", "spacing", "clip_x0")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but no CUDA GPU is available; use device=cpu or device=auto")
    return device


def fuse_files(pipe: FusionPipeline, paths: list[Path], cfg: DictConfig) -> torch.Tensor:
    """Fuse the images at ``paths`` with the settings in ``cfg``; returns [C, H, W] in [-1, 1]."""
    sources = load_sources(paths, channels=pipe.channels, resize=cfg.resize)
    s = cfg.sampler
    options = {k: v for k, v in OmegaConf.to_container(s, resolve=True).items() if k not in SAMPLER_KEYS}
    return pipe(
        sources,
        sampler=s.name,
        steps=s.steps,
        spacing=s.get("spacing", "uniform"),
        clip_x0=s.get("clip_x0", True),
        seed=cfg.seed,
        tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap,
        tile_batch=cfg.tile_batch,
        **options,
    ).cpu()


def load_mask(spec: str, height: int, width: int) -> torch.Tensor:
    """``left_right`` / ``right_left`` split, or a mask image (white = first image) of the sources' size, as [H, W] in [0, 1]."""
    from fusiondiff.fusion.noise_space import half_mask

    if spec in ("left_right", "right_left"):
        return half_mask(height, width, left="A" if spec == "left_right" else "B")
    mask = (read_image(spec, channels=1)[0] + 1) / 2
    if mask.shape != (height, width):
        raise ValueError(f"mask {spec} is {tuple(mask.shape)}, the images are {(height, width)}; resize it to match")
    return mask.double()


def noise_fusion(cfg: DictConfig) -> list[Path]:
    """Zero-shot fusion of ``cfg.inputs`` in the noise space of the unconditional prior ``cfg.ckpt``."""
    from fusiondiff.fusion.noise_space import MODES, ratio_weights
    from fusiondiff.metrics import psnr

    f = cfg.fusion
    if f.mode not in MODES:
        raise ValueError(f"unknown fusion.mode {f.mode!r}; valid: {', '.join(MODES)}")
    if not cfg.inputs or len(cfg.inputs) < 2:
        raise ValueError("mode=noise_fusion needs inputs=[a.png,b.png,...] (two or more images)")
    pipe = FusionPipeline.from_file(cfg.ckpt, device=resolve_device(cfg.device))
    paths = [Path(p) for p in cfg.inputs]
    images = load_sources(paths, channels=pipe.channels, resize=cfg.resize)
    weights = list(f.weights) if f.weights else ratio_weights(float(f.ratio)).tolist()
    if len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weights for {len(paths)} images (set fusion.weights=[...] for N > 2)")
    mask = load_mask(f.mask, *images.shape[-2:]) if f.mode == "mask" and f.mask else None
    start = time.perf_counter()
    inv = pipe.invert_images(images, steps=f.steps, eta=f.eta, seed=cfg.seed)
    fused = pipe.fuse_inverted(inv, weights, f.mode, skip=f.skip, mask=mask)
    out = Path(cfg.output)
    written = [write_image(out, fused, bit_depth=cfg.bit_depth)]
    log.info("noise fusion (%s, weights %s, skip %d) -> %s (%.1f s)", f.mode, weights, f.skip, out, time.perf_counter() - start)
    if f.save_reconstructions:
        for i, path in enumerate(paths):
            one_hot = [1.0 if j == i else 0.0 for j in range(len(paths))]
            rec = pipe.fuse_inverted(inv, one_hot, "linear")
            rec_path = out.with_name(f"{out.stem}_reconstruction_{i + 1}{out.suffix}")
            written.append(write_image(rec_path, rec, bit_depth=cfg.bit_depth))
            log.info("inversion check: %s regenerated with PSNR %.2f dB -> %s", path.name, psnr(rec, images[i]).item(), rec_path)
    return written


def infer(cfg: DictConfig) -> list[Path]:
    """Run inference as configured by conf/infer.yaml; returns the written files."""
    if cfg.get("mode", "fuse") == "noise_fusion":
        return noise_fusion(cfg)
    if cfg.get("mode", "fuse") != "fuse":
        raise ValueError(f"unknown mode {cfg.mode!r}; valid: fuse, noise_fusion")
    if cfg.inputs and cfg.input_dir:
        raise ValueError("give either inputs=[a,b,...] or input_dir=..., not both")
    pipe = FusionPipeline.from_file(cfg.ckpt, device=resolve_device(cfg.device))
    log.info("model: %s", cfg.ckpt or "the bundled multi-focus model")
    jobs: list[tuple[str, list[Path], Path]] = []
    if cfg.input_dir:
        out_dir = Path(cfg.output_dir)
        for sample in find_samples(cfg.input_dir):
            jobs.append((sample.name, list(sample.sources), out_dir / f"{sample.name}.png"))
    else:
        inputs = [Path(p) for p in cfg.inputs] if cfg.inputs else list(EXAMPLE_SOURCES)
        jobs.append((inputs[0].stem, inputs, Path(cfg.output)))
    written = []
    for k, (name, paths, out) in enumerate(jobs, 1):
        if out.exists() and not cfg.overwrite:
            log.info("[%d/%d] %s: %s exists, skipped", k, len(jobs), name, out)
            continue
        start = time.perf_counter()
        fused = fuse_files(pipe, paths, cfg)
        written.append(write_image(out, fused, bit_depth=cfg.bit_depth))
        log.info("[%d/%d] %s -> %s (%.1f s)", k, len(jobs), name, out, time.perf_counter() - start)
    return written
