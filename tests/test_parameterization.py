import pytest
import torch

from fusiondiff.diffusion import EpsDenoiser, ddim_sample, make_schedule, respace_timesteps, training_target


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_oracle_of_each_type_gives_the_true_eps(prediction):
    sched = make_schedule("cosine", 2000)
    x0 = torch.rand(4, 3, 6, 6, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 10, 1000, 1999])
    x_t = sched.q_sample(x0, t, eps)
    target = training_target(sched, prediction, x0, eps, t)
    oracle = EpsDenoiser(lambda x, tt, c: target, sched, prediction)
    torch.testing.assert_close(oracle(x_t, t), eps, rtol=1e-6, atol=1e-6)


def test_v_target_closed_form():
    sched = make_schedule("linear", 100)
    x0, eps, t = (
        torch.ones(1, 1, 1, 1, dtype=torch.float64),
        torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64),
        torch.tensor([50]),
    )
    ab = sched.alphas_cumprod[50]
    assert training_target(sched, "v", x0, eps, t).item() == pytest.approx((ab.sqrt() * 2 - (1 - ab).sqrt()).item())


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_are_well_conditioned_at_the_last_cosine_step(prediction):
    """A small error in the network output must not explode where ᾱ ≈ 6e-10 (see the module docstring)."""
    sched = make_schedule("cosine", 2000)
    x0 = torch.zeros(1, 1, 8, 8, dtype=torch.float64)

    def noisy_oracle(x, t, c):
        eps = sched.predict_eps(x, t, x0)
        return training_target(sched, prediction, x0, eps, t) + 0.01

    out = ddim_sample(
        EpsDenoiser(noisy_oracle, sched, prediction),
        sched,
        None,
        respace_timesteps(2000, 4),
        shape=x0.shape,
        generator=torch.Generator().manual_seed(0),
        clip_x0=False,
    )
    assert out.abs().max() < 0.1


def test_unknown_prediction():
    with pytest.raises(ValueError, match="valid: eps, x0, v"):
        EpsDenoiser(lambda *a: None, make_schedule("linear", 10), "score")


@pytest.mark.parametrize("residual", ["mean", True, "decision_map", "guided_filter", "laplacian_pyramid"])
def test_residual_bases_round_trip(residual):
    from fusiondiff.diffusion.parameterization import from_diffused, to_diffused
    from fusiondiff.tasks import get_task
    from fusiondiff.tasks.multifocus import get_classical

    g = torch.Generator().manual_seed(0)
    sources = torch.rand(2, 2, 3, 24, 24, generator=g) * 1.6 - 0.8
    target = torch.rand(2, 3, 24, 24, generator=g) * 1.6 - 0.8
    task = get_task("multifocus")
    base, cond = task.conditioning("x0", residual).prepare(sources)
    assert cond is sources  # multi-focus networks see the sources as they are
    torch.testing.assert_close(from_diffused(to_diffused(target, base), base), target)
    expected = sources.mean(1) if residual in ("mean", True) else get_classical(residual)(sources)
    torch.testing.assert_close(base, expected)
    with pytest.raises(ValueError, match="unknown residual base of task multifocus 'median'; valid: mean, average"):
        task.conditioning("x0", "median")


def test_blend_prediction_copies_sources_where_the_weights_saturate():
    from fusiondiff.diffusion.parameterization import EpsDenoiser, blend_sources

    sources = torch.rand(1, 2, 3, 8, 8) * 2 - 1
    logits = torch.zeros(1, 2, 8, 8)
    logits[:, 0, :, :4], logits[:, 1, :, 4:] = 50.0, 50.0
    fused = blend_sources(logits, sources)
    torch.testing.assert_close(fused[..., :4], sources[:, 0, :, :, :4])
    torch.testing.assert_close(fused[..., 4:], sources[:, 1, :, :, 4:])
    with pytest.raises(ValueError, match="output channels for 2 sources"):
        blend_sources(torch.zeros(1, 3, 8, 8), sources)
    sched = make_schedule("cosine", 100)
    den = EpsDenoiser(lambda x, t, c: logits.expand(x.shape[0], -1, -1, -1), sched, "blend")
    x_t, t = torch.randn(1, 3, 8, 8, dtype=torch.float64), torch.tensor([40])
    torch.testing.assert_close(sched.predict_x0(x_t, t, den(x_t, t, sources.double())), fused.double(), atol=1e-6, rtol=0)
