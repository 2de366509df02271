"""Conditional U-Net: predicts ε from the sources and the noisy image concatenated on channels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusiondiff.errors import ConfigError
from fusiondiff.focus import focus_features


def _groups(channels: int) -> int:
    """Largest group count <= 32 that divides ``channels`` (GroupNorm needs a divisor)."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, Sec. 3.5), shape [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def pad_to_multiple(x: torch.Tensor, factor: int, min_size: int) -> torch.Tensor:
    """Reflect-pad [B, C, H, W] at the bottom / right to multiples of ``factor``, refusing images smaller
    than ``min_size`` px a side (the networks crop their output back to H x W)."""
    h, w = x.shape[-2:]
    if min(h, w) < min_size:
        raise ValueError(f"image of {h}x{w} px is smaller than this network's minimum of {min_size} px per side")
    ph, pw = (-h) % factor, (-w) % factor
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the time embedding, then GroupNorm-SiLU-dropout-conv, with a skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(_groups(in_ch), in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(_groups(out_ch), out_ch), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions, with a residual connection."""

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads if channels % num_heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class ConditionalUNet(nn.Module):
    """ε-predicting U-Net over ``[source_1, ..., source_N, x_t]`` (FusionDiff's "ABX" channel order).

    Args:
        image_channels: channels of the fused image and of each source (1 gray, 3 colour).
        num_sources: number of source images N (0 gives an unconditional model).
        source_channels: channels per source (default image_channels; HDR exposures have 6).
        out_channels: output channels (default image_channels; ``prediction=blend``: one weight map per source).
        base_channels: width of the first level.
        channel_mult: width multiplier per level; the image is downsampled 2x between levels.
        num_res_blocks: residual blocks per level, on the way down and on the way up.
        attention_levels: indices of the levels (0 = full resolution) that get self-attention.
        dropout: dropout inside residual blocks.
        space_to_depth: s > 1 runs the whole U-Net on an s-times coarser grid: every s x s cell of the input
            becomes s² times the channels (``pixel_unshuffle``, no pixel lost) and the last convolution writes
            s² times the outputs, one per pixel of the cell (``pixel_shuffle``); about s² times fewer operations
            at the same width (the defocus-boundary model's time budget, README "Defocus boundaries").
            Networks with condition hooks (:meth:`condition_features`) keep 1.

    Any H x W works: inputs are reflect-padded to a multiple of ``2**(len(channel_mult)-1)`` (times
    ``space_to_depth``) and the output is cropped back. ``forward(x_t, t, cond)`` with ``cond`` of shape
    [B, N, C, H, W] (or [B, N*C, H, W]) matches the ``denoiser`` interface of the samplers.
    """

    def __init__(
        self,
        image_channels: int = 3,
        num_sources: int = 2,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (),
        dropout: float = 0.0,
        source_channels: int | None = None,
        out_channels: int | None = None,
        space_to_depth: int = 1,
    ) -> None:
        super().__init__()
        if num_sources < 0 or image_channels < 1 or not channel_mult or num_res_blocks < 1 or space_to_depth < 1:
            raise ConfigError("model: need image_channels >= 1, num_sources >= 0, channel_mult non-empty, num_res_blocks >= 1, "
                              f"space_to_depth >= 1; got {image_channels}, {num_sources}, {list(channel_mult)}, "
                              f"{num_res_blocks}, {space_to_depth}")  # fmt: skip
        if space_to_depth > 1 and type(self).condition_features is not ConditionalUNet.condition_features:
            raise ConfigError(f"{type(self).__name__} has condition hooks at full resolution: space_to_depth must be 1")
        if base_channels < 2 or base_channels % 2 or any(m < 1 for m in channel_mult):
            raise ConfigError(f"model.base_channels must be even and >= 2 (the time embedding) and channel_mult >= 1, got "
                              f"{base_channels} and {list(channel_mult)}")  # fmt: skip
        bad = [a for a in attention_levels if not 0 <= a < len(channel_mult)]
        if bad:
            raise ConfigError(f"attention_levels {bad} out of range 0..{len(channel_mult) - 1}")
        self.image_channels = image_channels
        self.num_sources = num_sources
        self.source_channels = image_channels if source_channels is None else source_channels
        self.widths = [base_channels * m for m in channel_mult]
        self.base_channels = base_channels
        self.space_to_depth = space_to_depth
        self.factor = 2 ** (len(channel_mult) - 1) * space_to_depth
        emb_dim = 4 * base_channels
        cell = space_to_depth**2

        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_conv = nn.Conv2d((self.source_channels * num_sources + image_channels) * cell, base_channels, 3, padding=1)

        # Level i maps widths[i] -> widths[i+1] in its first block and leaves one skip at its
        # end; the way up mirrors it (cat with that skip, back to widths[i]). This is the layout
        # of the U-Net FusionDiff builds on (early denoising-diffusion-pytorch), ~27 M parameters
        # at base 64, multipliers (1, 2, 4, 8), 2 blocks per level.
        widths = [base_channels] + [base_channels * m for m in channel_mult]
        last = len(channel_mult) - 1
        self.down = nn.ModuleList()
        for level in range(len(channel_mult)):
            w_in, w_out = widths[level], widths[level + 1]
            blocks = [
                self._block(w_in if k == 0 else w_out, w_out, emb_dim, dropout, level in attention_levels)
                for k in range(num_res_blocks)
            ]
            self.down.append(nn.ModuleList([b for pair in blocks for b in pair]))
            if level < last:
                self.down.append(nn.Conv2d(w_out, w_out, 3, stride=2, padding=1))

        ch = widths[-1]
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, dropout),
                SelfAttention(ch) if attention_levels else nn.Identity(),
                ResBlock(ch, ch, emb_dim, dropout),
            ]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            w_in, w_out = widths[level], widths[level + 1]
            blocks = [
                self._block(2 * w_out if k == 0 else w_in, w_in, emb_dim, dropout, level in attention_levels)
                for k in range(num_res_blocks)
            ]
            self.up.append(nn.ModuleList([b for pair in blocks for b in pair]))
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w_in, w_in, 3, padding=1)))

        self.out = nn.Sequential(
            nn.GroupNorm(_groups(base_channels), base_channels),
            nn.SiLU(),
            nn.Conv2d(base_channels, (out_channels or image_channels) * cell, 3, padding=1),
            *([nn.PixelShuffle(space_to_depth)] if space_to_depth > 1 else []),
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    @staticmethod
    def _block(in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool) -> list[nn.Module]:
        return [ResBlock(in_ch, out_ch, emb_dim, dropout)] + ([SelfAttention(out_ch)] if attention else [])

    @property
    def min_size(self) -> int:
        """Smallest height/width accepted (reflect padding needs at least this many pixels)."""
        return self.factor

    def _run_stage(self, stage: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(stage, nn.ModuleList):
            for block in stage:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            return h
        return stage(h)

    def condition_features(self, cond: torch.Tensor) -> Any:
        """Features computed once per call from the (padded) sources [B, N*Cs, H, W]; None here."""
        return None

    def modulate(self, level: int, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        """Hook applied to the features at the end of each encoder level (identity here; SFT in subclasses)."""
        return hidden

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x_t.shape
        if c != self.image_channels:
            raise ValueError(f"x_t has {c} channels, the network expects {self.image_channels}")
        if self.num_sources:
            if cond is None:
                raise ValueError(f"this network needs {self.num_sources} source images as cond")
            if cond.dim() == 5:
                cond = cond.flatten(1, 2)
            sc = self.source_channels
            if cond.shape[1] != self.num_sources * sc or cond.shape[-2:] != x_t.shape[-2:] or cond.shape[0] != b:
                raise ValueError(
                    f"cond has shape {tuple(cond.shape)}; expected [{b}, {self.num_sources}, {sc}, {h}, {w}] "
                    f"({self.num_sources} sources of {sc} channels at the size of x_t)"
                )
            inp = torch.cat([cond.to(x_t.dtype), x_t], dim=1)
        else:
            inp = x_t
        inp = pad_to_multiple(inp, self.factor, self.min_size)

        emb = self.time_mlp(timestep_embedding(t.to(x_t.device), self.base_channels).to(x_t.dtype))
        context = self.condition_features(inp[:, : inp.shape[1] - c]) if self.num_sources else None
        if self.space_to_depth > 1:
            inp = F.pixel_unshuffle(inp, self.space_to_depth)
        hidden = self.input_conv(inp)
        skips = []
        for stage in self.down:
            hidden = self._run_stage(stage, hidden, emb)
            if isinstance(stage, nn.ModuleList):
                hidden = self.modulate(len(skips), hidden, context)
                skips.append(hidden)
        for block in self.mid:
            hidden = block(hidden, emb) if isinstance(block, ResBlock) else block(hidden)
        for stage in self.up:
            if isinstance(stage, nn.ModuleList):
                hidden = self._run_stage(stage, torch.cat([hidden, skips.pop()], dim=1), emb)
            else:
                hidden = stage(hidden)
        return self.out(hidden)[..., :h, :w]


class DecisionMapUNet(ConditionalUNet):
    """A :class:`ConditionalUNet` that also sees, per source, the classical decision map's choice and the
    SML focus share (:func:`fusiondiff.focus.focus_features`), computed from the sources inside
    ``forward``: two extra input channels per source, nothing to change in data or samplers. Meant for
    ``prediction=blend``: turning the decision map into confident weights is then a near-linear function
    of an input, and the network spends its capacity on where the decision map is wrong.
    """

    EXTRA_CHANNELS = 2

    def __init__(self, image_channels: int = 3, num_sources: int = 2, source_channels: int | None = None, **kwargs) -> None:
        if source_channels not in (None, image_channels):
            raise ValueError(f"DecisionMapUNet takes plain image sources ({image_channels} channels), got {source_channels}")
        if num_sources < 2:
            raise ValueError("DecisionMapUNet needs at least two sources (a decision map chooses between them)")
        super().__init__(image_channels, num_sources, source_channels=image_channels + self.EXTRA_CHANNELS, **kwargs)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            raise ValueError(f"this network needs {self.num_sources} source images as cond")
        if cond.dim() == 4:
            cond = cond.reshape(cond.shape[0], self.num_sources, -1, *cond.shape[-2:])
        if cond.dim() != 5 or cond.shape[2] != self.image_channels:
            raise ValueError(f"cond must be [B, {self.num_sources}, {self.image_channels}, H, W], got {tuple(cond.shape)}")
        features = focus_features(cond.float()).to(cond.dtype)
        return super().forward(x_t, t, torch.cat([cond, features], dim=2))
