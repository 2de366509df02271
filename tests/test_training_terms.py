"""Training timesteps drawn where the few-step sampler steps (``sampler_timestep_fraction``)."""

import pytest
import torch

from fusiondiff.diffusion import respace_timesteps

from helpers import tiny_batch, tiny_module

module, batch = tiny_module, tiny_batch


def test_sampler_timestep_fraction_trains_where_the_sampler_steps():
    torch.manual_seed(0)
    t_plain = module().training_timesteps(4000)
    assert 0.3 < (t_plain >= 25).float().mean() < 0.7  # uniform over 0..49
    one_step = module(sampler_timestep_fraction=1.0, val_steps=1).training_timesteps(500)
    assert torch.equal(one_step, torch.full((500,), 49))  # the 1-step sampler only visits T-1
    half = module(sampler_timestep_fraction=0.5, val_steps=4).training_timesteps(4000)
    visited = set(respace_timesteps(50, 4).tolist())
    share = torch.tensor([v in visited for v in half.tolist()]).float().mean()
    assert 0.45 < share < 0.6  # half from the 4 visited steps (+ uniform draws that hit them by chance)
    torch.manual_seed(5)
    a = module().diffusion_loss(batch())
    torch.manual_seed(5)
    assert torch.equal(a, module(sampler_timestep_fraction=0.0).diffusion_loss(batch()))  # off: unchanged
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        module(sampler_timestep_fraction=1.5)
