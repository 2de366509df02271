"""The optional adversarial loss: wiring (both players learn), off by default, the Trainer settings it needs."""

import pytest
import torch

from fusiondiff.cli.train import train
from fusiondiff.models import PatchDiscriminator
from fusiondiff.models.discriminator import hinge_d_loss, hinge_g_loss

from helpers import SYNTHETIC_TINY, TINY, compose_config, tiny_batch, tiny_module

module, batch = tiny_module, tiny_batch


def test_patch_discriminator_shapes_and_hinge_losses():
    d = PatchDiscriminator(3, base_channels=8, layers=2)
    scores = d(torch.zeros(2, 3, 32, 32))
    assert scores.dim() == 4 and scores.shape[:2] == (2, 1)
    assert hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)) == 0  # confident and right: no loss
    assert hinge_d_loss(torch.zeros(4), torch.zeros(4)) == 2
    assert hinge_g_loss(torch.full((4,), 3.0)) == -3
    with pytest.raises(ValueError, match="3-channel"):
        d(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 12 px"):
        d(torch.zeros(1, 3, 8, 8))


def test_off_by_default_changes_nothing():
    plain, explicit_off = module(), module(adversarial_weight=0.0)
    assert plain.discriminator is None and plain.automatic_optimization
    assert not any("discriminator" in k for k in plain.state_dict())
    assert isinstance(plain.configure_optimizers(), torch.optim.Optimizer)  # a single optimizer, as before
    torch.manual_seed(5)
    a = plain.diffusion_loss(batch())
    torch.manual_seed(5)
    b = explicit_off.diffusion_loss(batch())
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="adversarial_weight is 0"):
        module(discriminator=PatchDiscriminator(3))
    with pytest.raises(ValueError, match=">= 0"):
        module(adversarial_weight=-1)


def test_generator_and_discriminator_both_learn(tmp_path):
    cfg = compose_config(
        "train",
        ["experiment=quickstart", *TINY, *SYNTHETIC_TINY, "trainer.max_steps=2", "task.module.adversarial_weight=0.5",
         "task.module.ema_decay=0", "export=false", "data.train.crop_size=32", "data.val.crop_size=32"],
        tmp_path,
    )  # fmt: skip
    metrics, objects = train(cfg)
    m, trainer = objects["module"], objects["trainer"]
    assert m.discriminator is not None and not m.automatic_optimization
    assert trainer.global_step == 4  # 2 batches x (generator + critic) optimizer steps
    assert trainer.gradient_clip_val is None and m.grad_clip == 1.0  # moved from the Trainer to the module
    assert {"train/g_adv", "train/d_loss"} <= set(metrics)
    # both players moved away from their initialisation: the U-Net's zero-initialised output conv and the
    # critic's GroupNorm affine parameters (initialised to 1 / 0)
    assert m.net.out[-1].weight.abs().sum() > 0
    norms = [mod for mod in m.discriminator.modules() if isinstance(mod, torch.nn.GroupNorm)]
    assert norms and all(not torch.equal(n.weight, torch.ones_like(n.weight)) for n in norms)


def test_adversarial_gradients_reach_both_networks():
    fresh = module(adversarial_weight=0.5)
    loss, fake = fresh.diffusion_loss(batch(), return_x0=True)
    (loss + 0.5 * hinge_g_loss(fresh.discriminator(fake))).backward()
    assert all(p.grad is not None for p in fresh.net.parameters())
    fresh.discriminator.zero_grad()
    hinge_d_loss(fresh.discriminator(batch()["target"]), fresh.discriminator(fake.detach())).backward()
    # every weight gets a gradient (the output bias cancels while all hinge terms are active: -1 + 1)
    assert all(p.grad is not None for p in fresh.discriminator.parameters())
    assert all(p.grad.abs().sum() > 0 for p in fresh.discriminator.parameters() if p.dim() > 1)
