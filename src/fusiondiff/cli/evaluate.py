"""``evaluate(cfg)``: score fusion methods on a dataset; per-image CSV, summary tables, JSON and plots.

Methods (a list in ``cfg.methods``):

* a classical baseline by name (``average``, ``laplacian_pyramid``, ``guided_filter``, ``decision_map``);
* ``fusiondiff`` (the model at ``cfg.ckpt``; the shipped bundle if null) or ``model:<path>``, evaluated at
  every step count in ``cfg.steps`` (giving the metric-vs-steps curve);
* ``folder:<path>``: images fused elsewhere, matched to the samples by file stem = sample name.

Fused images are quantised to 8 bits (as if saved as PNG) before scoring. Fusion metrics use the
0..255 range; reference metrics (when the dataset has ground truth) use [-1, 1]. Rows already in
the CSV are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fusiondiff.data.datasets import load_sources
from fusiondiff.data.io import IMAGE_EXTENSIONS, read_image, write_image
from fusiondiff.data.pairing import Sample, find_samples
from fusiondiff.fusion.classical import CLASSICAL_METHODS
from fusiondiff.metrics import LOWER_IS_BETTER, REFERENCE_METRICS, fusion

log = logging.getLogger(__name__)

CSV_KEYS = ("method", "steps", "image", "seconds")


@dataclass
class Method:
    label: str
    kind: str  # classical | model | folder
    target: str | None = None
    steps: int | None = None


def parse_methods(cfg: DictConfig) -> list[Method]:
    out = []
    for spec in cfg.methods:
        spec = str(spec)
        if spec in CLASSICAL_METHODS:
            out.append(Method(spec, "classical", spec))
        elif spec == "fusiondiff" or spec.startswith("model:"):
            path = cfg.ckpt if spec == "fusiondiff" else spec.split(":", 1)[1]
            name = "fusiondiff" if spec == "fusiondiff" else Path(path).stem
            if name in ("model", "last", "best") and spec != "fusiondiff":  # generic file names: add the run folder
                name = f"{Path(path).parent.name}/{name}"
            if any(m.label.startswith(f"{name} (") for m in out):
                raise ValueError(f"two methods would both be labelled {name!r}; rename one of the files")
            for steps in cfg.steps:
                out.append(Method(f"{name} ({cfg.sampler.name}, {steps} steps)", "model", path, int(steps)))
        elif spec.startswith("folder:"):
            folder = Path(spec.split(":", 1)[1])
            if not folder.is_dir():
                raise FileNotFoundError(f"method folder not found: {folder}")
            out.append(Method(folder.name, "folder", str(folder)))
        else:
            raise ValueError(
                f"unknown method {spec!r}; valid: {', '.join(CLASSICAL_METHODS)}, "
                "fusiondiff, model:<bundle-or-ckpt>, folder:<dir>"
            )
    return out


def _to255(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().double()


def score(fused: torch.Tensor, sources: torch.Tensor, target: torch.Tensor | None, metric_names: list[str]) -> dict[str, float]:
    """All requested metrics for one fused image [C, H, W] (quantised to 8 bits first)."""
    f255, s255 = _to255(fused), _to255(sources)
    fused_q = f255 / 127.5 - 1
    out: dict[str, float] = {}
    for name in metric_names:
        if name in fusion.SOURCE_METRICS:
            if len(s255) != 2:
                raise ValueError(f"{name} is defined for two sources; this dataset has {len(s255)}")
            out[name] = fusion.SOURCE_METRICS[name](s255[0], s255[1], f255).item()
        elif name in fusion.FUSED_ONLY_METRICS:
            out[name] = fusion.FUSED_ONLY_METRICS[name](f255).item()
        elif name in REFERENCE_METRICS:
            if target is not None:
                out[name] = REFERENCE_METRICS[name](fused_q.float(), target.float()).item()
        else:
            valid = sorted([*fusion.SOURCE_METRICS, *fusion.FUSED_ONLY_METRICS, *REFERENCE_METRICS])
            raise ValueError(f"unknown metric {name!r}; valid: {', '.join(valid)}")
    return out


class _Runner:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self._pipes: dict[str, Any] = {}

    def fuse(self, method: Method, sample: Sample, sources: torch.Tensor) -> torch.Tensor:
        if method.kind == "classical":
            return CLASSICAL_METHODS[method.target](sources)
        if method.kind == "folder":
            matches = [p for p in Path(method.target).iterdir() if p.stem == sample.name and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not matches:
                raise FileNotFoundError(f"{method.target}: no fused image named {sample.name}.<ext>")
            fused = read_image(matches[0], channels=sources.shape[1])
            if fused.shape[-2:] != sources.shape[-2:]:
                raise ValueError(f"{matches[0]} is {tuple(fused.shape[-2:])}, the sources are {tuple(sources.shape[-2:])}")
            return fused
        from fusiondiff.inference import FusionPipeline

        key = str(method.target)
        if key not in self._pipes:
            self._pipes[key] = FusionPipeline.from_file(method.target)
        pipe = self._pipes[key]
        s = self.cfg.sampler
        options = {
            k: v for k, v in OmegaConf.to_container(s, resolve=True).items() if k not in ("name", "steps", "spacing", "clip_x0")
        }
        return pipe(sources, sampler=s.name, steps=method.steps, spacing=s.spacing, clip_x0=s.clip_x0, seed=self.cfg.seed,
                    tile_size=self.cfg.tile_size, **options).cpu()  # fmt: skip


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation; returns the summary (also written to <output_dir>/summary.{md,json})."""
    from rich.progress import Progress

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = find_samples(cfg.dataset)
    if cfg.max_images:
        samples = samples[: cfg.max_images]
    methods = parse_methods(cfg)
    has_target = any(s.target is not None for s in samples)
    metric_names = [m for m in cfg.metrics if m not in REFERENCE_METRICS or has_target]
    csv_path = out_dir / "per_image.csv"
    rows = _read_rows(csv_path) if cfg.resume else []
    done = {(r["method"], r["image"]) for r in rows}
    fields = [*CSV_KEYS, *metric_names]
    if rows and list(rows[0].keys()) != fields:
        raise ValueError(
            f"{csv_path} has columns {list(rows[0].keys())}, this run needs {fields}; use another output_dir or resume=false"
        )
    runner = _Runner(cfg)
    new_file = not rows
    with csv_path.open("w" if new_file else "a", newline="") as handle, Progress() as progress:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new_file:
            writer.writeheader()
        task = progress.add_task("evaluating", total=len(samples) * len(methods))
        for sample in samples:
            sources = target = None
            for method in methods:
                progress.advance(task)
                if (method.label, sample.name) in done:
                    continue
                if sources is None:
                    sources = load_sources(sample.sources, channels=3 if cfg.channels == 3 else None)
                    target = read_image(sample.target, sources.shape[1]) if sample.target is not None else None
                start = time.perf_counter()
                fused = runner.fuse(method, sample, sources)
                seconds = time.perf_counter() - start
                if cfg.save_images:
                    write_image(out_dir / "images" / _safe(method.label) / f"{sample.name}.png", fused)
                row = {"method": method.label, "steps": method.steps or "", "image": sample.name, "seconds": f"{seconds:.4f}"}
                row.update({k: f"{v:.10g}" for k, v in score(fused, sources, target, metric_names).items()})
                writer.writerow(row)
                handle.flush()
                rows.append(row)
    summary = summarise(rows, [m.label for m in methods], metric_names)
    write_reports(summary, methods, metric_names, out_dir, str(cfg.dataset), len(samples))
    return summary


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def summarise(rows: list[dict[str, Any]], labels: list[str], metric_names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for label in labels:
        mine = [r for r in rows if r["method"] == label]
        entry: dict[str, Any] = {"n": len(mine)}
        for name in [*metric_names, "seconds"]:
            vals = torch.tensor([float(r[name]) for r in mine if r.get(name) not in (None, "")], dtype=torch.float64)
            if len(vals):
                entry[name] = {"mean": vals.mean().item(), "std": vals.std(correction=0).item()}
        summary[label] = entry
    return summary


def markdown_table(summary: dict[str, Any], metric_names: list[str]) -> str:
    cols = [*metric_names, "seconds"]
    best = {}
    for name in metric_names:
        vals = {k: v[name]["mean"] for k, v in summary.items() if name in v and math.isfinite(v[name]["mean"])}
        if vals:
            best[name] = (min if name in LOWER_IS_BETTER else max)(vals.values())
    header = "| method | " + " | ".join(f"{c}{' ↓' if c in LOWER_IS_BETTER else ''}" for c in cols) + " |"
    lines = [header, "|---" * (len(cols) + 1) + "|"]
    for label, entry in summary.items():
        cells = []
        for c in cols:
            if c not in entry:
                cells.append("–")
                continue
            mean, std = entry[c]["mean"], entry[c]["std"]
            text = f"{mean:.4g} ± {std:.2g}"
            cells.append(f"**{text}**" if c in best and mean == best[c] else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_reports(
    summary: dict[str, Any], methods: list[Method], metric_names: list[str], out_dir: Path, dataset: str, n: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = markdown_table(summary, metric_names)
    note = f"Dataset `{dataset}`, {n} images; mean ± std per image; best per column in bold (↓: lower is better)."
    (out_dir / "summary.md").write_text(f"{note}\n\n{table}\n")
    (out_dir / "summary.json").write_text(json.dumps({"dataset": dataset, "images": n, "methods": summary}, indent=2))

    labels = list(summary)
    cols = 3
    rows_n = math.ceil(len(metric_names) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, metric_names, strict=False):
        means = [summary[k].get(name, {}).get("mean", float("nan")) for k in labels]
        stds = [summary[k].get(name, {}).get("std", 0.0) for k in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color="tab:blue", alpha=0.8)
        ax.set_title(name + (" (lower is better)" if name in LOWER_IS_BETTER else ""))
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    for ax in list(axes.flat)[len(metric_names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "metrics_bar.png", dpi=110)
    plt.close(fig)

    model_runs: dict[str, list[Method]] = {}
    for m in methods:
        if m.kind == "model":
            model_runs.setdefault(m.label.split(" (")[0], []).append(m)
    for name, runs in model_runs.items():
        if len(runs) < 2:
            continue
        fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
        steps = [m.steps for m in runs]
        for ax, metric in zip(axes.flat, metric_names, strict=False):
            ax.plot(steps, [summary[m.label].get(metric, {}).get("mean", float("nan")) for m in runs], "o-")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sampling steps")
            ax.set_title(metric)
        for ax in list(axes.flat)[len(metric_names) :]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / f"steps_{_safe(name)}.png", dpi=110)
        plt.close(fig)
