"""HDR deghosting denoiser: the conditional U-Net with a feature condition generator (FCG) and SFT modulation.

Following the structure described by Yan et al. (TCSVT 2024) for HDR deghosting with conditional
diffusion: a shared convolution extracts features of every exposure; for each non-reference exposure
an attention map computed from its features and the reference's weights them (suppressing misaligned,
ghost-prone regions and saturated ones); a fusion convolution merges the weighted features; small
heads turn the merged features into spatial scale/shift maps (SFT, Wang et al. 2018) that modulate the
U-Net's features at the chosen encoder levels: h <- h * (1 + γ) + β. The heads start at zero, so at
initialisation the network equals the plain channel-concatenating U-Net.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusiondiff.models.unet import ConditionalUNet


class FeatureConditionGenerator(nn.Module):
    """Exposures [B, N*Cs, H, W] -> merged condition features [B, F, H, W] (reference = middle exposure)."""

    def __init__(self, num_exposures: int = 3, source_channels: int = 6, features: int = 32) -> None:
        super().__init__()
        if num_exposures < 2:
            raise ValueError(f"the FCG needs at least 2 exposures, got {num_exposures}")
        self.n, self.cs, self.ref = num_exposures, source_channels, num_exposures // 2
        self.extract = nn.Sequential(
            nn.Conv2d(source_channels, features, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(features, features, 3, padding=1)
        )
        self.attention = nn.Sequential(
            nn.Conv2d(2 * features, features, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(features, features, 3, padding=1),
            nn.Sigmoid(),
        )
        self.fuse = nn.Sequential(nn.Conv2d(num_exposures * features, features, 3, padding=1), nn.LeakyReLU(0.1))

    def attention_maps(self, sources: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b, _, h, w = sources.shape
        feats = self.extract(sources.reshape(b * self.n, self.cs, h, w)).reshape(b, self.n, -1, h, w).unbind(1)
        ref = feats[self.ref]
        maps = [torch.ones_like(ref) if i == self.ref else self.attention(torch.cat([f, ref], 1)) for i, f in enumerate(feats)]
        return list(feats), maps

    def forward(self, sources: torch.Tensor) -> torch.Tensor:
        feats, maps = self.attention_maps(sources)
        return self.fuse(torch.cat([f * a for f, a in zip(feats, maps, strict=True)], 1))


class HDRConditionalUNet(ConditionalUNet):
    """:class:`ConditionalUNet` (sources concatenated on channels) plus FCG features applied by SFT.

    Args (beyond the U-Net's): ``fcg_channels`` (width of the condition features), ``sft_levels``
    (encoder levels whose output is modulated; 0 = full resolution).
    """

    def __init__(
        self,
        image_channels: int = 3,
        num_sources: int = 3,
        source_channels: int = 6,
        fcg_channels: int = 32,
        sft_levels: Sequence[int] = (0, 1),
        **unet_kwargs: Any,
    ) -> None:
        super().__init__(image_channels=image_channels, num_sources=num_sources, source_channels=source_channels, **unet_kwargs)
        bad = [lv for lv in sft_levels if not 0 <= lv < len(self.widths)]
        if bad:
            raise ValueError(f"sft_levels {bad} out of range 0..{len(self.widths) - 1}")
        self.sft_levels = list(sft_levels)
        self.fcg = FeatureConditionGenerator(num_sources, source_channels, fcg_channels)
        self.sft = nn.ModuleDict()
        for level in self.sft_levels:
            head = nn.Sequential(
                nn.Conv2d(fcg_channels, fcg_channels, 3, padding=1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(fcg_channels, 2 * self.widths[level], 1),
            )
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
            self.sft[str(level)] = head

    def condition_features(self, cond: torch.Tensor) -> torch.Tensor:
        return self.fcg(cond)

    def modulate(self, level: int, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        if str(level) not in self.sft or context is None:
            return hidden
        features = F.adaptive_avg_pool2d(context, hidden.shape[-2:]) if context.shape[-2:] != hidden.shape[-2:] else context
        scale, shift = self.sft[str(level)](features).chunk(2, dim=1)
        return hidden * (1 + scale) + shift
