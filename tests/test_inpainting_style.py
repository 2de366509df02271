"""Zero-shot inpainting (RePaint, edit-friendly) with our prior and a diffusers pixel prior; style fusion."""

import numpy as np
import pytest
import torch

from fusiondiff.cli.infer import infer
from fusiondiff.data import read_image
from fusiondiff.diffusion import inversion_timesteps, make_schedule
from fusiondiff.diffusion.inpainting import repaint
from fusiondiff.zero_shot import NoiseSpaceFusion
from fusiondiff.zero_shot.priors import DiffusersPixelPrior, load_prior

from conftest import save_png, synthetic_triplet
from helpers import compose_config, write_tiny_bundle, write_tiny_diffusers_pixel, write_tiny_stable_diffusion


@pytest.fixture(scope="module")
def own_prior(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "prior.safetensors"
    return load_prior(write_tiny_bundle(path, num_sources=0, prediction="eps"))


@pytest.fixture(scope="module")
def pixel_prior(tmp_path_factory):
    prior = load_prior(write_tiny_diffusers_pixel(tmp_path_factory.mktemp("ddpm") / "ddpm"))
    assert isinstance(prior, DiffusersPixelPrior)
    return prior


def image_and_mask(h=16, w=16):
    img = torch.from_numpy(synthetic_triplet(3, h, w)[2]).permute(2, 0, 1).float() / 127.5 - 1
    mask = torch.zeros(1, h, w)
    mask[:, 4:10, 3:12] = 1
    return img, mask


METHODS = [("repaint", {}), ("repaint", {"jump_length": 2, "resample": 3}), ("edit_friendly", {})]


@pytest.mark.parametrize("prior_name", ["own_prior", "pixel_prior"])
@pytest.mark.parametrize("method, options", METHODS)
def test_inpainting_keeps_the_known_region_and_changes_the_hole(request, prior_name, method, options):
    prior = request.getfixturevalue(prior_name)
    img, mask = image_and_mask()
    out = NoiseSpaceFusion(prior).inpaint(img, mask, steps=8, method=method, seed=1, **options)
    known, hole = mask[0] == 0, mask[0] == 1
    assert out.shape == img.shape and torch.isfinite(out).all()
    assert (out - img)[:, known].abs().max() < 1e-6
    assert (out - img)[:, hole].abs().mean() > 0.05
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("method", ["repaint", "edit_friendly"])
def test_latent_inpainting_with_stable_diffusion_keeps_known_pixels(tmp_path_factory, method):
    prior = load_prior(write_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd"))
    img, mask = image_and_mask()
    out = NoiseSpaceFusion(prior).inpaint(img, mask, steps=4, method=method)
    known = mask[0] == 0
    assert out.shape == img.shape and torch.isfinite(out).all()
    assert torch.equal(out[:, known], img[:, known])  # copied back after decoding
    assert (out - img)[:, ~known].abs().mean() > 0.01


def test_repaint_resampling_visits_more_steps():
    schedule = make_schedule("cosine", 50)
    calls = []

    def den(x, t, cond):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    x0, mask = torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1
    ts = inversion_timesteps(50, 8)
    repaint(den, schedule, x0, mask, ts)
    assert len(calls) == 8
    calls.clear()
    repaint(den, schedule, x0, mask, ts, jump_length=2, resample=3)
    assert len(calls) == 8 + 3 * 2 * 2  # jump points at levels 2, 4, 6: two extra passes of 2 steps each


def test_inpainting_bad_masks(own_prior):
    img, mask = image_and_mask()
    fuser = NoiseSpaceFusion(own_prior)
    with pytest.raises(ValueError, match="resize the mask"):
        fuser.inpaint(img, mask[:, :8], steps=4)
    with pytest.raises(ValueError, match="empty"):
        fuser.inpaint(img, torch.zeros_like(mask), steps=4)
    with pytest.raises(ValueError, match="whole image"):
        fuser.inpaint(img, torch.ones_like(mask), steps=4)
    with pytest.raises(ValueError, match="not binary"):
        fuser.inpaint(img, mask * 0.5, steps=4)
    with pytest.raises(ValueError, match="unknown inpainting method"):
        fuser.inpaint(img, mask, steps=4, method="telea")


def test_inpaint_cli(tmp_path, own_prior):
    prior = write_tiny_bundle(tmp_path / "prior.safetensors", num_sources=0, prediction="eps")
    img = save_png(tmp_path / "photo (1).png", synthetic_triplet(4, 16, 24)[2])
    m = np.zeros((16, 24), np.uint8)
    m[3:9, 5:15] = 255
    mask = save_png(tmp_path / "hole.png", m)
    out = tmp_path / "filled.png"
    overrides = ["mode=inpaint", f"prior={prior}", f"input='{img}'", f"mask={mask}", f"output={out}", "inpaint.steps=6"]
    infer(compose_config("infer", [*overrides, "inpaint.method=edit_friendly"]))
    filled, original = read_image(out), read_image(img)
    assert (filled - original)[:, torch.from_numpy(m == 0)].abs().max() <= 1 / 127.5
    with pytest.raises(ValueError, match="needs input"):
        infer(compose_config("infer", ["mode=inpaint", f"prior={prior}", f"output={out}"]))


@pytest.mark.parametrize("prior_name", ["own_prior", "pixel_prior"])
def test_style_fusion_ratio_zero_reproduces_content(request, prior_name):
    prior = request.getfixturevalue(prior_name)
    a = torch.from_numpy(synthetic_triplet(1, 16, 16)[2]).permute(2, 0, 1).float() / 127.5 - 1
    b = torch.from_numpy(synthetic_triplet(9, 16, 16)[2]).permute(2, 0, 1).float() / 127.5 - 1
    fuser = NoiseSpaceFusion(prior)
    inv = fuser.invert(torch.stack([a, b]), steps=8)
    content = fuser.fuse(inv, [1.0, 0.0], "style")[0]
    assert (content - a).abs().max() < 1e-4
    styled = fuser.fuse(inv, [0.4, 0.6], "style")[0]
    assert (styled - a).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="exactly two"):
        three = fuser.invert(torch.stack([a, b, a]), steps=4)
        fuser.fuse(three, [0.5, 0.25, 0.25], "style")


def test_style_fusion_cli(tmp_path):
    prior = write_tiny_bundle(tmp_path / "prior.safetensors", num_sources=0, prediction="eps")
    a = save_png(tmp_path / "a.png", synthetic_triplet(1, 16, 16)[2])
    b = save_png(tmp_path / "b.png", synthetic_triplet(2, 16, 16)[2])
    out = tmp_path / "styled.png"
    written = infer(compose_config("infer", ["mode=style_fusion", f"prior={prior}", f"content={a}", f"style={b}",
                                             f"output={out}", "fusion.steps=6", "fusion.ratio=0.5"]))  # fmt: skip
    assert written[0] == out
    styled = read_image(out)
    content, style = read_image(a), read_image(b)
    assert (styled - content).abs().mean() > 1e-2  # the strength changed the content image ...
    zero_cfg = ["mode=style_fusion", f"prior={prior}", f"content={a}", f"style={b}", f"output={tmp_path / 'zero.png'}",
                "fusion.steps=6", "fusion.ratio=0"]  # fmt: skip
    (zero, *_) = infer(compose_config("infer", zero_cfg))
    assert (read_image(zero) - content).abs().max() <= 1.5 / 127.5  # ... and strength 0 reproduces it exactly
    assert (styled - style).abs().mean() > 1e-2
    with pytest.raises(ValueError, match="content=<image A> and style=<image B>"):
        infer(compose_config("infer", ["mode=style_fusion", f"prior={prior}", f"content={a}", f"output={out}"]))


@pytest.mark.skipif(
    not all(
        __import__("fusiondiff.metrics.perceptual", fromlist=["x"]).cached_backbone_path(n).is_file() for n in ("alex", "vgg")
    ),
    reason="LPIPS weights not prepared: run python scripts/prepare_lpips_weights.py",
)
def test_style_and_content_scores():
    import torch.nn.functional as F

    from fusiondiff.data.datasets import skimage_photos
    from fusiondiff.metrics.style import content_distance, gram_matrices, style_distance

    coffee, rocket = skimage_photos(["coffee", "rocket"])
    a = F.interpolate(coffee[None], (64, 64), mode="area")[0]
    b = F.interpolate(rocket[None], (48, 72), mode="area")[0]
    grams = gram_matrices(a)
    assert [g.shape[-1] for g in grams] == [64, 128, 256, 512, 512]
    assert style_distance(a, a).item() == pytest.approx(0.0, abs=1e-12)
    # Gram matrices pool over positions: a mirrored photo is closer in style than another photo
    assert style_distance(a, a.flip(-1)).item() < style_distance(a, b).item()
    assert style_distance(torch.stack([a, a]), b).shape == (2,)  # sizes may differ
    assert content_distance(a, a).item() == pytest.approx(0.0, abs=1e-6) and content_distance(a, a.flip(-1)).item() > 0.05
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        style_distance(a * 3, b)
