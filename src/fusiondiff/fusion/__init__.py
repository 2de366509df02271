"""Fusion rules: classical baselines (and, later, noise-space rules)."""

from fusiondiff.fusion.classical import CLASSICAL_METHODS, get_classical

__all__ = ["CLASSICAL_METHODS", "get_classical"]
