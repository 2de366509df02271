"""Networks: the conditional U-Net and the HDR variant with a feature condition generator."""

from fusiondiff.models.hdr import FeatureConditionGenerator, HDRConditionalUNet
from fusiondiff.models.unet import ConditionalUNet

__all__ = ["ConditionalUNet", "FeatureConditionGenerator", "HDRConditionalUNet"]
