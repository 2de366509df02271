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
    return hydra.main(version_base="1.3", config_path=str(CONF), config_name=config_name)(body)()


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
