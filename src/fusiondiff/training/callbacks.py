"""Training callbacks that every run gets (cli/train.py adds them): :class:`GracefulInterrupt` (Ctrl-C and SIGTERM
finish the current step, write ``last.ckpt`` at that step atomically, stop and export nothing; the run resumes
with ``ckpt_path=<run>/checkpoints/last.ckpt``) and :class:`PlainProgress` (log lines when stdout is no terminal)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L

from fusiondiff.progress import Progress

log = logging.getLogger(__name__)


class GracefulInterrupt(L.Callback):
    """Turns SIGINT/SIGTERM into "stop after this step, with a checkpoint". A second signal stops at once
    (the default behaviour). ``signal_name`` says which signal arrived (None: none)."""

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.dirpath, self.signal_name, self.checkpoint = Path(dirpath), None, None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch the signals from now on (before fit, so that even the set-up time is covered)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:  # the second time: stop now
            self.uninstall()
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s: stopping after this training step with a checkpoint (again to stop at once)", self.signal_name)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()  # again: Lightning registers its own SIGTERM handler when fit starts

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.signal_name is None or self.checkpoint is not None:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / "last.ckpt"
        tmp = self.dirpath / ".last.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, final)  # atomic: a second Ctrl-C never leaves half a checkpoint
        self.checkpoint = final
        log.warning("%s at step %d: saved %s", self.signal_name, trainer.global_step, final)
        trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.uninstall()


class PlainProgress(L.Callback):
    """Step k/N, the loss, elapsed time and ETA as a log line every ``every`` seconds when stdout is not a
    terminal (``train.py ... | tee log``, CI, nohup), where the rich bar shows nothing until the end."""

    def __init__(self, every: float = 30.0) -> None:
        self.every, self.progress = every, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import sys

        if sys.stdout.isatty():
            return
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        self.progress = Progress(int(total), "training steps", every=self.every, done=trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.progress is not None:
            loss = trainer.callback_metrics.get("train/loss")
            self.progress.what = "training steps" + (f" (loss {float(loss):.4g})" if loss is not None else "")
            self.progress.advance(trainer.global_step - self.progress.done)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is not None:
            self.progress.close()
