"""Diffusion priors for zero-shot fusion, behind one interface.

A :class:`Prior` is what edit-friendly inversion needs from a pretrained model:

* ``schedule`` (:class:`~fusiondiff.diffusion.NoiseSchedule`, ᾱ indexed like diffusers' ``alphas_cumprod``),
* ``encode`` / ``decode`` between images in [-1, 1] and the space the diffusion runs in
  (identity for pixel models, the VAE for Stable Diffusion),
* ``denoiser(prompt, guidance)`` returning ``denoiser(x_t, t, cond) -> ε̂`` (one network call per
  step for the whole batch, classifier-free guidance included),
* ``clip_x0``: whether x̂0 is clipped to [-1, 1] inside the chain (pixel priors only).

Backends: :class:`OwnPrior` (an unconditional model trained here, ``task=unconditional``),
:class:`DiffusersPixelPrior` (a diffusers pipeline whose ``unet`` is a ``UNet2DModel``) and
:class:`StableDiffusionPrior` (a diffusers Stable Diffusion pipeline: VAE latents times the
VAE's scaling factor, text prompts, guidance). :func:`load_prior` picks one from a file or a
diffusers directory / hub id. Diffusers pipelines are loaded with the standard
``DiffusionPipeline.from_pretrained`` call, so a hub id works with internet access and a local
directory (e.g. written by ``save_pretrained``) works offline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusiondiff.diffusion import EpsDenoiser, NoiseSchedule
from fusiondiff.diffusion.parameterization import eps_from_output
from fusiondiff.errors import ConfigError, InputError, MissingModelFileError, ModelFileError
from fusiondiff.models.bundle import DEFAULT_PRIOR, load_model

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
# diffusers' scheduler.config.prediction_type -> ours
DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


class Prior:
    """Base class; subclasses set ``schedule``, ``channels``, ``clip_x0`` and implement ``denoiser``."""

    schedule: NoiseSchedule
    channels: int = 3
    clip_x0: bool = True
    uses_prompts: bool = False
    name: str = "prior"

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] -> the diffusion variable."""
        return images

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The diffusion variable -> images in [-1, 1]."""
        return z.clamp(-1, 1)

    def denoiser(self, prompt: str = "", guidance: float = 1.0) -> Denoiser:
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """Raise a clear error for image sizes the network cannot take."""


def _check_no_prompt(prior: Prior, prompt: str, guidance: float) -> None:
    if prompt or guidance != 1.0:
        raise ConfigError(
            f"{prior.name} is not text-conditioned: prompts and guidance scales need a Stable Diffusion prior "
            "(leave fusion.prompt_src / prompt_tar empty and cfg_src / cfg_tar at 1)"
        )


class OwnPrior(Prior):
    """An unconditional model trained by this framework (``task=unconditional``), from a bundle or ``.ckpt``."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, config: dict) -> None:
        if config.get("net", {}).get("num_sources", 0):
            raise ModelFileError(
                "zero-shot fusion needs an unconditional model (train one with task=unconditional, "
                "e.g. experiment=unconditional_quickstart); this one is conditional"
            )
        self.net, self.schedule, self.config = net.eval(), schedule, config
        self.channels = int(config.get("net", {}).get("image_channels", 3))
        self.levels = len(config.get("net", {}).get("channel_mult", [1]))
        self.name = "the unconditional fusiondiff model"

    @classmethod
    def from_file(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> OwnPrior:
        net, schedule, config = load_model(path or DEFAULT_PRIOR)
        return cls(net.to(device), schedule, config)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def denoiser(self, prompt: str = "", guidance: float = 1.0) -> Denoiser:
        _check_no_prompt(self, prompt, guidance)
        return EpsDenoiser(self.net, self.schedule, self.config.get("prediction", "eps"))


def _schedule_from_scheduler(scheduler: Any) -> tuple[NoiseSchedule, str]:
    """Our schedule (float64 ᾱ from the scheduler's own betas) and prediction type."""
    betas = getattr(scheduler, "betas", None)
    if betas is None:
        raise ModelFileError(f"{type(scheduler).__name__} has no discrete betas; use a DDPM/DDIM/PNDM-style scheduler")
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind not in DIFFUSERS_PREDICTIONS:
        raise ModelFileError(f"unsupported prediction_type {kind!r}; supported: {', '.join(DIFFUSERS_PREDICTIONS)}")
    return NoiseSchedule(torch.as_tensor(betas).double()), DIFFUSERS_PREDICTIONS[kind]


def _module_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class DiffusersPixelPrior(Prior):
    """A diffusers pixel-space ``UNet2DModel`` with the betas and prediction type of its scheduler."""

    def __init__(self, unet: nn.Module, scheduler: Any, name: str = "diffusers UNet2DModel") -> None:
        self.unet = unet.eval()
        self.schedule, self.prediction = _schedule_from_scheduler(scheduler)
        self.channels = int(unet.config.out_channels if unet.config.out_channels in (1, 3) else unet.config.in_channels)
        self.clip_x0 = bool(scheduler.config.get("clip_sample", True))
        self.levels = len(unet.config.block_out_channels)
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def check_size(self, height: int, width: int) -> None:
        factor = 2 ** (self.levels - 1)
        if height % factor or width % factor:
            raise InputError(f"{self.name} needs sizes divisible by {factor}, got {height}x{width}; crop or resize the images")

    def denoiser(self, prompt: str = "", guidance: float = 1.0) -> Denoiser:
        _check_no_prompt(self, prompt, guidance)
        dtype, c = _module_dtype(self.unet), self.channels

        def fn(x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
            out = self.unet(x_t.to(dtype), t.to(x_t.device)).sample[:, :c]  # learned-variance models output 2C channels
            return eps_from_output(self.schedule, self.prediction, x_t, t, out.to(x_t.dtype))

        return fn


class StableDiffusionPrior(Prior):
    """Stable Diffusion through diffusers: the chain runs on VAE latents (times ``vae.config.scaling_factor``).

    Prompts are encoded once per call of :meth:`denoiser`; with guidance g != 1 the unconditional and
    conditional predictions come from one batched U-Net call, ε̂ = ε_u + g (ε_c - ε_u).
    """

    clip_x0 = False
    uses_prompts = True

    def __init__(self, pipe: Any, name: str = "Stable Diffusion") -> None:
        for part in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ModelFileError(f"{type(pipe).__name__} has no {part}; expected a Stable Diffusion pipeline")
        self.pipe, self.vae, self.unet = pipe, pipe.vae.eval(), pipe.unet.eval()
        self.schedule, self.prediction = _schedule_from_scheduler(pipe.scheduler)
        self.scaling = float(self.vae.config.get("scaling_factor", 0.18215))
        self.channels = int(self.vae.config.in_channels)
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def check_size(self, height: int, width: int) -> None:
        factor = self.factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if height % factor or width % factor:
            raise InputError(f"{self.name} needs sizes divisible by {factor}, got {height}x{width}; crop or resize the images")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic encoding (the posterior mean), times the scaling factor."""
        x = images.to(self.device, _module_dtype(self.vae))
        return self.vae.encode(x).latent_dist.mean.float() * self.scaling

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode((z / self.scaling).to(self.device, _module_dtype(self.vae))).sample
        return x.float().clamp(-1, 1)

    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        tok = self.pipe.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        return self.pipe.text_encoder(ids.input_ids.to(self.device))[0]

    def denoiser(self, prompt: str = "", guidance: float = 1.0) -> Denoiser:
        dtype = _module_dtype(self.unet)
        cond = self.embed(prompt).to(dtype)
        uncond = self.embed("").to(dtype) if guidance != 1.0 else None

        def fn(x_t: torch.Tensor, t: torch.Tensor, _cond: Any = None) -> torch.Tensor:
            n, x, t = x_t.shape[0], x_t.to(dtype), t.to(x_t.device)
            if uncond is None:
                out = self.unet(x, t, encoder_hidden_states=cond.expand(n, -1, -1)).sample
            else:
                states = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
                u, c = self.unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=states).sample.chunk(2)
                out = u + guidance * (c - u)
            return eps_from_output(self.schedule, self.prediction, x_t, t, out.to(x_t.dtype))

        return fn


def load_prior(spec: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Prior:
    """A prior from ``spec``: None (the shipped unconditional model), a ``.safetensors`` / ``.ckpt`` of ours,
    or a diffusers pipeline directory or hub id (pixel ``UNet2DModel`` or Stable Diffusion)."""
    if spec is None or str(spec).endswith((".safetensors", ".ckpt")):
        return OwnPrior.from_file(spec, device)
    try:
        from diffusers import DiffusionPipeline
    except ImportError as err:  # pragma: no cover - diffusers is a dependency
        raise ImportError("diffusers priors need `pip install diffusers transformers`") from err
    local = Path(spec)
    if local.exists() and not (local / "model_index.json").is_file():
        raise MissingModelFileError(f"{local} is not a diffusers pipeline directory (no model_index.json)")
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # offline, it prints retries and fallbacks before failing
    try:
        pipe = DiffusionPipeline.from_pretrained(str(spec), dtype=dtype)
    except (OSError, ValueError) as err:  # not cached and no network, no such repo, a broken folder
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        first = first if len(first) <= 160 else first[:157] + "..."
        where = "the folder" if local.exists() else "the hub id (it is neither a local folder nor in the Hugging Face cache)"
        raise MissingModelFileError(
            f"cannot load the diffusers pipeline {spec!r} ({first}); check {where}, or give a local pipeline folder "
            "(save_pretrained) or one of our .safetensors priors"
        ) from err
    finally:
        diffusers_logging.set_verbosity(verbosity)
    pipe = pipe.to(device)
    if getattr(pipe, "vae", None) is not None and getattr(pipe, "text_encoder", None) is not None:
        return StableDiffusionPrior(pipe, name=f"Stable Diffusion {spec}")
    unet = getattr(pipe, "unet", None)
    if unet is not None and type(unet).__name__ == "UNet2DModel":
        return DiffusersPixelPrior(unet, pipe.scheduler, name=f"diffusers {spec}")
    raise ModelFileError(f"{spec}: {type(pipe).__name__} is neither a pixel UNet2DModel pipeline nor Stable Diffusion")
