"""What a task is: the one place that knows how one kind of fusion problem is trained, run and judged.

A :class:`Task` (registered by name in :data:`TASKS`) owns

* how its sources become the network's input and the diffusion variable: its residual bases, network
  condition and (blend models) logit priors, turned into a :class:`Conditioning` by :meth:`Task.conditioning`;
* its classical baselines (:meth:`Task.baselines`, name -> ``fn(sources) -> fused``);
* its inference modes (:meth:`Task.modes`, mode name -> ``fn(cfg) -> written paths``, run by ``infer.py mode=...``);
* its evaluation: suites of test items, methods and default metrics (:meth:`Task.evaluation`).

A new task is one module with a ``Task`` subclass registered through :func:`register_task`, plus its configs;
nothing else in the library changes (``tests/test_toy_task.py`` defines one in a test file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fusiondiff.diffusion.parameterization import Conditioning, check_prediction
from fusiondiff.errors import ConfigError, ModelFileError
from fusiondiff.models.bundle import DEFAULT_BUNDLE, load_model
from fusiondiff.pipeline import FusionPipeline, check_precision
from fusiondiff.registry import Registry

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from fusiondiff.evaluation import Evaluation, Method

Tensor = torch.Tensor
Mode = Callable[["DictConfig"], list[Path]]


def mean_base(sources: Tensor) -> Tensor:
    """The mean of the sources [B, N, C, H, W] -> [B, C, H, W] (``residual: mean`` or ``true``)."""
    return sources.mean(1)


class Task:
    """Base class; subclasses set ``name`` and override what differs (see the module docstring)."""

    name: str = "task"
    aliases: tuple[str, ...] = ()

    # ------------------------------------------------------------------ how sources reach the network
    def residual_bases(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """Residual bases by name: sources [B, N, C, H, W] -> [B, C', H, W]."""
        return {"mean": mean_base}

    def logit_priors(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """Logit priors of ``prediction: blend`` models by name: sources -> logits [B, N, H, W]."""
        return {}

    def network_condition(self, residual: str) -> Callable[[Tensor, Tensor | None], Tensor] | None:
        """What the network sees for this residual: ``(sources, base) -> cond`` (None: the sources unchanged)."""
        return None

    def conditioning(self, prediction: str, residual: bool | str | None) -> Conditioning:
        """The :class:`Conditioning` of a model with this ``prediction`` / ``residual`` (a config's values)."""
        check_prediction(prediction)
        if prediction == "blend":
            if not residual:
                return Conditioning()
            return Conditioning(logit_prior=Registry(f"logit prior of task {self.name}", self.logit_priors())[residual])
        if not residual:
            return Conditioning()
        name = "mean" if residual is True else str(residual)
        base = Registry(f"residual base of task {self.name}", self.residual_bases())[name]
        return Conditioning(base=base, condition=self.network_condition(name))

    # ------------------------------------------------------------------ baselines, inference, evaluation
    def baselines(self) -> dict[str, Callable[..., Tensor]]:
        """Classical methods by name: ``fn(sources [N, C, H, W]) -> fused [C, H, W]`` (task-specific inputs allowed)."""
        return {}

    def modes(self) -> dict[str, Mode]:
        """Inference modes by name (``infer.py mode=<name>``)."""
        return {}

    def evaluation(self, cfg: DictConfig) -> Evaluation:
        """The evaluation of ``scripts/evaluate.py task=<name>``: suite, methods, metrics (see fusiondiff.evaluation)."""
        raise ConfigError(f"task {self.name} has no evaluation suite")

    def methods(
        self,
        cfg: DictConfig,
        baselines: dict[str, Callable[[dict], Tensor]],
        model_run: Callable[[FusionPipeline, Any, Any], Callable[[dict], Tensor]],
        default: Sequence[str],
        channels: int | None = None,
    ) -> list[Method]:
        """The methods of ``cfg.methods`` (``default`` when null): baseline names, ``fusiondiff`` (the model at
        ``cfg.ckpt``, default the shipped bundle), ``model:<bundle-or-ckpt>`` (each at every step count in
        ``cfg.steps``; null = the model's own default) and ``folder:<dir>`` (images fused elsewhere).
        ``model_run(pipe, sampler, tiling)`` returns the function that runs a model on an item's data."""
        from fusiondiff.evaluation.core import Method, folder_method, model_label, run_label, unique_labels
        from fusiondiff.pipeline import SamplerConfig, Tiling

        sampler, tiling = SamplerConfig.from_config(cfg.sampler).check(), Tiling.from_config(cfg).check()
        specs = [str(s) for s in (cfg.get("methods") or default)]
        out: list[Method] = []
        for spec in specs:
            if spec in baselines:
                out.append(Method(spec, baselines[spec]))
            elif spec == "fusiondiff" or spec.startswith("model:"):
                path = cfg.get("ckpt") if spec == "fusiondiff" else spec.split(":", 1)[1]
                pipe = load_pipeline(path, task=self.name, precision=cfg.get("precision") or "fp32")
                label = model_label(path, shipped=spec == "fusiondiff")
                for steps in cfg.get("steps") or [None]:
                    s = replace(sampler, steps=int(steps or pipe.default_steps)).check(pipe.schedule.num_timesteps)
                    name = run_label(label, s, pipe.precision)
                    out.append(Method(name, model_run(pipe, s, tiling), "model", s.steps))
            elif spec.startswith("folder:"):
                out.append(folder_method(spec.split(":", 1)[1], channels))
            else:
                valid = ", ".join([*baselines, "fusiondiff", "model:<bundle-or-ckpt>", "folder:<dir>"])
                raise ConfigError(f"unknown method {spec!r} for task {self.name}; valid: {valid}")
        return unique_labels(out)


TASKS = Registry("task")


def register_task(task: Task | type[Task], replace: bool = False) -> Task:
    """Register a task (an instance, or a class instantiated without arguments) under its name and aliases."""
    task = task() if isinstance(task, type) else task
    for name in (task.name, *task.aliases):
        TASKS.register(name, task, replace=replace)
    return task


def get_task(name: str) -> Task:
    """A registered task by name or alias (the built-in ones are registered by ``import fusiondiff.tasks``)."""
    return TASKS[name]


def task_of(config: dict) -> Task:
    """The task of a bundle's config: its ``task.name``; for older files without one, ``unconditional`` for
    models without sources, else the first task that knows the model's residual (multi-focus first)."""
    name = (config.get("task") or {}).get("name")
    if name:
        return get_task(name)
    if (config.get("net") or {}).get("num_sources", 2) == 0:
        return get_task("unconditional")
    residual = config.get("residual", False)
    key = "mean" if residual is True else residual
    table = "logit_priors" if config.get("prediction") == "blend" else "residual_bases"
    first = get_task("multifocus")
    for task in [first, *(t for t in dict.fromkeys(TASKS.values()) if t is not first)]:
        if not key or key in getattr(task, table)():
            return task
    return first


def load_pipeline(
    path: str | Path | None = None, device: str | torch.device = "cpu", task: str | None = None, precision: str = "fp32"
) -> FusionPipeline:
    """A :class:`FusionPipeline` from a bundle or ``.ckpt`` (None: the shipped multi-focus bundle), with the
    conditioning of the model's task. ``task`` refuses models of another task with a clear message;
    ``precision``: fp32 or bf16 (:func:`fusiondiff.pipeline.check_precision`)."""
    check_precision(precision)
    net, schedule, config = load_model(path or DEFAULT_BUNDLE)
    owner = task_of(config)
    if task is not None and owner.name != get_task(task).name:
        raise ModelFileError(
            f"{path or 'the shipped bundle'} is a {owner.name} model, not a {task} model (train one with task={task})"
        )
    # channels_last: 17-29 % faster on CPU (scripts/benchmark.py vs --no-channels-last, README "Speed")
    net = net.to(device).to(memory_format=torch.channels_last)
    conditioning = owner.conditioning(config.get("prediction", "eps"), config.get("residual", False))
    return FusionPipeline(net, schedule, config, conditioning, precision)


def model_conditioning(prediction: str, residual: Any, task: str | None = None) -> Conditioning:
    """The conditioning for a model being built (the training module): of ``task``, or found by residual name."""
    if task is not None:
        return get_task(task).conditioning(prediction, residual)
    return task_of({"prediction": prediction, "residual": residual}).conditioning(prediction, residual)
