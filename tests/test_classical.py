import pytest
import torch

from fusiondiff.data import SyntheticMultiFocus
from fusiondiff.filters import box_mean, guided_filter
from fusiondiff.focus import select_max
from fusiondiff.metrics.fusion import qabf
from fusiondiff.tasks.multifocus import CLASSICAL_METHODS, get_classical


def to255(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round()


@pytest.fixture(scope="module")
def pairs():
    ds = SyntheticMultiFocus(photos=["coffee", "rocket"], num_samples=8, crop_size=128, deterministic=True, seed=1)
    return torch.stack([ds[i]["sources"] for i in range(8)]), torch.stack([ds[i]["target"] for i in range(8)])


@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_shapes_gray_colour_odd_sizes_and_three_sources(name):
    fn = get_classical(name)
    assert fn(torch.rand(2, 3, 37, 50) * 2 - 1).shape == (3, 37, 50)
    assert fn(torch.rand(2, 1, 23, 19) * 2 - 1).shape == (1, 23, 19)
    assert fn(torch.rand(4, 3, 3, 20, 20) * 2 - 1).shape == (4, 3, 20, 20)
    img = torch.rand(3, 30, 30) * 2 - 1
    torch.testing.assert_close(fn(torch.stack([img, img])), img, atol=1e-4, rtol=0)  # identical sources: identity


@pytest.mark.parametrize("name", ["guided_filter", "decision_map"])
def test_focus_aware_baselines_beat_averaging_in_qabf(name, pairs):
    sources, _ = pairs
    a, b = to255(sources[:, 0]), to255(sources[:, 1])
    score = qabf(a, b, to255(get_classical(name)(sources))).mean()
    assert score > qabf(a, b, to255(get_classical("average")(sources))).mean()


def test_box_mean_and_guided_filter_basics():
    x = torch.rand(1, 2, 15, 22)
    ref = torch.nn.functional.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
    torch.testing.assert_close(box_mean(x, 3), ref, atol=1e-6, rtol=0)
    guide = torch.rand(1, 1, 15, 22)
    torch.testing.assert_close(guided_filter(guide, guide, 2, 1e-8), guide, atol=1e-3, rtol=0)  # edge-preserving


def test_bad_input():
    with pytest.raises(ValueError, match="N >= 2"):
        get_classical("average")(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        get_classical("decision_map")(torch.full((2, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="valid: average"):
        get_classical("wavelet")


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_select_max_is_the_first_argmax_one_hot(n):
    """The comparison-based select_max picks what one_hot(argmax) picks, ties (to the first) included."""
    g = torch.Generator().manual_seed(n)
    activity = torch.randint(0, 4, (2, n, 1, 19, 23), generator=g).double()  # many ties
    expected = torch.nn.functional.one_hot(activity.argmax(1), n).permute(0, 4, 1, 2, 3).double()
    assert torch.equal(select_max(activity), expected)
    assert torch.equal(select_max(activity.float()), expected.float())


def test_dilate_is_a_square_max_filter():
    """filters.dilate (box count) marks exactly what a (2r+1)^2 max-pool marks, borders included."""
    from fusiondiff.filters import dilate

    mask = (torch.rand(2, 1, 37, 29, generator=torch.Generator().manual_seed(0)) > 0.97).float()
    mask[0, 0, 0, 0] = mask[1, 0, -1, -1] = 1  # corners
    for r in (0, 1, 3, 8):
        assert torch.equal(dilate(mask, r), torch.nn.functional.max_pool2d(mask, 2 * r + 1, 1, r))


def test_max_filter_is_a_square_max_pool():
    """filters.max_filter (separable maxima over doubling spans) equals max_pool2d exactly, borders and ties."""
    from fusiondiff.filters import max_filter

    g = torch.Generator().manual_seed(1)
    for x in (torch.randn(2, 3, 17, 12, generator=g), torch.randint(-2, 3, (1, 2, 9, 31), generator=g).float()):
        for r in (1, 2, 3, 4, 5, 8):
            assert torch.equal(max_filter(x, r), torch.nn.functional.max_pool2d(x, 2 * r + 1, 1, r))
        assert not torch.equal(max_filter(x, 1), x)


def test_remember_focus_reuses_only_equal_sources_and_only_inside_its_scope():
    """Inside remember_focus the decision weights of equal sources (a copy counts) are computed once and are
    those of a fresh computation; changed sources are recomputed; outside the scope nothing is reused."""
    from fusiondiff import focus

    g = torch.Generator().manual_seed(2)
    sources = torch.rand(1, 2, 3, 24, 20, generator=g) * 2 - 1
    fresh = focus.decision_weights(sources)
    assert focus.decision_weights(sources) is not fresh  # no scope: computed again
    calls = []
    original = focus.sum_modified_laplacian

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    focus.sum_modified_laplacian = counted
    try:
        with focus.remember_focus():
            first = focus.decision_weights(sources)
            assert torch.equal(first, fresh)
            assert focus.decision_weights(sources.clone()) is first
            assert torch.equal(focus.focus_features(sources)[:, :, :1], fresh)
            assert len(calls) == 1
            changed = sources.clone()
            changed[..., :12, :] = changed[..., :12, :].flip(1)  # swap the sources in the top half
            again = focus.decision_weights(changed)
            assert len(calls) == 2
        assert torch.equal(again, focus.decision_weights(changed)) and not torch.equal(again, fresh)
        focus.decision_weights(sources)
        assert len(calls) == 4  # the scope is closed
    finally:
        focus.sum_modified_laplacian = original
