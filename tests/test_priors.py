"""The three prior backends (ours, diffusers UNet2DModel, Stable Diffusion) behind one interface, with tiny random
networks built offline and loaded back through the standard ``DiffusionPipeline.from_pretrained`` call."""

import pytest
import torch

from fusiondiff.cli.infer import infer
from fusiondiff.data import read_image
from fusiondiff.zero_shot import NoiseSpaceFusion, Prompts
from fusiondiff.zero_shot.priors import DiffusersPixelPrior, OwnPrior, StableDiffusionPrior, load_prior

from conftest import save_png, synthetic_triplet
from helpers import compose_config, write_tiny_bundle, write_tiny_diffusers_pixel, write_tiny_stable_diffusion

BACKENDS = ("ours", "diffusers_pixel", "stable_diffusion")


@pytest.fixture(scope="module")
def prior_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {
        "ours": write_tiny_bundle(root / "ours.safetensors", num_sources=0),
        "diffusers_pixel": write_tiny_diffusers_pixel(root / "pixel"),
        "stable_diffusion": write_tiny_stable_diffusion(root / "sd"),
    }


@pytest.fixture(scope="module")
def priors(prior_dirs):
    return {name: load_prior(path) for name, path in prior_dirs.items()}


def images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_load_prior_picks_the_backend(priors):
    assert isinstance(priors["ours"], OwnPrior)
    assert isinstance(priors["diffusers_pixel"], DiffusersPixelPrior) and priors["diffusers_pixel"].clip_x0
    assert isinstance(priors["stable_diffusion"], StableDiffusionPrior) and not priors["stable_diffusion"].clip_x0
    sd = priors["stable_diffusion"]
    assert sd.encode(images(1)).shape == (1, 4, 16, 16)  # 2x down-sampling VAE, 4 latent channels


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_reconstruction_in_float32(priors, backend):
    """10 steps, float32 chain: regenerating each image from its own maps reproduces it (the latents for SD)."""
    prior = priors[backend]
    prompts = Prompts("a cat", cfg_src=3.5) if prior.uses_prompts else None
    fuser = NoiseSpaceFusion(prior, prompts, dtype=torch.float32)
    x = images()
    inv = fuser.invert(x, steps=10)
    assert inv.xs.dtype == torch.float32 and inv.zs.shape[:2] == (10, 2)
    target = prior.encode(x)
    err = (fuser.reconstruct(inv, decode=False) - target).abs().max().item()
    assert err < 1e-4, f"{backend}: reconstruction error {err}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ratio_zero_and_one_reproduce_the_inputs(priors, backend):
    prior = priors[backend]
    fuser = NoiseSpaceFusion(prior)
    x = images()
    inv = fuser.invert(x, steps=10)
    recs = fuser.reconstruct(inv)
    for mode in ("linear", "layer_selective", "feature_selective"):
        a, _ = fuser.fuse(inv, [1.0, 0.0], mode)
        b, _ = fuser.fuse(inv, [0.0, 1.0], mode, skip=3)
        torch.testing.assert_close(a, recs[0], atol=1e-4, rtol=0)  # batch 1 vs 2 rounding
        torch.testing.assert_close(b, fuser.reconstruct(inv, skip=3)[1], atol=1e-4, rtol=0)
    mixed, strip = fuser.fuse(inv, [0.5, 0.5], "linear", strip_frames=4)
    assert mixed.shape == x.shape[1:] and len(strip) == 4 and strip[-1].shape == x.shape[1:]
    assert (mixed - recs[0]).abs().mean() > 1e-3 and (mixed - recs[1]).abs().mean() > 1e-3


@pytest.mark.parametrize("backend", ("diffusers_pixel", "stable_diffusion"))
def test_one_batched_network_call_per_step(priors, backend):
    prior = priors[backend]
    calls = []
    hook = prior.unet.register_forward_hook(lambda module, args, kwargs_or_out: calls.append(args[0].shape[0]))
    try:
        guided = Prompts("a dog", cfg_src=2.0) if prior.uses_prompts else None
        NoiseSpaceFusion(prior, guided).invert(images(3), steps=10)
    finally:
        hook.remove()
    assert calls == [6 if prior.uses_prompts else 3] * 10  # 3 images (x2 with classifier-free guidance)


def test_stable_diffusion_prompts_and_guidance(priors):
    sd = priors["stable_diffusion"]
    x = images()
    same = NoiseSpaceFusion(sd, Prompts("a cat", cfg_src=3.0))
    inv = same.invert(x, steps=10)
    base = same.reconstruct(inv, decode=False)
    edited = NoiseSpaceFusion(sd, Prompts("a cat", "a dog", cfg_src=3.0, cfg_tar=7.5)).reconstruct(inv, decode=False)
    assert (edited - base).abs().max() > 1e-3  # the target prompt and guidance act on the regeneration
    with pytest.raises(ValueError, match="not text-conditioned"):
        NoiseSpaceFusion(priors["diffusers_pixel"], Prompts("a cat")).invert(x, steps=4)


def test_v_prediction_stable_diffusion_reconstructs(tmp_path):
    prior = load_prior(write_tiny_stable_diffusion(tmp_path / "sd_v", prediction_type="v_prediction"))
    assert prior.prediction == "v"
    fuser = NoiseSpaceFusion(prior, dtype=torch.float32)
    inv = fuser.invert(images(1), steps=10)
    assert (fuser.reconstruct(inv, decode=False) - prior.encode(images(1))).abs().max() < 1e-4


def test_bad_priors_and_sizes(priors, tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_prior(tmp_path)
    with pytest.raises(ValueError, match="divisible by 2"):
        NoiseSpaceFusion(priors["diffusers_pixel"]).invert(images(size=31)[..., :30, :31], steps=4)
    with pytest.raises(ValueError, match="3-channel"):
        NoiseSpaceFusion(priors["diffusers_pixel"]).invert(images()[:, :1], steps=4)
    with pytest.raises(ValueError, match="skip"):
        fuser = NoiseSpaceFusion(priors["ours"])
        fuser.fuse(fuser.invert(images(), steps=4), [0.5, 0.5], skip=4)


@pytest.fixture
def image_files(tmp_path):
    return [save_png(tmp_path / f"img{k}.png", synthetic_triplet(40 + k, 32, 32)[2]) for k in range(2)]


def test_cli_with_a_stable_diffusion_prior_and_the_original_yaml(prior_dirs, image_files, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"- init_img: {image_files[0].name}\n  second_image: {image_files[1].name}\n"
        "  source_prompt: a photo\n  target_prompts: [a photo, a painting]\n  fusion_ratio: 0.3\n"
        "  fusion_mode: cross_fade\n  skip: 2\n  cfg_src: 2.0\n  cfg_tar: 4.0\n  num_diffusion_steps: 6\n"
    )
    out = tmp_path / "out" / "fused.png"
    overrides = ["mode=noise_fusion", f"prior={prior_dirs['stable_diffusion']}", f"fusion.input_yaml={spec}",
                 f"output={out}", "fusion.save_strip=true", "fusion.strip_frames=3"]  # fmt: skip
    written = infer(compose_config("infer", overrides))
    names = [p.name for p in written]
    assert names[:2] == ["fused_0_0.png", "fused_0_0_strip.png"] and "fused_0_1.png" in names
    assert read_image(out.with_name("fused_0_0_strip.png")).shape == (3, 32, 96)
    spec.write_text(f"init_img: {image_files[0].name}\nsecond_image: {image_files[1].name}\nedit_prompt: x\n")
    with pytest.raises(ValueError, match="unknown key.*edit_prompt"):
        infer(compose_config("infer", overrides))


def test_cli_with_a_diffusers_pixel_prior(prior_dirs, image_files, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "pixel.png"
    overrides = ["mode=noise_fusion", f"prior={prior_dirs['diffusers_pixel']}", f"inputs=[{image_files[0]},{image_files[1]}]",
                 f"output={out}", "fusion.steps=6", "fusion.mode=mask", "fusion.mask=left_right"]  # fmt: skip
    written = infer(compose_config("infer", overrides))
    assert len(written) == 3 and "inversion check" in caplog.text
    a, b = read_image(image_files[0]), read_image(image_files[1])
    assert (read_image(written[1]) - a).abs().max() <= 1.5 / 127.5
    fused, w = read_image(written[0]), a.shape[-1]
    left, right = (..., slice(0, w // 2 - 2)), (..., slice(w // 2 + 2, w))  # A on the left, B on the right
    assert (fused[left] - a[left]).abs().mean() < (fused[left] - b[left]).abs().mean()
    assert (fused[right] - b[right]).abs().mean() < (fused[right] - a[right]).abs().mean()
