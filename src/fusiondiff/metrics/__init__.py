"""Image-quality metrics: reference-based, perceptual, fusion (no reference) and HDR.

Each metric is a pure function registered by name; see :data:`REFERENCE_METRICS`,
:data:`fusion.SOURCE_METRICS`, :data:`fusion.FUSED_ONLY_METRICS` and :data:`HDR_METRICS`.
"""

from fusiondiff.metrics import fusion, hdr
from fusiondiff.metrics.perceptual import load_lpips, lpips_distance
from fusiondiff.metrics.reference import psnr, ssim

# fused vs ground truth, images in [-1, 1]
REFERENCE_METRICS = {"psnr": psnr, "ssim": ssim, "lpips": lpips_distance}
HDR_METRICS = {
    "psnr_l": hdr.psnr_l,
    "psnr_mu": hdr.psnr_mu,
    "ssim_l": hdr.ssim_l,
    "ssim_mu": hdr.ssim_mu,
    "lpips_mu": hdr.lpips_mu,
}
# every metric name whose smaller values are better (tables, bold marks, paired wins): the one list
LOWER_IS_BETTER = {"lpips", "lpips_band", "lpips_vgg", "lpips_mu", "content", "style"} | fusion.LOWER_IS_BETTER

__all__ = ["HDR_METRICS", "LOWER_IS_BETTER", "REFERENCE_METRICS", "fusion", "hdr", "load_lpips", "lpips_distance", "psnr", "ssim"]
