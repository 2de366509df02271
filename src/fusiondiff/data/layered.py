"""Layered defocus: multi-focus scenes whose sources are wrong at focus boundaries, as real ones are.

A scene is a background photo and 1-2 foreground layers (colour from other photos, soft-edged alpha: blobs,
object-like shapes, thin structures), each on one of N focal planes. Source k is focused on plane k: every
layer is blurred by a kernel of radius ``r · |plane - k| / (N - 1)`` (disk or Gaussian, r in 1..10 px) and
composited back to front **with its blurred alpha**, so a blurred foreground spreads over the sharp
background next to its outline (the defocus spread effect). The ground truth composites every layer sharp.
Where the spread of one source meets the blurred background of the other, no source holds the right pixels:
the **boundary band** (``band``: every source differs from the truth by more than ``band_threshold``), which no
decision map or convex blend of the sources can get right. ``depth`` is the plane of the front-most layer at
each pixel (the sharpest source; the depth map of a focus stack).

:class:`LayeredDefocus` is the dataset (training: random; benchmark: ``deterministic=True`` with a seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fusiondiff.data.datasets import SKIMAGE_TRAIN_PHOTOS, _generator, random_crop, skimage_photos
from fusiondiff.data.io import IMAGE_EXTENSIONS, read_image, to_channels
from fusiondiff.errors import ConfigError, InputError, MissingInputError
from fusiondiff.filters import blur, disk_kernel, gaussian_kernel

Tensor = torch.Tensor
SHAPES = ("blob", "object", "thin")


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def layer_alpha(size: int, kind: str, gen: torch.Generator) -> Tensor:
    """A soft-edged foreground alpha [1, S, S] in [0, 1]: ``blob`` (a smooth random field, thresholded),
    ``object`` (a star-shaped outline with a few lobes, like a statue or a leaf) or ``thin`` (1-4 px curves,
    like twigs, wires or hair). Edges are softened by 0.3-1.2 px."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    if kind == "blob":
        coarse = torch.randn(1, 1, 5, 5, generator=gen)
        field = F.interpolate(coarse, (size, size), mode="bicubic", align_corners=True)[0]
        cy, cx = _rand(gen, -0.4, 0.4), _rand(gen, -0.4, 0.4)
        field = field + 1.5 * (0.6 - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt())
        hard = (field > _rand(gen, 0.2, 0.8)).float()
    elif kind == "object":
        cy, cx = _rand(gen, -0.3, 0.3), _rand(gen, -0.3, 0.3)
        angle, dist = torch.atan2(yy - cy, xx - cx), ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        radius = torch.full_like(angle, _rand(gen, 0.25, 0.55))
        for lobe in range(1, 6):
            radius = radius + _rand(gen, 0, 0.12) / lobe * torch.cos(lobe * angle + _rand(gen, 0, 2 * math.pi))
        hard = (dist < radius).float()[None]
    elif kind == "thin":
        hard = torch.zeros(1, size, size)
        for _ in range(int(_rand(gen, 2, 7))):
            t = torch.linspace(0, 1, 4 * size)
            y0, x0, a, bend = _rand(gen, -1, 1), _rand(gen, -1, 1), _rand(gen, 0, math.pi), _rand(gen, -2, 2)
            length = _rand(gen, 0.8, 2.5)
            ys = y0 + length * (t - 0.5) * math.sin(a) + 0.2 * bend * (t - 0.5) ** 2
            xs = x0 + length * (t - 0.5) * math.cos(a) - 0.2 * bend * (t - 0.5) ** 2
            iy = ((ys + 1) / 2 * (size - 1)).round().long()
            ix = ((xs + 1) / 2 * (size - 1)).round().long()
            ok = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
            line = torch.zeros(1, size, size)
            line[0, iy[ok], ix[ok]] = 1.0
            width = int(_rand(gen, 0, 2))  # half-width 0..1: 1-3 px lines
            if width:
                line = F.max_pool2d(line[None], 2 * width + 1, stride=1, padding=width)[0]
            hard = torch.maximum(hard, line)
    else:
        raise ConfigError(f"unknown layer shape {kind!r}; valid: {', '.join(SHAPES)}")
    return blur(hard.reshape(1, size, size), gaussian_kernel(_rand(gen, 0.3, 1.2))).clamp(0, 1)


def defocus_kernel(radius: float, kind: str) -> Tensor:
    """The blur of a layer ``radius`` px out of focus: an anti-aliased disk, or a Gaussian of σ = radius / 2."""
    if radius < 0.25:
        return torch.ones(1, 1)
    return disk_kernel(radius) if kind == "disk" else gaussian_kernel(max(radius / 2, 0.3))


def render(
    layers: Sequence[tuple[Tensor, Tensor, int]],
    planes: int,
    radius: float,
    kernel: str,
    views: Sequence[tuple[float, float, float]] | None = None,
) -> tuple[Tensor, Tensor]:
    """Sources [N, C, H, W] and ground truth [C, H, W] of ``layers`` = [(colour [C, H, W], alpha [1, H, W],
    plane)], back to front (the first is the background, alpha 1). Premultiplied compositing with each
    layer's colour *and* alpha blurred by its defocus in that source.

    ``views`` (one (dx, dy, gain) per source, None: all (0, 0, 1)): source k sees the whole scene moved by
    (dx, dy) px and its exposure scaled by ``gain`` (as real pairs differ by a little camera motion or focus
    breathing and by exposure); the truth shows each layer as the source focused on its plane sees it, which
    is what copying every region from its sharp source gives (the decision map's answer where it is right).
    """
    views = [(0.0, 0.0, 1.0)] * planes if views is None else list(views)

    def seen(colour: Tensor, alpha: Tensor, view: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
        dx, dy, gain = view
        if dx or dy:
            h, w = colour.shape[-2:]
            theta = torch.tensor([[[1.0, 0.0, -2 * dx / w], [0.0, 1.0, -2 * dy / h]]])
            grid = F.affine_grid(theta, (1, 1, h, w), align_corners=False)
            both = F.grid_sample(torch.cat([colour, alpha])[None], grid, padding_mode="border", align_corners=False)[0]
            colour, alpha = both[:-1], both[-1:]
        return ((colour + 1) * gain - 1 if gain != 1 else colour), alpha

    sources = []
    for focus in range(planes):
        out = None
        for colour, alpha, plane in layers:
            colour, alpha = seen(colour, alpha, views[focus])
            k = defocus_kernel(radius * abs(plane - focus) / max(planes - 1, 1), kernel)
            a = blur(alpha, k) if k.numel() > 1 else alpha
            premult = blur(colour * alpha, k) if k.numel() > 1 else colour * alpha
            out = premult if out is None else premult + (1 - a) * out
        sources.append(out)
    truth = None
    for colour, alpha, plane in layers:
        colour, alpha = seen(colour, alpha, views[plane])
        truth = colour if truth is None else alpha * colour + (1 - alpha) * truth
    return torch.stack(sources).clamp(-1, 1), truth.clamp(-1, 1)


class LayeredDefocus(Dataset):
    """Layered defocus scenes (see the module docstring) as ``{"sources": [N, C, S, S], "target": [C, S, S],
    "band": [1, S, S] (bool), "depth": [1, S, S] (plane index), "name"}`` in [-1, 1].

    Args:
        photos: scikit-image photo names (default: the training ones), or tensors [3, H, W] in [-1, 1].
        folder: a folder of photos added to ``photos`` (e.g. NYU-D's ``full_clear``); ``exclude``: file stems
            of it left out (photos held out for a benchmark).
        num_samples: scenes per epoch; ``size``: their side in px (an int, or (lo, hi) drawn per scene).
        planes: focal planes = sources (2 for pairs; more for focus stacks); ``layers``: (min, max) layers
            including the background (2-3).
        radius: (min, max) blur radius in px between the nearest and the farthest plane.
        noise: (min, max) Gaussian noise σ added to each source (0..1 scale); ``jpeg``: probability that the
            sources are stored as JPEG (quality 70-95) before being returned.
        shift, gain: each source sees the scene moved by up to ``shift`` px in x and y and its exposure scaled
            by up to 1 ± ``gain`` (uniform draws per source; the truth keeps every layer as its sharp source
            sees it, :func:`render`); 0: exactly registered and equally exposed sources.
        band_threshold: a pixel is in the band when every source is further than this from the truth
            (max over channels, [-1, 1] scale; 0.03 ≈ 4/255).
        min_band: redraw a scene (up to 20 times) whose band covers less than this share of its pixels.
        maps: return ``band`` and ``depth`` (False for training batches mixed with other datasets).
        deterministic, seed: item i is always the same scene (benchmarks), else every access draws a new one.
    """

    def __init__(
        self,
        photos: Sequence[str] | Sequence[Tensor] | None = None,
        folder: str | Path | None = None,
        exclude: Sequence[str] = (),
        num_samples: int = 1000,
        size: int | Sequence[int] = 64,
        planes: int = 2,
        layers: Sequence[int] = (2, 3),
        radius: Sequence[float] = (1.0, 10.0),
        kernels: Sequence[str] = ("disk", "gaussian"),
        shapes: Sequence[str] = SHAPES,
        noise: Sequence[float] = (0.0, 0.0),
        jpeg: float = 0.0,
        shift: float = 0.0,
        gain: float = 0.0,
        channels: int = 3,
        band_threshold: float = 0.03,
        min_band: float = 0.0,
        maps: bool = True,
        deterministic: bool = False,
        seed: int = 0,
    ) -> None:
        if photos is not None and len(photos) and isinstance(photos[0], Tensor):
            self.photos = list(photos)
        else:
            self.photos = skimage_photos(SKIMAGE_TRAIN_PHOTOS if photos is None else photos)
        if folder is not None:
            folder = Path(folder)
            if not folder.is_dir():
                raise MissingInputError(f"photo folder not found: {folder}")
            left_out = set(exclude)
            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem not in left_out)
            if not paths:
                raise InputError(f"no photos in {folder} (after excluding {len(left_out)})")
            self.photos += [read_image(p, 3) for p in paths]
        if len(self.photos) < 2:
            raise ConfigError("layered scenes need at least 2 photos (a background and a foreground)")
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if planes < 2 or not 2 <= layers[0] <= layers[1] or sizes[0] < 16 or not 0 < radius[0] <= radius[1]:
            raise ConfigError(f"need planes >= 2, 2 <= layers min <= max, size >= 16, 0 < radius min <= max; got "
                              f"{planes}, {tuple(layers)}, {sizes}, {tuple(radius)}")  # fmt: skip
        unknown = sorted(set(kernels) - {"disk", "gaussian"}) + sorted(set(shapes) - set(SHAPES))
        if unknown:
            raise ConfigError(f"unknown kernel/shape {unknown}; kernels: disk, gaussian; shapes: {', '.join(SHAPES)}")
        self.num_samples, self.sizes, self.planes, self.layers = num_samples, sizes, planes, tuple(layers)
        self.radius, self.kernels, self.shapes = tuple(radius), tuple(kernels), tuple(shapes)
        self.noise, self.jpeg, self.channels, self.band_threshold = tuple(noise), float(jpeg), channels, band_threshold
        self.min_band, self.maps = min_band, maps
        if shift < 0 or not 0 <= gain < 1:
            raise ConfigError(f"need shift >= 0 and 0 <= gain < 1, got {shift}, {gain}")
        self.shift, self.gain = float(shift), float(gain)
        self.deterministic, self.seed = deterministic, seed

    def __len__(self) -> int:
        return self.num_samples

    def _crop(self, gen: torch.Generator, side: int, exclude: int | None = None) -> tuple[Tensor, int]:
        choices = [i for i in range(len(self.photos)) if i != exclude]
        index = choices[int(torch.randint(0, len(choices), (), generator=gen))]
        photo = self.photos[index]
        h, w = photo.shape[-2:]
        scale = _rand(gen, 0.4, 1.0)
        crop = random_crop(photo, max(side, int(min(h, w) * scale)), gen)
        if crop.shape[-1] != side:
            crop = F.interpolate(crop[None], (side, side), mode="area")[0]
        if torch.rand((), generator=gen) < 0.5:
            crop = crop.flip(-1)
        return crop, index

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        gen = _generator(self.seed * 1_000_003 + index if self.deterministic else None)
        for _ in range(20):
            item = self._scene(gen, index)
            if item["band"].float().mean() >= self.min_band:
                break
        if not self.maps:
            del item["band"], item["depth"], item["planes"]
        return item

    def _scene(self, gen: torch.Generator, index: int) -> dict:
        lo, hi = self.sizes
        side = lo if lo == hi else int(torch.randint(lo, hi + 1, (), generator=gen))
        n_layers = int(torch.randint(self.layers[0], self.layers[1] + 1, (), generator=gen))
        background, bg_index = self._crop(gen, side)
        far = self.planes - 1 if torch.rand((), generator=gen) < 0.5 else 0  # the background at either end
        stack = [(background, torch.ones(1, side, side), far)]
        near = {0: self.planes - 1, self.planes - 1: 0}[far]
        for k in range(n_layers - 1):
            colour, _ = self._crop(gen, side, exclude=bg_index)
            shape = self.shapes[int(torch.randint(0, len(self.shapes), (), generator=gen))]
            # the first foreground on the plane opposite the background (a boundary is guaranteed); others anywhere
            plane = near if k == 0 else int(torch.randint(0, self.planes, (), generator=gen))
            stack.append((colour, layer_alpha(side, shape, gen), plane))
        # back to front: by distance from the background's plane (ties keep their order)
        stack = [stack[0]] + sorted(stack[1:], key=lambda layer: -abs(layer[2] - near))
        radius = _rand(gen, *self.radius)
        kernel = self.kernels[int(torch.randint(0, len(self.kernels), (), generator=gen))]
        views = None
        if self.shift or self.gain:
            views = [(_rand(gen, -self.shift, self.shift), _rand(gen, -self.shift, self.shift),
                      _rand(gen, 1 - self.gain, 1 + self.gain)) for _ in range(self.planes)]  # fmt: skip
        sources, truth = render(stack, self.planes, radius, kernel, views)
        error = (sources - truth[None]).abs().amax(1)  # [N, S, S]
        band = (error.amin(0) > self.band_threshold)[None]
        depth = torch.full((1, side, side), far, dtype=torch.long)
        for _, alpha, plane in stack[1:]:
            depth[alpha > 0.5] = plane
        sources = self._store(sources, gen)
        sources = to_channels(sources, self.channels)
        planes = torch.zeros(self.planes, dtype=torch.bool)
        planes[[plane for _, _, plane in stack]] = True
        return {"sources": sources, "target": to_channels(truth, self.channels), "band": band, "depth": depth,
                "planes": planes, "name": f"layered_{index:06d}"}  # fmt: skip

    def _store(self, sources: Tensor, gen: torch.Generator) -> Tensor:
        """Sensor noise and JPEG storage, as the configured ranges say (none by default)."""
        sigma = _rand(gen, *self.noise) if self.noise[1] > 0 else 0.0
        if sigma > 0:
            sources = sources + 2 * sigma * torch.randn(sources.shape, generator=gen)
        if self.jpeg > 0 and torch.rand((), generator=gen) < self.jpeg:
            import cv2
            import numpy as np

            quality = int(torch.randint(70, 96, (), generator=gen))
            stored = []
            for s in sources.clamp(-1, 1):
                arr = ((s + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()[:, :, ::-1]
                ok, data = cv2.imencode(".jpg", np.ascontiguousarray(arr), [cv2.IMWRITE_JPEG_QUALITY, quality])
                back = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
                stored.append(torch.from_numpy(back).permute(2, 0, 1).float() / 127.5 - 1)
            sources = torch.stack(stored)
        return sources.clamp(-1, 1)


class StackBatches:
    """Collate for N-frame training on :class:`LayeredDefocus` stacks (``maps=True``): each batch gets one
    frame count N in ``frames`` (at least the most layer planes any of its scenes has) and each scene N of its
    planes, always including the planes its layers lie on (so the all-in-focus target stays reachable), in
    focus order. The draws are a function of the batch's contents (exact resume). Maps are dropped."""

    def __init__(self, frames: Sequence[int] = (2, 6), seed: int = 0) -> None:
        self.frames, self.seed = (int(frames[0]), int(frames[1])), seed

    def __call__(self, items: list[dict]) -> dict:
        from torch.utils.data import default_collate

        key = int((sum(float(it["target"][:, :2, :2].sum()) for it in items) * 1e6) % 2**31)
        gen = torch.Generator().manual_seed(self.seed * 7919 + key)
        need = max(int(it["planes"].sum()) for it in items)
        lo, hi = max(self.frames[0], need), max(self.frames[1], need)
        n = int(torch.randint(lo, hi + 1, (), generator=gen))
        out = []
        for it in items:
            total = it["sources"].shape[0]
            keep = it["planes"].clone()
            others = torch.nonzero(~keep).flatten()
            extra = others[torch.randperm(len(others), generator=gen)[: max(0, min(n, total) - int(keep.sum()))]]
            keep[extra] = True
            chosen = torch.nonzero(keep).flatten()
            out.append({"sources": it["sources"][chosen], "target": it["target"], "name": it["name"]})
        return default_collate(out)
