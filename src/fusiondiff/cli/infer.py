"""``infer(cfg)``: fuse images named on the command line, or every sample of a folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
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


class OutputIsSourceError(ValueError):
    """An output path that names one of the inputs: writing it would destroy a source."""


def check_not_a_source(outputs: list[Path], inputs: list[Path | str | None]) -> None:
    """Refuse (before any compute) an output that is one of the inputs: a source is never overwritten, whatever
    ``overwrite`` says. Compares resolved paths, and the files themselves where both exist (links, case)."""
    sources = [Path(p) for p in inputs if p]
    for out in outputs:
        for src in sources:
            same = out.resolve() == src.resolve()
            if not same and out.exists() and src.exists():
                same = out.samefile(src)
            if same:
                raise OutputIsSourceError(
                    f"output {out} is the input {src}: writing it would overwrite a source; choose another output="
                )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but no CUDA GPU is available; use device=cpu or device=auto")
    return device


def fuse_files(pipe: FusionPipeline, paths: list[Path], cfg: DictConfig) -> torch.Tensor:
    """Fuse the images at ``paths`` with the settings in ``cfg``; returns [C, H, W] in [-1, 1]."""
    return fuse_sources(pipe, load_sources(paths, channels=pipe.channels, resize=cfg.resize), cfg)


def fuse_sources(pipe: FusionPipeline, sources: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """Run the pipeline on sources [N, C, H, W] with the sampler and tiling settings in ``cfg``."""
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


# keys of the original edit-friendly-DDPM tool's YAML (a list of entries) -> ours
YAML_KEYS = {
    "init_img": "first image",
    "second_image": "second image",
    "second_img": "second image",
    "images": "all images (N >= 2), instead of init_img / second_image",
    "source_prompt": "fusion.prompt_src",
    "target_prompts": "fusion.prompt_tar (one output per prompt)",
    "target_prompt": "fusion.prompt_tar",
    "fusion_ratio": "fusion.ratio",
    "fusion_mode": "fusion.mode",
    "skip": "fusion.skip",
    "cfg_src": "fusion.cfg_src",
    "cfg_tar": "fusion.cfg_tar",
    "num_diffusion_steps": "fusion.steps",
    "eta": "fusion.eta",
    "weights": "fusion.weights",
    "output": "output",
}


@dataclass
class NoiseFusionJob:
    images: list[Path]
    output: Path
    fusion: dict


def jobs_from_yaml(path: str | Path, fusion: dict, output: Path) -> list[NoiseFusionJob]:
    """Jobs from a YAML in the original tool's format: one entry (or a list) with ``init_img``,
    ``second_image``, ``source_prompt``, ``target_prompts`` and optional per-entry settings."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fusion.input_yaml not found: {path}")
    entries = yaml.safe_load(path.read_text())
    entries = [entries] if isinstance(entries, dict) else entries
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a mapping or a list of mappings with init_img, second_image, source_prompt, ...")
    jobs = []
    for k, entry in enumerate(entries):
        unknown = sorted(set(entry) - set(YAML_KEYS))
        if unknown:
            raise ValueError(f"{path}, entry {k}: unknown key(s) {unknown}; known: {', '.join(YAML_KEYS)}")
        if "images" in entry:
            images = list(entry["images"])
        else:
            second = entry.get("second_image", entry.get("second_img"))
            if "init_img" not in entry or second is None:
                raise ValueError(f"{path}, entry {k}: give init_img and second_image (or images: [...])")
            images = [entry["init_img"], second]
        images = [Path(p) if Path(p).is_absolute() else path.parent / p for p in images]
        settings = dict(fusion)
        for key, ours in (("fusion_ratio", "ratio"), ("fusion_mode", "mode"), ("skip", "skip"), ("cfg_src", "cfg_src"),
                          ("cfg_tar", "cfg_tar"), ("num_diffusion_steps", "steps"), ("eta", "eta"),
                          ("weights", "weights"), ("source_prompt", "prompt_src")):  # fmt: skip
            if key in entry:
                settings[ours] = entry[key]
        targets = entry.get("target_prompts", entry.get("target_prompt"))
        targets = [targets] if isinstance(targets, str) or targets is None else list(targets)
        base = Path(entry.get("output", output))
        for j, target in enumerate(targets):
            name = base if len(entries) == 1 and len(targets) == 1 else base.with_name(f"{base.stem}_{k}_{j}{base.suffix}")
            jobs.append(NoiseFusionJob(images, name, {**settings, "prompt_tar": target}))
    return jobs


def noise_fusion(cfg: DictConfig) -> list[Path]:
    """Zero-shot fusion of ``cfg.inputs`` (or the jobs of ``fusion.input_yaml``) in the noise space of ``cfg.prior``."""
    from fusiondiff.fusion.noise_space import MODES, ratio_weights
    from fusiondiff.metrics import psnr
    from fusiondiff.priors import load_prior
    from fusiondiff.zero_shot import NoiseSpaceFusion, Prompts

    if cfg.ckpt:
        raise ValueError("mode=noise_fusion takes its model from prior=... (ckpt= is for mode=fuse)")
    fusion = OmegaConf.to_container(cfg.fusion, resolve=True)
    input_yaml = fusion.pop("input_yaml", None)
    if input_yaml:
        if cfg.inputs:
            raise ValueError("give either inputs=[...] or fusion.input_yaml=..., not both")
        jobs = jobs_from_yaml(input_yaml, fusion, Path(cfg.output))
    else:
        if not cfg.inputs or len(cfg.inputs) < 2:
            raise ValueError("mode=noise_fusion needs inputs=[a.png,b.png,...] (two or more images) or fusion.input_yaml=...")
        jobs = [NoiseFusionJob([Path(p) for p in cfg.inputs], Path(cfg.output), fusion)]
    for job in jobs:  # validate everything before the (slow) model load
        check_not_a_source([job.output], job.images)
        f = job.fusion
        if f["mode"] not in MODES:
            raise ValueError(f"unknown fusion.mode {f['mode']!r}; valid: {', '.join(MODES)}")
        f["weights"] = list(f["weights"]) if f["weights"] else ratio_weights(float(f["ratio"])).tolist()
        if len(f["weights"]) != len(job.images):
            raise ValueError(f"{len(f['weights'])} weights for {len(job.images)} images (set fusion.weights=[...] for N > 2)")
        if not 0 <= f["skip"] < f["steps"]:
            raise ValueError(f"fusion.skip must be in 0..{f['steps'] - 1} (fusion.steps={f['steps']}), got {f['skip']}")
    prior = load_prior(cfg.prior, device=resolve_device(cfg.device))
    log.info("prior: %s", prior.name)
    written = []
    for job in jobs:
        f = job.fusion
        fuser = NoiseSpaceFusion(prior, Prompts(f["prompt_src"] or "", f["prompt_tar"], float(f["cfg_src"]), f["cfg_tar"]))
        images = load_sources(job.images, channels=prior.channels, resize=cfg.resize)
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
    return written


def hdr(cfg: DictConfig) -> list[Path]:
    """HDR reconstruction of every scene under ``input_dir`` (one Kalantari scene folder, or a folder of them).

    Writes ``<output_dir>/<scene>.hdr`` (linear radiance, float32) and ``<scene>.png`` (μ-law preview);
    logs PSNR-μ / PSNR-L when the scene has ``HDRImg.hdr``. Large scenes go through SWNE (``tile_size``).
    """
    from fusiondiff.data.hdr import hdr_sources, load_scene, scene_folders, target_to_hdr, tonemap_preview, write_hdr_image
    from fusiondiff.metrics.hdr import psnr_l, psnr_mu

    if not cfg.input_dir:
        raise ValueError("mode=hdr needs input_dir=<scene folder or a folder of scene folders (Kalantari layout)>")
    root = Path(cfg.input_dir)
    folders = [root] if (root / "exposure.txt").is_file() else scene_folders(root)
    pipe = FusionPipeline.from_file(cfg.ckpt, device=resolve_device(cfg.device))
    if pipe.config.get("task", {}).get("name") != "hdr":
        raise ValueError(f"{cfg.ckpt or 'the default bundle'} is not an HDR model (train one with task=hdr)")
    out_dir, written = Path(cfg.output_dir), []
    for folder in folders:
        name = folder.name
        check_not_a_source([out_dir / f"{name}.hdr", out_dir / f"{name}.png"], list(folder.iterdir()))
    for k, folder in enumerate(folders, 1):
        scene = load_scene(folder, require_hdr=False)
        start = time.perf_counter()
        fused = fuse_sources(pipe, hdr_sources(scene.ldrs, scene.times), cfg)
        radiance = target_to_hdr(fused)
        written.append(write_hdr_image(out_dir / f"{scene.name}.hdr", radiance))
        written.append(write_image(out_dir / f"{scene.name}.png", tonemap_preview(radiance), bit_depth=cfg.bit_depth))
        score = ""
        if scene.hdr is not None:
            gt = scene.hdr.clamp(0, 1)
            score = f", PSNR-mu {psnr_mu(radiance, gt).item():.2f} dB, PSNR-L {psnr_l(radiance, gt).item():.2f} dB"
        h, w = radiance.shape[-2:]
        log.info(
            "[%d/%d] %s (%dx%d) -> %s (%.1f s%s)",
            k,
            len(folders),
            scene.name,
            w,
            h,
            written[-2],
            time.perf_counter() - start,
            score,
        )
    return written


def restore(cfg: DictConfig) -> list[Path]:
    """A trained restoration model (task=restoration) on ``input`` (+ optional hole ``mask``) -> ``output``, or on
    every image of ``input_dir`` (``degraded/`` with optional ``mask/`` and ``clean/``, or plain images) ->
    ``output_dir/<name>.png``, logging PSNR / SSIM where ``clean/`` has the reference."""
    from fusiondiff.data.degradations import load_degraded, restoration_files
    from fusiondiff.metrics import psnr, ssim

    if cfg.input and cfg.input_dir:
        raise ValueError("give either input=<image> or input_dir=<folder>, not both")
    if not cfg.input and not cfg.input_dir:
        raise ValueError("mode=restore needs ckpt=<model> and input=<degraded image> (and mask=<hole mask> for "
                         "inpainting) or input_dir=<folder: degraded/ + optional mask/, clean/; or plain images>")  # fmt: skip
    if cfg.input_dir:
        out_dir = Path(cfg.output_dir)
        jobs = [(d, m, out_dir / f"{stem}.png", c) for stem, d, m, c in restoration_files(cfg.input_dir)]
    else:
        jobs = [(Path(cfg.input), cfg.mask, Path(cfg.output), None)]
    for path, mask_path, out, clean_path in jobs:
        check_not_a_source([out], [path, mask_path, clean_path])
    pipe = FusionPipeline.from_file(cfg.ckpt, device=resolve_device(cfg.device))
    if pipe.config.get("task", {}).get("name") != "restoration":
        raise ValueError(f"{cfg.ckpt or 'the default bundle'} is not a restoration model (train one with task=restoration)")
    written = []
    for k, (path, mask_path, out, clean_path) in enumerate(jobs, 1):
        if out.exists() and not cfg.overwrite:
            log.info("[%d/%d] %s exists, skipped", k, len(jobs), out)
            continue
        sources = load_degraded(path, mask_path, channels=pipe.channels)
        start = time.perf_counter()
        restored = fuse_sources(pipe, sources, cfg)
        mask = sources[0, -1:]
        if mask.any():  # inpainting: the known pixels are the input's
            restored = mask * restored + (1 - mask) * sources[0, :-1]
        written.append(write_image(out, restored, bit_depth=cfg.bit_depth))
        score = ""
        if clean_path is not None:
            clean = read_image(clean_path, pipe.channels)[None]
            if clean.shape[1:] != restored.shape:
                log.warning("%s: size %s differs from %s's; not scored", clean_path, tuple(clean.shape[1:]), path)
            else:
                score = f", PSNR {psnr(restored[None], clean).item():.2f} dB, SSIM {ssim(restored[None], clean).item():.4f}"
        log.info("[%d/%d] restored %s -> %s (%.1f s%s)", k, len(jobs), path, out, time.perf_counter() - start, score)
    return written


def inpaint(cfg: DictConfig) -> list[Path]:
    """Zero-shot inpainting of ``input`` inside ``mask`` (white = hole) with the unconditional ``prior``."""
    from fusiondiff.data.degradations import read_mask
    from fusiondiff.data.io import to_channels
    from fusiondiff.priors import load_prior
    from fusiondiff.zero_shot import INPAINT_METHODS, NoiseSpaceFusion, Prompts

    if not cfg.input or not cfg.mask:
        raise ValueError("mode=inpaint needs input=<image> and mask=<hole mask image, white = hole>")
    check_not_a_source([Path(cfg.output)], [cfg.input, cfg.mask])
    opts = cfg.inpaint
    if opts.method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpaint.method {opts.method!r}; valid: {', '.join(INPAINT_METHODS)}")
    image = read_image(cfg.input)
    mask = read_mask(cfg.mask, *image.shape[-2:])
    prior = load_prior(cfg.prior, device=resolve_device(cfg.device))
    image = to_channels(image, prior.channels)
    prompt, guidance = cfg.fusion.prompt_tar or cfg.fusion.prompt_src or "", float(cfg.fusion.cfg_tar or cfg.fusion.cfg_src)
    fuser = NoiseSpaceFusion(prior, Prompts(prompt, None, guidance))
    start = time.perf_counter()
    filled = fuser.inpaint(image, mask, steps=opts.steps, method=opts.method, jump_length=opts.jump_length,
                           resample=opts.resample, eta=opts.eta, seed=cfg.seed)  # fmt: skip
    out = write_image(Path(cfg.output), filled, bit_depth=cfg.bit_depth)
    log.info("inpainted %s (%s, %.1f %% hole) -> %s (%.1f s)", cfg.input, opts.method, 100 * mask.mean().item(), out,
             time.perf_counter() - start)  # fmt: skip
    return [out]


INFER_MODES = ("fuse", "noise_fusion", "style_fusion", "hdr", "restore", "inpaint")


def infer(cfg: DictConfig) -> list[Path]:
    """Run inference as configured by conf/infer.yaml; returns the written files."""
    mode = cfg.get("mode", "fuse")
    if mode not in INFER_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(INFER_MODES)}")
    if mode == "style_fusion":
        if not cfg.content or not cfg.style:
            raise ValueError("mode=style_fusion needs content=<image A> and style=<image B> (fusion.ratio = style strength)")
        cfg = cfg.copy()
        cfg.inputs, cfg.fusion.mode = [cfg.content, cfg.style], "style"
        return noise_fusion(cfg)
    if mode == "noise_fusion":
        return noise_fusion(cfg)
    if mode == "hdr":
        return hdr(cfg)
    if mode == "restore":
        return restore(cfg)
    if mode == "inpaint":
        return inpaint(cfg)
    if cfg.inputs and cfg.input_dir:
        raise ValueError("give either inputs=[a,b,...] or input_dir=..., not both")
    jobs: list[tuple[str, list[Path], Path]] = []
    if cfg.input_dir:
        out_dir = Path(cfg.output_dir)
        for sample in find_samples(cfg.input_dir):
            jobs.append((sample.name, list(sample.sources), out_dir / f"{sample.name}.png"))
    else:
        inputs = [Path(p) for p in cfg.inputs] if cfg.inputs else list(EXAMPLE_SOURCES)
        jobs.append((inputs[0].stem, inputs, Path(cfg.output)))
    for _, paths, out in jobs:
        check_not_a_source([out], paths)
    pipe = FusionPipeline.from_file(cfg.ckpt, device=resolve_device(cfg.device))
    log.info("model: %s", cfg.ckpt or "the bundled multi-focus model")
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
