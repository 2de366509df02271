"""Focus stacks on disk: which files make a stack, in which order, and the reference frame's metadata.

A stack is a folder of frames, a glob pattern or a list of files. Folders and globs are sorted in natural
order (``img2`` before ``img10``, case-insensitive), the order a camera or a rail controller numbers frames.
"""

from __future__ import annotations

import glob as globbing
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fusiondiff.data.io import IMAGE_EXTENSIONS
from fusiondiff.errors import InputError, MissingInputError

GLOB_CHARACTERS = "*?["


def natural_key(path: str | Path) -> list:
    """Sort key: digit runs compare as numbers, the rest case-insensitively (``f2.png`` < ``f10.png``)."""
    name = Path(path).name
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name) if part]


def _images_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]


def stack_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The frames of a stack: a folder (its images), a glob (``'stack/*.tif'``) or a list of files, in natural
    order for folders and globs and in the given order for lists. At least 2 frames; every one must exist."""
    if isinstance(spec, str | Path):
        items = [spec]
    else:
        items = list(spec)
    if len(items) == 1:
        one = Path(items[0])
        if one.is_dir():
            files = sorted(_images_in(one), key=natural_key)
            if len(files) < 2:
                raise InputError(
                    f"stack folder {one} holds {len(files)} image(s) ({', '.join(IMAGE_EXTENSIONS)}); a stack needs >= 2"
                )
            return files
        if not one.exists() and any(c in str(one) for c in GLOB_CHARACTERS):
            files = sorted((Path(p) for p in globbing.glob(str(one))), key=natural_key)
            files = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if len(files) < 2:
                raise InputError(f"the pattern {one} matches {len(files)} image(s); a stack needs >= 2")
            return files
    files = [Path(p) for p in items]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise MissingInputError(f"image not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if len(files) < 2:
        raise InputError(f"fusion needs at least 2 source images, got {len(files)} (give a list, a folder or a glob)")
    return files


@dataclass(frozen=True)
class Metadata:
    """What an output inherits from its reference frame: the EXIF block (TIFF-structured bytes, without the
    ``Exif\\0\\0`` prefix) and the ICC colour profile, each None when the frame has none."""

    exif: bytes | None = None
    icc: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.exif or self.icc)


def read_metadata(path: str | Path) -> Metadata:
    """EXIF and ICC profile of an image file (JPEG, PNG, WebP; the ICC profile of a TIFF). Pixel data is not
    decoded. A file whose metadata Pillow cannot parse yields none (the pixels are what matter)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            icc = im.info.get("icc_profile") or None
            exif = im.info.get("exif") if im.format != "TIFF" else None  # a TIFF's own tags are not EXIF
    except Exception:  # noqa: BLE001 - metadata is optional; the pixels were checked elsewhere
        return Metadata()
    if isinstance(exif, bytes) and exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    return Metadata(exif=exif or None, icc=icc)
