"""Load a trained model (bundle or Lightning checkpoint) and fuse images with it.

An *inference bundle* is one ``.safetensors`` file: the EMA weights of the network, and in
its metadata (key ``fusiondiff``) the JSON config that rebuilds the network, the noise
schedule and the data convention. :class:`FusionPipeline` loads either a bundle or a
Lightning ``.ckpt`` written by ``train.py``; Lightning itself is not needed for either.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusiondiff.data.io import check_image_tensor
from fusiondiff.diffusion import EpsDenoiser, NoiseSchedule, get_sampler, make_schedule, respace_timesteps, tiled_denoiser
from fusiondiff.diffusion.parameterization import base_and_condition, from_diffused, split_residual
from fusiondiff.diffusion.samplers import SPACINGS
from fusiondiff.fusion.noise_space import ratio_weights

BUNDLE_FORMAT = 1
# Only networks from these modules are built from a file's config (a bundle is data, not code).
ALLOWED_NET_MODULES = ("fusiondiff.models",)
DEFAULT_BUNDLE = Path(__file__).parent / "assets" / "multifocus_blend.safetensors"


def build_net(net_config: dict) -> nn.Module:
    """Instantiate ``{"_target_": "fusiondiff.models.X", **kwargs}``."""
    cfg = dict(net_config)
    target = cfg.pop("_target_", None)
    if not isinstance(target, str) or not target.startswith(ALLOWED_NET_MODULES):
        raise ValueError(f"refusing to build network {target!r}: only {ALLOWED_NET_MODULES} classes are allowed")
    module_name, _, cls_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**cfg)


def build_schedule(schedule_config: dict) -> NoiseSchedule:
    cfg = {k: v for k, v in schedule_config.items() if k != "_target_"}
    return make_schedule(**cfg)


def _state_from_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EMA weights (``ema.module.*``) if present, else the raw ones (``net.*``)."""
    for prefix in ("ema.module.", "net."):
        sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if sub:
            return sub
    raise ValueError("checkpoint holds no 'net.' or 'ema.module.' weights; was it written by fusiondiff's train.py?")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, NoiseSchedule, dict]:
    """(network in eval mode, schedule, config) from a ``.safetensors`` bundle or a ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if "fusiondiff" not in meta:
            raise ValueError(f"{path} is a safetensors file without fusiondiff metadata; export bundles with scripts/export.py")
        config = json.loads(meta["fusiondiff"])
        state = load_file(str(path), device=str(map_location))
    elif path.suffix == ".ckpt":
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        config = ckpt.get("fusiondiff")
        if not config:
            raise ValueError(f"{path} has no fusiondiff config; it was not written by fusiondiff's train.py")
        state = _state_from_checkpoint(ckpt["state_dict"])
    else:
        raise ValueError(f"unknown model file type {path.suffix!r}: give a .safetensors bundle or a .ckpt checkpoint")
    net = build_net(config["net"])
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval(), build_schedule(config["schedule"]), config


def export_bundle(checkpoint: str | Path, output: str | Path, half: bool = False) -> Path:
    """Write the EMA weights and config of a Lightning checkpoint as a safetensors bundle."""
    from safetensors.torch import save_file

    from fusiondiff.data.io import atomic_write_bytes

    net, _, config = load_model(checkpoint)
    config = {**config, "format": BUNDLE_FORMAT}
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp), metadata={"fusiondiff": json.dumps(config)})
    atomic_write_bytes(output, tmp.read_bytes())
    tmp.unlink()
    return output


class FusionPipeline:
    """A trained network + schedule, fusing sources [N, C, H, W] (or batched [B, N, C, H, W]) in [-1, 1]."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, config: dict | None = None) -> None:
        # channels_last: 17-29 % faster on CPU (scripts/benchmark.py vs --no-channels-last, README "Speed")
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.schedule, self.config = schedule, config or {}

    @classmethod
    def from_file(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> FusionPipeline:
        """Load a bundle or checkpoint; None loads the bundle shipped with the package."""
        net, schedule, config = load_model(path or DEFAULT_BUNDLE)
        return cls(net.to(device), schedule, config)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def default_steps(self) -> int:
        """The step count recorded with the model (``sampler.steps`` of its training config), else 20."""
        return int((self.config.get("sampler") or {}).get("steps") or 20)

    @property
    def channels(self) -> int:
        return int(self.config.get("net", {}).get("image_channels", 3))

    @torch.inference_mode()
    def __call__(
        self,
        sources: torch.Tensor,
        sampler: str = "ddim",
        steps: int | None = None,
        seed: int = 0,
        spacing: str = "uniform",
        clip_x0: bool = True,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        tile_batch: int = 1,
        callback: Callable[..., Any] | None = None,
        **sampler_options: Any,
    ) -> torch.Tensor:
        """Fused image(s) in [-1, 1]; windows of ``tile_size`` px bound memory on large images.

        ``steps=None`` uses the model's own default (:attr:`default_steps`).
        """
        unbatched = sources.dim() == 4
        if unbatched:
            sources = sources[None]
        if sources.dim() != 5:
            raise ValueError(f"sources must be [N, C, H, W] or [B, N, C, H, W], got {tuple(sources.shape)}")
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
        sample_fn = get_sampler(sampler)
        check_image_tensor(sources, "sources")
        expected = self.config.get("net", {}).get("num_sources")
        if expected == 0:
            raise ValueError("this is an unconditional model (task=unconditional): fuse with mode=noise_fusion / zero_shot()")
        if expected and sources.shape[1] != expected:
            raise ValueError(f"this model fuses {expected} sources, got {sources.shape[1]}")
        sources = sources.to(self.device, torch.float32)
        prediction = self.config.get("prediction", "eps")
        image_residual, blend_prior = split_residual(prediction, self.config.get("residual", False))
        denoiser: Callable[..., torch.Tensor] = EpsDenoiser(self.net, self.schedule, prediction, blend_prior)
        if tile_size is not None and max(sources.shape[-2:]) > tile_size:
            if tile_overlap >= tile_size:
                raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size})")
            denoiser = tiled_denoiser(denoiser, tile_size, tile_size - tile_overlap, batch=tile_batch)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        ts = respace_timesteps(self.schedule.num_timesteps, steps or self.default_steps, spacing)
        trained = self.config.get("trained_steps")
        if trained and not set(ts.tolist()) <= set(respace_timesteps(self.schedule.num_timesteps, trained).tolist()):
            warnings.warn(
                f"this model was trained only at the timesteps of the {trained}-step uniform sampler "
                f"(sampler_timestep_fraction=1); {steps or self.default_steps} {spacing} steps visit timesteps it never "
                f"saw and give poor output: use steps={trained}, or train with sampler_timestep_fraction < 1",
                stacklevel=2,
            )
        b, _, _, h, w = sources.shape
        base, cond = base_and_condition(sources, image_residual)
        fused = sample_fn(
            denoiser, self.schedule, cond, ts, shape=(b, self.channels, h, w), generator=gen, clip_x0=clip_x0,
            callback=callback, **sampler_options,
        )  # fmt: skip
        fused = from_diffused(fused, sources, image_residual, base)
        return fused[0] if unbatched else fused

    def zero_shot(
        self,
        images: torch.Tensor,
        ratio: float | None = 0.5,
        weights: list[float] | None = None,
        mode: str = "linear",
        steps: int = 50,
        skip: int = 0,
        eta: float = 1.0,
        seed: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse N images [N, C, H, W] in [-1, 1] through the edit-friendly noise space of an unconditional model.

        ``ratio`` r gives two images the weights (1 - r, r); ``weights`` gives N images theirs.
        """
        from fusiondiff.priors import OwnPrior
        from fusiondiff.zero_shot import NoiseSpaceFusion

        if images.dim() != 4 or images.shape[0] < 2:
            raise ValueError(f"images must be [N, C, H, W] with N >= 2, got {tuple(images.shape)}")
        w = weights if weights is not None else ratio_weights(float(ratio))
        fuser = NoiseSpaceFusion(OwnPrior(self.net, self.schedule, self.config))
        return fuser.fuse(fuser.invert(images, steps, eta, seed), w, mode, skip, mask)[0]
