import pytest
import torch

from fusiondiff.diffusion import inversion_timesteps, invert, make_schedule, regenerate
from fusiondiff.zero_shot.rules import (
    MODES,
    cross_fade_weight,
    fuse_inversions,
    half_mask,
    mix_feature_selective,
    mix_linear,
    ratio_weights,
)


def pointwise(x, t, cond):
    """A per-pixel ε-denoiser: regions do not influence each other."""
    return torch.tanh(0.5 * x)


@pytest.fixture(scope="module")
def two_inversions():
    sched = make_schedule("cosine", 100)
    ts = inversion_timesteps(100, 9)
    a = torch.rand(1, 3, 12, 16, dtype=torch.float64) * 2 - 1
    b = torch.rand(1, 3, 12, 16, dtype=torch.float64) * 2 - 1
    inv = invert(pointwise, sched, torch.cat([a, b]), ts, generator=torch.Generator().manual_seed(0))  # one batch
    split = [type(inv)(inv.timesteps, inv.xs[:, i : i + 1], inv.zs[:, i : i + 1], inv.eta) for i in range(2)]
    return sched, ts, a, b, split


@pytest.mark.parametrize("mode", [m for m in MODES if m not in ("mask", "style")])
@pytest.mark.parametrize("skip", [0, 4])
def test_ratio_zero_and_one_reproduce_the_inputs(mode, skip, two_inversions):
    sched, ts, a, b, invs = two_inversions
    for ratio, expected in ((0.0, a), (1.0, b)):
        x_start, zs = fuse_inversions(invs, ratio_weights(ratio), mode, skip=skip)
        out = regenerate(pointwise, sched, x_start, zs, ts, skip=skip)
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("skip", [0, 4])
def test_style_ratio_zero_is_the_content_and_one_keeps_content_structure(skip, two_inversions):
    sched, ts, a, b, invs = two_inversions
    x_start, zs = fuse_inversions(invs, ratio_weights(0.0), "style", skip=skip)
    torch.testing.assert_close(regenerate(pointwise, sched, x_start, zs, ts, skip=skip), a, rtol=1e-9, atol=1e-9)
    # full strength: x_T and the first half of the maps still come from A (statistics moved to B's), the rest from B
    x_start, zs = fuse_inversions(invs, ratio_weights(1.0), "style", skip=skip)
    assert torch.equal(x_start, invs[0].xs[skip])
    k, from_b = len(ts), round(len(ts) / 4)
    assert torch.equal(zs[k - from_b :], invs[1].zs[k - from_b :])
    assert not torch.equal(zs[0], invs[0].zs[0]) and not torch.equal(zs[0], invs[1].zs[0])


def test_hard_mask_fusion_takes_each_half_from_its_image(two_inversions):
    sched, ts, a, b, invs = two_inversions
    mask = half_mask(12, 16)
    x_start, zs = fuse_inversions(invs, ratio_weights(0.5), "mask", mask=mask)
    out = regenerate(pointwise, sched, x_start, zs, ts)
    torch.testing.assert_close(out[..., :8], a[..., :8], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[..., 8:], b[..., 8:], rtol=1e-9, atol=1e-9)


def test_linear_mixing_preserves_variance_and_slerp_endpoints():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 200_000, generator=gen, dtype=torch.float64)
    w = ratio_weights(0.5)
    assert (0.5 * maps[0] + 0.5 * maps[1]).std().item() == pytest.approx(0.7071, abs=0.01)  # the naive mix shrinks
    assert mix_linear(maps, w).std().item() == pytest.approx(1.0, abs=0.01)
    assert mix_linear(maps, w, slerp=True).std().item() == pytest.approx(1.0, abs=0.01)
    torch.testing.assert_close(mix_linear(maps, ratio_weights(1.0), slerp=True), maps[1])
    three = torch.randn(3, 200_000, generator=gen, dtype=torch.float64)
    assert mix_linear(three, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)).std().item() == pytest.approx(1.0, abs=0.01)


def test_feature_selective_prefers_the_larger_magnitude():
    maps = torch.tensor([[[3.0, 0.1]], [[0.1, -3.0]]], dtype=torch.float64)  # [N=2, 1, 2]
    out = mix_feature_selective(maps, ratio_weights(0.5))
    assert out[0, 0].item() == pytest.approx(3.0, rel=1e-3) and out[0, 1].item() == pytest.approx(-3.0, rel=1e-3)


def test_feature_selective_keeps_unit_variance_and_selects_by_local_magnitude():
    gen = torch.Generator().manual_seed(3)
    maps = torch.randn(2, 1, 3, 96, 96, generator=gen, dtype=torch.float64)
    for r in (0.3, 0.5, 0.8):
        assert mix_feature_selective(maps, ratio_weights(r)).std().item() == pytest.approx(1.0, abs=0.02)
    maps[0, ..., :48] *= 4  # A carries the detail on the left, B (equal) on the right
    out = mix_feature_selective(maps, ratio_weights(0.5))
    assert (out[..., :44] - maps[0, ..., :44]).abs().mean() < 0.05
    assert (out[..., 52:] - maps[0, ..., 52:]).abs().mean() > 0.3


def test_cross_fade_direction():
    assert [cross_fade_weight(k, 5, 0.0) for k in range(5)] == [0.0] * 5
    assert [cross_fade_weight(k, 5, 1.0) for k in range(5)] == [1.0] * 5
    assert [cross_fade_weight(k, 5, 0.5) for k in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]  # A's structure -> B's texture


def test_bad_arguments(two_inversions):
    _, _, _, _, invs = two_inversions
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ratio_weights(1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        fuse_inversions(invs, [0.5, 0.6])
    with pytest.raises(ValueError, match="valid: linear"):
        fuse_inversions(invs, [0.5, 0.5], mode="median")
    with pytest.raises(ValueError, match="needs a mask"):
        fuse_inversions(invs, [0.5, 0.5], mode="mask")
    with pytest.raises(ValueError, match="mask is"):
        fuse_inversions(invs, [0.5, 0.5], mode="mask", mask=half_mask(5, 5))
    with pytest.raises(ValueError, match="skip"):
        fuse_inversions(invs, [0.5, 0.5], skip=9)
