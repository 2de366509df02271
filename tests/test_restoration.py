"""task=restoration: degradation generators, datasets, training + CLI, bad masks."""

import warnings

import numpy as np
import pytest
import torch

from fusiondiff.cli.infer import infer
from fusiondiff.cli.train import train
from fusiondiff.data import read_image
from fusiondiff.data.degradations import (
    Degrader,
    PairedRestorationFolder,
    SyntheticRestoration,
    add_noise,
    check_mask,
    down_up,
    random_hole_mask,
    read_mask,
)
from fusiondiff.filters import blur, gaussian_kernel, motion_kernel, noise_sigma, unsharp_mask

from conftest import save_png, synthetic_triplet
from helpers import TINY, compose_config


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("size", [(16, 16), (64, 48), (96, 96)])
def test_hole_masks_are_binary_and_within_coverage_bounds(size):
    for seed in range(40):
        m = random_hole_mask(*size, gen(seed), coverage=(0.1, 0.3))
        assert m.shape == (1, *size)
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert 0.1 <= m.mean().item() <= 0.3


def test_bad_coverage_is_refused():
    with pytest.raises(ValueError, match="coverage"):
        random_hole_mask(16, 16, gen(), coverage=(0.5, 0.2))


def test_noise_has_the_requested_sigma():
    image = torch.zeros(3, 128, 128)  # mid-grey: no clipping at sigma 0.1
    for sigma in (0.02, 0.1):
        noisy = add_noise(image, sigma, gen())
        # sigma on the [0, 1] scale = half the std in [-1, 1]
        assert abs((noisy - image).std().item() / 2 - sigma) < 0.05 * sigma


@pytest.mark.parametrize("kernel", [gaussian_kernel(0.8), gaussian_kernel(3.0), motion_kernel(3, 0.0), motion_kernel(15, 1.1)])
def test_blur_kernels_are_normalised_and_nonnegative(kernel):
    assert abs(kernel.sum().item() - 1) < 1e-6 and kernel.min() >= 0
    # a flat image stays flat
    from fusiondiff.filters import blur

    flat = torch.full((1, 20, 20), 0.3)
    assert torch.allclose(blur(flat, kernel), flat, atol=1e-6)


def test_motion_kernel_is_a_line_of_the_requested_length():
    k = motion_kernel(9, 0.0)
    assert (k.sum(0) > 0).sum() == 1 or (k.sum(1) > 0).sum() == 1  # horizontal: one row
    assert 8 <= (k > 1e-3).sum() <= 11


def test_down_up_keeps_size_and_loses_detail():
    x = torch.from_numpy(synthetic_triplet(0, 32, 32)[2]).permute(2, 0, 1).float() / 127.5 - 1
    y = down_up(x, 4)
    assert y.shape == x.shape and (y - x).abs().mean() > 0.01


def test_noise_sigma_estimates_the_added_noise():
    from fusiondiff.data.datasets import skimage_photos

    photo = (skimage_photos(["astronaut"])[0][:, :128, :128] + 1) / 2  # [0, 1]
    for sigma in (0.02, 0.05, 0.1, 0.2):
        noisy = photo + sigma * torch.randn(photo.shape, generator=gen(1))
        assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.3)
    assert noise_sigma(torch.full((3, 32, 32), 0.5)) == 0.0


def test_unsharp_mask_restores_edges_and_keeps_flat_images():
    flat = torch.full((3, 24, 24), 0.3)
    torch.testing.assert_close(unsharp_mask(flat), flat)
    edge = torch.zeros(1, 32, 32)
    edge[:, :, 16:] = 1.0
    blurred = blur(edge, gaussian_kernel(1.5))
    sharpened = unsharp_mask(blurred)
    step = lambda x: float(x[0, 16, 16] - x[0, 16, 15])  # noqa: E731
    assert step(sharpened) > step(blurred)
    torch.testing.assert_close(unsharp_mask(blurred, amount=0.0), blurred)


def test_degrader_kinds_and_errors():
    image = torch.rand(3, 32, 32) * 2 - 1
    for kind in ("inpaint", "noise", "blur", "sr"):
        degraded, mask = Degrader([kind])(image, gen())
        assert degraded.shape == image.shape and mask.shape == (1, 32, 32)
        assert (mask.sum() > 0) == (kind == "inpaint")
        if kind == "inpaint":
            assert (degraded[:, mask[0] == 1] == 0).all()
            assert torch.equal(degraded[:, mask[0] == 0], image[:, mask[0] == 0])
    with pytest.raises(ValueError, match="unknown degradation"):
        Degrader(["jpeg"])
    with pytest.raises(ValueError, match="noise_sigma"):
        Degrader(["noise"], noise_sigma=(0.3, 0.1))


def test_synthetic_dataset_items_and_determinism():
    ds = SyntheticRestoration(Degrader(["inpaint", "noise"]), num_samples=4, crop_size=24, deterministic=True, seed=3)
    item = ds[1]
    assert item["sources"].shape == (1, 4, 24, 24) and item["target"].shape == (3, 24, 24)
    assert torch.equal(ds[1]["sources"], item["sources"])


def test_paired_folder_layout_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("degraded", "clean", "mask"):
        (tmp_path / sub).mkdir()
    for name in ("a (1)", "b"):
        img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        save_png(tmp_path / "clean" / f"{name}.png", img)
        save_png(tmp_path / "degraded" / f"{name}.png", img // 2)
        m = np.zeros((20, 24), np.uint8)
        m[5:10, 5:12] = 255
        save_png(tmp_path / "mask" / f"{name}.png", m)
    ds = PairedRestorationFolder(tmp_path)
    item = ds[0]
    assert item["name"] == "a (1)" and item["sources"].shape == (1, 4, 20, 24)
    assert item["sources"][0, 3].sum() == 5 * 7
    save_png(tmp_path / "mask" / "b.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="resize the mask"):
        ds[1]
    save_png(tmp_path / "clean" / "c.png", np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(Exception, match="unpaired: c"):
        PairedRestorationFolder(tmp_path)


def test_bad_masks_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="resize the mask"):
        check_mask(torch.zeros(1, 8, 8), 8, 10)
    with pytest.raises(ValueError, match="empty"):
        check_mask(torch.zeros(1, 8, 8), 8, 8)
    with pytest.raises(ValueError, match="whole image"):
        check_mask(torch.ones(1, 8, 8), 8, 8)
    soft = torch.zeros(1, 8, 8)
    soft[0, 2:4, 2:4] = 0.5
    with pytest.raises(ValueError, match="not binary"):
        check_mask(soft, 8, 8)
    grey = np.zeros((8, 8), np.uint8)
    grey[2:5, 2:5] = 128
    with pytest.raises(ValueError, match="not binary"):
        read_mask(save_png(tmp_path / "grey.png", grey), 8, 8)
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "missing.png", 8, 8)


RESTORATION_TINY = [*TINY, "data.train.num_samples=8", "data.train.crop_size=16", "data.val.num_samples=2",
                    "data.val.crop_size=16"]  # fmt: skip


def test_restoration_fast_dev_run_then_restore_cli(tmp_path):
    cfg = compose_config("train", ["experiment=restoration_quickstart", *RESTORATION_TINY, "trainer.max_steps=2",
                                  "sampler.steps=1"], tmp_path)  # fmt: skip
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2 and "val/psnr" in metrics
    bundle = objects["bundle"]
    img = synthetic_triplet(5, 24, 20)[2]
    mask = np.zeros((24, 20), np.uint8)
    mask[4:12, 6:14] = 255
    src, mpath = save_png(tmp_path / "in.png", img), save_png(tmp_path / "hole.png", mask)
    out = tmp_path / "restored.png"
    infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input={src}", f"mask={mpath}", f"output={out}"]))
    restored, original = read_image(out), read_image(src)
    known = torch.from_numpy(mask == 0)
    assert restored.shape == original.shape
    assert (restored - original)[:, known].abs().max() <= 1 / 127.5  # known pixels kept (8-bit rounding)
    with pytest.raises(ValueError, match="resize the mask"):
        small = save_png(tmp_path / "small.png", np.full((8, 8), 255, np.uint8))
        infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input={src}", f"mask={small}", f"output={out}",
                                       "overwrite=true"]))  # fmt: skip
    with pytest.raises(ValueError, match="exists; pass overwrite=true"):  # an existing output is never replaced silently
        infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input={src}", f"mask={mpath}", f"output={out}"]))
    with pytest.raises(ValueError, match="not a restoration model"):
        infer(compose_config("infer", ["mode=restore", f"input={src}", f"output={tmp_path / 'new.png'}"]))
    # a folder: degraded/ + mask/ + clean/ (scored), and a plain folder of images
    root = tmp_path / "my pairs"
    for sub in ("degraded", "mask", "clean"):
        (root / sub).mkdir(parents=True)
    for name in ("x (1)", "y"):
        save_png(root / "degraded" / f"{name}.png", img), save_png(root / "clean" / f"{name}.png", img)
        save_png(root / "mask" / f"{name}.png", mask)
    outs = infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input_dir={root}", f"output_dir={tmp_path / 'o'}"]))
    assert [p.name for p in outs] == ["x (1).png", "y.png"]
    assert all((read_image(p) - original)[:, known].abs().max() <= 1 / 127.5 for p in outs)
    outs = infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input_dir={root / 'clean'}",
                                          f"output_dir={tmp_path / 'plain'}"]))  # fmt: skip
    assert [p.name for p in outs] == ["x (1).png", "y.png"] and read_image(outs[0]).shape == original.shape
    with pytest.raises(ValueError, match="not both"):
        infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input={src}", f"input_dir={root}"]))
    (root / "mask" / "y.png").unlink()
    with pytest.raises(Exception, match="one mask per image"):
        infer(compose_config("infer", ["mode=restore", f"ckpt={bundle}", f"input_dir={root}", f"output_dir={tmp_path / 'o'}"]))
    # the quickstart trains only at its sampler's timesteps (fraction 1): other step counts warn, its own do not
    from fusiondiff.data.degradations import load_degraded
    from fusiondiff.tasks import load_pipeline

    pipe = load_pipeline(bundle)
    assert pipe.config["trained_steps"] == 1 == pipe.default_steps
    sources = load_degraded(src, mpath)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe(sources)
    with pytest.warns(UserWarning, match="trained only at the timesteps of the 1-step"):
        pipe(sources, steps=2)


def test_mixed_degradation_config_composes_and_runs(tmp_path):
    cfg = compose_config(
        "train",
        [
            "experiment=restoration_quickstart",
            *RESTORATION_TINY,
            "debug=fdr",
            "data.train.degrader.kinds=[inpaint,noise,blur,sr]",
        ],  # fmt: skip
        tmp_path,
    )
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1


@pytest.mark.parametrize("method", ["telea", "navier_stokes"])
def test_inpainting_residual_base_keeps_known_pixels_and_fills_holes(method):
    from fusiondiff.data.degradations import restoration_source
    from fusiondiff.diffusion.parameterization import from_diffused, to_diffused
    from fusiondiff.tasks import get_task
    from fusiondiff.tasks.restoration import OPENCV_INPAINT, inpaint_fill

    clean = torch.from_numpy(synthetic_triplet(2, 32, 32)[2]).permute(2, 0, 1).float() / 127.5 - 1
    mask = torch.zeros(1, 32, 32)
    mask[:, 10:20, 8:24] = 1
    with_hole = restoration_source(clean * (1 - mask), mask)
    noisy = restoration_source(clean * 0.9, torch.zeros(1, 32, 32))
    sources = torch.cat([with_hole, noisy])[:, None]  # [2, 1, 4, H, W]
    base = inpaint_fill(sources, method)
    hole = mask[0] == 1
    assert torch.equal(base[0][:, ~hole], clean[:, ~hole])  # known pixels exactly as given
    assert (base[0] - clean)[:, hole].abs().mean() < (0 - clean)[:, hole].abs().mean()  # better than the grey hole
    assert torch.equal(base[1], clean * 0.9)  # no hole: the degraded image itself
    target = torch.stack([clean, clean])
    conditioning = get_task("restoration").conditioning("x0", method)
    torch.testing.assert_close(from_diffused(to_diffused(target, conditioning.base(sources)), base), target)
    torch.testing.assert_close(conditioning.base(sources), base)
    assert set(OPENCV_INPAINT) <= set(get_task("restoration").residual_bases())  # every OpenCV fill is a residual base


@pytest.mark.parametrize("method", ["telea", "navier_stokes"])
def test_network_condition_is_the_inpainting_fill_in_training_validation_and_the_pipeline(method):
    """With an inpainting residual the network sees the holes filled by that base (not grey), everywhere."""
    from fusiondiff.data.degradations import restoration_source
    from fusiondiff.diffusion import make_schedule
    from fusiondiff.models import ConditionalUNet
    from fusiondiff.pipeline import FusionPipeline
    from fusiondiff.tasks import get_task
    from fusiondiff.tasks.restoration import inpaint_fill
    from fusiondiff.training import DiffusionFusionModule

    clean = torch.from_numpy(synthetic_triplet(2, 32, 32)[2]).permute(2, 0, 1).float() / 127.5 - 1
    mask = torch.zeros(1, 32, 32)
    mask[:, 4:20, 6:14] = 1
    sources = restoration_source(clean * (1 - mask), mask)[None]  # [1, 1, 4, H, W]
    base = inpaint_fill(sources, method)
    task = get_task("restoration")
    _, cond = task.conditioning("x0", method).prepare(sources)
    assert cond.shape == sources.shape
    torch.testing.assert_close(cond[:, 0, :3], base)
    assert torch.equal(cond[:, 0, 3:], sources[:, 0, 3:])  # the mask channel is kept
    assert task.conditioning("x0", "mean").prepare(sources)[1] is sources  # other residuals: unchanged

    seen = []

    class Spy(ConditionalUNet):
        def forward(self, x, t, cond):
            seen.append(cond.detach().clone())
            return super().forward(x, t, cond)

    torch.manual_seed(0)
    net = Spy(image_channels=3, num_sources=1, source_channels=4, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    module = DiffusionFusionModule(net, make_schedule("cosine", 50), lambda p: torch.optim.AdamW(p, 1e-3), ema_decay=0,
                                   prediction="x0", residual=method, sampler={"steps": 1}, task="restoration")  # fmt: skip
    module.diffusion_loss({"sources": sources, "target": clean[None]})
    module.sample(sources)
    FusionPipeline(net, module.schedule, {"prediction": "x0", "residual": method}, task.conditioning("x0", method))(
        sources, steps=1
    )
    assert len(seen) == 3
    for c in seen:
        torch.testing.assert_close(c, cond)


@pytest.mark.skipif(
    not all(
        __import__("fusiondiff.metrics.perceptual", fromlist=["x"]).cached_backbone_path(n).is_file() for n in ("alex", "vgg")
    ),
    reason="LPIPS weights not prepared: run python scripts/prepare_lpips_weights.py",
)
def test_evaluate_restoration_baselines_and_paired_differences(tmp_path):
    import json

    from fusiondiff.cli.evaluate import evaluate

    cfg = compose_config("train", ["experiment=restoration_quickstart", *RESTORATION_TINY, "trainer.max_steps=1",
                                  "sampler.steps=1", "data.train.degrader.kinds=[noise]"], tmp_path)  # fmt: skip
    bundle = train(cfg)[1]["bundle"]
    model = f"{bundle.parent.name} (ddim, 1 step)"
    out = tmp_path / "noise"
    summary = evaluate(compose_config("evaluate", ["task=restoration", "kind=noise", "num=6", "size=32", f"output_dir={out}",
                                                   f"methods=[identity,nl_means,model:{bundle}]"]))  # fmt: skip
    assert set(summary) == {"identity", "nl_means", model}
    assert summary["nl_means"]["psnr"]["mean"] > summary["identity"]["psnr"]["mean"]  # the classical denoiser does denoise
    paired = json.loads((out / "summary.json").read_text())["paired"][model]
    assert paired["psnr"]["vs"] == "nl_means" and paired["lpips"]["vs"] in ("identity", "nl_means")
    assert all(v["ci95"] >= 0 and v["n"] == 6 for v in paired.values())
    # users' own test pairs of different sizes (suite=folder), inpainting against OpenCV, with the figure
    root = tmp_path / "pairs"
    for sub in ("degraded", "clean", "mask"):
        (root / sub).mkdir(parents=True)
    for name, (h, w) in {"a": (32, 40), "b (2)": (36, 32)}.items():
        img = synthetic_triplet(1, h, w)[2]
        hole = np.zeros((h, w), np.uint8)
        hole[8:20, 10:22] = 255
        save_png(root / "clean" / f"{name}.png", img), save_png(root / "degraded" / f"{name}.png", img)
        save_png(root / "mask" / f"{name}.png", hole)
    figure = tmp_path / "fig.png"
    folder = ["task=restoration", "suite=folder", f"dataset={root}", f"output_dir={tmp_path / 'folder'}", f"figure={figure}",
              f"methods=[identity,telea,navier_stokes,model:{bundle}]"]  # fmt: skip
    summary = evaluate(compose_config("evaluate", folder))
    assert summary["telea"]["n"] == 2 and set(summary) >= {"identity", "telea", "navier_stokes"}
    report = json.loads((tmp_path / "folder" / "summary.json").read_text())
    assert report["paired"][model]["lpips"]["vs"] in ("telea", "navier_stokes")
    assert read_image(figure).shape[-2:] == (3 * (32 + 36), 3 * 5 * 40)  # rows padded to the widest
    (root / "mask" / "a.png").unlink(), (root / "mask" / "b (2).png").unlink()
    with pytest.raises(ValueError, match="needs a hole in every image"):
        evaluate(compose_config("evaluate", [*folder, "resume=false"]))


@pytest.mark.parametrize("experiment", ["restoration_quickstart", "unconditional_quickstart"])
def test_own_photo_folder_is_a_plain_override(tmp_path, experiment):
    photos = tmp_path / "my photos"
    photos.mkdir()
    for i in range(2):
        save_png(photos / f"shot ({i}).png", synthetic_triplet(i, 40, 48)[2])
    cfg = compose_config("train", [f"experiment={experiment}", f"data.train.folder={photos}"], tmp_path)
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    train_set = instantiate(cfg.data.train)
    assert len(train_set.patches.photos if hasattr(train_set, "patches") else train_set.photos) == 2
    assert train_set[0]["target"].shape[-2:] == (cfg.data.train.crop_size,) * 2
    cfg = compose_config("train", [f"experiment={experiment}", f"data.train.folder={tmp_path / 'missing'}"], tmp_path)
    with pytest.raises(InstantiationException, match="photo folder .*missing does not exist"):
        instantiate(cfg.data.train)
