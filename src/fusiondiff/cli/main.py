"""Console entry points (``fusiondiff-train``, ``fusiondiff-infer``, ``fusiondiff-evaluate``; pyproject.toml) and
the bodies of ``train.py`` / ``infer.py`` / ``scripts/evaluate.py``: Hydra over the project's ``conf/``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[3] / "conf"


def _hydra(config_name: str, body: Callable[[Any], Any]) -> Any:
    import hydra

    if not CONF.is_dir():
        sys.exit(f"fusiondiff: no config folder at {CONF}; install from a clone with `pip install -e .`")
    return hydra.main(version_base="1.3", config_path=str(CONF), config_name=config_name)(_boundary(body))()


def _boundary(body: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The error boundary: a project error (:mod:`fusiondiff.errors`) is one line on stderr and exit code 2;
    with ``HYDRA_FULL_ERROR=1`` (or ``FUSIONDIFF_DEBUG=1``) it keeps its traceback. Other errors are bugs and
    keep theirs."""
    import functools
    import os

    from fusiondiff.errors import FusiondiffError

    @functools.wraps(body)
    def guarded(cfg: Any) -> Any:
        try:
            return body(cfg)
        except FusiondiffError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("FUSIONDIFF_DEBUG") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return guarded


def train_main() -> Any:
    def body(cfg):
        from fusiondiff.cli.train import train

        metrics, _ = train(cfg)
        return metrics.get(cfg.get("optimized_metric", "val/ssim"))

    return _hydra("train", body)


def infer_main() -> Any:
    def body(cfg):
        from fusiondiff.cli.infer import infer

        infer(cfg)

    return _hydra("infer", body)


def evaluate_main() -> Any:
    def body(cfg):
        from fusiondiff.cli.evaluate import evaluate

        evaluate(cfg)
        print((Path(cfg.output_dir) / "summary.md").read_text())

    return _hydra("evaluate", body)
