"""Registration of the frames of a focus stack to a reference frame (OpenCV), for handheld stacks and focus
breathing (the magnification changes as the focus moves).

A transform here is a 3x3 matrix ``M`` that maps the reference frame's pixel coordinates (x, y, 1) to the
frame's: the frame warped into the reference geometry is ``frame(M @ p)`` at every reference pixel ``p``
(OpenCV's ``WARP_INVERSE_MAP``). Neighbouring frames are registered to each other (their focus differs
least) and the transforms are chained outwards from the reference, so long stacks work too.

Methods: ``ecc`` (enhanced correlation coefficient maximisation, ``cv2.findTransformECC``, coarse to fine
over an image pyramid, with motion ``translation`` / ``euclidean`` / ``affine`` / ``homography``) and
``homography`` (SIFT features, ratio test, RANSAC). A registration that fails (ECC does not converge, too
few feature matches) or is implausible (see :data:`LIMITS`) is reported for that frame, never used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from fusiondiff.errors import ConfigError

METHODS = ("none", "ecc", "homography")
MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
# a transform between two frames of one stack is implausible when a corner or the centre moves by more than
# this share of the image diagonal, or the area changes by more than this factor
LIMITS = {"max_displacement": 0.1, "max_area_change": 1.25}
WORKING_SIZE = 2048  # registration runs on frames scaled to at most this long side (24 MP: about 1/3)
MIN_PYRAMID_SIDE = 48


@dataclass(frozen=True)
class AlignConfig:
    """``method`` none | ecc | homography; ``reference`` middle | first | last | a frame index (0-based);
    ``motion`` (ECC): translation | euclidean | affine (default: covers shift, rotation and focus-breathing
    scale) | homography."""

    method: str = "none"
    reference: str | int = "middle"
    motion: str = "affine"

    @classmethod
    def from_config(cls, cfg: Any) -> AlignConfig:
        if cfg is None or isinstance(cfg, str):
            return cls(method=cfg or "none").check()
        d = dict(cfg)
        return cls(**{k: d[k] for k in ("method", "reference", "motion") if k in d}).check()

    def check(self, num_frames: int | None = None) -> AlignConfig:
        if self.method not in METHODS:
            raise ConfigError(f"unknown align method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.motion not in MOTIONS:
            raise ConfigError(f"unknown align.motion {self.motion!r}; valid: {', '.join(MOTIONS)}")
        if not (
            self.reference in ("middle", "first", "last")
            or (isinstance(self.reference, int) and not isinstance(self.reference, bool))
        ):
            raise ConfigError(f"align.reference must be middle, first, last or a frame index, got {self.reference!r}")
        if num_frames is not None:
            self.reference_index(num_frames)
        return self

    def reference_index(self, num_frames: int) -> int:
        if self.reference == "middle":
            return (num_frames - 1) // 2
        if self.reference == "first":
            return 0
        if self.reference == "last":
            return num_frames - 1
        index = int(self.reference)
        if not 0 <= index < num_frames:
            raise ConfigError(f"align.reference={index} is not a frame of this {num_frames}-frame stack (0..{num_frames - 1})")
        return index


@dataclass
class Registration:
    """One frame's transform to the reference and how it was found (written to the stack's JSON report)."""

    index: int
    file: str
    status: str = "ok"  # reference | ok | failed | implausible | unaligned
    matrix: list[list[float]] = field(default_factory=lambda: np.eye(3).tolist())
    score: float | None = None  # ECC correlation coefficient, or the RANSAC inlier count
    message: str = ""
    shift_px: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0

    @property
    def usable(self) -> bool:
        return self.status in ("reference", "ok", "unaligned")

    def summarise(self) -> Registration:
        m = np.asarray(self.matrix)
        a = m[:2, :2]
        self.scale = float(math.sqrt(abs(np.linalg.det(a))))
        self.rotation_deg = float(math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
        self.shift_px = float(math.hypot(m[0, 2], m[1, 2]))
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """HxW(xC) uint8/uint16/float -> HxW float32 in [0, 1] (BT.601 luma of RGB)."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
    x = image.astype(np.float32) / scale
    if x.ndim == 3 and x.shape[2] == 3:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
    elif x.ndim == 3:
        x = x[:, :, 0]
    return np.ascontiguousarray(x)


def working_image(image: np.ndarray, size: int = WORKING_SIZE) -> tuple[np.ndarray, float]:
    """The gray frame registration works on and its scale (working px per full px)."""
    gray = to_gray_float(image)
    s = min(1.0, size / max(gray.shape))
    if s < 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] * s), round(gray.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return gray, s


def rescale(matrix: np.ndarray, s: float) -> np.ndarray:
    """A transform between working images (scale ``s``) as a transform between full-resolution ones."""
    scale = np.diag([s, s, 1.0])
    return np.linalg.inv(scale) @ matrix @ scale


def ecc(
    template: np.ndarray, moving: np.ndarray, motion: str = "affine", iterations: int = 200, eps: float = 1e-6
) -> tuple[np.ndarray, float]:
    """ECC registration of two gray float32 images, coarse to fine: the 3x3 matrix mapping ``template``
    coordinates to ``moving`` coordinates and the final correlation coefficient. Raises cv2.error when ECC
    does not converge."""
    pyramid = [(template, moving)]
    while min(pyramid[-1][0].shape) >= 2 * MIN_PYRAMID_SIDE and len(pyramid) < 5:
        t, m = pyramid[-1]
        pyramid.append((cv2.pyrDown(t), cv2.pyrDown(m)))
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    score = 0.0
    for level, (t, m) in enumerate(reversed(pyramid)):
        if level:
            warp = (np.diag([2.0, 2.0, 1.0]) @ warp @ np.diag([0.5, 0.5, 1.0])).astype(np.float32)
        w = warp if motion == "homography" else warp[:2].copy()
        score, w = cv2.findTransformECC(t, m, w, MOTIONS[motion], criteria, None, 5)
        warp = w if motion == "homography" else np.vstack([w, [0, 0, 1]]).astype(np.float32)
    return warp.astype(np.float64), float(score)


def feature_homography(template: np.ndarray, moving: np.ndarray, min_inliers: int = 12) -> tuple[np.ndarray, float]:
    """SIFT + ratio test + RANSAC homography mapping ``template`` coordinates to ``moving`` ones, and the inlier
    count. Raises RuntimeError with the reason when there are too few matches."""
    sift = cv2.SIFT_create()
    t8 = (np.clip(template, 0, 1) * 255).astype(np.uint8)
    m8 = (np.clip(moving, 0, 1) * 255).astype(np.uint8)
    kt, dt = sift.detectAndCompute(t8, None)
    km, dm = sift.detectAndCompute(m8, None)
    if dt is None or dm is None or len(kt) < min_inliers or len(km) < min_inliers:
        raise RuntimeError(f"too few features ({len(kt)} / {len(km)})")
    pairs = cv2.BFMatcher().knnMatch(dt, dm, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < min_inliers:
        raise RuntimeError(f"too few feature matches ({len(good)})")
    src = np.float32([kt[g.queryIdx].pt for g in good])
    dst = np.float32([km[g.trainIdx].pt for g in good])
    h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if h is None or int(inliers.sum()) < min_inliers:
        raise RuntimeError(f"RANSAC kept {0 if inliers is None else int(inliers.sum())} inliers")
    return h, float(inliers.sum())


def implausible(matrix: np.ndarray, height: int, width: int) -> str:
    """Why a transform between two frames of one stack cannot be right ('' when it is plausible)."""
    pts = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1], [width / 2, height / 2, 1]], float).T
    mapped = matrix @ pts
    if np.any(mapped[2] <= 1e-6):
        return "the transform folds the image over (perspective through infinity)"
    mapped = mapped[:2] / mapped[2]
    moved = float(np.hypot(*(mapped - pts[:2])).max())
    diagonal = math.hypot(width, height)
    if moved > LIMITS["max_displacement"] * diagonal:
        return f"a corner moves {moved:.0f} px (> {LIMITS['max_displacement']:.0%} of the diagonal)"
    quad = mapped[:, :4].T
    area = 0.5 * abs(sum(quad[i, 0] * quad[(i + 1) % 4, 1] - quad[(i + 1) % 4, 0] * quad[i, 1] for i in range(4)))
    ratio = area / (width * height)
    if not 1 / LIMITS["max_area_change"] <= ratio <= LIMITS["max_area_change"]:
        return f"the area changes by a factor {ratio:.2f}"
    return ""


def register_pair(template: np.ndarray, moving: np.ndarray, config: AlignConfig) -> tuple[np.ndarray, float]:
    """Working-image transform template -> moving by ``config.method`` (raises on failure)."""
    if config.method == "ecc":
        return ecc(template, moving, config.motion)
    return feature_homography(template, moving)


def chain_order(num_frames: int, reference: int) -> list[tuple[int, int]]:
    """(frame, its neighbour towards the reference) for every frame but the reference, outwards."""
    up = [(k, k - 1) for k in range(reference + 1, num_frames)]
    down = [(k, k + 1) for k in range(reference - 1, -1, -1)]
    return up + down


def warp_to_reference(
    image: np.ndarray, matrix: np.ndarray, height: int, width: int, border: int = cv2.BORDER_CONSTANT
) -> tuple[np.ndarray, np.ndarray]:
    """The frame in the reference geometry (bilinear; outside the frame 0, or ``border``, e.g. reflected) and
    its coverage (True where the frame has the pixel)."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    affine = np.allclose(matrix[2], [0, 0, 1])

    def warp(a: np.ndarray, value: float, border: int = border) -> np.ndarray:
        size = (width, height)
        if affine:
            return cv2.warpAffine(a, matrix[:2], size, flags=flags, borderMode=border, borderValue=value)
        return cv2.warpPerspective(a, matrix, size, flags=flags, borderMode=border, borderValue=value)

    warped = warp(image, 0)
    if warped.ndim == 2 and image.ndim == 3:
        warped = warped[:, :, None]
    coverage = warp(np.ones(image.shape[:2], np.float32), 0.0, cv2.BORDER_CONSTANT) > 0.999
    return warped, coverage
