"""Shared fixtures: generated image folders (no real data), tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fusiondiff.data.datasets import make_multifocus_triplet

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]


def save_png(path: Path, img: np.ndarray) -> Path:
    """Write HxW or HxWx3 (RGB) uint8/uint16 with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    assert cv2.imwrite(str(path), np.ascontiguousarray(img))
    return path


def synthetic_triplet(seed: int, h: int = 40, w: int = 48, gray: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured sharp image and complementary blurred sources, as uint8 HxWx3 (or HxW)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 6, h), torch.linspace(0, 6, w), indexing="ij")
    base = torch.stack([torch.sin(xx * 3 + seed), torch.cos(yy * 2.5), torch.sin(xx * yy)]) * 0.5
    sharp = (base + 0.4 * torch.rand(3, h, w, generator=gen) - 0.2).clamp(-1, 1)
    sources, _ = make_multifocus_triplet(sharp, gen, max_sigma=2.5, mask_kinds=("half_plane",))
    to8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # noqa: E731
    a, b, f = to8(sources[0]), to8(sources[1]), to8(sharp)
    if gray:
        a, b, f = a[:, :, 0], b[:, :, 0], f[:, :, 0]
    return a, b, f


@pytest.fixture
def fusiondiff_folder(tmp_path: Path) -> Path:
    """FusionDiff layout with names containing spaces and parentheses."""
    root = tmp_path / "nyu like"
    for k in range(1, 5):
        a, b, f = synthetic_triplet(k)
        name = f"NYU-D ({k}).png"
        save_png(root / "source_1" / name, a)
        save_png(root / "source_2" / name, b)
        save_png(root / "full_clear" / name, f)
    return root


@pytest.fixture
def lytro_folder(tmp_path: Path) -> Path:
    """No ground truth, -A/-B suffixes, odd sizes."""
    root = tmp_path / "lytro"
    for k in range(1, 4):
        a, b, _ = synthetic_triplet(10 + k, h=37, w=45)
        save_png(root / "source_1" / f"lytro-0{k}-A.png", a)
        save_png(root / "source_2" / f"lytro-0{k}-B.png", b)
    return root
