"""Adding a task = one module + its configs: a toy task defined here ("fuse by taking the brighter pixel"),
trained on generated data, exported, run by its own inference mode and evaluated, without touching the library.

The task's configs are written to a temporary folder that Hydra searches next to the project's ``conf/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from fusiondiff.cli.evaluate import evaluate
from fusiondiff.cli.infer import infer
from fusiondiff.cli.train import train
from fusiondiff.data import read_image, write_image
from fusiondiff.tasks import Task, get_task, load_pipeline, register_task

from helpers import compose_config


def brighter(sources: torch.Tensor) -> torch.Tensor:
    """Per pixel and channel the larger of the sources: [..., N, C, H, W] -> [..., C, H, W]."""
    return sources.amax(-4)


class BrighterPairs(Dataset):
    """Generated pairs of smooth random images; the target is their per-pixel maximum."""

    def __init__(self, num_samples: int = 8, size: int = 16, seed: int = 0, augment: bool = False) -> None:
        self.num_samples, self.size, self.seed = num_samples, size, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        coarse = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
        sources = torch.nn.functional.interpolate(coarse, (self.size, self.size), mode="bilinear", align_corners=False)
        return {"sources": sources, "target": brighter(sources), "name": f"pair_{index:03d}"}


class BrighterTask(Task):
    name = "brighter"

    def residual_bases(self):
        return {"mean": lambda s: s.mean(1), "brighter": brighter}

    def baselines(self):
        return {"brighter": brighter, "average": lambda s: s.mean(-4)}

    def modes(self):
        return {"brighten": brighten}

    def evaluation(self, cfg):
        from fusiondiff.evaluation import Evaluation, Item, Metric
        from fusiondiff.metrics import psnr

        data = BrighterPairs(num_samples=cfg.num or 4, seed=7)
        items = [Item(data[i]["name"], lambda i=i: data[i]) for i in range(len(data))]
        baselines = {name: (lambda d, fn=fn: fn(d["sources"])) for name, fn in self.baselines().items()}

        def model_run(pipe, sampler, tiling):
            return lambda d: pipe(d["sources"], sampler, seed=cfg.seed, tiling=tiling)

        methods = self.methods(cfg, baselines, model_run, list(baselines))
        metrics = [Metric("psnr", lambda out, d: psnr(out.clamp(-1, 1), d["target"]).item(), needs=("target",))]
        return Evaluation(f"{len(items)} generated pairs", items, methods, metrics, baseline="average")


def brighten(cfg) -> list[Path]:
    """The toy task's inference mode: ``inputs`` -> ``output`` with the model at ``ckpt``."""
    from fusiondiff.data import load_sources

    pipe = load_pipeline(cfg.ckpt, task="brighter")
    fused = pipe(load_sources(cfg.inputs), steps=cfg.steps, seed=cfg.seed)
    return [write_image(cfg.output, fused)]


register_task(BrighterTask, replace=True)

CONFIGS = {
    "task/brighter.yaml": """
name: brighter
channels: 3
num_sources: 2
source_channels: 3
monitor: val/psnr
monitor_mode: max
module:
  _target_: fusiondiff.training.DiffusionFusionModule
  optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 1.0e-3}
  ema_decay: 0.0
  prediction: x0
  residual: brighter
""",
    "data/brighter.yaml": """
_target_: fusiondiff.training.datamodule.FusionDataModule
train: {_target_: test_toy_task.BrighterPairs, num_samples: 8, _partial_: true}
val: {_target_: test_toy_task.BrighterPairs, num_samples: 2, seed: 1}
batch_size: 2
val_batch_size: 2
""",
    "mode/brighten.yaml": """
# @package _global_
mode: brighten
ckpt: null
inputs: null
output: outputs/brighter.png
steps: 1
""",
}


@pytest.fixture
def toy_conf(tmp_path):
    root = tmp_path / "toy_conf"
    for name, text in CONFIGS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return f"hydra.searchpath=[file://{root}]"


def test_a_task_defined_in_a_test_file_trains_exports_infers_and_evaluates(tmp_path, toy_conf):
    assert get_task("brighter").conditioning("x0", "brighter").base is brighter
    common = [toy_conf, "task=brighter", "data=brighter", "model=unet_tiny", "logger=csv", "callbacks.progress=null",
              "trainer.accelerator=cpu", "diffusion.num_timesteps=50", "sampler.steps=1"]  # fmt: skip
    metrics, objects = train(compose_config("train", [*common, "debug=fdr"], tmp_path / "fdr"))
    assert objects["trainer"].global_step == 1 and "val/psnr" in metrics

    run = tmp_path / "run"
    overrides = [*common, "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]
    _, objects = train(compose_config("train", overrides, run))
    bundle = objects["bundle"]
    assert bundle == run / "model.safetensors" and load_pipeline(bundle).task == "brighter"

    pair = BrighterPairs(1, size=24, seed=3)[0]
    inputs = [write_image(tmp_path / f"in_{k}.png", pair["sources"][k]) for k in range(2)]
    out = tmp_path / "fused.png"
    (written,) = infer(compose_config("infer", [toy_conf, "mode=brighten", f"ckpt={bundle}",
                                                f"inputs=[{inputs[0]},{inputs[1]}]", f"output={out}"]))  # fmt: skip
    fused, sources = read_image(written), torch.stack([read_image(p) for p in inputs])
    # the residual base is the brighter source: a barely trained model stays at it, far from the average
    assert (fused - brighter(sources)).abs().mean() < 0.02 < (fused - sources.mean(0)).abs().mean()

    out_dir = tmp_path / "eval"
    summary = evaluate(compose_config("evaluate", [toy_conf, "task=brighter", f"output_dir={out_dir}", "num=3",
                                                   f"methods=[average,brighter,model:{bundle}]"]))  # fmt: skip
    model = "run (ddim, 1 step)"
    assert set(summary) == {"average", "brighter", model}
    assert summary["brighter"]["psnr"]["mean"] == float("inf") or summary["brighter"]["psnr"]["mean"] > 60
    assert summary[model]["psnr"]["mean"] > summary["average"]["psnr"]["mean"] + 5
    paired = json.loads((out_dir / "summary.json").read_text())["paired"]
    assert paired[model]["psnr"]["vs"] == "average" and paired[model]["psnr"]["wins"] == 3
