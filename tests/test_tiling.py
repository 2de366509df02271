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
