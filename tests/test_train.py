"""train.py on shrunk real configs: fast_dev_run, folders, resume, loggers, export -> infer."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from fusiondiff.cli.infer import infer
from fusiondiff.cli.train import train
from fusiondiff.data import read_image

from helpers import SYNTHETIC_TINY, TINY, compose_config


def test_fast_dev_run_quickstart(tmp_path):
    cfg = compose_config("train", ["experiment=quickstart", "debug=fdr", *TINY, *SYNTHETIC_TINY], tmp_path)
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert "train/loss" in metrics and "val/ssim" in metrics and "val/psnr" in metrics


def test_fast_dev_run_on_fusiondiff_folder(tmp_path, fusiondiff_folder):
    overrides = [
        "experiment=fusiondiff_nyud100",
        "debug=fdr",
        *TINY,
        f"data.train.root={fusiondiff_folder}",
        "data.train.crop_size=16",
        "data.num_workers=0",
    ]
    metrics, objects = train(compose_config("train", overrides, tmp_path))
    assert objects["trainer"].global_step == 1 and "val/psnr" in metrics


def test_short_run_writes_checkpoints_preview_and_bundle(tmp_path):
    cfg = compose_config("train", [*TINY, *SYNTHETIC_TINY], tmp_path)
    metrics, objects = train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert list(tmp_path.glob("csv/version_*/previews/*.png")), "validation image grid not written"
    assert objects["bundle"] is not None and Path(objects["bundle"]).is_file()
    csv = next(tmp_path.glob("csv/version_*/metrics.csv")).read_text()
    assert "train/loss" in csv and "val/ssim" in csv


def test_resume_continues_step_and_optimizer_state(tmp_path):
    first = compose_config("train", [*TINY, *SYNTHETIC_TINY, "trainer.max_steps=2"], tmp_path / "a")
    _, objs = train(first)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 2
    exp_avg_before = saved["optimizer_states"][0]["state"][0]["exp_avg"].clone()

    second = compose_config("train", [*TINY, *SYNTHETIC_TINY, "trainer.max_steps=4", f"ckpt_path={ckpt}"], tmp_path / "b")
    _, objs = train(second)
    trainer = objs["trainer"]
    assert trainer.global_step == 4
    opt = trainer.optimizers[0]
    state = opt.state[next(iter(opt.state))]
    assert int(state["step"]) == 4  # AdamW's step count carried over: 2 resumed + 2 new
    assert not torch.equal(state["exp_avg"], exp_avg_before)
    ema_steps = objs["module"].ema.n_averaged.item()
    assert ema_steps == 4


def test_wandb_logger_runs_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = compose_config("train", [*TINY, *SYNTHETIC_TINY, "logger=wandb", "export=false"], tmp_path)
    train(cfg)
    import os

    assert os.environ.get("WANDB_MODE") == "offline"
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb wrote no offline run"
    assert list((tmp_path / "wandb").glob("offline-run-*/files/media/images/val/preview_*.png")), "no image grid in wandb"


def test_export_then_infer_round_trip(tmp_path, lytro_folder):
    cfg = compose_config("train", [*TINY, *SYNTHETIC_TINY], tmp_path / "run")
    _, objects = train(cfg)
    bundle = objects["bundle"]
    assert bundle.stat().st_size < 1_000_000
    a = lytro_folder / "source_1" / "lytro-01-A.png"
    b = lytro_folder / "source_2" / "lytro-01-B.png"
    outputs = {}
    for model in (bundle, tmp_path / "run" / "checkpoints" / "last.ckpt"):
        icfg = compose_config(
            "infer",
            [
                f"ckpt={model}",
                f"inputs=[{a},{b}]",
                f"output={tmp_path / (model.suffix[1:] + '.png')}",
                "sampler.steps=3",
                "device=cpu",
            ],
        )
        (out,) = infer(icfg)
        outputs[model.suffix] = read_image(out)
    assert outputs[".safetensors"].shape == (3, 37, 45)  # the input's odd size
    # the bundle holds the checkpoint's EMA weights: same result either way
    torch.testing.assert_close(outputs[".safetensors"], outputs[".ckpt"], atol=2 / 255, rtol=0)

    icfg = compose_config(
        "infer",
        [
            f"ckpt={bundle}",
            f"input_dir={lytro_folder}",
            f"output_dir={tmp_path / 'all'}",
            "sampler=fusiondiff",
            "sampler.steps=2",
            "tile_size=24",
            "tile_overlap=8",
            "bit_depth=16",
        ],
    )
    written = infer(icfg)
    assert sorted(p.name for p in written) == ["lytro-01.png", "lytro-02.png", "lytro-03.png"]
    assert read_image(written[0]).shape == (3, 37, 45)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    cfg = compose_config(
        "train",
        [
            *TINY,
            *SYNTHETIC_TINY,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "+trainer.strategy.process_group_backend=gloo",
            "export=false",
        ],
        tmp_path,
    )
    with open_dict(cfg):
        cfg.trainer.strategy = {
            "_target_": "lightning.pytorch.strategies.DDPStrategy",
            "process_group_backend": "gloo",
            "start_method": "spawn",
        }
    _, objects = train(cfg)
    assert objects["trainer"].world_size == 2
    # spawned workers trained; the parent gets weights back, the checkpoint holds their step
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def test_unconditional_task_fast_dev_run(tmp_path):
    overrides = ["experiment=unconditional_quickstart", "debug=fdr", *TINY, "data.train.num_samples=4", "data.train.crop_size=16",
                 "data.val.num_samples=2", "data.val.crop_size=16"]  # fmt: skip
    metrics, objects = train(compose_config("train", overrides, tmp_path))
    assert objects["module"].net.num_sources == 0
    assert "val/loss" in metrics and "val/psnr" not in metrics


def test_residual_needs_sources(tmp_path):
    overrides = ["experiment=unconditional_quickstart", "debug=fdr", *TINY, "task.module.residual=true"]
    with pytest.raises(Exception, match="residual diffusion needs source images"):
        train(compose_config("train", overrides, tmp_path))


def test_blend_experiment_outputs_convex_combinations_of_the_sources(tmp_path, fusiondiff_folder):
    """experiment=multifocus_blend: real pairs + synthetic triplets; the untrained model (zero output
    layer) gives the decision map softened by its logit prior, and any sample is a per-pixel convex combination."""
    import math

    from fusiondiff.focus import decision_weights
    from fusiondiff.tasks.multifocus import BLEND_PRIOR_LOGIT, decision_map

    overrides = ["experiment=multifocus_blend", "debug=fdr", *TINY, f"data.train.parts.0.root={fusiondiff_folder}",
                 "data.train.parts.0.crop_size=16", "data.train.parts.1.crop_size=16", "data.train.parts.1.num_samples=4",
                 "data.val.crop_size=32", "data.val.num_samples=2"]  # fmt: skip
    cfg = compose_config("train", overrides, tmp_path)
    module = instantiate(cfg.task.module, _partial_=True)(net=instantiate(cfg.model), schedule=instantiate(cfg.diffusion),
                                                          task="multifocus")  # fmt: skip
    sources = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    picked = decision_weights(sources)
    p = 1 / (1 + math.exp(-BLEND_PRIOR_LOGIT))  # the picked source's weight for two sources
    expected = p * (picked * sources).sum(1) + (1 - p) * ((1 - picked) * sources).sum(1)
    torch.testing.assert_close(module.sample(sources, steps=1), expected, atol=1e-3, rtol=0)  # x0 -> eps -> x0 at ᾱ ≈ 6e-10
    for p in module.ema.module.out.parameters():
        torch.nn.init.normal_(p, std=1.0)
    fused = module.sample(sources, steps=2)
    lo, hi = sources.min(1).values, sources.max(1).values
    assert ((fused >= lo - 1e-3) & (fused <= hi + 1e-3)).all() and (fused - decision_map(sources)).abs().max() > 0.05
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1 and "val/ssim" in metrics


def _training_state(module, trainer) -> dict:
    state = {f"net.{k}": v for k, v in module.net.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in module.ema.state_dict().items()})
    for i, s in trainer.optimizers[0].state_dict()["state"].items():
        state.update({f"opt.{i}.{k}": torch.as_tensor(v) for k, v in s.items()})
    return state


@pytest.mark.parametrize("stop", [6, 4])  # mid-epoch (4 batches an epoch), and at an epoch's last batch
def test_an_interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(stop, tmp_path, monkeypatch, caplog):
    """Interrupted (SIGINT) at step 6 (or 4) of 10 and resumed into a new folder: the same batches in the same
    order, and bit-identical weights, EMA (and its count) and AdamW state at step 10; the bundle the resumed run
    exports comes from its own checkpoints."""
    import logging

    from fusiondiff.cli.train import TrainingInterrupted
    from fusiondiff.training import DiffusionFusionModule

    seen: list[list[str]] = []
    original = DiffusionFusionModule.training_step

    def recording(self, batch, batch_idx):
        seen.append(list(batch["name"]))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DiffusionFusionModule, "training_step", recording)
    common = [*TINY, *SYNTHETIC_TINY, "trainer.max_steps=10"]
    _, whole = train(compose_config("train", common, tmp_path / "a"))
    seen_whole, seen[:] = list(seen), []
    with pytest.raises(TrainingInterrupted, match=f"stopped by SIGINT at step {stop}"):
        train(compose_config("train", [*common, "+callbacks.stop._target_=helpers.SignalAt", f"+callbacks.stop.step={stop}"],
                             tmp_path / "b"))  # fmt: skip
    assert not (tmp_path / "b" / "model.safetensors").exists()  # nothing exported from an interrupted run
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == stop
    seen_first, seen[:] = list(seen), []
    with caplog.at_level(logging.INFO):
        _, resumed = train(compose_config("train", [*common, f"ckpt_path={last}"], tmp_path / "c"))
    assert len(seen_whole) == 10 and seen_first + seen == seen_whole
    assert len({tuple(names) for names in seen_whole}) > 3  # really shuffled across epochs
    a = _training_state(whole["module"], whole["trainer"])
    c = _training_state(resumed["module"], resumed["trainer"])
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a), [k for k in a if not torch.equal(a[k], c[k])]
    assert resumed["module"].ema.n_averaged.item() == 10
    assert any("training steps" in r.getMessage() and "10/10" in r.getMessage() for r in caplog.records)  # in a pipe
    exported = [r.getMessage() for r in caplog.records if "exported inference bundle" in r.getMessage()]
    assert exported and f"(from {tmp_path / 'c' / 'checkpoints'}" in exported[-1]


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_sigint_to_a_training_process_leaves_a_checkpoint_to_resume_from(name, code, tmp_path):
    """Ctrl-C (or a scheduler's SIGTERM) long before the first validation: the process finishes its step, writes
    last.ckpt at that step, exports nothing, prints one line and exits with 128 + the signal; training resumes
    from the checkpoint."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "started"
    args = [*TINY, *SYNTHETIC_TINY, "data.train.num_samples=64", "trainer.max_steps=100000",
            "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=100000", f"paths.output_dir={tmp_path / 'run'}",
            "+callbacks.mark._target_=helpers.SignalAt", "+callbacks.mark.step=3", f"+callbacks.mark.path={marker}",
            "+callbacks.mark.kill=false"]  # fmt: skip
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "train.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, name))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]  # (Lightning logs to stderr before)
    assert lines[-1].startswith(f"error: training stopped by {name} at step") and "Traceback" not in err, err[-2000:]
    lines = lines[-1:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=False)["global_step"]
    assert step >= 3 and f"at step {step}:" in lines[0] and "resume with ckpt_path=" in lines[0]
    assert not (tmp_path / "run" / "model.safetensors").exists() and not list(last.parent.glob(".*tmp"))
    cfg = compose_config("train", [*TINY, *SYNTHETIC_TINY, "data.train.num_samples=64", f"trainer.max_steps={step + 2}",
                                   f"ckpt_path={last}"], tmp_path / "resumed")  # fmt: skip
    _, objects = train(cfg)
    assert objects["trainer"].global_step == step + 2
