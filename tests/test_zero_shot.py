"""Zero-shot noise-space fusion end to end with a tiny unconditional model: CLI, N = 3, batching, time order."""

import pytest
import torch

from fusiondiff.cli.infer import infer
from fusiondiff.data import read_image
from fusiondiff.diffusion import EpsDenoiser, inversion_timesteps, invert, make_schedule
from fusiondiff.models import ConditionalUNet
from fusiondiff.zero_shot.rules import fuse_step

from conftest import save_png, synthetic_triplet
from helpers import compose_config, write_tiny_bundle


@pytest.fixture
def prior(tmp_path):
    return write_tiny_bundle(tmp_path / "prior.safetensors", num_sources=0, prediction="eps")


@pytest.fixture
def images(tmp_path):
    return [save_png(tmp_path / f"img{k}.png", synthetic_triplet(30 + k, 24, 20)[2]) for k in range(3)]


def run(prior, images, out, *extra):
    inputs = f"inputs=[{','.join(map(str, images))}]"
    overrides = ["mode=noise_fusion", f"prior={prior}", inputs, f"output={out}", "fusion.steps=10", *extra]
    return infer(compose_config("infer", overrides))


def test_cli_writes_fused_and_exact_reconstructions(prior, images, tmp_path, caplog):
    caplog.set_level("INFO")
    written = run(prior, images[:2], tmp_path / "fused.png", "fusion.mode=layer_selective", "fusion.ratio=0.3", "fusion.skip=2")
    assert [p.name for p in written] == ["fused.png", "fused_reconstruction_1.png", "fused_reconstruction_2.png"]
    for src, rec in zip(images[:2], written[1:], strict=True):
        assert (read_image(rec) - read_image(src)).abs().max() <= 1.5 / 127.5  # exact up to 8-bit rounding
    assert "inversion check" in caplog.text and "PSNR" in caplog.text


def test_three_images_with_weights_and_mask_mode(prior, images, tmp_path):
    srcs = [read_image(p) for p in images]
    # N = 3: all the weight on the third image reproduces it; mixed weights give an image unlike each input
    (only_c,) = run(prior, images, tmp_path / "c.png", "fusion.weights=[0,0,1]", "fusion.save_reconstructions=false")
    assert (read_image(only_c) - srcs[2]).abs().max() <= 1.5 / 127.5
    (out,) = run(prior, images, tmp_path / "three.png", "fusion.weights=[0.2,0.3,0.5]", "fusion.save_reconstructions=false")
    mixed = read_image(out)
    assert mixed.shape == (3, 24, 20) and all((mixed - s).abs().mean() > 0.01 for s in srcs)
    # mask mode, A on the left: each half is nearer to its own image than to the other one
    (masked, *_) = run(prior, images[:2], tmp_path / "mask.png", "fusion.mode=mask", "fusion.mask=left_right")
    m, (a, b) = read_image(masked), srcs[:2]
    left, right = (slice(None), slice(None), slice(0, 8)), (slice(None), slice(None), slice(12, 20))
    assert (m[left] - a[left]).abs().mean() < (m[left] - b[left]).abs().mean()
    assert (m[right] - b[right]).abs().mean() < (m[right] - a[right]).abs().mean()


def test_batched_inversion_equals_one_by_one():
    torch.manual_seed(1)
    net = ConditionalUNet(image_channels=1, num_sources=0, base_channels=8, channel_mult=(1, 2), num_res_blocks=1).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sched = make_schedule("cosine", 100)
    den = EpsDenoiser(net, sched)
    ts = inversion_timesteps(100, 10)
    x0 = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 2 - 1
    noise = torch.randn(10, 2, 1, 16, 16, dtype=torch.float64)
    both = invert(den, sched, x0, ts, noise=noise)
    for i in range(2):
        single = invert(den, sched, x0[i : i + 1], ts, noise=noise[:, i : i + 1])
        torch.testing.assert_close(single.zs, both.zs[:, i : i + 1], rtol=1e-9, atol=1e-9)


def test_time_order_high_t_maps_come_from_high_t():
    """cross_fade at r = 0.5: the first (noisiest) step uses A's map only, the last B's only."""
    maps = torch.stack([torch.full((5, 1, 1, 2, 2), 1.0), torch.full((5, 1, 1, 2, 2), -1.0)])  # [N, K, ...]
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    first = fuse_step(maps[:, 0], 0, 5, w, "cross_fade")
    last = fuse_step(maps[:, 4], 4, 5, w, "cross_fade")
    assert torch.all(first == 1.0) and torch.all(last == -1.0)
    structure = fuse_step(maps[:, 0], 0, 6, torch.tensor([0.3, 0.7], dtype=torch.float64), "layer_selective")
    assert torch.all(structure == -1.0)  # the first third comes from the favoured image (B at r = 0.7)


def test_bad_inputs(prior, images, tmp_path):
    out = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(prior, images[:2], out, "fusion.ratio=1.5")
    with pytest.raises(ValueError, match="valid: linear"):
        run(prior, images[:2], out, "fusion.mode=median")
    with pytest.raises(ValueError, match="skip"):
        run(prior, images[:2], out, "fusion.skip=10")
    with pytest.raises(ValueError, match="3 images"):
        run(prior, images, out)
    small = save_png(tmp_path / "small.png", synthetic_triplet(1, 16, 16)[2])
    with pytest.raises(ValueError, match="differ in size"):
        run(prior, [images[0], small], out)
    conditional = write_tiny_bundle(tmp_path / "conditional.safetensors", num_sources=2)
    with pytest.raises(ValueError, match="unconditional model"):
        run(conditional, images[:2], out)
    assert not out.exists()


def test_unconditional_model_is_refused_by_conditional_fusion(prior, images, tmp_path):
    cfg = compose_config("infer", [f"ckpt={prior}", f"inputs=[{images[0]},{images[1]}]", f"output={tmp_path / 'x.png'}"])
    with pytest.raises(ValueError, match="mode=noise_fusion"):
        infer(cfg)


def test_zero_shot_evaluation_suites(prior, tmp_path):
    """scripts/evaluate.py task=zero_shot: inpainting keeps the known pixels and is scored against the photo;
    style strength 0 is the content image itself."""
    import json

    from fusiondiff.cli.evaluate import evaluate

    common = ["task=zero_shot", f"prior={prior}", "size=32", "steps=[4]"]
    summary = evaluate(compose_config("evaluate", [*common, f"output_dir={tmp_path / 'inpaint'}"]))
    assert set(summary) == {"telea", "repaint", "repaint_j10_r5", "edit_friendly"} and summary["telea"]["n"] == 2
    assert all(summary[m]["psnr"]["mean"] > 5 for m in summary)
    paired = json.loads((tmp_path / "inpaint" / "summary.json").read_text())["paired"]
    assert set(paired) == {"repaint", "repaint_j10_r5", "edit_friendly"} and paired["repaint"]["lpips"]["vs"] == "telea"
    summary = evaluate(compose_config("evaluate", [*common, "suite=style", f"output_dir={tmp_path / 'style'}"]))
    rows = {r["image"]: r for r in __import__("csv").DictReader((tmp_path / "style" / "per_image.csv").open())}
    assert len(rows) == 10 and float(rows["coffee_to_rocket_r0.00"]["content"]) < 1e-3  # r = 0 reproduces the content
    assert float(rows["coffee_to_rocket_r1.00"]["content"]) > float(rows["coffee_to_rocket_r0.00"]["content"])


def test_long_jobs_report_progress_in_a_pipe(prior, images, tmp_path):
    """Noise fusion and zero-shot inpainting through a real ``infer.py`` whose stdout is a pipe: plain progress
    lines (k/N network evaluations, elapsed, ETA) that count exactly the network evaluations made."""
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    hole = np.zeros((24, 20), np.uint8)
    hole[6:14, 4:12] = 255
    mask = save_png(tmp_path / "hole.png", hole)
    infer_py = Path(__file__).resolve().parents[1] / "infer.py"
    jobs = {
        # 4 inversion + (4 - 1) fusion + 4 reconstruction evaluations
        "noise fusion 1/1: network evaluations: 11/11": ["mode=noise_fusion", f"inputs=[{images[0]},{images[1]}]",
                                                        "fusion.steps=4", "fusion.skip=1", f"output={tmp_path / 'f.png'}"],
        # repaint, 6 steps, jumps of 2 at levels 2 and 4, one extra pass each: 6 + 2 * 2
        "inpainting: network evaluations: 10/10": ["mode=inpaint", f"input={images[0]}", f"mask={mask}", "inpaint.steps=6",
                                                   "inpaint.jump_length=2", "inpaint.resample=2", f"output={tmp_path / 'i.png'}"],
    }  # fmt: skip
    for expected, args in jobs.items():
        proc = subprocess.run([sys.executable, str(infer_py), f"prior={prior}", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert expected in proc.stdout and "ETA" in proc.stdout, proc.stdout[-2000:]
