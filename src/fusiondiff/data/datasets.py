"""Datasets yielding ``{"sources": [N, C, H, W], "target": [C, H, W] (optional), "name": str}`` in [-1, 1]."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset

from fusiondiff.data.io import IMAGE_EXTENSIONS, ImageError, _check_channels_arg, read_image, to_channels
from fusiondiff.data.pairing import Sample, find_samples
from fusiondiff.errors import InputError, MissingInputError
from fusiondiff.filters import blur, disk_kernel, gaussian_kernel

log = logging.getLogger(__name__)

# scikit-image photos that ship inside the package (no download). The last two are held out
# from training by default and used for validation, tests and the built-in example.
SKIMAGE_TRAIN_PHOTOS = (
    "astronaut", "chelsea", "immunohistochemistry", "hubble_deep_field", "retina", "stereo_motorcycle",
    "camera", "brick", "grass", "gravel", "moon", "clock", "coins", "cell", "page", "text",
)  # fmt: skip
SKIMAGE_HELDOUT_PHOTOS = ("coffee", "rocket")


def read_sources(paths: Sequence[str | Path], resize: bool = False) -> list[torch.Tensor]:
    """Read N >= 2 source images, each [C, H, W] with its own channel count; sizes must agree unless ``resize``
    (to the first's size)."""
    if len(paths) < 2:
        raise InputError(f"fusion needs at least 2 source images, got {len(paths)}")
    images = [read_image(p) for p in paths]
    sizes = [tuple(im.shape[-2:]) for im in images]
    if len(set(sizes)) > 1:
        _check_sizes(paths, sizes, resize)
        h, w = sizes[0]
        log.warning("resizing sources to %dx%d (the size of %s)", h, w, Path(paths[0]).name)
        images = [
            im
            if im.shape[-2:] == (h, w)
            else F.interpolate(im[None], (h, w), mode="bicubic", antialias=True, align_corners=False)[0].clamp(-1, 1)
            for im in images
        ]
    return images


def _check_sizes(paths: Sequence[str | Path], sizes: list[tuple[int, int]], resize: bool) -> None:
    if len(set(sizes)) > 1 and not resize:
        listing = ", ".join(f"{Path(p).name}: {h}x{w}" for p, (h, w) in zip(paths, sizes, strict=True))
        if len(listing) > 300:
            listing = listing[:300] + " ..."
        raise ImageError(f"source images differ in size ({listing}); align/crop them, or opt in to resize=true")


def check_source_files(paths: Sequence[str | Path], resize: bool = False) -> tuple[int, int, int]:
    """Decode N >= 2 source files one at a time (the checks of :func:`read_sources`, in bounded memory:
    a 50-frame stack is never held at once); (N, H, W) of the first."""
    from fusiondiff.data.io import read_array

    if len(paths) < 2:
        raise InputError(f"fusion needs at least 2 source images, got {len(paths)}")
    sizes = [tuple(read_array(p).shape[:2]) for p in paths]
    _check_sizes(paths, sizes, resize)
    return (len(paths), *sizes[0])


def load_sources(paths: Sequence[str | Path], channels: int | None = None, resize: bool = False) -> torch.Tensor:
    """Read N source images as [N, C, H, W] (:func:`read_sources`), converted to ``channels``; mixed gray and
    colour sources without ``channels`` all become colour (gray replicated), with a notice."""
    images = read_sources(paths, resize)
    if channels is None and len({im.shape[0] for im in images}) > 1:
        log.warning("mixing gray and colour sources: the gray ones are replicated to RGB")
        channels = 3
    return torch.stack([to_channels(im, channels, name=str(p)) for im, p in zip(images, paths, strict=True)])


class PairedAugment:
    """The same random crop, flips and 90-degree rotation for every image of a sample."""

    def __init__(self, crop_size: int | None = None, flip: bool = True, rotate: bool = True) -> None:
        self.crop_size, self.flip, self.rotate = crop_size, flip, rotate

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``images`` [K, C, H, W] (sources and target stacked) -> augmented [K, C, h, w]."""
        images = random_crop(images, self.crop_size, gen)
        if self.flip and torch.rand((), generator=gen) < 0.5:
            images = images.flip(-1)
        if self.flip and torch.rand((), generator=gen) < 0.5:
            images = images.flip(-2)
        if self.rotate:
            images = torch.rot90(images, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))
        return images


def random_crop(images: torch.Tensor, size: int | None, gen: torch.Generator | None) -> torch.Tensor:
    """Random (or, without a generator, centre) square crop; images smaller than ``size`` are reflect-padded."""
    if size is None:
        return images
    h, w = images.shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        images = F.pad(images, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        h, w = images.shape[-2:]
    if gen is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top = int(torch.randint(0, h - size + 1, (), generator=gen))
        left = int(torch.randint(0, w - size + 1, (), generator=gen))
    return images[..., top : top + size, left : left + size]


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ())))
    return gen


class PairedFolderDataset(Dataset):
    """Source images (and ground truth, if present) matched by name in a folder; see :mod:`pairing`.

    Args:
        root: dataset folder.
        channels: 3 (colour; gray files are replicated), 1 (gray) or None (as stored).
        crop_size: random square crop for training (None: full images).
        augment: random flips and rotations (and random rather than centre crops).
        require_target: fail if any sample lacks ground truth (training does).
        seed: base seed for deterministic augmentation (None: from torch's global RNG).
        exclude: sample names left out (photos held out for a benchmark).
    """

    def __init__(
        self,
        root: str | Path,
        channels: int | None = 3,
        crop_size: int | None = None,
        augment: bool = False,
        require_target: bool = False,
        seed: int | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        _check_channels_arg(channels)
        self.root = Path(root)
        left_out = set(exclude)
        self.samples: list[Sample] = [s for s in find_samples(self.root, require_target=require_target) if s.name not in left_out]
        self.channels, self.crop_size, self.augment, self.seed = channels, crop_size, augment, seed
        self._aug = PairedAugment(crop_size, flip=augment, rotate=augment)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        sources = load_sources(sample.sources, self.channels)
        stack = sources
        if sample.target is not None:
            target = read_image(sample.target, self.channels)
            if target.shape != sources.shape[1:]:
                raise ImageError(
                    f"{sample.target}: ground truth is {tuple(target.shape)}, sources are {tuple(sources.shape[1:])}"
                )
            stack = torch.cat([sources, target[None]])
        if self.augment:
            stack = self._aug(stack, _generator(None if self.seed is None else self.seed * 100003 + index))
        else:
            stack = random_crop(stack, self.crop_size, None)
        n = len(sample.sources)
        item = {"sources": stack[:n].contiguous(), "name": sample.name}
        if sample.target is not None:
            item["target"] = stack[n].contiguous()
        return item


# --------------------------------------------------------------------------- synthetic


def skimage_photos(names: Sequence[str]) -> list[torch.Tensor]:
    """scikit-image's bundled photos as RGB tensors [3, H, W] in [-1, 1]."""
    import skimage.data

    photos = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise InputError(f"scikit-image has no bundled photo {name!r}")
        img = loader()
        if isinstance(img, tuple):  # stereo pairs
            img = img[0]
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(img[:, :, :3])).permute(2, 0, 1).float() / 255.0
        photos.append(t * 2 - 1)
    return photos


def heldout_pair(size: int = 96) -> torch.Tensor:
    """Square ``size`` px centre crops of the held-out photos coffee and rocket, [2, 3, size, size] in [-1, 1]
    (area-downsampled): the inputs of the zero-shot figures and evaluation."""
    out = []
    for photo in skimage_photos(["coffee", "rocket"]):
        h, w = photo.shape[-2:]
        side = min(h, w)
        crop = photo[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        out.append(F.interpolate(crop[None], (size, size), mode="area")[0])
    return torch.stack(out)


def focus_mask(h: int, w: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    """A smooth mask in [0, 1] of shape [1, H, W]: 1 where source A is in focus."""

    def rand() -> float:
        return float(torch.rand((), generator=gen))

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    softness = 0.02 + 0.15 * rand()
    if kind == "half_plane":
        angle = 2 * math.pi * rand()
        offset = 0.6 * (rand() - 0.5)
        d = xx * math.cos(angle) + yy * math.sin(angle) - offset
        mask = torch.sigmoid(d / softness)
    elif kind == "ramp":  # depth-like: focus changes gradually along a direction
        angle = 2 * math.pi * rand()
        d = xx * math.cos(angle) + yy * math.sin(angle)
        mask = torch.sigmoid(d / (0.3 + 0.5 * rand()))
    elif kind == "blobs":
        field = torch.zeros(h, w)
        for _ in range(1 + int(3 * rand())):
            cy, cx = 2 * rand() - 1, 2 * rand() - 1
            ry, rx = 0.2 + 0.5 * rand(), 0.2 + 0.5 * rand()
            field = torch.maximum(field, 1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2)
        mask = torch.sigmoid(field / (4 * softness))
        if rand() < 0.5:
            mask = 1 - mask
    else:
        raise InputError(f"unknown mask kind {kind!r}; valid: {', '.join(MASK_KINDS)}")
    return mask[None]


MASK_KINDS = ("blobs", "half_plane", "ramp")


def make_multifocus_triplet(
    sharp: torch.Tensor,
    gen: torch.Generator,
    max_sigma: float = 4.0,
    mask_kinds: Sequence[str] = MASK_KINDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """From a sharp [C, H, W] image, complementary sources [2, C, H, W] and the focus mask [1, H, W].

    Source A is sharp where the mask is 1 and blurred elsewhere; B the opposite. The blur is a
    Gaussian (sigma in [0.8, max_sigma]) or a disk of similar radius, chosen at random.
    """
    h, w = sharp.shape[-2:]
    kind = mask_kinds[int(torch.randint(0, len(mask_kinds), (), generator=gen))]
    mask = focus_mask(h, w, kind, gen)
    strength = 0.8 + (max_sigma - 0.8) * float(torch.rand((), generator=gen))
    kernel = gaussian_kernel(strength) if torch.rand((), generator=gen) < 0.5 else disk_kernel(1.5 * strength)
    blurred = blur(sharp, kernel)
    a = mask * sharp + (1 - mask) * blurred
    b = (1 - mask) * sharp + mask * blurred
    return torch.stack([a, b]), mask


class PhotoPatches(Dataset):
    """Random square patches (random scale and flip) of sharp photos (default: scikit-image's bundled ones).

    With ``deterministic=True`` item ``i`` is always the same (validation, tests); otherwise every
    access draws a new patch (training), seeded through torch's RNG so that ``seed_everything``
    makes runs repeatable. Items are ``{"sources": [0, C, h, w], "target": [C, h, w], "name"}``:
    unconditional training data (``task=unconditional``).

    Args:
        photos: names of scikit-image photos, or None for the default training set.
        folder: a folder of photos to use instead.
        num_samples: length of the dataset (an epoch).
        crop_size: side of the square patches.
        channels: 3 or 1.
        scale_range: the patch side as a fraction of the photo's shorter side, before resizing.
        deterministic: fixed sample per index.
        seed: base seed for deterministic samples.
    """

    def __init__(
        self,
        photos: Sequence[str] | None = None,
        folder: str | Path | None = None,
        num_samples: int = 1000,
        crop_size: int = 64,
        channels: int = 3,
        scale_range: tuple[float, float] = (0.35, 1.0),
        deterministic: bool = False,
        seed: int = 0,
    ) -> None:
        _check_channels_arg(channels, allow_none=False)
        if folder is not None:
            if not Path(folder).is_dir():
                raise MissingInputError(f"photo folder {folder} does not exist (data.train.folder: a folder of images)")
            files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
            self.photos = [read_image(f, 3) for f in files]
        else:
            self.photos = skimage_photos(SKIMAGE_TRAIN_PHOTOS if photos is None else photos)
        self.num_samples, self.crop_size, self.channels = num_samples, crop_size, channels
        self.scale_range = tuple(scale_range)
        self.deterministic, self.seed = deterministic, seed

    def __len__(self) -> int:
        return self.num_samples

    def _patch(self, index: int) -> tuple[torch.Tensor, torch.Generator]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        gen = _generator(self.seed * 1_000_003 + index if self.deterministic else None)
        photo = self.photos[int(torch.randint(0, len(self.photos), (), generator=gen))]
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand((), generator=gen))
        h, w = photo.shape[-2:]
        side = max(self.crop_size, int(min(h, w) * scale))
        patch = random_crop(photo, side, gen)
        if side != self.crop_size:
            patch = F.interpolate(patch[None], (self.crop_size, self.crop_size), mode="area")[0]
        if torch.rand((), generator=gen) < 0.5:
            patch = patch.flip(-1)
        return to_channels(patch, self.channels).clamp(-1, 1), gen

    def __getitem__(self, index: int) -> dict:
        patch, _ = self._patch(index)
        return {"sources": patch.new_zeros(0, *patch.shape), "target": patch, "name": f"patch_{index:06d}"}


class SyntheticMultiFocus(PhotoPatches):
    """Multi-focus triplets made on the fly from sharp photo patches (see :class:`PhotoPatches`).

    Each item draws a smooth focus mask (blobs, half-planes, depth-like ramps) and blurs
    complementary regions of two copies (Gaussian or disk, strength up to ``max_sigma``).
    """

    def __init__(self, *args, max_sigma: float = 4.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_sigma = max_sigma

    def __getitem__(self, index: int) -> dict:
        patch, gen = self._patch(index)
        sources, _ = make_multifocus_triplet(patch, gen, self.max_sigma)
        return {"sources": sources.clamp(-1, 1), "target": patch, "name": f"synthetic_{index:06d}"}


def concat_datasets(parts: Sequence[Dataset | Callable[..., Dataset]], augment: bool = True) -> Dataset:
    """Several datasets as one (e.g. real pairs plus synthetic triplets); callables get ``augment``."""
    if not parts:
        raise InputError("concat_datasets needs at least one dataset")
    built = [p(augment=augment) if callable(p) and not isinstance(p, Dataset) else p for p in parts]
    return ConcatDataset(built)
