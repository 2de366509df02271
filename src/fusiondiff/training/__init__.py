"""Lightning training: the diffusion LightningModule (Lightning appears nowhere below this package)."""

from fusiondiff.training.module import DiffusionFusionModule

__all__ = ["DiffusionFusionModule"]
