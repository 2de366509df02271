import math

import pytest
import torch

from fusiondiff.diffusion import NoiseSchedule, cosine_betas, linear_betas, make_schedule


def test_cosine_matches_closed_form_alpha_bar():
    T, s = 2000, 0.008
    sched = make_schedule("cosine", T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 10, 500, 1000, 1500):
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    assert sched.betas.dtype == torch.float64 and sched.alphas_cumprod.dtype == torch.float64
    assert sched.betas.max().item() == pytest.approx(0.999)  # the cap is reached at the end
    assert torch.all(sched.betas <= 0.999)


def test_linear_betas_and_rescaling():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b2 = linear_betas(2000)
    assert b2[-1].item() == pytest.approx(0.01)
    assert make_schedule("linear", 10).num_timesteps == 10


def test_q_sample_and_conversions_are_inverse():
    sched = make_schedule("cosine", 100)
    x0 = torch.rand(3, 2, 5, 5, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 50, 99])
    xt = sched.q_sample(x0, t, eps)
    ab = sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(xt, ab.double().sqrt() * x0 + (1 - ab.double()).sqrt() * eps)
    torch.testing.assert_close(sched.predict_x0(xt, t, eps), x0, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(sched.predict_eps(xt, t, x0), eps, atol=1e-9, rtol=1e-9)


def test_alpha_bar_minus_one_is_one():
    sched = make_schedule("linear", 10)
    assert sched.alpha_bar(-1).item() == 1.0
    assert sched.alpha_bar(3).item() == sched.alphas_cumprod[3].item()


def test_bad_schedules_are_rejected():
    with pytest.raises(ValueError, match="valid: cosine, linear"):
        make_schedule("sigmoid", 10)
    with pytest.raises(ValueError):
        NoiseSchedule(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError):
        make_schedule("cosine", 0)
    assert cosine_betas(5).shape == (5,)
