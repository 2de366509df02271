"""A multi-focus denoiser that works at a quarter of the resolution: space-to-depth in, depth-to-space out.

Made for the ``decision_boundary`` blend model (#16), whose output matters only within a few pixels of the
decision map's switches and whose time budget is a small multiple of the classical decision map's. Every
full-resolution pass over a 520 x 520 image costs a few milliseconds on a CPU, so this network makes two:
one strided convolution reads the noisy image, the sources and their focus features
(:func:`fusiondiff.focus.focus_features`) as ``factor`` x ``factor`` cells (space-to-depth, then 1x1); the
residual blocks run on that coarse grid, where each 3x3 convolution is 16x cheaper at factor 4; one strided
transposed convolution writes every pixel of every cell its own output (depth-to-space), so the output is
not blocky. No normalisation layer: each output depends only on its neighbourhood.

A coarse grid cannot carry pixel detail into a correction that must leave the sources' convex hull (the
blend weights carry it for copies). With ``correction="affine"`` the last C of N + C output channels are
instead Σ_i β_i · source_i + γ, with per-pixel β (one per source) and γ (per channel) from the transposed
convolution: smooth fields times the sources' own pixels. Removing a blurred foreground's veil of opacity α
from a background, for example, is (source − α · veil) / (1 − α): a gain and an offset, both smooth.

The transposed convolution alone makes every output pixel a linear function of its cell's features, so a
switch between sources cannot sit at an exact pixel inside a cell. ``detail_channels`` > 0 adds a
full-resolution head: the transposed convolution writes that many features per pixel, and two 1x1
convolutions map them, together with the pixel's own inputs (x_t, sources, focus features), to the outputs:
a per-pixel nonlinear read-out, at the price of two more full-resolution passes (on the 2-core CPU the
coarse model went from about 5x to 6-7x the decision map's time; README, defocus boundaries, session 13).
"""

from __future__ import annotations

import torch
from torch import nn

from fusiondiff.errors import ConfigError
from fusiondiff.focus import focus_features
from fusiondiff.models.unet import pad_to_multiple, timestep_embedding


class SpaceToDepthNet(nn.Module):
    """``forward(x_t, t, cond) -> [B, out_channels, H, W]`` with cond the N sources [B, N, C, H, W].

    Args:
        image_channels: channels of the sources and of x_t.
        num_sources: N (>= 2: the focus features compare sources).
        base_channels: width of the coarse grid.
        factor: cell size (the coarse grid is H / factor x W / factor; inputs are reflect-padded to a multiple).
        num_blocks: residual blocks (two 3x3 convolutions each) on the coarse grid; with factor 4 each block
            widens the receptive field by 16 px.
        out_channels: default image_channels (``prediction=blend`` with a correction: N + C).
        correction: ``direct`` (every output channel from the transposed convolution) or ``affine`` (needs
            out_channels = N + C: the correction as gains on the sources plus an offset, module docstring).
        detail_channels: 0, or the width of the full-resolution 1x1 head (module docstring).
    """

    EXTRA_CHANNELS = 2  # per source: the decision map's choice and the SML share (focus_features)

    def __init__(
        self,
        image_channels: int = 3,
        num_sources: int = 2,
        base_channels: int = 32,
        factor: int = 4,
        num_blocks: int = 2,
        out_channels: int | None = None,
        correction: str = "direct",
        detail_channels: int = 0,
    ) -> None:
        super().__init__()
        if (
            num_sources < 2
            or image_channels < 1
            or base_channels < 2
            or base_channels % 2
            or factor < 1
            or num_blocks < 0
            or detail_channels < 0
        ):
            raise ConfigError(
                "model: SpaceToDepthNet needs num_sources >= 2, image_channels >= 1, an even base_channels >= 2, "
                f"factor >= 1, num_blocks >= 0, detail_channels >= 0; got "
                f"{num_sources}, {image_channels}, {base_channels}, {factor}, {num_blocks}, {detail_channels}"
            )
        out_channels = out_channels or image_channels
        if correction not in ("direct", "affine") or (correction == "affine" and out_channels != num_sources + image_channels):
            raise ConfigError(f"model.correction must be direct or affine (with out_channels = num_sources + image_channels = "
                              f"{num_sources + image_channels}), got {correction!r} with {out_channels}")  # fmt: skip
        self.image_channels, self.num_sources = image_channels, num_sources
        self.factor, self.base_channels, self.correction = factor, base_channels, correction
        width = base_channels
        inputs = image_channels + num_sources * (image_channels + self.EXTRA_CHANNELS)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Conv2d(inputs, width, factor, stride=factor)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(num_blocks)
        )
        fields = out_channels + (num_sources if correction == "affine" else 0)  # affine: N logits, N gains, C offsets
        self.out = nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(width, detail_channels or fields, factor, stride=factor))
        self.detail = None
        if detail_channels:
            self.detail = nn.Sequential(
                nn.Conv2d(detail_channels + inputs, detail_channels, 1), nn.SiLU(), nn.Conv2d(detail_channels, fields, 1)
            )
        last = self.out[-1] if self.detail is None else self.detail[-1]
        nn.init.zeros_(last.weight)  # a zero output: the blend model starts at its logit prior
        nn.init.zeros_(last.bias)

    @property
    def min_size(self) -> int:
        return self.factor

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x_t.shape
        if c != self.image_channels:
            raise ValueError(f"x_t has {c} channels, the network expects {self.image_channels}")
        if cond is None:
            raise ValueError(f"this network needs {self.num_sources} source images as cond")
        if cond.dim() == 4:
            cond = cond.reshape(b, self.num_sources, -1, h, w)
        if cond.shape[:3] != (b, self.num_sources, self.image_channels) or cond.shape[-2:] != (h, w):
            raise ValueError(f"cond must be [{b}, {self.num_sources}, {self.image_channels}, {h}, {w}], got {tuple(cond.shape)}")
        features = focus_features(cond.float()).to(x_t.dtype)
        inp = torch.cat([cond.flatten(1, 2).to(x_t.dtype), features.flatten(1, 2), x_t], dim=1)
        inp = pad_to_multiple(inp, self.factor, self.min_size)
        emb = self.time_mlp(timestep_embedding(t.to(x_t.device), self.base_channels).to(x_t.dtype))
        hidden = self.inp(inp) + emb[:, :, None, None]
        for block in self.blocks:
            hidden = hidden + block(hidden)
        out = self.out(hidden)[..., :h, :w]
        if self.detail is not None:
            out = self.detail(torch.cat([out, inp[..., :h, :w]], dim=1))
        if self.correction == "direct":
            return out
        n = self.num_sources
        gains, offset = out[:, n : 2 * n], out[:, 2 * n :]
        residual = offset + (gains[:, :, None] * cond.to(out.dtype)).sum(1)
        return torch.cat([out[:, :n], residual], dim=1)
