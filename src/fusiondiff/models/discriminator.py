"""PatchGAN discriminator (Isola et al. 2017, pix2pix): a score per overlapping image patch.

Used by the optional adversarial loss of :class:`fusiondiff.training.DiffusionFusionModule`
(``adversarial_weight > 0``) on the network's x0 estimate. With ``layers=3`` each output score sees a
70x70 patch (34x34 for ``layers=2``), so the critic judges local texture and sharpness, not layout.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """conv(4, stride 2) + LeakyReLU, then ``layers - 1`` more strided convs with GroupNorm, a stride-1 conv
    and a 1-channel output: [B, C, H, W] in [-1, 1] -> raw scores [B, 1, h, w] (hinge loss)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        mods: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = base_channels
        for i in range(1, layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1), nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        self.in_channels = in_channels
        self.layers, self.min_size = layers, 3 * 2**layers  # two stride-1 4x4 convs after ``layers`` halvings need >= 3 px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator takes {self.in_channels}-channel images, got {x.shape[1]}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"the PatchGAN critic ({self.layers} layers) needs images of at least {self.min_size} px, got "
                f"{tuple(x.shape[-2:])}: train on larger crops or give a discriminator with fewer layers"
            )
        return self.net(x)


def hinge_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
    return torch.relu(1 - real_scores).mean() + torch.relu(1 + fake_scores).mean()


def hinge_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -E[D(fake)]."""
    return -fake_scores.mean()
