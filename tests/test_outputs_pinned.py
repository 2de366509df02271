"""Outputs pinned before the re-layout (architecture issue): moving code must not change a single byte.

Each case runs a shipped bundle (or a seeded tiny bundle per residual kind) and hashes the 8-bit image that
``write_image`` would store. The hashes were recorded with the code as it stood before the move (commit
44cb129, torch 2.14 CPU build, the 2-core development machine); a mismatch means a refactor changed the
maths, not just where it lives.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from helpers import write_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "fusiondiff" / "assets"
LYTRO = ROOT.parent / "shared" / "data" / "mfif" / "lytro"


def digest(image: torch.Tensor) -> str:
    """sha256 of the 8-bit quantisation of [C, H, W] in [-1, 1] (write_image's formula)."""
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255.0).round().to(torch.uint8)
    return hashlib.sha256(arr.numpy().tobytes()).hexdigest()[:16]


def example_sources() -> torch.Tensor:
    from fusiondiff.data import load_sources

    return load_sources([ASSETS / "example_A.png", ASSETS / "example_B.png"])


def shipped_pipeline():
    from fusiondiff.tasks import load_pipeline

    return load_pipeline()


PINNED = {
    "shipped_example": "9426bea99886c8d6",
    "shipped_example_tiled": "bebc343ca8a1eaac",
    "prior_noise_fusion": "00cb7226caf3fea3",
    "tiny_mean": "d0d630ea41dcf539",
    "tiny_guided_filter": "f73a6e6b73e31316",
    "tiny_hdr_merge": "48eb8e722fedc0c3",
    "tiny_navier_stokes": "614ed6fcce8bc24f",
    "lytro": ["c51e1f66a9e11109", "038d2b6e99d5ccff", "e003de9590981ab8"],
}


def test_shipped_bundle_on_the_example():
    assert digest(shipped_pipeline()(example_sources())) == PINNED["shipped_example"]


def test_shipped_bundle_tiled_two_steps():
    fused = shipped_pipeline()(example_sources(), steps=2, tile_size=96, tile_overlap=32, seed=3)
    assert digest(fused) == PINNED["shipped_example_tiled"]


def test_shipped_prior_noise_fusion():
    from fusiondiff.zero_shot import NoiseSpaceFusion
    from fusiondiff.zero_shot.priors import load_prior

    images = example_sources()[:, :, 40:104, 100:164]
    fuser = NoiseSpaceFusion(load_prior(None))
    fused, _ = fuser.fuse(fuser.invert(images, steps=10, seed=1), [0.7, 0.3], "layer_selective", skip=2)
    assert digest(fused) == PINNED["prior_noise_fusion"]


def _tiny_case(tmp_path: Path, residual, num_sources: int, source_channels: int | None, task: str) -> torch.Tensor:
    from fusiondiff.tasks import load_pipeline

    bundle = write_tiny_bundle(tmp_path / f"{residual}.safetensors", num_sources=num_sources, prediction="x0",
                               residual=residual, task={"name": task})  # fmt: skip
    if source_channels is not None:  # rebuild with wider sources (HDR, restoration)
        import json

        from safetensors.torch import save_file

        from fusiondiff.models import ConditionalUNet

        net_cfg = {"_target_": "fusiondiff.models.ConditionalUNet", "image_channels": 3, "num_sources": num_sources,
                   "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                   "source_channels": source_channels}  # fmt: skip
        torch.manual_seed(0)
        net = ConditionalUNet(**{k: v for k, v in net_cfg.items() if k != "_target_"})
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        meta = {"net": net_cfg, "schedule": {"name": "cosine", "num_timesteps": 100}, "prediction": "x0",
                "residual": residual, "task": {"name": task}}  # fmt: skip
        save_file(net.state_dict(), str(bundle), metadata={"fusiondiff": json.dumps(meta)})
    g = torch.Generator().manual_seed(5)
    c = source_channels or 3
    sources = torch.rand(num_sources, c, 32, 40, generator=g) * 2 - 1
    if task == "restoration":  # degraded image + a binary hole mask channel
        mask = torch.zeros(1, 32, 40)
        mask[:, 8:20, 10:25] = 1
        sources = torch.cat([sources[:, :3] * (1 - mask), mask[None]], 1)
    return load_pipeline(bundle)(sources, steps=3, seed=2)


@pytest.mark.parametrize(
    ("residual", "num_sources", "source_channels", "task"),
    [
        ("mean", 2, None, "multifocus"),
        ("guided_filter", 2, None, "multifocus"),
        ("hdr_merge", 3, 6, "hdr"),
        ("navier_stokes", 1, 4, "restoration"),
    ],  # fmt: skip
)
def test_tiny_bundles_per_residual(tmp_path, residual, num_sources, source_channels, task):
    fused = _tiny_case(tmp_path, residual, num_sources, source_channels, task)
    assert digest(fused) == PINNED[f"tiny_{residual}"]


@pytest.mark.skipif(not LYTRO.is_dir(), reason="needs ../shared/data/mfif/lytro")
def test_shipped_bundle_on_three_lytro_pairs():
    from fusiondiff.data import find_samples, load_sources

    pipe = shipped_pipeline()
    got = [digest(pipe(load_sources(s.sources))) for s in find_samples(LYTRO)[:3]]
    assert got == PINNED["lytro"]
