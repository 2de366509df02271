"""Diffusion core: schedules, samplers, edit-friendly inversion and tiling over a ``denoiser(x_t, t, cond)`` callable.

Importable without Lightning.
"""

from fusiondiff.diffusion.inversion import Inversion, inversion_timesteps, invert, regenerate
from fusiondiff.diffusion.parameterization import PREDICTIONS, EpsDenoiser, training_target
from fusiondiff.diffusion.samplers import (
    SAMPLERS,
    ddim_sample,
    fusiondiff_sample,
    get_sampler,
    respace_timesteps,
)
from fusiondiff.diffusion.schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule
from fusiondiff.diffusion.tiling import tiled_denoiser

__all__ = [
    "Inversion",
    "invert",
    "inversion_timesteps",
    "regenerate",
    "PREDICTIONS",
    "EpsDenoiser",
    "training_target",
    "SAMPLERS",
    "NoiseSchedule",
    "cosine_betas",
    "ddim_sample",
    "fusiondiff_sample",
    "get_sampler",
    "linear_betas",
    "make_schedule",
    "respace_timesteps",
    "tiled_denoiser",
]
