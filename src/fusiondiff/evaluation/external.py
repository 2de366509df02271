"""External programs as evaluation methods, when they are installed (the project never needs them).

``enfuse`` (Debian package ``enfuse``) with the focus-stacking settings of its manual: no exposure or
saturation weight, contrast weight 1, hard masks (each pixel from the frame with the most local contrast).
``enfuse_align``: ``align_image_stack`` (Debian ``hugin-tools``, with ``-m``: also the magnification) first;
where it gives up (too few control points) enfuse gets the frames unaligned, with a warning.
Sources are handed over as 8-bit PNG or, when they need it, 16-bit TIFF files, losslessly.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from fusiondiff.errors import ConfigError

log = logging.getLogger(__name__)
FAILURES = {"align_image_stack": 0}  # counted for reports: how often the external aligner gave up
ENFUSE_FOCUS = ["--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask"]
INSTALL = {"enfuse": "apt-get install enfuse", "align_image_stack": "apt-get install hugin-tools"}


def available(program: str) -> bool:
    return shutil.which(program) is not None


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ConfigError(f"method needs {program}, which is not installed ({INSTALL.get(program, 'install it')})")
    return path


def _write(path: Path, image: torch.Tensor, bits: int) -> Path:
    scale = 255.0 if bits == 8 else 65535.0
    arr = ((image.float().clamp(-1, 1) + 1) / 2 * scale).round().permute(1, 2, 0).numpy()
    arr = arr.astype(np.uint8 if bits == 8 else np.uint16)
    cv2.imwrite(str(path), arr[:, :, ::-1] if arr.shape[2] == 3 else arr)
    return path


def _read(path: Path, channels: int) -> torch.Tensor:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise RuntimeError(f"{path} was not written")
    scale = 255.0 if img.dtype == np.uint8 else 65535.0
    img = img[:, :, None] if img.ndim == 2 else img
    img = img[:, :, :3][:, :, ::-1] if img.shape[2] >= 3 else img[:, :, :1]  # drop enfuse's alpha channel
    out = torch.from_numpy(np.ascontiguousarray(img).astype(np.float32) / scale).permute(2, 0, 1) * 2 - 1
    return out if out.shape[0] == channels else out.expand(channels, *out.shape[1:]).clone()


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")


def enfuse(sources: torch.Tensor, align: bool = False) -> torch.Tensor:
    """Fuse sources [N, C, H, W] in [-1, 1] with enfuse (and align_image_stack first when ``align``)."""
    exe = require("enfuse")
    aligner = require("align_image_stack") if align else None
    quantised = ((sources.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    bits = 8 if torch.allclose(quantised, sources.float(), atol=1e-6) else 16
    with tempfile.TemporaryDirectory(prefix="fusiondiff-enfuse-") as tmp:
        folder = Path(tmp)
        files = [_write(folder / f"src{k:03d}.{'png' if bits == 8 else 'tif'}", s, bits) for k, s in enumerate(sources)]
        if aligner:
            try:
                _run([aligner, "-m", "-a", "aligned", *[f.name for f in files]], folder)
                files = sorted(folder.glob("aligned*.tif"))
            except RuntimeError as err:  # e.g. too few control points: enfuse fuses the frames as they are
                log.warning("align_image_stack failed, enfuse gets the unaligned frames (%s)", str(err)[:120])
                FAILURES["align_image_stack"] += 1
        _run([exe, *ENFUSE_FOCUS, "-o", "fused.tif", *[f.name for f in files]], folder)
        return _read(folder / "fused.tif", sources.shape[1])
