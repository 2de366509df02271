"""Run an :class:`~fusiondiff.evaluation.Evaluation`: every method on every item, scored, one CSV row each.

Rows already in ``<output_dir>/per_image.csv`` are skipped, so an interrupted run resumes where it stopped.
Progress: a rich bar on a terminal, a plain line every few items otherwise (``… | cat``, CI logs).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import torch

from fusiondiff.errors import ConfigError
from fusiondiff.evaluation.core import Evaluation
from fusiondiff.progress import Progress

log = logging.getLogger(__name__)

CSV_KEYS = ("method", "steps", "image", "seconds")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def run(evaluation: Evaluation, out_dir: str | Path, resume: bool = True, save_images: bool = False) -> list[dict[str, Any]]:
    """Score every (method, item) pair not yet in the CSV; returns all rows (the old ones included)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "per_image.csv"
    fields = [*CSV_KEYS, *(m.name for m in evaluation.metrics)]
    rows = _read_rows(csv_path) if resume else []
    if rows and list(rows[0].keys()) != fields:
        raise ConfigError(
            f"{csv_path} has columns {list(rows[0].keys())}, this run needs {fields}; use another output_dir or resume=false"
        )
    done = {(r["method"], r["image"]) for r in rows}
    new_file = not rows
    progress = Progress(len(evaluation.items) * len(evaluation.methods), "evaluating")
    try:
        with csv_path.open("w" if new_file else "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if new_file:
                writer.writeheader()
            for item in evaluation.items:
                data = None
                for method in evaluation.methods:
                    progress.advance()
                    if (method.label, item.name) in done:
                        continue
                    if data is None:
                        data = {"name": item.name, **item.load()}
                    start = time.perf_counter()
                    with torch.inference_mode():
                        output = method.run(data)
                    seconds = time.perf_counter() - start
                    if save_images and output.dim() == 3 and output.shape[0] in (1, 3):
                        from fusiondiff.data.io import write_image

                        write_image(out_dir / "images" / _safe(method.label) / f"{item.name}.png", output.clamp(-1, 1))
                    row = {"method": method.label, "steps": method.steps or "", "image": item.name, "seconds": f"{seconds:.4f}"}
                    for metric in evaluation.metrics:
                        if all(data.get(k) is not None for k in metric.needs):
                            row[metric.name] = f"{float(metric.fn(output, data)):.10g}"
                    writer.writerow(row)
                    handle.flush()
                    rows.append(row)
    finally:
        progress.close()
    return rows
