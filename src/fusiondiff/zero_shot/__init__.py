"""Zero-shot fusion through a pretrained diffusion prior's edit-friendly noise space.

* :mod:`~fusiondiff.zero_shot.priors`: the prior interface and its backends (ours, diffusers pixel models,
  Stable Diffusion) and :func:`load_prior`;
* :mod:`~fusiondiff.zero_shot.rules`: the noise-space fusion rules (one object each, registry :data:`RULES`);
* :mod:`~fusiondiff.zero_shot.fuser`: :class:`NoiseSpaceFusion` (invert, fuse, regenerate, inpaint);
* :mod:`~fusiondiff.zero_shot.jobs`: the original tool's YAML job format.
"""

from fusiondiff.zero_shot.fuser import INPAINT_METHODS, NoiseSpaceFusion, Prompts
from fusiondiff.zero_shot.priors import Prior, load_prior
from fusiondiff.zero_shot.rules import RULES, fuse_inversions, half_mask, ratio_weights

__all__ = ["INPAINT_METHODS", "RULES", "NoiseSpaceFusion", "Prior", "Prompts", "fuse_inversions", "half_mask", "load_prior",
           "ratio_weights"]  # fmt: skip
