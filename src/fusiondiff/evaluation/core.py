"""The pieces of an evaluation: items, methods, metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusiondiff.data.io import IMAGE_EXTENSIONS, read_image
from fusiondiff.errors import ConfigError, MissingInputError


@dataclass
class Item:
    """One test case: a name (the CSV's ``image`` column, the file stem of folder methods) and a loader of
    its data (a dict: ``sources``, optional ``target`` and whatever the task's methods and metrics need)."""

    name: str
    load: Callable[[], dict[str, Any]]


@dataclass
class Method:
    """A labelled way to produce an output for an item: ``run(data) -> output`` (in the task's output space)."""

    label: str
    run: Callable[[dict[str, Any]], torch.Tensor]
    kind: str = "baseline"  # baseline | model | folder
    steps: int | None = None


@dataclass
class Metric:
    """``fn(output, data) -> float`` with its better direction; ``needs`` names the data keys it requires
    (e.g. ``target``: the metric is left out for suites without ground truth)."""

    name: str
    fn: Callable[[torch.Tensor, dict[str, Any]], float]
    lower_is_better: bool | None = None  # None: as the metrics package says (fusiondiff.metrics.LOWER_IS_BETTER)
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.lower_is_better is None:
            from fusiondiff.metrics import LOWER_IS_BETTER

            self.lower_is_better = self.name in LOWER_IS_BETTER


@dataclass
class Evaluation:
    """What ``scripts/evaluate.py`` runs: items x methods, scored by metrics.

    baseline: the method every other one is paired against (mean difference with a 95 % interval, wins);
        ``"best"``: per metric the best of ``baselines`` (default: the ``baseline`` methods).
    figure: optional ``fn(evaluation, path)`` drawing the task's example figure.
    """

    about: str
    items: Sequence[Item]
    methods: list[Method]
    metrics: list[Metric]
    baseline: str | None = None
    baselines: list[str] | None = None
    figure: Callable[[Evaluation, Path], Path] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def method(self, label: str) -> Method:
        for m in self.methods:
            if m.label == label:
                return m
        raise ConfigError(f"no method {label!r}; methods: {', '.join(m.label for m in self.methods)}")


def folder_method(folder: str | Path, channels: int | None = None) -> Method:
    """Images fused elsewhere, matched to the items by file stem = item name (any image extension)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"method folder not found: {folder}")

    def run(data: dict[str, Any]) -> torch.Tensor:
        name = data["name"]
        matches = [p for p in folder.iterdir() if p.stem == name and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches:
            raise MissingInputError(f"{folder}: no fused image named {name}.<ext>")
        sources = data["sources"]
        fused = read_image(matches[0], channels=channels or sources.shape[-3])
        if fused.shape[-2:] != sources.shape[-2:]:
            raise ConfigError(f"{matches[0]} is {tuple(fused.shape[-2:])}, the sources are {tuple(sources.shape[-2:])}")
        return fused

    return Method(folder.name, run, "folder")


def batched(
    run_batch: Callable[[list[dict[str, Any]]], list[torch.Tensor]], items: Sequence[Item]
) -> Callable[[dict], torch.Tensor]:
    """A method's ``run`` that computes every item at its first call with ``run_batch`` (all items' data ->
    their outputs, e.g. a model over same-size batches with one seeded generator) and then hands them out.
    The outputs do not depend on which rows a resumed run still needs."""
    cache: dict[str, torch.Tensor] = {}

    def run(data: dict[str, Any]) -> torch.Tensor:
        if data["name"] not in cache:
            everything = [{"name": it.name, **it.load()} for it in items]
            cache.update({d["name"]: out for d, out in zip(everything, run_batch(everything), strict=True)})
        return cache[data["name"]]

    return run


def model_label(path: str | Path, shipped: bool = False) -> str:
    """A short label for a model file: ``fusiondiff`` for the shipped one, the run folder for a run's
    ``model.safetensors``, run/stem for ``last`` / ``best`` checkpoints, else the file stem."""
    if shipped:
        return "fusiondiff"
    p = Path(path)
    if p.stem == "model":
        return p.parent.name
    return f"{p.parent.name}/{p.stem}" if p.stem.startswith(("last", "best")) else p.stem


def run_label(label: str, sampler: Any, precision: str = "fp32") -> str:
    """``<model label> (<sampler>, <N> step(s)[, bf16])``: a model's row in the tables."""
    steps = f"{sampler.steps} step{'s' if sampler.steps != 1 else ''}"
    return f"{label} ({sampler.name}, {steps}{', bf16' if precision == 'bf16' else ''})"


def unique_labels(methods: list[Method]) -> list[Method]:
    seen: set[str] = set()
    for m in methods:
        if m.label in seen:
            raise ConfigError(f"two methods would both be labelled {m.label!r}; rename one of the files")
        seen.add(m.label)
    return methods
