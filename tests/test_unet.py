import pytest
import torch

from fusiondiff.models import ConditionalUNet


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (33, 18)])
@pytest.mark.parametrize("n_sources", [2, 3])
def test_output_shape_any_size_and_sources(hw, n_sources):
    net = ConditionalUNet(
        image_channels=3, num_sources=n_sources, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=[2]
    )
    x = torch.randn(2, 3, *hw)
    out = net(x, torch.tensor([0, 999]), torch.randn(2, n_sources, 3, *hw))
    assert out.shape == x.shape


def test_gray_and_flat_condition():
    net = ConditionalUNet(image_channels=1, num_sources=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    x = torch.randn(1, 1, 20, 21)
    assert net(x, torch.tensor([5]), torch.randn(1, 2, 20, 21)).shape == x.shape


def test_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = ConditionalUNet(image_channels=1, num_sources=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    for p in net.parameters():  # the zero-initialised output layer would hide any dependence
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([10])
    assert not torch.allclose(net(x, t, torch.zeros(1, 2, 1, 16, 16)), net(x, t, torch.ones(1, 2, 1, 16, 16)))


def test_fusiondiff_size():
    net = ConditionalUNet(image_channels=3, num_sources=2, base_channels=64, channel_mult=(1, 2, 4, 8), num_res_blocks=2)
    n = sum(p.numel() for p in net.parameters())
    assert 25e6 < n < 32e6


def test_clear_errors():
    net = ConditionalUNet(image_channels=3, num_sources=2, base_channels=8, channel_mult=(1, 2, 2, 2), num_res_blocks=1)
    with pytest.raises(ValueError, match="smaller than this network's minimum of 8"):
        net(torch.randn(1, 3, 7, 30), torch.tensor([0]), torch.randn(1, 2, 3, 7, 30))
    with pytest.raises(ValueError, match="expected"):
        net(torch.randn(1, 3, 16, 16), torch.tensor([0]), torch.randn(1, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="needs 2 source"):
        net(torch.randn(1, 3, 16, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match="attention_levels"):
        ConditionalUNet(channel_mult=(1, 2), attention_levels=[5])


def test_decision_map_unet_sees_the_focus_features():
    from fusiondiff.focus import decision_weights, focus_features
    from fusiondiff.models import DecisionMapUNet

    torch.manual_seed(0)
    net = DecisionMapUNet(3, 2, base_channels=8, channel_mult=[1, 2], num_res_blocks=1, out_channels=2)
    assert net.source_channels == 5  # RGB + decision one-hot + SML share
    sources = torch.rand(2, 2, 3, 20, 18) * 2 - 1
    feats = focus_features(sources)
    assert feats.shape == (2, 2, 2, 20, 18)
    assert torch.equal(feats[:, :, :1], decision_weights(sources))
    torch.testing.assert_close(feats[:, :, 1].sum(1), torch.ones(2, 20, 18))
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    out = net(torch.zeros(2, 3, 20, 18), torch.tensor([3, 7]), sources)
    assert out.shape == (2, 2, 20, 18)
    torch.testing.assert_close(out, net(torch.zeros(2, 3, 20, 18), torch.tensor([3, 7]), sources.flatten(1, 2)))
    with pytest.raises(ValueError, match="plain image sources"):
        DecisionMapUNet(3, 2, source_channels=6)
    with pytest.raises(ValueError, match="at least two sources"):
        DecisionMapUNet(3, 1)


def test_space_to_depth_net_is_local_and_starts_at_zero():
    """SpaceToDepthNet: zero output at initialisation (a blend model starts at its prior); any size (padded
    to its cell size); each output depends only on its neighbourhood (coarse blocks + focus features: < 40 px
    here), the noisy image, the sources and t; clear errors."""
    from fusiondiff.errors import ConfigError
    from fusiondiff.models import SpaceToDepthNet

    torch.manual_seed(0)
    net = SpaceToDepthNet(3, 2, base_channels=8, factor=4, num_blocks=2, out_channels=5)
    sources, x_t, t = torch.rand(1, 2, 3, 30, 70) * 2 - 1, torch.randn(1, 3, 30, 70), torch.tensor([500])
    assert torch.equal(net(x_t, t, sources), torch.zeros(1, 5, 30, 70))
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    out = net(x_t, t, sources)
    assert out.shape == (1, 5, 30, 70)
    far = sources.clone()
    far[..., 50:] = -far[..., 50:]
    changed = net(x_t, t, far)
    assert torch.equal(changed[..., :10], out[..., :10]) and not torch.equal(changed[..., 40:], out[..., 40:])
    assert not torch.equal(net(x_t.flip(-1), t, sources), out) and not torch.equal(net(x_t, t + 300, sources), out)
    torch.testing.assert_close(net(x_t, t, sources.flatten(1, 2)), out)
    with pytest.raises(ValueError, match="cond must be"):
        net(x_t, t, sources[:, :1])
    with pytest.raises(ConfigError, match="SpaceToDepthNet needs"):
        SpaceToDepthNet(3, 1)
    with pytest.raises(ConfigError, match="correction must be"):
        SpaceToDepthNet(3, 2, out_channels=2, correction="affine")


def test_space_to_depth_net_detail_head_reads_each_pixel_on_its_own():
    """detail_channels: the full-resolution 1x1 head starts at zero too; with the coarse path silenced (zero
    transposed-convolution weights) a change of x_t at one pixel changes that pixel's output only, not the
    rest of its 4x4 cell (without the head every pixel of a cell is a read-out of the cell's features)."""
    from fusiondiff.errors import ConfigError
    from fusiondiff.models import SpaceToDepthNet

    torch.manual_seed(0)
    net = SpaceToDepthNet(3, 2, base_channels=8, factor=4, num_blocks=1, out_channels=5, detail_channels=6)
    sources, x_t, t = torch.rand(1, 2, 3, 16, 20) * 2 - 1, torch.randn(1, 3, 16, 20), torch.tensor([7])
    assert torch.equal(net(x_t, t, sources), torch.zeros(1, 5, 16, 20))
    with torch.no_grad():
        net.out[-1].weight.zero_()
        for p in net.detail.parameters():
            p.normal_(std=0.5)
    out = net(x_t, t, sources)
    poked = x_t.clone()
    poked[..., 5, 6] += 1.0
    diff = (net(poked, t, sources) - out).abs().amax(1)[0]
    assert diff[5, 6] > 1e-3 and diff.sum() == diff[5, 6]
    coarse = SpaceToDepthNet(3, 2, base_channels=8, factor=4, num_blocks=1, out_channels=5)
    for p in coarse.out.parameters():
        torch.nn.init.normal_(p, std=0.5)
    cell = (coarse(poked, t, sources) - coarse(x_t, t, sources)).abs().amax(1)[0, 4:8, 4:8]
    assert (cell > 0).all()
    with pytest.raises(ConfigError, match="detail_channels >= 0"):
        SpaceToDepthNet(3, 2, detail_channels=-1)


def test_space_to_depth_net_affine_correction_is_gains_on_the_sources_plus_an_offset():
    """correction=affine: the correction channels are Σ_i β_i source_i + γ with per-pixel fields (here a
    constant gain of 2 on source 1 and an offset of 0.25); the weight logits are left as they are."""
    from fusiondiff.models import SpaceToDepthNet

    net = SpaceToDepthNet(3, 2, base_channels=8, factor=4, num_blocks=1, out_channels=5, correction="affine")
    sources, x_t, t = torch.rand(2, 2, 3, 18, 22) * 2 - 1, torch.randn(2, 3, 18, 22), torch.tensor([10, 20])
    assert torch.equal(net(x_t, t, sources), torch.zeros(2, 5, 18, 22))
    with torch.no_grad():
        net.out[-1].bias[:] = torch.tensor([0.5, -0.5, 0.0, 2.0, 0.25, 0.25, 0.25])  # logits, gains, offsets
    out = net(x_t, t, sources)
    torch.testing.assert_close(out[:, :2], torch.tensor([0.5, -0.5]).reshape(1, 2, 1, 1).expand(2, 2, 18, 22))
    torch.testing.assert_close(out[:, 2:], 2 * sources[:, 1] + 0.25)


def test_unet_space_to_depth_runs_on_a_coarser_grid_and_writes_every_pixel():
    """space_to_depth=2: any size (padded to the grid, cropped back); every pixel of a 2x2 cell gets an
    output of its own (not blocky); x_t pixels reach the output through the unshuffled channels; s = 1 is
    the plain network (same parameter shapes); networks with full-resolution condition hooks refuse it."""
    from fusiondiff.errors import ConfigError
    from fusiondiff.models import DecisionMapUNet
    from fusiondiff.models.hdr import HDRConditionalUNet

    torch.manual_seed(0)
    kw = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, out_channels=5)
    net = DecisionMapUNet(space_to_depth=2, **kw).eval()
    plain = DecisionMapUNet(**kw)
    assert net.input_conv.in_channels == 4 * plain.input_conv.in_channels and net.min_size == 2 * plain.min_size
    assert [p.shape for n, p in plain.named_parameters() if not n.startswith(("input_conv", "out"))] == [
        p.shape for n, p in net.named_parameters() if not n.startswith(("input_conv", "out"))
    ]
    torch.nn.init.normal_(net.out[2].weight, std=0.1)
    x, cond, t = torch.randn(1, 3, 37, 50), torch.rand(1, 2, 3, 37, 50) * 2 - 1, torch.tensor([10])
    with torch.no_grad():
        out = net(x, t, cond)
        assert out.shape == (1, 5, 37, 50)
        assert (out[..., 0:36:2, 0:50:2] - out[..., 1:37:2, 0:50:2]).abs().mean() > 1e-3  # rows of a cell differ
        moved = x.clone()
        moved[..., 11, 21] += 1.0  # one pixel of x_t
        assert not torch.equal(net(moved, t, cond)[..., 11, 21], out[..., 11, 21])
    with pytest.raises(ConfigError, match="space_to_depth"):
        HDRConditionalUNet(space_to_depth=2, base_channels=8, channel_mult=(1,))
    with pytest.raises(ConfigError, match="space_to_depth"):
        DecisionMapUNet(space_to_depth=0, **kw)
