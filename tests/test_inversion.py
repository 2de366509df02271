import pytest
import torch

from fusiondiff.diffusion import make_schedule
from fusiondiff.diffusion.inversion import inversion_timesteps, invert, regenerate


def denoiser(x, t, cond):
    """An arbitrary (imperfect) deterministic ε-denoiser: exactness must not depend on its quality."""
    return torch.tanh(0.7 * x) + 0.01 * t.float().reshape(-1, 1, 1, 1) / 100


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_regeneration_reproduces_the_image_exactly(eta, steps):
    sched = make_schedule("cosine", 200)
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    ts = inversion_timesteps(200, steps)
    inv = invert(denoiser, sched, x0, ts, eta=eta, generator=torch.Generator().manual_seed(0))
    assert inv.xs.shape == inv.zs.shape == (steps, 2, 3, 8, 8)
    out = regenerate(denoiser, sched, inv.xs[0], inv.zs, ts, eta=eta)
    torch.testing.assert_close(out, x0, rtol=1e-9, atol=1e-9)
    for skip in range(steps):  # starting later (T_skip) is exact as well
        torch.testing.assert_close(
            regenerate(denoiser, sched, inv.xs[skip], inv.zs, ts, eta=eta, skip=skip), x0, rtol=1e-9, atol=1e-9
        )


def test_dropping_the_last_map_breaks_reconstruction():
    sched = make_schedule("cosine", 200)
    x0 = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 2 - 1
    ts = inversion_timesteps(200, 10)
    inv = invert(denoiser, sched, x0, ts, generator=torch.Generator().manual_seed(1))
    zs = inv.zs.clone()
    zs[-1] = 0
    assert (regenerate(denoiser, sched, inv.xs[0], zs, ts) - x0).abs().max() > 1e-4


def test_maps_of_an_oracle_are_standard_normal_and_seeded():
    sched = make_schedule("linear", 1000)
    x0 = torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2 - 1
    oracle = lambda x, t, c: sched.predict_eps(x, t, x0)  # noqa: E731
    ts = inversion_timesteps(1000, 20)
    a = invert(oracle, sched, x0, ts, generator=torch.Generator().manual_seed(2))
    b = invert(oracle, sched, x0, ts, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.zs, b.zs, rtol=0, atol=0)
    # Independent x_t draws and the true x0: x_prev - μ = sqrt(1-ᾱ_prev) ε_prev - sqrt(1-ᾱ_prev-σ²) ε_t, so
    # Var z = (2 (1-ᾱ_prev) - σ²) / σ² (> 1: edit-friendly maps are not standard normal, as the paper notes).
    for i in range(len(ts) - 1):
        ab, ab_prev = sched.alpha_bar(ts[i]).item(), sched.alpha_bar(ts[i + 1]).item()
        var_sigma = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        expected = ((2 * (1 - ab_prev) - var_sigma) / var_sigma) ** 0.5
        assert abs(a.zs[i].mean().item()) < 0.1 * expected
        assert a.zs[i].std().item() == pytest.approx(expected, rel=0.08)


def test_bad_arguments():
    sched = make_schedule("cosine", 100)
    x0 = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=">= 1"):
        invert(denoiser, sched, x0, [10, 0])
    with pytest.raises(ValueError, match="eta must be > 0"):
        invert(denoiser, sched, x0, [10, 5], eta=0)
    with pytest.raises(ValueError, match="steps must be in 1..99"):
        inversion_timesteps(100, 100)
    inv = invert(denoiser, sched, x0, [10, 5])
    with pytest.raises(ValueError, match="skip"):
        regenerate(denoiser, sched, inv.xs[0], inv.zs, [10, 5], skip=2)
