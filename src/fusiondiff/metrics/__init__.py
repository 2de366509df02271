"""Image-quality metrics: reference-based (PSNR, SSIM) for now."""

from fusiondiff.metrics.reference import psnr, ssim

__all__ = ["psnr", "ssim"]
