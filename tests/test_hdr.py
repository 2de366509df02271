"""HDR task: Kalantari reader, synthetic scenes, IO, baselines, FCG/SFT network, training and inference."""

import json
import math

import numpy as np
import pytest
import torch

from fusiondiff.cli.infer import infer
from fusiondiff.cli.train import train
from fusiondiff.data import read_image
from fusiondiff.data.hdr import (
    KalantariDataset,
    hdr_sources,
    hdr_target,
    load_scene,
    make_synthetic_hdr,
    read_exposures,
    read_hdr_image,
    read_ldr,
    synthesize_scene,
    target_to_hdr,
    write_hdr_image,
    write_ldr,
    write_scene,
)
from fusiondiff.data.io import ImageError
from fusiondiff.metrics import hdr as hdr_metrics
from fusiondiff.models import FeatureConditionGenerator, HDRConditionalUNet
from fusiondiff.tasks.hdr import linear_merge, merge_estimate, mertens_fusion, reference_estimate

from helpers import compose_config

EVS = [-1.5, 0.0, 2.5]  # negative and fractional


def random_scene(h=24, w=20, seed=0, motion=0):
    gen = torch.Generator().manual_seed(seed)
    photo = torch.rand(3, h, w, generator=gen) * 2 - 1
    return synthesize_scene(photo, gen, evs=EVS, motion=motion)


@pytest.fixture
def scene_dir(tmp_path):
    ldrs, hdr = random_scene()
    return write_scene(tmp_path / "Training" / "scene_a", ldrs, hdr, EVS, bit_depth=16), ldrs, hdr


def test_kalantari_reader_keeps_16_bit_and_float_hdr(scene_dir):
    folder, ldrs, hdr = scene_dir
    scene = load_scene(folder)
    assert scene.evs == EVS
    torch.testing.assert_close(scene.times, torch.tensor([1.0, 2.0**1.5, 2.0**4]))  # 2^(EV - min EV)
    assert (scene.ldrs - ldrs).abs().max() <= 0.5 / 65535 + 1e-7  # 16-bit precision, not 8-bit
    assert (scene.ldrs * 255 - (scene.ldrs * 255).round()).abs().max() > 0.01  # values between 8-bit levels
    assert scene.hdr.dtype == torch.float32 and (scene.hdr - hdr).abs().max() / hdr.max() < 0.01  # RGBE precision
    sources = hdr_sources(scene.ldrs, scene.times)
    assert sources.shape == (3, 6, 24, 20) and sources.min() >= -1 and sources.max() <= 1
    expected = (scene.ldrs[0] ** 2.2 / scene.times[0]) * 2 - 1
    torch.testing.assert_close(sources[0, 3:], expected.clamp(-1, 1))


def test_exposure_parsing(tmp_path):
    path = tmp_path / "exposure.txt"
    path.write_text("-2\n0.5\n+10\n\n")
    assert read_exposures(path) == [-2.0, 0.5, 10.0]  # the whole number, not its first character
    path.write_text("-2\nbright\n2\n")
    with pytest.raises(ValueError, match="line 2.*not a number"):
        read_exposures(path)


def test_mu_law_round_trip_and_closed_forms():
    h = torch.rand(3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(target_to_hdr(hdr_target(h)), h)
    gt, out = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64), torch.full((1, 3, 4, 4), 0.6, dtype=torch.float64)
    mu = lambda x: math.log1p(5000 * x) / math.log1p(5000)
    assert hdr_metrics.psnr_mu(out, gt).item() == pytest.approx(-20 * math.log10(mu(0.6) - mu(0.5)))
    assert hdr_metrics.psnr_l(out, gt).item() == pytest.approx(-20 * math.log10(0.1))


@pytest.mark.parametrize("suffix", [".hdr", ".exr"])
def test_hdr_file_round_trip(tmp_path, suffix):
    hdr = torch.rand(3, 9, 13) * 20  # beyond 1: no clipping in files
    path = write_hdr_image(tmp_path / f"x{suffix}", hdr)
    back = read_hdr_image(path)
    assert back.dtype == torch.float32 and back.shape == hdr.shape
    if suffix == ".exr":
        assert torch.equal(back, hdr)
    else:  # RGBE: 8-bit mantissas with one exponent per pixel, ~1 % of the pixel's largest channel
        assert ((back - hdr).abs() / hdr.amax(0, keepdim=True)).max() <= 0.01


def test_bad_inputs(scene_dir, tmp_path):
    folder, ldrs, hdr = scene_dir
    (folder / "exposure.txt").unlink()
    with pytest.raises(FileNotFoundError, match="exposure"):
        load_scene(folder)
    (folder / "exposure.txt").write_text("-1.5\n0\n")
    with pytest.raises(ValueError, match="2 EV values for 3"):
        load_scene(folder)
    (folder / "exposure.txt").write_text("-1.5\n0\n2.5\n")
    write_ldr(folder / "input_4.tif", ldrs[0])
    with pytest.raises(ValueError, match="expected 3 LDR"):
        load_scene(folder)
    write_ldr(folder / "input_4.tif", torch.rand(3, 10, 10))
    (folder / "input_3.tif").unlink()
    with pytest.raises(ValueError, match="differ in size"):
        load_scene(folder)
    bad = hdr.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        write_hdr_image(tmp_path / "nan.exr", bad)
    import OpenEXR

    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"RGB": np.full((4, 4, 3), np.nan, np.float32)}) as f:
        f.write(str(tmp_path / "nan.exr"))
    with pytest.raises(ImageError, match="NaN"):
        read_hdr_image(tmp_path / "nan.exr")
    (tmp_path / "broken.hdr").write_bytes(b"not an hdr")
    with pytest.raises(ImageError, match="cannot read"):
        read_hdr_image(tmp_path / "broken.hdr")
    with pytest.raises(FileNotFoundError):
        read_ldr(tmp_path / "missing.tif")


def test_synthetic_scenes_have_wide_range_clipping_and_ghosts():
    gen = torch.Generator().manual_seed(0)
    photo = torch.rand(3, 64, 64, generator=gen) * 2 - 1
    ldrs, hdr = synthesize_scene(photo, gen, motion=6)
    assert torch.quantile(hdr.flatten(), 0.99) / torch.quantile(hdr.flatten(), 0.01) >= 2**8
    assert (ldrs[2] >= 0.999).float().mean() > 0.05  # the long exposure clips
    times = torch.tensor([1.0, 4.0, 16.0])
    static_ldrs, static_hdr = synthesize_scene(photo, torch.Generator().manual_seed(1), motion=0, noise=0.0)
    moving_ldrs, moving_hdr = synthesize_scene(photo, torch.Generator().manual_seed(1), motion=6, noise=0.0)
    clean = hdr_metrics.psnr_mu(linear_merge(static_ldrs, times).clamp(0, 1), static_hdr.clamp(0, 1))
    ghosted = hdr_metrics.psnr_mu(linear_merge(moving_ldrs, times).clamp(0, 1), moving_hdr.clamp(0, 1))
    assert clean > 40 and ghosted < clean - 5  # the known response merges exactly; motion leaves ghosts
    fused = mertens_fusion(ldrs)
    assert fused.shape == (3, 64, 64) and 0 <= fused.min() and fused.max() <= 1 and fused.mean() > 0.1  # OpenCV wants 0..255


def test_dataset_crops_and_augmentation(tmp_path):
    make_synthetic_hdr(tmp_path, num_train=2, num_test=1, size=(40, 48))
    ds = KalantariDataset(tmp_path, "Training", crop_size=32, stride=16, augment=True)
    assert len(ds) == 2 * 2 * 2  # 2 scenes x 2 rows x 2 columns of 32 px crops
    item = ds[0]
    assert item["sources"].shape == (3, 6, 32, 32) and item["target"].shape == (3, 32, 32)
    whole = KalantariDataset(tmp_path, "Test", crop_size=None, augment=False)[0]
    assert whole["target"].shape == (3, 40, 48)
    torch.testing.assert_close(whole["target"], hdr_target(load_scene(tmp_path / "Test" / "scene_000").hdr), atol=2e-3, rtol=0)


def test_fcg_shapes_and_sft_modulation_changes_the_output():
    fcg = FeatureConditionGenerator(3, 6, 8)
    sources = torch.rand(2, 18, 16, 20) * 2 - 1
    feats, maps = fcg.attention_maps(sources)
    assert fcg(sources).shape == (2, 8, 16, 20) and len(maps) == 3
    assert all(((m > 0) & (m < 1)).all() for i, m in enumerate(maps) if i != 1) and (maps[1] == 1).all()
    torch.manual_seed(0)
    net = HDRConditionalUNet(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, fcg_channels=8, sft_levels=[0, 1])
    x, t, cond = torch.randn(2, 3, 16, 20), torch.tensor([3, 9]), torch.rand(2, 3, 6, 16, 20) * 2 - 1
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    plain = net(x, t, cond)  # SFT heads start at zero: identity modulation
    for head in net.sft.values():
        torch.nn.init.normal_(head[-1].weight, std=0.5)
    modulated = net(x, t, cond)
    assert plain.shape == modulated.shape == (2, 3, 16, 20)
    assert (modulated - plain).abs().max() > 1e-3
    cond2 = cond.clone()
    cond2[:, 0] = cond2[:, 0].flip(-1)  # a different non-reference exposure changes the FCG features
    assert (net(x, t, cond2) - modulated).abs().max() > 1e-4
    with pytest.raises(ValueError, match="sft_levels"):
        HDRConditionalUNet(base_channels=8, channel_mult=[1, 2], sft_levels=[2])


HDR_TINY = ["logger=csv", "callbacks.progress=null", "trainer.accelerator=cpu", "diffusion.num_timesteps=50",
            "model.base_channels=8", "model.channel_mult=[1,2]", "model.fcg_channels=8", "data.batch_size=2",
            "data.val_batch_size=2", "data.train.crop_size=16", "data.train.stride=16", "data.val.crop_size=16",
            "data.train.generate.num_train=2", "data.train.generate.num_test=1", "data.train.generate.size=32",
            "sampler.steps=2"]  # fmt: skip


def test_hdr_task_fast_dev_run(tmp_path):
    overrides = ["experiment=hdr_quickstart", "debug=fdr", *HDR_TINY, f"data.train.root={tmp_path / 'synth'}"]
    metrics, objects = train(compose_config("train", overrides, tmp_path))
    assert objects["trainer"].global_step == 1 and "val/psnr" in metrics and "train/loss" in metrics
    assert isinstance(objects["module"].net, HDRConditionalUNet) and objects["module"].image_loss_weight > 0
    assert (tmp_path / "synth" / "Training" / "scene_000" / "HDRImg.hdr").is_file()


def test_train_export_and_infer_hdr_through_swne(tmp_path):
    overrides = ["experiment=hdr_quickstart", *HDR_TINY, "trainer.max_steps=2", "trainer.val_check_interval=2",
                 f"data.train.root={tmp_path / 'synth'}"]  # fmt: skip
    _, objects = train(compose_config("train", overrides, tmp_path / "run"))
    bundle = objects["bundle"]
    meta = json.loads(__import__("safetensors").safe_open(str(bundle), "pt").metadata()["fusiondiff"])
    assert meta["task"]["name"] == "hdr" and meta["residual"] == "hdr_merge"
    out = tmp_path / "out"
    common = ["mode=hdr", f"ckpt={bundle}", f"input_dir={tmp_path / 'synth' / 'Test'}", "sampler.steps=2"]
    written = infer(compose_config("infer", [*common, f"output_dir={out}", "tile_size=16", "tile_overlap=8"]))
    assert [p.name for p in written] == ["scene_000.hdr", "scene_000.png"]
    radiance = read_hdr_image(written[0])
    assert radiance.shape == (3, 32, 32) and radiance.min() >= 0
    whole = infer(compose_config("infer", [*common, f"output_dir={tmp_path / 'whole'}", "tile_size=64", "tile_overlap=16"]))
    assert (read_hdr_image(whole[0]) - radiance).abs().max() < 0.5  # windows change the result only slightly
    with pytest.raises(ValueError, match="is a multifocus model, not a hdr model"):
        infer(compose_config("infer", ["mode=hdr", f"input_dir={tmp_path / 'synth' / 'Test'}"]))

    # the evaluation suite: the model's radiance is the one infer.py wrote (same sampler, seed and tiling)
    from fusiondiff.cli.evaluate import evaluate

    ev_dir, figure = tmp_path / "eval", tmp_path / "hdr_fig.png"
    summary = evaluate(compose_config("evaluate", ["task=hdr", f"dataset={tmp_path / 'synth'}", f"output_dir={ev_dir}",
                                                   f"methods=[model:{bundle},linear_merge,reference]", "steps=[2]",
                                                   "tile_size=64", "tile_overlap=16", f"figure={figure}"]))  # fmt: skip
    model = f"{bundle.parent.name} (ddim, 2 steps)"
    scene = load_scene(tmp_path / "synth" / "Test" / "scene_000")
    from fusiondiff.data.hdr import hdr_sources, target_to_hdr
    from fusiondiff.tasks import load_pipeline

    pipe = load_pipeline(bundle, task="hdr")
    radiance = target_to_hdr(pipe(hdr_sources(scene.ldrs, scene.times), "ddim", steps=2, seed=0).cpu())
    stored = read_hdr_image(whole[0])
    assert (stored - radiance).abs().max() <= 0.004 * max(radiance.max().item(), 1)  # RGBE: 8-bit mantissas
    expected = hdr_metrics.psnr_mu(radiance.clamp(0, 1), scene.hdr.clamp(0, 1)).item()
    assert summary[model]["psnr_mu"]["mean"] == pytest.approx(expected, abs=1e-6)
    assert summary["linear_merge"]["psnr_l"]["mean"] > summary["reference"]["psnr_l"]["mean"]  # merging beats one exposure
    report = json.loads((ev_dir / "summary.json").read_text())
    assert report["paired"][model]["psnr_mu"]["vs"] == "linear_merge" and report["images"] == 1
    assert read_image(figure).shape[-2:] == (32, 6 * 32 + 5 * 4)  # 3 exposures | merge | model | ground truth


def test_residual_bases_from_the_network_inputs():
    ldrs, hdr = random_scene(16, 16, motion=0)
    times = torch.pow(2.0, torch.tensor(EVS) - min(EVS))
    sources = hdr_sources(ldrs, times)
    expected_ref = hdr_target((ldrs[1] ** 2.2 / 2.0**1.5).clamp(0, 1))
    torch.testing.assert_close(reference_estimate(sources[None])[0], expected_ref, atol=1e-4, rtol=0)
    expected_merge = hdr_target(linear_merge(ldrs, times).clamp(0, 1))
    torch.testing.assert_close(merge_estimate(sources[None])[0], expected_merge, atol=1e-4, rtol=0)
