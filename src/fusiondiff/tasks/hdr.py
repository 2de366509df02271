"""Multi-exposure HDR: LDR brackets of a dynamic scene -> the HDR radiance map (Kalantari layout).

The task's knowledge: the baselines (``linear_merge``: Debevec-style hat-weighted merge with the known
response; ``reference``: the middle exposure alone; ``mertens``: OpenCV exposure fusion, display-referred),
the ``hdr_merge`` residual base, the ``hdr`` inference mode and the evaluation on Kalantari-layout scenes.
The encoding of exposures for the network (``hdr_sources``) and of the target (μ-law) is in
:mod:`fusiondiff.data.hdr`, shared with the datasets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fusiondiff.data.hdr import GAMMA
from fusiondiff.errors import ConfigError
from fusiondiff.metrics.hdr import MU, mu_law
from fusiondiff.tasks.base import Task, load_pipeline, mean_base, register_task

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from fusiondiff.evaluation import Evaluation

log = logging.getLogger(__name__)


def reference_estimate(sources: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """μ-law of the reference (middle) exposure's radiance estimate, in [-1, 1]: [..., N, 6, H, W] -> [..., 3, H, W].

    Ghost-free, but noisy in the dark and clipped in the bright parts (a baseline).
    """
    ref = sources[..., sources.shape[-4] // 2, 3:6, :, :]
    return mu_law(((ref + 1) / 2).clamp(0, 1), mu) * 2 - 1


def merge_estimate(sources: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """μ-law of the exposure-weighted merge (:func:`merge_exposures`) computed from the network inputs alone,
    in [-1, 1]: [..., N, 6, H, W] -> [..., 3, H, W]. The base of residual diffusion for HDR
    (``residual: hdr_merge``): good wherever nothing moves; the network learns the deghosting correction.
    """
    ldrs = ((sources[..., :3, :, :] + 1) / 2).clamp(0, 1)
    estimates = ((sources[..., 3:6, :, :] + 1) / 2).clamp(0, 1)
    return mu_law(merge_exposures(ldrs, estimates, dim=-4).clamp(0, 1), mu) * 2 - 1


def hat_weight(ldr: torch.Tensor) -> torch.Tensor:
    """Debevec & Malik's hat weight 1 - |2z - 1| (0 at black and at saturation)."""
    return 1 - (2 * ldr - 1).abs()


def merge_exposures(ldrs: torch.Tensor, estimates: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Σ w(z_i) E_i / Σ w(z_i) over exposures (axis ``dim``) with the hat weight; where every exposure is
    saturated or black (zero total weight), the largest estimate (the shortest exposure's lower bound)."""
    w = hat_weight(ldrs)
    total = w.sum(dim)
    merged = (w * estimates).sum(dim) / total.clamp_min(1e-8)
    return torch.where(total > 1e-8, merged, estimates.amax(dim))


def linear_merge(ldrs: torch.Tensor, times: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Debevec-style merge [3, H, W] of LDRs [N, 3, H, W] with the known response z = (E t)^(1/γ),
    E_i = z_i^γ / t_i (see :func:`merge_exposures`). No alignment: moving objects leave ghosts."""
    t = times.to(ldrs.dtype).reshape(-1, 1, 1, 1)
    ldrs = ldrs.clamp(0, 1)
    return merge_exposures(ldrs, ldrs**gamma / t)


def mertens_fusion(ldrs: torch.Tensor) -> torch.Tensor:
    """Mertens et al. exposure fusion (OpenCV): a display-referred [3, H, W] in [0, 1], not a radiance map."""
    import cv2
    import numpy as np

    # OpenCV expects 0..255 also for float32 input (0..1 gives a near-black result)
    images = [np.ascontiguousarray(x.permute(1, 2, 0).numpy()[..., ::-1].astype(np.float32) * 255) for x in ldrs]
    fused = cv2.createMergeMertens().process(images)
    return torch.from_numpy(np.ascontiguousarray(fused[..., ::-1])).permute(2, 0, 1).clamp(0, 1)


# ----------------------------------------------------------------------------- synthetic scenes


class HDRTask(Task):
    name = "hdr"

    def residual_bases(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        return {"mean": mean_base, "hdr_merge": merge_estimate}

    def modes(self) -> dict[str, Callable[[DictConfig], list[Path]]]:
        return {"hdr": reconstruct}

    def evaluation(self, cfg: DictConfig) -> Evaluation:
        """Suite ``scenes``: the Kalantari-layout scenes of ``dataset``/``split`` (default data/hdr_synthetic/Test).
        Outputs are linear radiance; metrics on whole scenes with the HDR clipped to [0, 1] (PSNR-μ, PSNR-L, SSIM-μ
        by default; ``lpips_mu``, ``ssim_l`` on request). Baselines: ``linear_merge`` (the paired reference),
        ``reference`` (the middle exposure alone), ``mertens`` (display-referred, scored as if it were μ-law:
        indicative only)."""
        from fusiondiff.data.hdr import hdr_sources, load_scene, scene_folders, target_to_hdr
        from fusiondiff.evaluation import Evaluation, Item, Metric
        from fusiondiff.metrics import HDR_METRICS
        from fusiondiff.metrics.hdr import inverse_mu_law
        from fusiondiff.registry import Registry

        if (cfg.get("suite") or "scenes") != "scenes":
            raise ConfigError(f"unknown suite {cfg.suite!r} for task hdr; valid: scenes")
        root = cfg.get("dataset") or "data/hdr_synthetic"
        folders = scene_folders(root, cfg.get("split"))[: cfg.get("max_images") or None]

        def loader(folder):
            def load() -> dict:
                scene = load_scene(folder)
                return {"ldrs": scene.ldrs, "times": scene.times, "sources": hdr_sources(scene.ldrs, scene.times),
                        "target": scene.hdr.clamp(0, 1)}  # fmt: skip

            return load

        items = [Item(folder.name, loader(folder)) for folder in folders]
        baselines = {
            "linear_merge": lambda d: linear_merge(d["ldrs"], d["times"]).clamp(0, 1),
            "reference": lambda d: target_to_hdr(reference_estimate(d["sources"])),
            "mertens": lambda d: inverse_mu_law(mertens_fusion(d["ldrs"])),
        }

        def model_run(pipe, sampler, tiling):
            return lambda d: target_to_hdr(pipe(d["sources"], sampler, seed=cfg.seed, tiling=tiling).cpu())

        methods = self.methods(cfg, baselines, model_run, list(baselines))

        def metric(name, fn):
            return Metric(name, lambda out, d: float(fn(out, d["target"])), needs=("target",))

        table = Registry("HDR metric", {name: metric(name, fn) for name, fn in HDR_METRICS.items()})
        metrics = [table[name] for name in (cfg.get("metrics") or ("psnr_mu", "psnr_l", "ssim_mu"))]
        about = f"{len(items)} scenes of `{root}`" + (f"/{cfg.split}" if cfg.get("split") else "")
        return Evaluation(about, items, methods, metrics, baseline=cfg.get("baseline") or "linear_merge", figure=hdr_figure)


def reconstruct(cfg: DictConfig) -> list[Path]:
    """``mode=hdr``: HDR reconstruction of every scene under ``input_dir`` (one Kalantari scene folder, or a
    folder of them). Writes ``<output_dir>/<scene>.hdr`` (linear radiance, float32) and ``<scene>.png`` (μ-law
    preview); logs PSNR-μ / PSNR-L when the scene has ``HDRImg.hdr``. Large scenes go through SWNE (``tile_size``)."""
    from fusiondiff.data.hdr import hdr_sources, load_scene, scene_folders, target_to_hdr, tonemap_preview, write_hdr_image
    from fusiondiff.data.io import check_outputs, write_image
    from fusiondiff.metrics.hdr import psnr_l, psnr_mu
    from fusiondiff.pipeline import SamplerConfig, Tiling, check_precision, resolve_device
    from fusiondiff.progress import eta

    if not cfg.input_dir:
        raise ConfigError("mode=hdr needs input_dir=<scene folder or a folder of scene folders (Kalantari layout)>")
    sampler, tiling = SamplerConfig.from_config(cfg.sampler).check(), Tiling.from_config(cfg).check()
    device = resolve_device(cfg.device)
    precision = check_precision(cfg.precision, device)
    root = Path(cfg.input_dir)
    folders = [root] if (root / "exposure.txt").is_file() else scene_folders(root)
    out_dir, written = Path(cfg.output_dir), []
    every_source = [p for folder in folders for p in folder.iterdir()]
    todo = []
    for folder in folders:
        outputs = [out_dir / f"{folder.name}.hdr", out_dir / f"{folder.name}.png"]
        if check_outputs(outputs, every_source, cfg.bit_depth, cfg.overwrite, skip_existing=True):
            todo.append(folder)
    if len(todo) < len(folders):
        log.info(
            "%d of %d scenes have outputs and are kept (overwrite=true replaces them)", len(folders) - len(todo), len(folders)
        )
    sizes = [load_scene(folder, require_hdr=False).ldrs.shape[-2:] for folder in todo]  # every scene reads
    pipe = load_pipeline(cfg.ckpt, device=device, task="hdr", precision=precision)
    sampler.check(pipe.schedule.num_timesteps)
    for h, w in sizes:
        pipe.check_sources(pipe.num_sources or 3, h, w)
    begin = time.perf_counter()
    for k, folder in enumerate(todo, 1):
        scene = load_scene(folder, require_hdr=False)
        start = time.perf_counter()
        fused = pipe(hdr_sources(scene.ldrs, scene.times), sampler, seed=cfg.seed, tiling=tiling).cpu()
        radiance = target_to_hdr(fused)
        written.append(write_hdr_image(out_dir / f"{scene.name}.hdr", radiance))
        written.append(write_image(out_dir / f"{scene.name}.png", tonemap_preview(radiance), bit_depth=cfg.bit_depth))
        score = ""
        if scene.hdr is not None:
            gt = scene.hdr.clamp(0, 1)
            score = f", PSNR-mu {psnr_mu(radiance, gt).item():.2f} dB, PSNR-L {psnr_l(radiance, gt).item():.2f} dB"
        h, w = radiance.shape[-2:]
        log.info("[%d/%d] %s (%dx%d) -> %s (%.1f s%s, %s)", k, len(todo), scene.name, w, h, written[-2],
                 time.perf_counter() - start, score, eta(begin, k, len(todo)))  # fmt: skip
    return written


def hdr_figure(evaluation: Evaluation, path: Path) -> Path:
    """The first scene: its exposures | linear merge | the first model | ground truth (μ-law previews)."""
    from fusiondiff.data.hdr import tonemap_preview
    from fusiondiff.data.io import write_image

    item = evaluation.items[0]
    data = {"name": item.name, **item.load()}
    tiles = [x * 2 - 1 for x in data["ldrs"]] + [tonemap_preview(evaluation.method("linear_merge").run(data))]
    tiles += [tonemap_preview(m.run(data)) for m in evaluation.methods if m.kind == "model"][:1]
    tiles += [tonemap_preview(data["target"])]
    pad = torch.ones(3, data["target"].shape[1], 4)
    return write_image(path, torch.cat([t for tile in tiles for t in (tile, pad)][:-1], dim=-1))


TASK = register_task(HDRTask)
