"""Evaluation behind one entry point (``python scripts/evaluate.py task=<name> ...``).

A task describes its evaluation as an :class:`Evaluation`: a suite of test items, the methods to compare
(its classical baselines, model bundles, folders of images fused elsewhere), the metrics with their better
direction, and the method to pair every other one against. :func:`run` scores it into a resumable
per-image CSV; :mod:`~fusiondiff.evaluation.reports` writes the Markdown/JSON summary with paired 95 %
intervals and the plots. Nothing here knows a task.
"""

from fusiondiff.evaluation.core import Evaluation, Item, Method, Metric, folder_method
from fusiondiff.evaluation.reports import markdown_table, paired_differences, summarise, write_reports
from fusiondiff.evaluation.runner import run

__all__ = ["Evaluation", "Item", "Method", "Metric", "folder_method", "markdown_table", "paired_differences", "run",
           "summarise", "write_reports"]  # fmt: skip
