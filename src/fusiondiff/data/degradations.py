"""Synthetic degradations for ``task=restoration`` and the restoration datasets.

Images are [C, H, W] in [-1, 1]; masks are [1, H, W] with **1 = missing (the hole)**, 0 = known.
A restoration sample's single source is ``concat(degraded image, mask)`` ([1, C + 1, H, W]): the mask
channel is all zeros for degradations other than inpainting, so one network layout serves one model per
degradation and one mixed model alike. Holes are filled with 0 (mid-grey) in the degraded image.

Degradations (``kinds``):

* ``inpaint``: free-form brush strokes and boxes covering a fraction of the image in ``coverage``;
* ``noise``: additive Gaussian noise, σ uniform in ``noise_sigma`` (on the [0, 1] intensity scale);
* ``blur``: a Gaussian (σ in ``blur_sigma``) or a linear motion blur (length in ``motion_length`` px);
* ``sr``: bicubic (antialiased) downsampling by a factor in ``sr_factors`` and back up to the input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from fusiondiff.data.datasets import PairedAugment, PhotoPatches, _generator, random_crop
from fusiondiff.data.io import IMAGE_EXTENSIONS, ImageError, read_image
from fusiondiff.errors import InputError, MissingInputError
from fusiondiff.filters import blur, gaussian_kernel, motion_kernel

DEGRADATIONS = ("inpaint", "noise", "blur", "sr")


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def stroke_mask(height: int, width: int, gen: torch.Generator, strokes: int = 3, max_width: float = 0.12) -> torch.Tensor:
    """Free-form brush strokes (random walks of thick line segments) as a binary [1, H, W] mask."""
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    mask = torch.zeros(height, width, dtype=torch.bool)
    side = min(height, width)
    for _ in range(strokes):
        y, x = _rand(gen, 0, height), _rand(gen, 0, width)
        radius = max(1.0, _rand(gen, 0.02, max_width) * side / 2)
        angle = _rand(gen, 0, 2 * math.pi)
        for _ in range(_randint(gen, 2, 6)):
            angle += _rand(gen, -1.2, 1.2)
            length = _rand(gen, 0.1, 0.4) * side
            y2 = min(max(y + length * math.sin(angle), 0.0), height - 1.0)
            x2 = min(max(x + length * math.cos(angle), 0.0), width - 1.0)
            # distance of every pixel to the segment (y, x) -> (y2, x2)
            dy, dx = y2 - y, x2 - x
            seg = max(dy * dy + dx * dx, 1e-9)
            s = (((yy - y) * dy + (xx - x) * dx) / seg).clamp(0, 1)
            mask |= (yy - (y + s * dy)) ** 2 + (xx - (x + s * dx)) ** 2 <= radius**2
            y, x = y2, x2
    return mask[None].float()


def box_mask(height: int, width: int, gen: torch.Generator, boxes: int = 1, max_side: float = 0.5) -> torch.Tensor:
    """Axis-aligned rectangles (sides 10 % .. ``max_side`` of the image) as a binary [1, H, W] mask."""
    mask = torch.zeros(1, height, width)
    for _ in range(boxes):
        bh = max(1, round(_rand(gen, 0.1, max_side) * height))
        bw = max(1, round(_rand(gen, 0.1, max_side) * width))
        top, left = _randint(gen, 0, height - bh), _randint(gen, 0, width - bw)
        mask[:, top : top + bh, left : left + bw] = 1
    return mask


def random_hole_mask(
    height: int, width: int, gen: torch.Generator, coverage: Sequence[float] = (0.05, 0.4), max_tries: int = 50
) -> torch.Tensor:
    """Strokes and/or boxes whose hole fraction lies in ``coverage`` = (min, max) (redrawn until it does).

    If no draw lands in the range (tiny images), the last one is trimmed or grown with a box to fit.
    """
    lo, hi = float(coverage[0]), float(coverage[1])
    if not 0 < lo <= hi < 1:
        raise InputError(f"coverage must satisfy 0 < min <= max < 1, got {tuple(coverage)}")
    mask = torch.zeros(1, height, width)
    for _ in range(max_tries):
        kind = _randint(gen, 0, 2)  # 0 strokes, 1 boxes, 2 both
        mask = torch.zeros(1, height, width)
        if kind in (0, 2):
            mask = torch.maximum(mask, stroke_mask(height, width, gen, strokes=_randint(gen, 1, 4)))
        if kind in (1, 2):
            mask = torch.maximum(mask, box_mask(height, width, gen, boxes=_randint(gen, 1, 2)))
        if lo <= mask.mean().item() <= hi:
            return mask
    # fall back: a centred box of the mean target coverage
    target = (lo + hi) / 2
    bh, bw = max(1, round(height * math.sqrt(target))), max(1, round(width * math.sqrt(target)))
    mask = torch.zeros(1, height, width)
    top, left = (height - bh) // 2, (width - bw) // 2
    mask[:, top : top + bh, left : left + bw] = 1
    return mask


def add_noise(image: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of std ``sigma`` on the [0, 1] scale (2 σ in [-1, 1]), clipped to the range."""
    noise = torch.randn(image.shape, generator=gen, dtype=image.dtype)
    return (image + 2 * sigma * noise).clamp(-1, 1)


def down_up(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic antialiased downsampling by ``factor`` and bicubic upsampling back (same size as the input)."""
    h, w = image.shape[-2:]
    small = F.interpolate(image[None], (max(1, h // factor), max(1, w // factor)), mode="bicubic", antialias=True)
    return F.interpolate(small, (h, w), mode="bicubic", align_corners=False)[0].clamp(-1, 1)


class Degrader:
    """Draws one degradation (of ``kinds``, uniformly) per call; see the module docstring for the ranges."""

    def __init__(
        self,
        kinds: Sequence[str] = ("inpaint",),
        coverage: Sequence[float] = (0.05, 0.4),
        noise_sigma: Sequence[float] = (0.02, 0.2),
        blur_sigma: Sequence[float] = (0.8, 3.0),
        motion_length: Sequence[float] = (3.0, 15.0),
        sr_factors: Sequence[int] = (2, 4),
    ) -> None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = [k for k in kinds if k not in DEGRADATIONS]
        if not kinds or unknown:
            raise InputError(f"unknown degradation(s) {unknown or kinds}; valid: {', '.join(DEGRADATIONS)}")
        for name, rng in (("noise_sigma", noise_sigma), ("blur_sigma", blur_sigma), ("motion_length", motion_length)):
            if len(rng) != 2 or not 0 < rng[0] <= rng[1]:
                raise InputError(f"{name} must be (min, max) with 0 < min <= max, got {tuple(rng)}")
        if not sr_factors or any(int(f) < 2 for f in sr_factors):
            raise InputError(f"sr_factors must be integers >= 2, got {tuple(sr_factors)}")
        self.kinds, self.coverage = kinds, tuple(coverage)
        self.noise_sigma, self.blur_sigma, self.motion_length = tuple(noise_sigma), tuple(blur_sigma), tuple(motion_length)
        self.sr_factors = [int(f) for f in sr_factors]
        random_hole_mask(8, 8, torch.Generator().manual_seed(0), self.coverage, max_tries=1)  # validates coverage

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(degraded [C, H, W], mask [1, H, W]) of a clean image [C, H, W] in [-1, 1]."""
        kind = self.kinds[_randint(gen, 0, len(self.kinds) - 1)]
        h, w = image.shape[-2:]
        mask = torch.zeros(1, h, w, dtype=image.dtype)
        if kind == "inpaint":
            mask = random_hole_mask(h, w, gen, self.coverage).to(image.dtype)
            return image * (1 - mask), mask
        if kind == "noise":
            return add_noise(image, _rand(gen, *self.noise_sigma), gen), mask
        if kind == "blur":
            if _rand(gen) < 0.5:
                kernel = gaussian_kernel(_rand(gen, *self.blur_sigma))
            else:
                kernel = motion_kernel(_rand(gen, *self.motion_length), _rand(gen, 0, math.pi))
            return blur(image, kernel.to(image.dtype)).clamp(-1, 1), mask
        return down_up(image, self.sr_factors[_randint(gen, 0, len(self.sr_factors) - 1)]), mask


def restoration_source(degraded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model input of one sample: [1, C + 1, H, W] = concat(degraded with holes set to 0, mask)."""
    check_mask(mask, *degraded.shape[-2:], allow_empty=True)
    return torch.cat([degraded * (1 - mask), mask.to(degraded.dtype)])[None]


def check_mask(mask: torch.Tensor, height: int, width: int, allow_empty: bool = False, name: str = "mask") -> torch.Tensor:
    """Validate a hole mask [1, H, W] or [H, W] (1 = hole): its size, binary values and a non-trivial hole."""
    m = mask if mask.dim() == 3 else mask[None]
    if m.dim() != 3 or m.shape[0] != 1:
        raise InputError(f"{name} must be [H, W] or [1, H, W], got {tuple(mask.shape)}")
    if tuple(m.shape[-2:]) != (height, width):
        raise InputError(f"{name} is {m.shape[-1]}x{m.shape[-2]}, the image is {width}x{height}: resize the mask to match")
    if not torch.isfinite(m).all():
        raise InputError(f"{name} contains NaN or Inf")
    if not ((m == 0) | (m == 1)).all():
        frac = ((m != 0) & (m != 1)).float().mean().item()
        raise InputError(
            f"{name} is not binary ({frac:.1%} of its pixels are neither black nor white): save it as PNG with only "
            "black (known) and white (hole) pixels, e.g. threshold it at 50 %; JPEG masks get grey edges"
        )
    if not allow_empty:
        if m.sum() == 0:
            raise InputError(f"{name} is empty (all black): there is no hole to fill; white marks the hole")
        if m.sum() == m.numel():
            raise InputError(f"{name} covers the whole image (all white): nothing is known to condition on")
    return m


def read_mask(path: str | Path, height: int, width: int) -> torch.Tensor:
    """A hole mask image (white = hole, black = known; any bit depth) as a checked binary [1, H, W] tensor."""
    m = (read_image(path, channels=1) + 1) / 2  # [1, H, W] in [0, 1]
    m = torch.where(m.abs() < 1e-6, torch.zeros_like(m), torch.where((m - 1).abs() < 1e-6, torch.ones_like(m), m))
    return check_mask(m, height, width, name=f"mask {path}")


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


def restoration_files(root: str | Path, require_clean: bool = False) -> list[tuple[str, Path, Path | None, Path | None]]:
    """Files of a restoration folder as ``(stem, degraded, mask or None, clean or None)``, sorted by stem.

    Layout: ``root/degraded/X`` with optional ``root/mask/X`` (white = hole) and ``root/clean/X``, matched by
    file stem; without ``degraded/`` (and ``require_clean`` False), the images directly in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"{root} is not a folder (layout: degraded/, clean/, optional mask/)")
    has_layout = (root / "degraded").is_dir()
    if require_clean:
        for name in ("degraded", "clean"):
            if not (root / name).is_dir():
                raise MissingInputError(f"{root}: missing {name}/ (layout: degraded/, clean/, optional mask/)")
    degraded = _images_by_stem(root / "degraded" if has_layout else root)
    clean, masks = _images_by_stem(root / "clean"), _images_by_stem(root / "mask")
    if not degraded:
        where = f"{root}/degraded/" if has_layout else f"{root} (or {root}/degraded/)"
        raise ImageError(f"no images in {where} ({', '.join(IMAGE_EXTENSIONS)})")
    if clean or require_clean:
        missing = sorted(set(degraded) ^ set(clean))
        if missing:
            raise ImageError(f"{root}: degraded/ and clean/ do not match; unpaired: {', '.join(missing[:5])}")
    if masks and sorted(masks) != sorted(degraded):
        raise ImageError(f"{root}: mask/ must hold one mask per image (or be absent)")
    return [(s, degraded[s], masks.get(s), clean.get(s)) for s in sorted(degraded)]


class PairedRestorationFolder(torch.utils.data.Dataset):
    """Users' own restoration pairs: ``root/degraded/X``, ``root/clean/X`` and optional ``root/mask/X``
    (white = hole), matched by file stem (:func:`restoration_files`). Items are
    ``{"sources": [1, C + 1, H, W], "target", "name"}``."""

    def __init__(self, root: str | Path, channels: int = 3, crop_size: int | None = None, augment: bool = False,
                 seed: int | None = None) -> None:  # fmt: skip
        self.root = Path(root)
        self.items = [(s, d, c, m) for s, d, m, c in restoration_files(root, require_clean=True)]
        self.channels, self.crop_size, self.augment, self.seed = channels, crop_size, augment, seed
        self._aug = PairedAugment(crop_size, flip=augment, rotate=augment)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, deg_path, clean_path, mask_path = self.items[index]
        degraded, clean = read_image(deg_path, self.channels), read_image(clean_path, self.channels)
        if degraded.shape != clean.shape:
            raise ImageError(f"{name}: degraded {tuple(degraded.shape)} and clean {tuple(clean.shape)} differ in size")
        h, w = degraded.shape[-2:]
        mask = read_mask(mask_path, h, w) if mask_path is not None else torch.zeros(1, h, w)
        stack = torch.cat([degraded, mask, clean])
        if self.augment:
            stack = self._aug(stack[None], _generator(None if self.seed is None else self.seed * 100003 + index))[0]
        else:
            stack = random_crop(stack, self.crop_size, None)
        c = degraded.shape[0]
        return {"sources": restoration_source(stack[:c], stack[c : c + 1]), "target": stack[c + 1 :].contiguous(), "name": name}


class SyntheticRestoration(torch.utils.data.Dataset):
    """Clean photo patches (:class:`~fusiondiff.data.datasets.PhotoPatches`: scikit-image's photos by default,
    or ``folder``) degraded on the fly by a :class:`Degrader`. Items: ``{"sources": [1, C + 1, h, w],
    "target": [C, h, w], "name"}``; ``deterministic=True`` fixes the patch and degradation per index."""

    def __init__(self, degrader: Degrader | None = None, **patch_kwargs) -> None:
        self.patches = PhotoPatches(**patch_kwargs)
        self.degrader = degrader or Degrader()

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> dict:
        patch, gen = self.patches._patch(index)
        degraded, mask = self.degrader(patch, gen)
        return {"sources": restoration_source(degraded, mask), "target": patch, "name": f"restoration_{index:06d}"}


def split_restoration_source(sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded [B, C, H, W], mask [B, 1, H, W]) of restoration sources [B, 1, C + 1, H, W]."""
    if sources.dim() != 5 or sources.shape[1] != 1:
        raise InputError(f"restoration sources must be [B, 1, C + 1, H, W], got {tuple(sources.shape)}")
    return sources[:, 0, :-1], sources[:, 0, -1:]


def load_degraded(path: str | Path, mask: str | Path | None, channels: int = 3) -> torch.Tensor:
    """A degraded image file (and optional hole mask file) as model sources [1, C + 1, H, W]."""
    image = read_image(path, channels)
    h, w = image.shape[-2:]
    m = read_mask(mask, h, w) if mask else torch.zeros(1, h, w)
    return restoration_source(image, m)
