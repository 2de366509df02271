"""Networks: the conditional U-Net, the HDR variant with a feature condition generator, a PatchGAN critic."""

from fusiondiff.models.discriminator import PatchDiscriminator
from fusiondiff.models.hdr import FeatureConditionGenerator, HDRConditionalUNet
from fusiondiff.models.shuffle import SpaceToDepthNet
from fusiondiff.models.stack import FrameSharedUNet
from fusiondiff.models.unet import ConditionalUNet, DecisionMapUNet

__all__ = [
    "ConditionalUNet",
    "DecisionMapUNet",
    "FeatureConditionGenerator",
    "FrameSharedUNet",
    "HDRConditionalUNet",
    "PatchDiscriminator",
    "SpaceToDepthNet",
]
