"""``infer(cfg)``: run the inference mode ``cfg.mode`` of the task that owns it (conf/mode/<name>.yaml)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from fusiondiff.registry import Registry


def infer_modes() -> Registry:
    """Every registered task's inference modes, by name."""
    from fusiondiff.tasks import TASKS

    modes = Registry("inference mode")
    for task in dict.fromkeys(TASKS.values()):
        for name, fn in task.modes().items():
            modes.register(name, fn)
    return modes


def infer(cfg: DictConfig) -> list[Path]:
    """Run inference as configured by conf/infer.yaml and the chosen mode; returns the written files."""
    run: Callable[[DictConfig], list[Path]] = infer_modes()[cfg.get("mode", "fuse")]
    return run(cfg)
