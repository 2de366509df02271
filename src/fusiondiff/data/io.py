"""Image reading and writing with explicit checks.

Tensors are float32 [C, H, W] in [-1, 1]; C is 1 (gray) or 3 (RGB). Reading keeps the full
precision of 16-bit files (scaled by 65535, never truncated to 8 bits). Writing is atomic:
a temporary file in the target folder is renamed into place, so a failure never leaves a
half-written image.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from fusiondiff.errors import InputError, MissingInputError, OutputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(InputError):
    """An input image that cannot be used, with the reason and the fix in the message."""


def read_image(path: str | os.PathLike, channels: int | None = None) -> torch.Tensor:
    """Read an 8- or 16-bit gray/RGB image as float32 [C, H, W] in [-1, 1].

    ``channels=3`` turns gray into RGB (replicated); ``channels=1`` turns RGB into gray
    (ITU-R BT.601 luma). An alpha channel is dropped if fully opaque; otherwise it is an error,
    because dropping it would change the picture.
    """
    return to_channels(array_to_tensor(read_array(path)), channels, name=str(path))


def read_array(path: str | os.PathLike) -> np.ndarray:
    """The checked pixels of an image file as stored: [H, W, C] uint8 or uint16, C in (1, 3), RGB order
    (the checks of :func:`read_image`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)  # handles any file name, spaces and brackets included
    _check_complete(path, data.tobytes())  # before OpenCV, which prints warnings or decodes the rows it has
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f"cannot decode {path}: not an image file or corrupt (supported: {', '.join(IMAGE_EXTENSIONS)})")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(
            f"{path} has sample type {img.dtype}; only 8- and 16-bit integer images are read here "
            "(convert floating-point/HDR data with the HDR tools)"
        )
    opaque = 255 if img.dtype == np.uint8 else 65535
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 4:
        alpha = img[:, :, 3]
        if alpha.min() < opaque:
            raise ImageError(
                f"{path} has a transparent alpha channel; flatten it onto a background first "
                "(e.g. PIL: Image.alpha_composite, or ImageMagick: -background white -flatten)"
            )
        log.info("%s: dropping its fully opaque alpha channel", path)
        img = img[:, :, :3]
    elif img.shape[2] == 2:  # gray + alpha
        if img[:, :, 1].min() < opaque:
            raise ImageError(f"{path} has a transparent alpha channel; flatten it onto a background first")
        img = img[:, :, :1]
    if img.shape[2] == 3:
        img = img[:, :, ::-1]  # OpenCV's BGR -> RGB
    return np.ascontiguousarray(img)


def array_to_tensor(img: np.ndarray) -> torch.Tensor:
    """[H, W, C] uint8/uint16 (or [h, w, C] crops of it) -> float32 [C, H, W] in [-1, 1]."""
    scale = 255.0 if img.dtype == np.uint8 else 65535.0
    tensor = torch.from_numpy(np.ascontiguousarray(img).astype(np.float32) / scale).permute(2, 0, 1)
    return tensor * 2.0 - 1.0


def _check_complete(path: Path, data: bytes) -> None:
    """Refuse a truncated PNG or JPEG, which OpenCV decodes without complaint (the missing rows grey or black):
    a PNG must reach its IEND chunk, a JPEG its end-of-image marker (a JPEG with data after that marker, as
    some cameras write, is accepted when Pillow decodes it completely)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
            pos += 12 + length
            if kind == b"IEND":
                if pos <= len(data):
                    return
                break
        raise ImageError(f"{path} is a truncated PNG (the file ends before its last chunk); copy or export it again")
    if data[:2] == b"\xff\xd8" and data.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
        except OSError as err:
            raise ImageError(f"{path} is a truncated or corrupt JPEG ({err}); copy or export it again") from None


def to_channels(image: torch.Tensor, channels: int | None, name: str = "image") -> torch.Tensor:
    """Convert [C, H, W] (or [B, C, H, W]) between gray and RGB; ``None`` keeps it as is."""
    c = image.shape[-3]
    if channels is None or c == channels:
        return image
    if channels == 3 and c == 1:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:]).clone()
    if channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).reshape(3, 1, 1)
        return (image * weights).sum(dim=-3, keepdim=True)
    raise ImageError(f"{name} has {c} channels; cannot convert to {channels}")


def transfer_chroma(luma_from: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """RGB with the brightness (BT.601 luma) of ``luma_from`` and the colour (RGB minus its luma) of
    ``colour``: how a fusion of gray and colour sources keeps colour everywhere. Both [..., 3, H, W]."""
    return (to_channels(luma_from, 1) + colour - to_channels(colour, 1)).clamp(-1, 1)


def check_image_tensor(image: torch.Tensor, name: str = "image") -> None:
    """Raise a clear error for NaN/Inf or values outside [-1, 1] (small rounding slack allowed)."""
    if not image.numel():
        return
    lo, hi = (v.item() for v in torch.aminmax(image))  # one pass; a NaN anywhere makes both NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ImageError(f"{name} contains NaN or Inf values")
    if lo < -1.001 or hi > 1.001:
        raise ImageError(f"{name} has values in [{lo:.3g}, {hi:.3g}]; expected [-1, 1] (map 0..1 images with x*2-1)")


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_image(path: str | os.PathLike, image: torch.Tensor, bit_depth: int = 8, metadata=None) -> Path:
    """Write [C, H, W] in [-1, 1] as an 8- or 16-bit image (format from the suffix; PNG or TIFF for 16-bit).

    ``metadata`` (:class:`fusiondiff.data.stacks.Metadata`, e.g. a reference frame's) is carried where the
    format allows: EXIF and ICC profile into PNG (``eXIf`` / ``iCCP`` chunks) and JPEG (APP1 / APP2), the ICC
    profile into TIFF; WebP and BMP get none (a notice says so)."""
    path = Path(path)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ImageError(f"expected a [C, H, W] tensor with C in (1, 3), got shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ImageError(f"refusing to write {path}: the image contains NaN or Inf")
    suffix = path.suffix.lower()
    if bit_depth == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise ValueError(f"16-bit output needs .png or .tif, not {suffix!r}")
    scale = 255.0 if bit_depth == 8 else 65535.0
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2 * scale).round().permute(1, 2, 0).numpy()
    arr = arr.astype(np.uint8 if bit_depth == 8 else np.uint16)
    if arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    if metadata and metadata.icc and suffix in (".tif", ".tiff"):
        return atomic_write_bytes(path, _tiff_with_icc(arr[:, :, ::-1] if arr.shape[2] == 3 else arr, metadata.icc))
    ok, encoded = cv2.imencode(suffix or ".png", np.ascontiguousarray(arr))
    if not ok:
        raise ImageError(f"OpenCV cannot encode {suffix!r} images; use one of {', '.join(IMAGE_EXTENSIONS)}")
    payload = encoded.tobytes()
    if metadata:
        payload = _embed_metadata(payload, suffix, metadata, path)
    return atomic_write_bytes(path, payload)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _embed_metadata(payload: bytes, suffix: str, metadata, path: Path) -> bytes:
    """``payload`` (an encoded PNG or JPEG) with ``metadata``'s EXIF and ICC profile inserted."""
    import zlib

    if suffix == ".png":  # after IHDR (8-byte signature + 25-byte IHDR chunk): before any IDAT, as both need
        extra = b""
        if metadata.icc:
            extra += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc))
        if metadata.exif:
            extra += _png_chunk(b"eXIf", metadata.exif)
        return payload[:33] + extra + payload[33:]
    if suffix in (".jpg", ".jpeg"):
        segments = b""
        if metadata.exif:
            block = b"Exif\x00\x00" + metadata.exif
            if len(block) + 2 <= 0xFFFF:
                segments += b"\xff\xe1" + (len(block) + 2).to_bytes(2, "big") + block
            else:
                log.warning(
                    "%s: the reference frame's EXIF block (%d bytes) does not fit a JPEG segment; not copied", path, len(block)
                )
        if metadata.icc:
            size = 65519  # APP2 payload minus the 14-byte ICC_PROFILE header
            parts = [metadata.icc[i : i + size] for i in range(0, len(metadata.icc), size)]
            for k, part in enumerate(parts, 1):
                block = b"ICC_PROFILE\x00" + bytes([k, len(parts)]) + part
                segments += b"\xff\xe2" + (len(block) + 2).to_bytes(2, "big") + block
        at = 2  # after SOI, and after OpenCV's JFIF APP0 segment when it wrote one
        if payload[2:4] == b"\xff\xe0":
            at = 4 + int.from_bytes(payload[4:6], "big")
        return payload[:at] + segments + payload[at:]
    log.warning("%s: %s files do not carry the reference frame's EXIF/ICC here (use .png, .jpg or .tif)", path, suffix)
    return payload


def _tiff_with_icc(arr: np.ndarray, icc: bytes) -> bytes:
    """A TIFF (RGB or gray, 8/16-bit, deflate-compressed) with an ICC profile tag, via tifffile."""
    import io as bytes_io

    import tifffile

    buffer = bytes_io.BytesIO()
    rgb = arr.ndim == 3 and arr.shape[2] == 3
    tifffile.imwrite(buffer, arr if rgb else arr.reshape(arr.shape[:2]), photometric="rgb" if rgb else "minisblack",
                     compression="zlib", iccprofile=icc)  # fmt: skip
    return buffer.getvalue()


WRITABLE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
DATA_EXTENSIONS = (".hdr", ".npy", ".json")  # outputs that are not 8/16-bit images: only their folder is checked


def check_output_image(path: str | os.PathLike, bit_depth: int = 8) -> Path:
    """Check, before any compute, that an image can be written at ``path``: a known extension, a bit depth
    that format stores, not a folder, and a folder that exists or can be created and accepts files (tried
    with a temporary file, which also works for root and read-only mounts). Writes nothing that stays."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_EXTENSIONS:
        raise OutputError(
            f"output {path}: unknown image extension {suffix or '(none)'!r}; use one of {', '.join(WRITABLE_EXTENSIONS)}"
        )
    if bit_depth not in (8, 16):
        raise OutputError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if bit_depth == 16 and suffix not in SIXTEEN_BIT_EXTENSIONS:
        raise OutputError(f"output {path}: 16-bit images need {' or '.join(SIXTEEN_BIT_EXTENSIONS)}, not {suffix}")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name such as {path / 'fused.png'}")
    check_output_folder(path.parent)
    return path


def check_outputs(
    outputs: list[Path],
    sources: list[Path | str | None],
    bit_depth: int = 8,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> list[Path]:
    """Every check on the files a command will write, before it computes anything: none is a source (whatever
    ``overwrite`` says), each can be written (:func:`check_output_image`; ``.hdr``, ``.npy`` and ``.json`` files only need their
    folder), and an existing one is replaced only with ``overwrite=true``: otherwise it is an error, or, for
    folder jobs (``skip_existing``), left alone. Returns the outputs still to write."""
    check_not_a_source(outputs, sources)
    todo = []
    for out in outputs:
        if out.suffix.lower() in DATA_EXTENSIONS:
            check_output_folder(out.parent)
        else:
            check_output_image(out, bit_depth)
        if out.exists() and not overwrite:
            if skip_existing:
                continue
            raise OutputError(f"output {out} exists; pass overwrite=true to replace it, or choose another output=")
        todo.append(out)
    return todo


def check_output_folder(folder: str | os.PathLike) -> Path:
    """The folder exists (or its nearest existing parent does, so it can be created) and accepts new files."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write into {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".fusiondiff-write-test.")
    except OSError as err:
        raise OutputError(f"cannot write into {folder} ({err.strerror}); choose another output folder") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _check_channels_arg(channels: int | None, allow_none: bool = True) -> None:
    valid = (1, 3, None) if allow_none else (1, 3)
    if channels not in valid:
        raise ValueError(f"channels must be one of {valid}, got {channels!r}")


class OutputIsSourceError(OutputError):
    """An output path that names one of the inputs: writing it would destroy a source."""


def check_not_a_source(outputs: list[Path], inputs: list[Path | str | None]) -> None:
    """Refuse (before any compute) an output that is one of the inputs: a source is never overwritten, whatever
    ``overwrite`` says. Compares resolved paths, and the files themselves where both exist (links, case)."""
    sources = {Path(p).resolve(): Path(p) for p in inputs if p}
    for out in outputs:
        src = sources.get(out.resolve())
        if src is None and out.exists():
            src = next((s for s in sources.values() if s.exists() and out.samefile(s)), None)
        if src is not None:
            raise OutputIsSourceError(
                f"output {out} is the input {src}: writing it would overwrite a source; choose another output="
            )
