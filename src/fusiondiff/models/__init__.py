"""Networks: the conditional U-Net (and, later, condition encoders)."""

from fusiondiff.models.unet import ConditionalUNet

__all__ = ["ConditionalUNet"]
