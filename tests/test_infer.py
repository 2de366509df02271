"""Inference with a tiny freshly built bundle: odd sizes, tiling, bad inputs, nothing half-written."""

import json

import pytest
import torch
from safetensors.torch import save_file

from fusiondiff.cli.infer import infer
from fusiondiff.data import ImageError, read_image
from fusiondiff.models import ConditionalUNet
from fusiondiff.models.bundle import load_model
from fusiondiff.pipeline import FusionPipeline
from fusiondiff.tasks import get_task, load_pipeline
from fusiondiff.zero_shot import NoiseSpaceFusion, ratio_weights
from fusiondiff.zero_shot.priors import OwnPrior

from conftest import save_png, synthetic_triplet
from helpers import compose_config, write_tiny_bundle


@pytest.fixture
def bundle(tmp_path):
    return write_tiny_bundle(tmp_path / "tiny.safetensors", task={"name": "multifocus"})


@pytest.fixture
def pair(tmp_path):
    a, b, _ = synthetic_triplet(5, 33, 41)
    return save_png(tmp_path / "in" / "x-A.png", a), save_png(tmp_path / "in" / "x-B.png", b)


def run(bundle, out, inputs, *extra):
    cfg = compose_config(
        "infer", [f"ckpt={bundle}", f"inputs=[{','.join(map(str, inputs))}]", f"output={out}", "sampler.steps=2", *extra]
    )
    return infer(cfg)


def test_tiled_inference_matches_size_and_is_seeded(bundle, pair, tmp_path):
    (a,) = run(bundle, tmp_path / "a.png", pair)
    (b,) = run(bundle, tmp_path / "b.png", pair)
    (c,) = run(bundle, tmp_path / "c.png", pair, "tile_size=16", "tile_overlap=4", "tile_batch=4")
    ia, ib, ic = read_image(a), read_image(b), read_image(c)
    assert ia.shape == (3, 33, 41) and ic.shape == (3, 33, 41)
    torch.testing.assert_close(ia, ib, rtol=0, atol=0)
    # the windows really are blended: an x0/residual model with a zero output layer gives exactly the mean
    # of the sources however it is tiled (wrong window weights or a gap would show), and a real model's
    # tiled output stays close to its whole-image output
    zero = write_tiny_bundle(tmp_path / "zero.safetensors", init_std=None, prediction="x0", residual=True,
                             task={"name": "multifocus"})  # fmt: skip
    (z,) = run(zero, tmp_path / "z.png", pair, "tile_size=16", "tile_overlap=4", "tile_batch=3")
    mean = (read_image(pair[0]) + read_image(pair[1])) / 2
    assert (read_image(z) - mean).abs().max() <= 1.01 / 127.5  # 8-bit rounding only
    assert (ic - ia).abs().mean() < 0.1 and not torch.equal(ic, ia)


def test_bf16_precision_runs_the_network_in_bfloat16_and_nothing_else(bundle, pair, tmp_path):
    """precision=bf16: the network's convolutions run in bfloat16 (autocast), the sampler's arithmetic and the
    output stay float; the output is near the float32 one but not equal to it; fp32 is exactly as before."""
    seen = []
    fp32, bf16 = load_pipeline(bundle), load_pipeline(bundle, precision="bf16")
    conv = next(m for m in bf16.net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    sources = torch.stack([read_image(p) for p in pair])
    a, b = fp32(sources, steps=2), bf16(sources, steps=2)
    assert set(seen) == {torch.bfloat16} and b.dtype == torch.float32
    seen.clear()  # an fp32 pipeline leaves a caller's own autocast on (scripts/benchmark.py once relied on that)
    fp32.net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp32(sources, steps=1)
    assert seen == [torch.bfloat16]
    assert 0 < (a - b).abs().max() < 0.1
    torch.testing.assert_close(a, load_pipeline(bundle)(sources, steps=2), rtol=0, atol=0)
    (out,) = run(bundle, tmp_path / "bf16.png", pair, "precision=bf16", "device=cpu")
    assert (read_image(out) - b).abs().max() <= 0.5 / 127.5 + 1e-6  # the CLI writes that output, 8-bit rounded


def test_bf16_is_refused_on_a_gpu_without_bfloat16_and_warned_about_on_a_cpu_without_bf16_units(monkeypatch):
    """check_precision with the device: a GPU that cannot do bfloat16 is refused before any work (autocast would
    fail at the first network call); a CPU without AMX / AVX512-BF16 runs it but is told it is usually slower."""
    from fusiondiff.errors import ConfigError
    from fusiondiff.pipeline import check_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Old GPU")
    with pytest.raises(ConfigError, match="Old GPU has no bfloat16"):
        check_precision("bf16", torch.device("cuda"))
    assert check_precision("fp32", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match="usually slower"):
        assert check_precision("bf16", torch.device("cpu")) == "bf16"


def test_pipeline_three_sources_and_batches(tmp_path):
    net = ConditionalUNet(image_channels=1, num_sources=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    from fusiondiff.diffusion import make_schedule

    pipe = FusionPipeline(net, make_schedule("linear", 50), {"net": {"image_channels": 1}})
    assert pipe(torch.zeros(3, 1, 20, 18), steps=3).shape == (1, 20, 18)
    assert pipe(torch.zeros(2, 3, 1, 20, 18), sampler="fusiondiff", steps=3).shape == (2, 1, 20, 18)
    with pytest.raises(ValueError, match="valid: ddim, fusiondiff"):
        pipe(torch.zeros(3, 1, 20, 18), sampler="plms")


def test_bad_inputs_leave_nothing_behind(bundle, pair, tmp_path):
    a, b = pair
    small = save_png(tmp_path / "in" / "small.png", synthetic_triplet(1, 20, 20)[0])
    out = tmp_path / "out" / "fused.png"
    with pytest.raises(ImageError, match="differ in size"):
        run(bundle, out, [a, small])
    with pytest.raises(FileNotFoundError, match="image not found"):
        run(bundle, out, [a, tmp_path / "nope.png"])
    tiny = save_png(tmp_path / "in" / "t.png", synthetic_triplet(1, 8, 8)[0][:1, :1])
    with pytest.raises(ValueError, match="minimum"):
        run(bundle, out, [tiny, tiny])
    assert not out.exists() and not (tmp_path / "out").exists()
    (resized,) = run(bundle, out, [a, small], "resize=true")
    assert read_image(resized).shape == (3, 33, 41)


def test_model_file_errors(tmp_path, bundle):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="without fusiondiff metadata"):
        load_model(tmp_path / "plain.safetensors")
    evil = {"net": {"_target_": "os.system", "command": "true"}, "schedule": {"name": "cosine", "num_timesteps": 10}}
    save_file({"w": torch.zeros(1)}, str(tmp_path / "evil.safetensors"), metadata={"fusiondiff": json.dumps(evil)})
    with pytest.raises(ValueError, match="refusing to build"):
        load_model(tmp_path / "evil.safetensors")
    with pytest.raises(ValueError, match="unknown model file type"):
        load_model(bundle.rename(tmp_path / "tiny.bin"))


def test_pipeline_matches_the_training_module_for_a_residual_x0_model():
    """Inference and validation share one definition of prediction type and residual diffusion."""
    from fusiondiff.diffusion import make_schedule
    from fusiondiff.training import DiffusionFusionModule

    torch.manual_seed(0)
    net = ConditionalUNet(image_channels=3, num_sources=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.02)
    sched = make_schedule("cosine", 100)
    module = DiffusionFusionModule(
        net, sched, optimizer=torch.optim.AdamW, ema_decay=0, prediction="x0", residual=True, sampler={"steps": 3}
    )
    sources = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    mean = get_task("multifocus").conditioning("x0", True)
    pipe = FusionPipeline(net, sched, {"prediction": "x0", "residual": True}, mean)
    torch.testing.assert_close(pipe(sources, steps=3, seed=5), module.sample(sources, seed=5))
    untrained = ConditionalUNet(image_channels=3, num_sources=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    start = FusionPipeline(untrained, sched, {"prediction": "x0", "residual": True}, mean)(sources, steps=2)
    torch.testing.assert_close(start, sources.mean(1))  # zero-initialised output: residual 0 = averaging
    with pytest.raises(ValueError, match="pass its task's conditioning"):  # a residual is never silently dropped
        FusionPipeline(untrained, sched, {"prediction": "x0", "residual": True})


def test_pipeline_rejects_nan_out_of_range_and_wrong_source_count(bundle):
    pipe = load_pipeline(bundle)
    with pytest.raises(ImageError, match="NaN"):
        pipe(torch.full((2, 3, 16, 16), float("nan")), steps=1)
    with pytest.raises(ImageError, match=r"expected \[-1, 1\]"):
        pipe(torch.full((2, 3, 16, 16), 255.0), steps=1)
    with pytest.raises(ValueError, match="fuses 2 sources, got 3"):
        pipe(torch.zeros(3, 3, 16, 16), steps=1)


def test_zero_shot_fusion_with_an_unconditional_model():
    from fusiondiff.diffusion import make_schedule

    torch.manual_seed(0)
    net = ConditionalUNet(image_channels=3, num_sources=0, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    fuser = NoiseSpaceFusion(OwnPrior(net, make_schedule("cosine", 100), {"net": {"num_sources": 0}}))

    def zero_shot(images, ratio, steps, skip=0, mode="linear"):
        return fuser.fuse(fuser.invert(images, steps), ratio_weights(ratio), mode, skip)[0]

    a, b = torch.rand(2, 3, 16, 16) * 1.6 - 0.8
    images = torch.stack([a, b])
    # Exact in float64 (tests/test_noise_space.py); here the float32 network sees batches of 2 when inverting
    # and of 1 when regenerating, whose kernels may round differently: agreement far below one 8-bit level.
    torch.testing.assert_close(zero_shot(images, 0.0, 8), a, atol=1e-3, rtol=0)
    torch.testing.assert_close(zero_shot(images, 1.0, 8, skip=3), b, atol=1e-3, rtol=0)
    mixed = zero_shot(images, 0.5, 8, mode="feature_selective")
    # a true mixture: closer to each input than the other input is, and equal to neither
    for x, y in ((a, b), (b, a)):
        assert (mixed - x).abs().mean() < (y - x).abs().mean() and (mixed - x).abs().max() > 1e-2
    cond_net = ConditionalUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    with pytest.raises(ValueError, match="unconditional model"):
        OwnPrior(cond_net, make_schedule("cosine", 10), {"net": {"num_sources": 2}})


def test_default_step_count_comes_from_the_model(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "m.safetensors", sampler={"name": "ddim", "steps": 3})
    pipe = load_pipeline(bundle)
    assert pipe.default_steps == 3 and load_pipeline(write_tiny_bundle(tmp_path / "n.safetensors")).default_steps == 20
    seen = []
    pipe(torch.zeros(2, 3, 16, 16), callback=lambda i, t, x, x0: seen.append(t))
    assert len(seen) == 3


def test_output_equal_to_a_source_is_refused_and_the_source_is_untouched(bundle, pair, tmp_path):
    import hashlib

    from fusiondiff.data.io import OutputIsSourceError

    a, b = pair
    before = hashlib.sha256(a.read_bytes()).digest()
    for out in (a, a.parent / ".." / a.parent.name / a.name):  # the same file, also through another path
        with pytest.raises(OutputIsSourceError, match="would overwrite a source"):
            run(bundle, out, pair, "overwrite=true")
    assert hashlib.sha256(a.read_bytes()).digest() == before
    with pytest.raises(OutputIsSourceError):  # zero-shot modes too, before the prior is loaded
        infer(compose_config("infer", ["mode=noise_fusion", f"inputs=[{a},{b}]", f"output={b}", "prior=/nonexistent.ckpt"]))


@pytest.mark.parametrize("case", ["output_is_input", "missing_input", "corrupt_bundle"])
def test_cli_error_boundary_one_line_exit_2_nothing_written(case, pair, tmp_path):
    """Through the real entry point: a project error is one line on stderr, exit code 2, no traceback, and
    neither the inputs nor the output folder change."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    a, b = pair
    out = tmp_path / "out" / "fused.png"
    args = {"output_is_input": [f"inputs=[{a},{b}]", f"output={a}"],
            "missing_input": [f"inputs=[{a},{tmp_path / 'nope.png'}]", f"output={out}"],
            "corrupt_bundle": [f"inputs=[{a},{b}]", f"output={out}", f"ckpt={tmp_path / 'bad.safetensors'}"]}[case]  # fmt: skip
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    before = {p: hashlib.sha256(p.read_bytes()).digest() for p in (a, b)}
    infer_py = Path(__file__).resolve().parents[1] / "infer.py"
    proc = subprocess.run([sys.executable, str(infer_py), *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert {"output_is_input": "overwrite a source", "missing_input": "image not found",
            "corrupt_bundle": "is this a fusiondiff bundle"}[case] in lines[0]  # fmt: skip
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in (a, b)} == before and not out.parent.exists()


def test_gray_and_colour_sources_fuse_to_colour_everywhere(tmp_path, caplog):
    """A gray source and a colour one (the issue's grey-sky wedge): the output takes its brightness from both
    sources (the gray one where it is sharp) and its colour from the colour source, so no region where the
    colour source is in focus comes out gray; a one-line notice says what happened."""
    import logging

    from fusiondiff.data.datasets import heldout_pair, make_multifocus_triplet
    from fusiondiff.data.io import to_channels, write_image

    sharp = heldout_pair(96)[0].clone()  # scikit-image's coffee: saturated colours
    yy = torch.linspace(0, 1, 96)[:, None].expand(96, 96)
    sharp[:, :, :32] = torch.stack([yy * 0.4 - 0.6, yy * 0.3 - 0.1, 0.1 * yy + 0.8])[:, :, :32]  # a flat blue sky
    (a, b), mask = make_multifocus_triplet(sharp, torch.Generator().manual_seed(1), max_sigma=3.0, mask_kinds=("half_plane",))
    gray_a = write_image(tmp_path / "a gray.png", to_channels(a, 1))
    colour_b = write_image(tmp_path / "b.png", b)
    with caplog.at_level(logging.WARNING):
        (out,) = infer(compose_config("infer", [f"inputs=[{gray_a},{colour_b}]", f"output={tmp_path / 'f.png'}"]))
    assert any("gray source(s) a gray.png" in r.getMessage() for r in caplog.records)
    fused, truth = read_image(out), sharp

    def chroma(x):
        return (x - to_channels(x, 1)).abs().amax(0)

    b_right = (b - truth).abs().amax(0) < 0.02  # in focus, or flat (the sky): the colour source holds the truth
    a_focus = mask[0] > 0.99
    coloured = b_right & (chroma(truth) > 0.1)
    assert coloured.float().mean() > 0.1  # the test image has colour where B is sharp
    kept = chroma(fused)[coloured] / chroma(truth)[coloured]
    assert (kept < 0.5).float().mean() < 0.01  # no gray region where the colour source is in focus
    luma = lambda x: to_channels(x, 1)[0]  # noqa: E731
    # where the gray source is sharp, the brightness is the gray source's, not the blurred colour source's
    err_fused = (luma(fused) - luma(truth))[a_focus].abs().mean()
    err_b = (luma(b) - luma(truth))[a_focus].abs().mean()
    assert err_fused < 0.5 * err_b
