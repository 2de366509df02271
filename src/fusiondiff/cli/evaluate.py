"""``evaluate(cfg)``: the evaluation of ``cfg.task`` (conf/evaluate.yaml): per-image CSV, summary, JSON, plots.

The task builds its :class:`~fusiondiff.evaluation.Evaluation` (suite, methods, metrics, paired baseline);
this runs it, resumably, and writes the reports to ``cfg.output_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation; returns the summary (also written to <output_dir>/summary.{md,json})."""
    from fusiondiff.evaluation import run, write_reports
    from fusiondiff.pipeline import check_precision
    from fusiondiff.tasks import get_task

    check_precision(cfg.get("precision") or "fp32", torch.device("cpu"))  # evaluations run on the CPU
    evaluation = get_task(cfg.task.name).evaluation(cfg)
    out_dir = Path(cfg.output_dir)
    rows = run(evaluation, out_dir, resume=cfg.resume, save_images=cfg.save_images)
    summary = write_reports(evaluation, rows, out_dir)
    if cfg.get("figure") and evaluation.figure is not None:
        log.info("figure: %s", evaluation.figure(evaluation, Path(cfg.figure)))
    return summary
