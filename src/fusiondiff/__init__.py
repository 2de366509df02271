"""fusiondiff: trainable conditional diffusion image fusion."""

__version__ = "0.1.0"
