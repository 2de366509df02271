"""Optional training terms: timesteps drawn where the few-step sampler steps, and the max-gradient loss."""

import pytest
import torch

from fusiondiff.diffusion import respace_timesteps
from fusiondiff.filters import gradient_magnitude

from helpers import tiny_batch, tiny_module

module, batch = tiny_module, tiny_batch


def test_sampler_timestep_fraction_trains_where_the_sampler_steps():
    torch.manual_seed(0)
    t_plain = module().training_timesteps(4000)
    assert 0.3 < (t_plain >= 25).float().mean() < 0.7  # uniform over 0..49
    one_step = module(sampler_timestep_fraction=1.0, sampler={"steps": 1}).training_timesteps(500)
    assert torch.equal(one_step, torch.full((500,), 49))  # the 1-step sampler only visits T-1
    half = module(sampler_timestep_fraction=0.5, sampler={"steps": 4}).training_timesteps(4000)
    visited = set(respace_timesteps(50, 4).tolist())
    share = torch.tensor([v in visited for v in half.tolist()]).float().mean()
    assert 0.45 < share < 0.6  # half from the 4 visited steps (+ uniform draws that hit them by chance)
    torch.manual_seed(5)
    a = module().diffusion_loss(batch())
    torch.manual_seed(5)
    assert torch.equal(a, module(sampler_timestep_fraction=0.0).diffusion_loss(batch()))  # off: unchanged
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        module(sampler_timestep_fraction=1.5)


def test_gradient_magnitude_of_a_ramp_and_a_flat_image():
    ramp = torch.arange(16.0).repeat(16, 1)[None, None].expand(1, 3, 16, 16)
    g = gradient_magnitude(ramp)
    assert g.shape == (1, 1, 16, 16)
    torch.testing.assert_close(g[..., 1:-1, 1:-1], torch.full((1, 1, 14, 14), 1.0), atol=1e-3, rtol=0)  # Sobel/8 of slope 1 = 1
    assert gradient_magnitude(torch.zeros(1, 3, 8, 8)).max() < 1e-3


def test_gradient_loss_adds_the_edge_term_and_trains_the_net():
    b = tiny_batch()
    torch.manual_seed(5)
    plain_loss = tiny_module().diffusion_loss(b)
    torch.manual_seed(5)
    assert torch.equal(plain_loss, tiny_module(gradient_loss_weight=0.0).diffusion_loss(b))  # off: unchanged
    m = tiny_module(gradient_loss_weight=0.5)
    torch.manual_seed(5)
    total, image = m.diffusion_loss(b, return_x0=True)
    sharpest = torch.maximum(gradient_magnitude(b["sources"][:, 0]), gradient_magnitude(b["sources"][:, 1]))
    expected = plain_loss + 0.5 * (gradient_magnitude(image.detach()) - sharpest).abs().mean()
    torch.testing.assert_close(total.detach(), expected, rtol=1e-5, atol=1e-6)
    total.backward()
    assert sum(p.grad.abs().sum() for p in m.net.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match=">= 0"):
        tiny_module(gradient_loss_weight=-1)
