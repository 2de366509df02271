"""``train(cfg)``: build everything from a composed Hydra config and fit it with Lightning."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fusiondiff.errors import FusiondiffError, MissingModelFileError
from fusiondiff.training.callbacks import GracefulInterrupt, PlainProgress

log = logging.getLogger(__name__)


def wandb_has_credentials() -> bool:
    """True if an API key is configured (environment variable or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def configure_wandb_mode() -> None:
    """Run wandb offline unless the user chose a mode or is logged in (said once, never fatal)."""
    if os.environ.get("WANDB_MODE"):
        return
    if not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.warning(
            "wandb: no API key configured, logging offline to the run folder "
            "(`wandb sync <dir>` uploads it later; logger=csv avoids wandb)"
        )


def bundle_config(cfg: DictConfig) -> dict:
    """What an inference bundle needs to rebuild the network and schedule, as plain data."""
    return {
        "net": OmegaConf.to_container(cfg.model, resolve=True),
        "schedule": OmegaConf.to_container(cfg.diffusion, resolve=True),
        "task": {"name": cfg.task.name, "num_sources": cfg.task.num_sources, "channels": cfg.task.channels},
        "data": {"range": [-1.0, 1.0]},
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
    }


class TrainingInterrupted(FusiondiffError):
    """Training stopped by a signal (after writing its checkpoint); exits with 128 + the signal's number."""

    def __init__(self, message: str, signal_name: str) -> None:
        import signal

        super().__init__(message)
        self.exit_code = 128 + int(signal.Signals[signal_name])


def own_best_checkpoint(callback: Any) -> str:
    """The checkpoint to export: the best one *of this run* (a run resumed into a new folder inherits the old
    run's ``best_model_path`` from the checkpoint it resumed), else this run's last."""
    if callback is None or not callback.dirpath:
        return ""
    here = Path(callback.dirpath).resolve()
    for path in (callback.best_model_path, callback.last_model_path, str(Path(callback.dirpath) / "last.ckpt")):
        if path and Path(path).is_file() and Path(path).resolve().parent == here:
            return path
    return ""


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the configured model; returns (final metrics, the objects built)."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)  # created once the data, model and trainer are built (checks first)

    resume = cfg.get("ckpt_path")
    if resume and not Path(resume).is_file():
        raise MissingModelFileError(f"ckpt_path={resume}: no such checkpoint (a run's checkpoints/last.ckpt or best-*.ckpt)")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # build the datasets now: a missing or unpaired folder fails before anything runs
    net = instantiate(cfg.model)
    schedule = instantiate(cfg.diffusion)
    # _partial_ so that plain objects (network, schedule, the bundle dict with its _target_) are
    # passed as they are rather than run through instantiate again.
    module = instantiate(cfg.task.module, _partial_=True)(
        net=net, schedule=schedule, sampler=OmegaConf.to_container(cfg.sampler, resolve=True), task=cfg.task.name,
        bundle_config=bundle_config(cfg),
    )  # fmt: skip
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    checkpoints = next((c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None)
    interrupt = GracefulInterrupt(checkpoints.dirpath if checkpoints and checkpoints.dirpath else output_dir / "checkpoints")
    callbacks += [interrupt, PlainProgress()]
    logger = False
    if cfg.get("logger"):
        if "Wandb" in str(cfg.logger.get("_target_", "")):
            configure_wandb_mode()
        logger = instantiate(cfg.logger)
    overrides: dict[str, Any] = {}
    if module.automatic_optimization is False and cfg.trainer.get("gradient_clip_val"):
        # manual optimization (adversarial training) clips in the module; Lightning refuses the Trainer setting
        module.grad_clip, overrides["gradient_clip_val"] = float(cfg.trainer.gradient_clip_val), None
    if module.automatic_optimization is False and cfg.trainer.get("max_steps", -1) > 0:
        # Lightning counts every optimizer step in global_step (generator + critic = 2 per batch): keep
        # trainer.max_steps meaning "batches", as for every other run
        overrides["max_steps"] = 2 * int(cfg.trainer.max_steps)
        batches, steps = cfg.trainer.max_steps, overrides["max_steps"]
        log.info("adversarial training: %d batches = %d optimizer steps (generator + critic)", batches, steps)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, **overrides)

    log.info("network: %.2f M parameters", sum(p.numel() for p in net.parameters()) / 1e6)
    output_dir.mkdir(parents=True, exist_ok=True)
    interrupt.install()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        interrupt.uninstall()
    if interrupt.signal_name is not None:
        saved = interrupt.checkpoint
        where = f"saved {saved}; resume with ckpt_path={saved}" if saved else "no training step had finished, nothing saved"
        raise TrainingInterrupted(f"training stopped by {interrupt.signal_name} at step {trainer.global_step}: {where}",
                                  interrupt.signal_name)  # fmt: skip
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath and not trainer.fast_dev_run and trainer.global_step > 0:
        # Lightning skips the last save when max_steps ends exactly on an epoch boundary; make
        # last.ckpt always the end of training so that resuming continues from there.
        trainer.save_checkpoint(Path(callback.dirpath) / "last.ckpt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    bundle = None
    if cfg.get("export") and trainer.is_global_zero and not trainer.fast_dev_run:
        from fusiondiff.models.bundle import export_bundle

        ckpt = own_best_checkpoint(trainer.checkpoint_callback)
        if ckpt:
            bundle = export_bundle(ckpt, output_dir / "model.safetensors")
            log.info("exported inference bundle %s (from %s)", bundle, ckpt)
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "bundle": bundle}
