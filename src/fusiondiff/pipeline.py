"""The one conditional sampling path: a trained network, its task's conditioning, a sampler and a tiling config.

Inference (``infer.py``), evaluation and the training module's validation all sample through
:class:`FusionPipeline`, so a model validates exactly as it is later used. The sampler config is the
``sampler`` config group (name, steps, spacing, clip_x0 and the sampler's own options such as DDIM's eta);
the tiling config is ``tile_size`` / ``tile_overlap`` / ``tile_blend`` / ``tile_batch``, with one default
(:data:`DEFAULT_TILING`) everywhere. Loading a bundle with its task: :func:`fusiondiff.tasks.load_pipeline`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fusiondiff.data.io import ImageError, check_image_tensor
from fusiondiff.diffusion import EpsDenoiser, NoiseSchedule, get_sampler, respace_timesteps, tiled_denoiser
from fusiondiff.diffusion.parameterization import Conditioning, from_diffused
from fusiondiff.diffusion.samplers import SPACINGS
from fusiondiff.diffusion.tiling import BLENDS
from fusiondiff.errors import ConfigError, InputError

DEFAULT_STEPS = 20  # when neither the call nor the model's recorded sampler says how many
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # the network's autocast dtype (None: its own, float32)
SAMPLER_FIELDS = ("name", "steps", "spacing", "clip_x0")


@dataclass(frozen=True)
class SamplerConfig:
    """Which sampler, how many steps (None: the model's own default), the spacing, x̂0 clipping and the
    sampler's own keyword options (``eta`` for DDIM). Built from the ``sampler`` config group by
    :meth:`from_config`; :meth:`check` validates it before anything is computed."""

    name: str = "ddim"
    steps: int | None = None
    spacing: str = "uniform"
    clip_x0: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> SamplerConfig:
        d = dict(cfg or {})
        fields = {k: d.pop(k) for k in SAMPLER_FIELDS if k in d}
        return cls(**fields, options=d)

    def check(self, num_timesteps: int | None = None) -> SamplerConfig:
        """Raise a clear error for an unknown sampler/spacing, a step count out of range or an option the
        sampler does not take."""
        fn = get_sampler(self.name)
        if self.steps is not None and not isinstance(self.steps, int) or isinstance(self.steps, bool):
            raise ConfigError(f"sampler.steps must be a whole number >= 1 (or null: the model's default), got {self.steps!r}")
        if self.spacing not in SPACINGS:
            raise ConfigError(f"unknown sampler.spacing {self.spacing!r}; valid: {', '.join(SPACINGS)}")
        if self.steps is not None:
            top = f" and <= {num_timesteps} (the model's T)" if num_timesteps else ""
            if self.steps < 1 or (num_timesteps and self.steps > num_timesteps):
                raise ConfigError(f"sampler.steps must be >= 1{top}, got {self.steps}")
        accepted = set(inspect.signature(fn).parameters)
        unknown = sorted(set(self.options) - accepted)
        if unknown:
            raise ConfigError(f"sampler {self.name!r} takes no option {', '.join(unknown)}")
        if "eta" in self.options and not float(self.options["eta"]) >= 0:
            raise ConfigError(f"sampler.eta must be >= 0, got {self.options['eta']}")
        return self

    def timesteps(self, num_timesteps: int, default_steps: int = DEFAULT_STEPS) -> torch.Tensor:
        return respace_timesteps(num_timesteps, self.steps or default_steps, self.spacing)


@dataclass(frozen=True)
class Tiling:
    """Sliding-window noise estimation for large images: windows of ``tile_size`` px overlapping by
    ``tile_overlap`` (stride = size - overlap), blended with ``blend`` weights, ``batch`` windows per call.
    ``tile_size=None`` never tiles."""

    tile_size: int | None = 1024
    tile_overlap: int = 64
    blend: str = "smooth"
    batch: int = 1

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Tiling:
        """From the flat ``tile_*`` keys of an infer/evaluate config (missing keys keep the defaults)."""
        keys = {"tile_size": "tile_size", "tile_overlap": "tile_overlap", "tile_blend": "blend", "tile_batch": "batch"}
        return cls(**{ours: cfg[key] for key, ours in keys.items() if key in cfg})

    def check(self) -> Tiling:
        for key, value in (("tile_size", self.tile_size), ("tile_overlap", self.tile_overlap), ("tile_batch", self.batch)):
            if (value is not None or key != "tile_size") and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{key} must be a whole number, got {value!r}")
        if self.tile_size is not None and self.tile_size < 8:
            raise ConfigError(f"tile_size must be >= 8 px (or null: no tiling), got {self.tile_size}")
        if self.tile_size is not None and not 0 <= self.tile_overlap < self.tile_size:
            raise ConfigError(f"tile_overlap ({self.tile_overlap}) must be in 0..tile_size-1 ({self.tile_size - 1})")
        if self.blend not in BLENDS:
            raise ConfigError(f"unknown tile_blend {self.blend!r}; valid: {', '.join(BLENDS)}")
        if self.batch < 1:
            raise ConfigError(f"tile_batch must be >= 1, got {self.batch}")
        return self

    def wrap(self, denoiser: Callable[..., torch.Tensor], height: int, width: int) -> Callable[..., torch.Tensor]:
        if self.tile_size is None or max(height, width) <= self.tile_size:
            return denoiser
        return tiled_denoiser(denoiser, self.tile_size, self.tile_size - self.tile_overlap, self.blend, self.batch)


DEFAULT_TILING = Tiling()


def check_precision(name: str, device: torch.device | None = None) -> str:
    """``fp32`` (the network in float32) or ``bf16`` (bfloat16 autocast of the network: faster on GPUs and on
    CPUs with AMX / AVX512-BF16, slower on others; outputs differ slightly, README "Speed"). With ``device``:
    bf16 on a GPU without bfloat16 is refused, on a CPU without bfloat16 units it warns."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    if name == "bf16" and device is not None:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            gpu = torch.cuda.get_device_name(device)
            raise ConfigError(f"precision=bf16: {gpu} has no bfloat16 arithmetic; use precision=fp32")
        if device.type == "cpu" and not (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
            warnings.warn("precision=bf16 on a CPU without AMX / AVX512-BF16 is usually slower than fp32", stacklevel=2)
    return name


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU) or an explicit device, refusing CUDA when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but no CUDA GPU is available; use device=cpu or device=auto")
    return device


class FusionPipeline:
    """A trained network + schedule + its task's :class:`Conditioning`, fusing sources [N, C, H, W] (or
    batched [B, N, C, H, W]) in [-1, 1]. ``config`` is the bundle's config (prediction, sampler, ...);
    ``precision`` the network's arithmetic (:func:`check_precision`; everything else stays float32/64)."""

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        config: dict | None = None,
        conditioning: Conditioning | None = None,
        precision: str = "fp32",
    ) -> None:
        self.net, self.schedule, self.config, self.precision = net, schedule, config or {}, check_precision(precision)
        if conditioning is None and self.config.get("residual"):
            raise ValueError(
                f"this model diffuses a residual ({self.config['residual']!r}): pass its task's conditioning "
                "(fusiondiff.tasks.load_pipeline builds it from a file, get_task(name).conditioning(prediction, residual))"
            )
        self.conditioning = conditioning or Conditioning()
        self.prediction = self.config.get("prediction", "eps")

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def default_steps(self) -> int:
        """The step count recorded with the model (``sampler.steps`` of its training config), else 20."""
        return int((self.config.get("sampler") or {}).get("steps") or DEFAULT_STEPS)

    @property
    def channels(self) -> int:
        return int(getattr(self.net, "image_channels", None) or self.config.get("net", {}).get("image_channels", 3))

    @property
    def num_sources(self) -> int | None:
        n = getattr(self.net, "num_sources", None)
        return int(n) if n is not None else self.config.get("net", {}).get("num_sources")

    @property
    def task(self) -> str | None:
        return (self.config.get("task") or {}).get("name")

    @torch.inference_mode()
    def __call__(
        self,
        sources: torch.Tensor,
        sampler: str | SamplerConfig = "ddim",
        steps: int | None = None,
        seed: int = 0,
        spacing: str = "uniform",
        clip_x0: bool = True,
        tile_size: int | None = DEFAULT_TILING.tile_size,
        tile_overlap: int = DEFAULT_TILING.tile_overlap,
        tile_batch: int = 1,
        callback: Callable[..., Any] | None = None,
        tiling: Tiling | None = None,
        **sampler_options: Any,
    ) -> torch.Tensor:
        """Fused image(s) in [-1, 1]. ``sampler`` is a name (with ``steps``, ``spacing``, ``clip_x0`` and the
        sampler's options as keywords) or a whole :class:`SamplerConfig`; ``tiling`` (or the ``tile_*``
        keywords) bounds memory on large images. ``steps=None`` uses the model's own default."""
        if not isinstance(sampler, SamplerConfig):
            sampler = SamplerConfig(sampler, steps, spacing, clip_x0, sampler_options)
        tiling = tiling or Tiling(tile_size, tile_overlap, DEFAULT_TILING.blend, tile_batch)
        sampler.check(self.schedule.num_timesteps)
        tiling.check()
        unbatched = sources.dim() == 4
        if unbatched:
            sources = sources[None]
        if sources.dim() != 5:
            raise ValueError(f"sources must be [N, C, H, W] or [B, N, C, H, W], got {tuple(sources.shape)}")
        self.check_sources(sources.shape[1], *sources.shape[-2:])
        if sources.shape[1]:
            check_image_tensor(sources, "sources")
        sources = sources.to(self.device, torch.float32)
        ts = sampler.timesteps(self.schedule.num_timesteps, self.default_steps)
        self._warn_untrained_timesteps(ts, sampler)
        b, _, _, h, w = sources.shape
        autocast = PRECISIONS[check_precision(self.precision)]
        denoiser = tiling.wrap(EpsDenoiser(self.net, self.schedule, self.prediction, self.conditioning, autocast), h, w)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        with (self.conditioning.scope or nullcontext)():
            base, cond = self.conditioning.prepare(sources)
            fused = get_sampler(sampler.name)(
                denoiser, self.schedule, cond, ts, shape=(b, self.channels, h, w), generator=gen, clip_x0=sampler.clip_x0,
                callback=callback, **sampler.options,
            )  # fmt: skip
            fused = from_diffused(fused, base)
            if self.conditioning.finish is not None:
                fused = self.conditioning.finish(fused, sources)
        return fused[0] if unbatched else fused

    def check_sources(self, num: int, height: int, width: int) -> None:
        """Refuse, before any compute, sources this model cannot fuse: their number or size (channels are the
        task's conditioning's business: HDR sources carry 6, feature conditions more)."""
        expected = self.num_sources
        if expected == 0 and num:
            raise ConfigError("this is an unconditional model (task=unconditional): fuse with mode=noise_fusion")
        if expected is not None and num != expected:
            raise InputError(f"this model fuses {expected} sources, got {num}")
        smallest = int(getattr(self.net, "min_size", 1) or 1)
        if min(height, width) < smallest:
            raise ImageError(f"images of {height}x{width} px are smaller than this model's minimum of {smallest} px per side")

    def _warn_untrained_timesteps(self, ts: torch.Tensor, sampler: SamplerConfig) -> None:
        trained = self.config.get("trained_steps")
        if trained and not set(ts.tolist()) <= set(respace_timesteps(self.schedule.num_timesteps, trained).tolist()):
            warnings.warn(
                f"this model was trained only at the timesteps of the {trained}-step uniform sampler "
                f"(sampler_timestep_fraction=1); {len(ts)} {sampler.spacing} steps visit timesteps it never "
                f"saw and give poor output: use steps={trained}, or train with sampler_timestep_fraction < 1",
                stacklevel=3,
            )
