import pytest
import torch

from fusiondiff.diffusion import tiled_denoiser
from fusiondiff.diffusion.tiling import window_starts


def test_window_starts_cover_every_pixel():
    for size, window, stride in [(100, 32, 24), (32, 32, 8), (20, 32, 8), (97, 16, 16), (65, 64, 1)]:
        starts = window_starts(size, window, stride)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s : s + window] = True
        assert covered.all() and starts[-1] + min(window, size) == size
    with pytest.raises(ValueError, match="gaps"):
        window_starts(100, 16, 32)


@pytest.mark.parametrize("blend", ["uniform", "smooth"])
def test_pointwise_denoiser_is_unchanged_by_tiling(blend):
    def pointwise(x, t, cond):
        return torch.tanh(x) * (t.float().reshape(-1, 1, 1, 1) / 10) + cond.mean(1)

    x = torch.randn(2, 3, 45, 70)
    cond = torch.randn(2, 2, 3, 45, 70)
    t = torch.tensor([3, 7])
    full = pointwise(x, t, cond)
    tiled = tiled_denoiser(pointwise, window=16, stride=11, blend=blend, batch=3)(x, t, cond)
    torch.testing.assert_close(tiled, full, atol=1e-6, rtol=1e-5)


def test_windows_never_exceed_the_window_size():
    seen = []

    def spy(x, t, cond):
        seen.append(tuple(x.shape[-2:]))
        return torch.zeros_like(x)

    tiled_denoiser(spy, window=24)(torch.zeros(1, 1, 50, 80), torch.tensor([0]), None)
    assert seen and all(h <= 24 and w <= 24 for h, w in seen)


def test_one_window_covering_the_image_is_the_plain_denoiser():
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    den = lambda x, t, cond: net(x)
    x = torch.randn(1, 3, 20, 30)
    with torch.no_grad():
        assert torch.equal(tiled_denoiser(den, window=32)(x, torch.tensor([1]), None), den(x, None, None))


def test_no_seams_for_a_translation_equivariant_denoiser():
    """A 5x5 blur differs from its windowed version only within 2 px of a window edge, where the
    smooth blending weights are small: no visible seam."""
    kernel = torch.ones(3, 1, 5, 5) / 25
    den = lambda x, t, cond: torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=3
    )
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.randn(1, 3, 12, 16, generator=g), (96, 128), mode="bicubic")
    full = den(x, None, None)
    tiled = tiled_denoiser(den, window=32, stride=16, blend="smooth")(x, torch.tensor([0]), None)
    err = (tiled - full).abs()
    assert err.mean() < 1e-2 * full.abs().mean() and err.max() < 0.03 * full.abs().max()
    # the largest step between neighbouring pixels barely grows (a seam would double it, as uniform blending does)
    assert tiled.diff(dim=-1).abs().max() <= 1.2 * full.diff(dim=-1).abs().max()
    uniform = tiled_denoiser(den, window=32, stride=16, blend="uniform")(x, torch.tensor([0]), None)
    assert uniform.diff(dim=-1).abs().max() > 1.5 * full.diff(dim=-1).abs().max()
