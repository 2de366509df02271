"""Focus stacks of any length and size: frames -> registration -> aligned frames -> tiles x frames -> fused.

Memory stays bounded whatever the stack: every frame is decoded twice (once to check it and register it on a
small gray copy, once to warp it into the reference geometry), the aligned frames are kept as stored (8 or
16 bit) in memory when they are small and in a temporary folder otherwise, and the fusion runs on tiles
that hold all frames of one window (with a margin wider than the method's reach, so the result is the same
as fusing the whole image at once for the classical methods). Any function ``sources [N, C, h, w] -> fused
[C, h, w]`` fuses: the classical baselines take N natively; a 2-source model is chained
(``fuse(fuse(f1, f2), f3) ...``).

Outputs besides the fused image: the depth map (per pixel the index of the sharpest frame, by the focus
measure of the decision map), the valid-region mask (pixels every used frame covers; the others are filled,
per frame, from its nearest neighbour towards the reference) and the registrations.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusiondiff import align as registration
from fusiondiff.align import AlignConfig, Registration
from fusiondiff.data.io import ImageError, array_to_tensor, read_array
from fusiondiff.errors import InputError
from fusiondiff.focus import decision_weights
from fusiondiff.progress import Progress

log = logging.getLogger(__name__)
Tensor = torch.Tensor
Fuser = Callable[[Tensor], Tensor]

IN_MEMORY_BYTES = 768 * 2**20  # aligned frames up to this total stay in memory; larger stacks go to a temp folder
TILE_BUDGET_BYTES = 96 * 2**20  # float32 frames of one tile (the methods' intermediates take a few times more)
# how far each method looks: a tile's margin (px) at least this wide makes tiling exact (decision map: 1 px
# Laplacian + 3 px window + 7 px majority filter; pyramid and guided filter: close, not exact)
# (see above). Tiles start on a 32 px grid, so the pyramid's 2x
# subsampling sees the same pixels in a tile as in the whole image.
MARGINS = {"decision_map": 16, "average": 0, "laplacian_pyramid": 128, "guided_filter": 128, "model": 64}
GRID = 32


@dataclass
class StackResult:
    fused: Tensor  # [C, H, W] in [-1, 1]
    depth: np.ndarray | None  # [H, W] int16 frame index (of the input order), None unless asked
    valid: np.ndarray  # [H, W] bool: every used frame covers the pixel
    registrations: list[Registration]
    reference: int


class FrameStore:
    """Aligned frames as stored (uint8/uint16 [H, W, C]), in memory or as .npy files in a temporary folder
    (read back window by window through a memory map that is closed after each read)."""

    def __init__(self, on_disk: bool) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fusiondiff-stack-")) if on_disk else None
        self.frames: dict[int, np.ndarray | Path] = {}

    def put(self, index: int, frame: np.ndarray) -> None:
        if self.folder is None:
            self.frames[index] = frame
        else:
            path = self.folder / f"{index:05d}.npy"
            np.save(path, frame)
            self.frames[index] = path

    def get(self, index: int) -> np.ndarray:
        item = self.frames[index]
        return item if isinstance(item, np.ndarray) else np.load(item)

    def window(self, index: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        item = self.frames[index]
        if isinstance(item, np.ndarray):
            return item[y0:y1, x0:x1]
        mapped = np.load(item, mmap_mode="r")
        out = np.array(mapped[y0:y1, x0:x1])
        del mapped
        return out

    @property
    def indices(self) -> list[int]:
        return sorted(self.frames)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


Frame = Path | np.ndarray  # a file, or its pixels as read_array returns them (in-memory stacks, evaluation)


def _load(frame: Frame) -> np.ndarray:
    return frame if isinstance(frame, np.ndarray) else read_array(frame)


def _name(frame: Frame, index: int) -> str:
    return f"frame {index}" if isinstance(frame, np.ndarray) else Path(frame).name


def check_frames(paths: Sequence[Frame], config: AlignConfig) -> tuple[list[np.ndarray], tuple[int, int, int], str]:
    """Decode every frame (the checks of :func:`~fusiondiff.data.io.read_array`), require one size, and keep
    the small gray copies registration needs. Returns (working images, (H, W, C of the widest), dtype name)."""
    if len(paths) < 2:
        raise InputError(f"a stack needs at least 2 frames, got {len(paths)}")
    config.check(len(paths))
    working, first, channels, dtypes = [], None, 1, set()
    progress = Progress(len(paths), "checking frames")
    for k, path in enumerate(paths):
        frame = _load(path)
        if first is None:
            first = (_name(path, k), frame.shape[:2])
        elif frame.shape[:2] != first[1]:
            h, w = first[1]
            raise ImageError(f"frame {_name(path, k)} is {frame.shape[0]}x{frame.shape[1]} px, {first[0]} is {h}x{w}: "
                             "the frames of a stack must have one size (crop or resize them alike)")  # fmt: skip
        channels = max(channels, frame.shape[2])
        dtypes.add(frame.dtype.name)
        if config.method != "none":
            small, _ = registration.working_image(frame)
            working.append(small.astype(np.float16))
        progress.advance()
    progress.close()
    return working, (*first[1], channels), "uint16" if "uint16" in dtypes else "uint8"


def register_stack(
    paths: Sequence[Path], working: list[np.ndarray], size: tuple[int, int], config: AlignConfig
) -> list[Registration]:
    """Each frame's transform to the reference: neighbours registered to each other outwards from the
    reference (a failed frame is skipped: the next one registers to the last good neighbour)."""
    n, ref = len(paths), config.reference_index(len(paths))
    regs = [Registration(k, _name(p, k) if isinstance(p, np.ndarray) else str(p), "unaligned") for k, p in enumerate(paths)]
    regs[ref].status = "reference"
    if config.method == "none":
        return regs
    h, w = size
    scale = min(1.0, registration.WORKING_SIZE / max(h, w))
    matrices = {ref: np.eye(3)}
    last_good = {1: ref, -1: ref}
    progress = Progress(n - 1, f"registering ({config.method})")
    for k, _ in registration.chain_order(n, ref):
        side = 1 if k > ref else -1
        anchor = last_good[side]
        try:
            relative, score = registration.register_pair(
                working[anchor].astype(np.float32), working[k].astype(np.float32), config
            )
        except Exception as err:  # noqa: BLE001 - cv2.error (ECC diverged), RuntimeError (too few matches)
            regs[k].status, regs[k].message = "failed", _first_line(err)
            log.warning("frame %d (%s): registration failed (%s); the frame is left out", k, _name(paths[k], k), regs[k].message)
            progress.advance()
            continue
        relative = registration.rescale(relative, scale)
        why = registration.implausible(relative, h, w)
        total = relative @ matrices[anchor]
        regs[k].matrix, regs[k].score = total.tolist(), score
        regs[k].summarise()
        if why:
            regs[k].status, regs[k].message = "implausible", why
            log.warning("frame %d (%s): implausible registration (%s); the frame is left out", k, _name(paths[k], k), why)
        else:
            regs[k].status = "ok"
            matrices[k], last_good[side] = total, k
        progress.advance()
    progress.close()
    return regs


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__).strip()[:200]


def warp_stack(
    paths: Sequence[Path], regs: list[Registration], size: tuple[int, int, int], dtype: str
) -> tuple[FrameStore, np.ndarray]:
    """Decode, warp and fill the usable frames into a :class:`FrameStore`; the valid-region mask."""
    h, w, c = size
    used = [r for r in regs if r.usable]
    on_disk = len(used) * h * w * c * np.dtype(dtype).itemsize > IN_MEMORY_BYTES
    store = FrameStore(on_disk)
    valid = np.ones((h, w), bool)
    ref = next(r.index for r in regs if r.status == "reference")
    order = [ref] + [k for k, _ in registration.chain_order(len(regs), ref)]
    progress = Progress(len(used), "aligning frames" if any(r.status == "ok" for r in regs) else "loading frames")
    try:
        filled_towards_ref: dict[int, np.ndarray] = {}  # side -> the last filled frame on that side
        for k in order:
            reg = regs[k]
            if not reg.usable:
                continue
            frame = _as(_load(paths[k]), c, dtype)
            if reg.status == "ok":
                frame, coverage = registration.warp_to_reference(frame, np.asarray(reg.matrix), h, w)
                if not coverage.all():
                    side = 1 if k > ref else -1
                    neighbour = filled_towards_ref.get(side, filled_towards_ref.get(0))
                    frame = np.where(coverage[:, :, None], frame, neighbour)
                valid &= coverage
            side = 0 if k == ref else (1 if k > ref else -1)
            filled_towards_ref[side] = frame
            store.put(k, frame)
            progress.advance()
    except BaseException:
        store.close()
        raise
    finally:
        progress.close()
    return store, valid


def _as(frame: np.ndarray, channels: int, dtype: str) -> np.ndarray:
    if frame.shape[2] != channels:  # gray frame in a colour stack: replicated
        frame = np.repeat(frame, channels, axis=2)
    if frame.dtype.name != dtype:  # 8-bit frame in a 16-bit stack: exact (x * 257)
        frame = frame.astype(np.uint16) * 257
    return frame


def tiles(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    return [(y, min(y + tile, height), x, min(x + tile, width)) for y in range(0, height, tile) for x in range(0, width, tile)]


def tile_side(num_frames: int, channels: int, margin: int, height: int, width: int) -> int:
    """The largest tile whose frames (with margins) fit :data:`TILE_BUDGET_BYTES` as float32."""
    side = int(math.sqrt(TILE_BUDGET_BYTES / (4 * channels * num_frames))) - 2 * margin
    return max(2 * GRID, min(side // GRID * GRID, max(height, width)))


def fuse_store(store: FrameStore, fuse: Fuser, size: tuple[int, int, int], margin: int, depth: bool = False,
               channels: int | None = None) -> tuple[Tensor, np.ndarray | None]:  # fmt: skip
    """Fuse the stored frames tile by tile: each window with ``margin`` px of context, all frames at once."""
    h, w, c = size
    margin = -(-margin // GRID) * GRID
    indices = store.indices
    side = tile_side(len(indices), c, margin, h, w)
    out = torch.empty(channels or c, h, w)
    depth_map = np.empty((h, w), np.int16) if depth else None
    lookup = torch.tensor(indices, dtype=torch.int16)
    windows = tiles(h, w, side)
    progress = Progress(len(windows), f"fusing {len(indices)} frames") if len(windows) > 1 else None
    for y0, y1, x0, x1 in windows:
        ya, yb, xa, xb = max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)
        sources = torch.stack([array_to_tensor(store.window(k, ya, yb, xa, xb)) for k in indices])
        crop = (slice(y0 - ya, y0 - ya + (y1 - y0)), slice(x0 - xa, x0 - xa + (x1 - x0)))
        out[:, y0:y1, x0:x1] = fuse(sources)[:, crop[0], crop[1]]
        if depth_map is not None:
            choice = decision_weights(sources[None])[0, :, 0].argmax(0)
            depth_map[y0:y1, x0:x1] = lookup[choice][crop].numpy()
        if progress:
            progress.advance()
    if progress:
        progress.close()
    return out, depth_map


def fuse_stack(paths: Sequence[str | Path | np.ndarray], fuse: Fuser, config: AlignConfig | None = None, margin: int = 16,
               depth: bool = False, channels: int | None = None, matrices: Sequence[np.ndarray] | None = None,
               checked: tuple | None = None) -> StackResult:  # fmt: skip
    """Check, register, align and fuse a stack (see the module docstring). ``fuse`` maps sources
    [N, C, h, w] in [-1, 1] to [C', h, w]; ``channels``: C' when it differs from the frames' C. Frames are
    files or arrays (:func:`~fusiondiff.data.io.read_array`'s layout). ``matrices``: known transforms
    (reference -> frame, one per frame) used instead of estimating them (e.g. a synthetic warp's inverse).
    ``checked``: what :func:`check_frames` returned for these frames and ``config`` (not decoded again)."""
    paths = [p if isinstance(p, np.ndarray) else Path(p) for p in paths]
    config = (config or AlignConfig()).check(len(paths))
    working, size, dtype = checked or check_frames(paths, config if matrices is None else AlignConfig())
    if matrices is None:
        regs = register_stack(paths, working, size[:2], config)
    else:
        ref = config.reference_index(len(paths))
        regs = [Registration(k, _name(p, k), status="reference" if k == ref else "ok", matrix=np.asarray(m, float).tolist())
                for k, (p, m) in enumerate(zip(paths, matrices, strict=True))]  # fmt: skip
    del working
    if sum(r.usable for r in regs) < 2:
        raise InputError(f"only {sum(r.usable for r in regs)} frame(s) of {len(paths)} could be registered; "
                         "see the warnings (try align.motion=translation, another align.reference, or align=none)")  # fmt: skip
    store, valid = warp_stack(paths, regs, size, dtype)
    try:
        fused, depth_map = fuse_store(store, fuse, size, margin, depth, channels)
    finally:
        store.close()
    ref = next(r.index for r in regs if r.status == "reference")
    return StackResult(fused, depth_map, valid, regs, ref)


def chained(fuse_pair: Callable[[Tensor], Tensor], arity: int = 2) -> Fuser:
    """A fuser of N frames from one of ``arity`` sources: fuse the first ``arity``, then the result with the
    next ``arity - 1`` frames, and so on (the way a 2-source model fuses a stack)."""

    def fuse(sources: Tensor) -> Tensor:
        if len(sources) < arity:
            raise InputError(f"this model fuses {arity} sources; the stack has {len(sources)} frames")
        fused = fuse_pair(sources[:arity])
        k = arity
        while k < len(sources):
            group = sources[k : k + arity - 1]
            if len(group) < arity - 1:  # too few left for a full group: repeat the last frame
                group = torch.cat([group, group[-1:].expand(arity - 1 - len(group), *group.shape[1:])])
            fused = fuse_pair(torch.cat([fused[None].to(sources.dtype), group]))
            k += arity - 1
        return fused

    return fuse


def depth_preview(depth: np.ndarray, frames: int) -> np.ndarray:
    """A colour-mapped [H, W, 3] uint8 RGB picture of a depth map (frame 0 dark blue ... last frame red)."""
    import cv2

    scaled = (depth.astype(np.float32) * (255.0 / max(frames - 1, 1))).round().astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)[:, :, ::-1].copy()
