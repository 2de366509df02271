"""Summaries of per-image rows: mean ± std tables (best in bold), paired differences with 95 % intervals,
JSON, and plots (one bar chart per metric; metric vs sampling steps per model)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from fusiondiff.evaluation.core import Evaluation


def _values(rows: list[dict[str, Any]], label: str, name: str) -> dict[str, float]:
    return {r["image"]: float(r[name]) for r in rows if r["method"] == label and r.get(name) not in (None, "")}


def summarise(rows: list[dict[str, Any]], labels: list[str], metric_names: list[str]) -> dict[str, Any]:
    """Per method: the number of rows and mean / population std of every metric and of the seconds."""
    summary: dict[str, Any] = {}
    for label in labels:
        entry: dict[str, Any] = {"n": sum(r["method"] == label for r in rows)}
        for name in [*metric_names, "seconds"]:
            vals = torch.tensor(list(_values(rows, label, name).values()), dtype=torch.float64)
            if len(vals):
                entry[name] = {"mean": vals.mean().item(), "std": vals.std(correction=0).item()}
        summary[label] = entry
    return summary


def markdown_table(summary: dict[str, Any], metric_names: list[str], lower_is_better: set[str] | None = None) -> str:
    """``| method | metric ... | seconds |`` with mean ± std, the best mean per metric in bold."""
    from fusiondiff.metrics import LOWER_IS_BETTER

    lower = LOWER_IS_BETTER if lower_is_better is None else lower_is_better
    cols = [*metric_names, "seconds"]
    best = {}
    for name in metric_names:
        vals = {k: v[name]["mean"] for k, v in summary.items() if name in v and math.isfinite(v[name]["mean"])}
        if vals:
            best[name] = (min if name in lower else max)(vals.values())
    header = "| method | " + " | ".join(f"{c}{' ↓' if c in lower else ''}" for c in cols) + " |"
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


def paired_difference(rows: list[dict[str, Any]], a: str, b: str, name: str, lower_is_better: bool) -> dict[str, Any]:
    """A - B on the images both have: mean, 95 % interval half-width (1.96 standard errors, sample std), wins of A."""
    va, vb = _values(rows, a, name), _values(rows, b, name)
    common = sorted(set(va) & set(vb))
    d = torch.tensor([va[i] - vb[i] for i in common], dtype=torch.float64)
    half = 1.96 * float(d.std()) / len(d) ** 0.5 if len(d) > 1 else float("nan")
    wins = int(((d < 0) if lower_is_better else (d > 0)).sum()) if len(d) else 0
    return {"vs": b, "n": len(common), "mean": float(d.mean()) if len(d) else float("nan"), "ci95": half, "wins": wins}


def paired_differences(evaluation: Evaluation, rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Every method against ``evaluation.baseline`` (``best``: per metric the best of ``evaluation.baselines``)."""
    if not evaluation.baseline:
        return {}
    pool = evaluation.baselines or [m.label for m in evaluation.methods if m.kind == "baseline"]
    out: dict[str, Any] = {}
    for method in evaluation.methods:
        if method.label == evaluation.baseline or (evaluation.baseline == "best" and method.label in pool):
            continue
        out[method.label] = {}
        for metric in evaluation.metrics:
            ref = evaluation.baseline
            if ref == "best":
                candidates = [p for p in pool if metric.name in summary.get(p, {})]
                if not candidates:
                    continue
                ref = (min if metric.lower_is_better else max)(candidates, key=lambda p: summary[p][metric.name]["mean"])
            if metric.name in summary.get(method.label, {}) and metric.name in summary.get(ref, {}):
                out[method.label][metric.name] = paired_difference(rows, method.label, ref, metric.name, metric.lower_is_better)
    return out


def paired_markdown(paired: dict[str, Any], baseline: str) -> str:
    against = "the best baseline per metric" if baseline == "best" else baseline
    head = f"Paired differences, method − {against} (mean ± 95 % interval over the images; "
    lines = [head + "wins = images where the method is better):", ""]
    for label, metrics in paired.items():
        cells = []
        for n, v in metrics.items():
            vs = f", vs {v['vs']}" if baseline == "best" else ""
            cells.append(f"{n} {v['mean']:+.4g} ± {v['ci95']:.2g} ({v['wins']}/{v['n']}{vs})")
        lines.append(f"- {label}: " + ", ".join(cells))
    return "\n".join(lines)


def write_reports(evaluation: Evaluation, rows: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Any]:
    """summary.md, summary.json, metrics_bar.png and steps_<model>.png; returns the summary."""
    out_dir = Path(out_dir)
    names = {item.name for item in evaluation.items}
    rows = [r for r in rows if r["image"] in names]
    labels = [m.label for m in evaluation.methods]
    metric_names = [m.name for m in evaluation.metrics]
    summary = summarise(rows, labels, metric_names)
    metric_names = [n for n in metric_names if any(n in summary[label] for label in labels)]
    lower = {m.name for m in evaluation.metrics if m.lower_is_better}
    paired = paired_differences(evaluation, rows, summary)
    note = f"{evaluation.about}; mean ± std per image; best per column in bold (↓: lower is better)."
    text = f"{note}\n\n{markdown_table(summary, metric_names, lower)}\n"
    if paired:
        text += f"\n{paired_markdown(paired, evaluation.baseline)}\n"
    (out_dir / "summary.md").write_text(text)
    payload = {"about": evaluation.about, "images": len(names), "methods": summary, "paired": paired}
    (out_dir / "summary.json").write_text(json.dumps(payload, indent=2))
    _plots(evaluation, summary, metric_names, lower, out_dir)
    return summary


def _plots(evaluation: Evaluation, summary: dict[str, Any], metric_names: list[str], lower: set[str], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metric_names:
        return
    labels = list(summary)
    cols = min(3, len(metric_names))
    rows_n = math.ceil(len(metric_names) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, metric_names, strict=False):
        means = [summary[k].get(name, {}).get("mean", float("nan")) for k in labels]
        stds = [summary[k].get(name, {}).get("std", 0.0) for k in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color="tab:blue", alpha=0.8)
        ax.set_title(name + (" (lower is better)" if name in lower else ""))
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    for ax in list(axes.flat)[len(metric_names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "metrics_bar.png", dpi=110)
    plt.close(fig)

    runs: dict[str, list] = {}
    for m in evaluation.methods:
        if m.kind == "model":
            runs.setdefault(m.label.split(" (")[0], []).append(m)
    for name, models in runs.items():
        if len(models) < 2:
            continue
        fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
        steps = [m.steps for m in models]
        for ax, metric in zip(axes.flat, metric_names, strict=False):
            ax.plot(steps, [summary[m.label].get(metric, {}).get("mean", float("nan")) for m in models], "o-")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sampling steps")
            ax.set_title(metric)
        for ax in list(axes.flat)[len(metric_names) :]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / f"steps_{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)}.png", dpi=110)
        plt.close(fig)
