"""Fusion rules: classical baselines and noise-space rules over edit-friendly inversions."""

from fusiondiff.fusion.classical import CLASSICAL_METHODS, get_classical
from fusiondiff.fusion.noise_space import MODES as NOISE_SPACE_MODES
from fusiondiff.fusion.noise_space import fuse_inversions, half_mask, ratio_weights

__all__ = ["CLASSICAL_METHODS", "NOISE_SPACE_MODES", "fuse_inversions", "get_classical", "half_mask", "ratio_weights"]
