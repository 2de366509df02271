"""A multi-focus network for any number of frames: one U-Net shared by every frame, weights normalised
across frames.

Each frame is scored by the same :class:`~fusiondiff.models.ConditionalUNet` from what it sees of that frame
alone: the frame, its decision-map choice and its share of the focus measure (both computed over the whole
stack, :func:`fusiondiff.focus.focus_features`) and the noisy fused image x_t, common to all frames. The
output is one logit map per frame, [B, N, H, W]; ``prediction: blend`` turns them into a softmax over the
frames, so the fused image is a per-pixel convex combination of the frames for any N, and the frame order
does not matter. The cost is N passes of the small network per sampling step.
"""

from __future__ import annotations

import torch
from torch import nn

from fusiondiff.errors import ConfigError
from fusiondiff.focus import focus_features
from fusiondiff.models.unet import ConditionalUNet


class FrameSharedUNet(nn.Module):
    """Per-frame logits from a shared U-Net (see the module docstring). ``num_sources`` is None: any N >= 2.

    Args:
        image_channels: channels of the frames and of the fused image.
        frames_per_pass: frames evaluated in one batch of the shared U-Net (bounds memory on long stacks).
        **unet: the shared :class:`ConditionalUNet`'s width settings (base_channels, channel_mult, ...).
    """

    EXTRA_CHANNELS = 2
    num_sources = None

    def __init__(self, image_channels: int = 3, frames_per_pass: int = 16, **unet) -> None:
        super().__init__()
        for key in ("num_sources", "source_channels", "out_channels"):
            if unet.pop(key, None) is not None:
                raise ConfigError(f"FrameSharedUNet takes any number of frames: remove model.{key}")
        self.image_channels, self.frames_per_pass = image_channels, frames_per_pass
        self.unet = ConditionalUNet(image_channels, num_sources=1, source_channels=image_channels + self.EXTRA_CHANNELS,
                                    out_channels=1, **unet)  # fmt: skip
        self.min_size = getattr(self.unet, "min_size", 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None or cond.dim() != 5 or cond.shape[1] < 2 or cond.shape[2] != self.image_channels:
            shape = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond must be [B, N >= 2, {self.image_channels}, H, W] frames, got {shape}")
        b, n, c, h, w = cond.shape
        frames = torch.cat([cond, focus_features(cond.float()).to(cond.dtype)], dim=2)  # [B, N, C + 2, H, W]
        logits = []
        for k in range(0, n, self.frames_per_pass):
            chunk = frames[:, k : k + self.frames_per_pass]
            m = chunk.shape[1]
            x = x_t[:, None].expand(b, m, *x_t.shape[1:]).reshape(b * m, *x_t.shape[1:])
            tt = t.reshape(-1).expand(b).repeat_interleave(m)  # t: one value or one per batch item
            out = self.unet(x, tt, chunk.reshape(b * m, 1, c + self.EXTRA_CHANNELS, h, w))
            logits.append(out.reshape(b, m, h, w))
        return torch.cat(logits, dim=1)
