"""LightningModule for conditional diffusion fusion: ε-prediction MSE, EMA, sampled validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fusiondiff.diffusion import NoiseSchedule, training_target
from fusiondiff.diffusion.parameterization import check_prediction, eps_from_output, from_diffused, to_diffused
from fusiondiff.filters import gradient_magnitude
from fusiondiff.metrics import psnr, ssim
from fusiondiff.pipeline import DEFAULT_STEPS, FusionPipeline, SamplerConfig, Tiling
from fusiondiff.tasks import model_conditioning


class EMAUpdate:
    """ema <- decay * ema + (1 - decay) * current, for AveragedModel (picklable, unlike a closure)."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) (or 0 to disable EMA), got {decay}")
        self.decay = decay

    def __call__(self, ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)


class DiffusionFusionModule(L.LightningModule):
    """Trains ``net(x_t, t, sources)`` with MSE, t ~ U{0..T-1} (Ho et al. 2020, Alg. 1).

    The target is ε (FusionDiff, the default), x0 or v, set by ``prediction``.

    Args:
        net: the ε-network (e.g. :class:`fusiondiff.models.ConditionalUNet`).
        schedule: the noise schedule.
        optimizer: ``params -> Optimizer`` (Hydra ``_partial_``).
        lr_scheduler: optional ``optimizer -> LRScheduler`` (``_partial_``), stepped every step.
        ema_decay: decay of the exponential moving average of the weights (0 disables EMA);
            the EMA weights are used for validation and export.
        sampler: the ``sampler`` config group (name, steps, spacing, clip_x0, options) used for the seeded
            validation samples, through the same :class:`~fusiondiff.pipeline.FusionPipeline` as inference.
        task: the task whose conditioning the model uses (residual bases, network condition, logit priors);
            None: the task that knows ``residual``.
        prediction: what the network predicts: ``eps`` (FusionDiff), ``x0``, ``v``, or ``blend`` (one
            weight map per source; x̂0 is their softmax-weighted sum, see ``blend_sources``).
        residual: diffuse ``target - base(sources)`` instead of the target: ``mean`` (or true) or a base of
            the task (e.g. ``decision_map``, ``hdr_merge``, ``navier_stokes``; for ``blend`` a logit prior).
        image_loss_weight: weight λ of an L1 loss on the x̂0 implied by the network output (in the
            target's domain, e.g. μ-law tonemapped HDR), added to the MSE (the HDR image-space loss).
        gradient_loss_weight: weight of an L1 loss between the gradient magnitude of the x̂0 image and the
            per-pixel maximum of the sources' (:func:`fusiondiff.filters.gradient_magnitude`; the first C
            channels of each source), the "keep the sharpest source's edges" term of unsupervised
            multi-focus fusion (0, the default: off). Needs sources.
        sampler_timestep_fraction: fraction of training samples whose t is one of the timesteps the
            validation/default sampler visits (``sampler.steps`` respaced, e.g. only t = T-1 for 1 step) instead
            of U{0..T-1} (0, the default: plain uniform t). For few-step models: at t = T-1 the input is pure
            noise, and a network that saw it rarely lets that noise leak into its 1-step output.
        adversarial_weight: weight λ_adv of a hinge GAN loss on the x̂0 image (0, the default: off, and
            training is exactly the plain diffusion loss). When on, a PatchGAN critic (``discriminator``,
            default :class:`~fusiondiff.models.PatchDiscriminator`) is trained against the clean targets
            with its own optimizer (built by ``optimizer``), through Lightning's manual optimization: per
            batch one generator step, then one critic step. Manual optimization counts **both** steps in
            ``trainer.global_step``; ``train.py`` doubles ``trainer.max_steps`` so that it still counts batches,
            and moves the Trainer's ``gradient_clip_val`` to ``grad_clip`` (Lightning refuses it here).
        bundle_config: plain dict describing how to rebuild net and schedule (stored in checkpoints
            so :func:`fusiondiff.models.bundle.export_bundle` needs nothing else).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        ema_decay: float = 0.999,
        sampler: Any = None,
        task: str | None = None,
        val_seed: int = 0,
        num_preview: int = 4,
        prediction: str = "eps",
        residual: bool | str = False,
        image_loss_weight: float = 0.0,
        gradient_loss_weight: float = 0.0,
        sampler_timestep_fraction: float = 0.0,
        adversarial_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        grad_clip: float | None = None,
        bundle_config: dict | None = None,
    ) -> None:
        super().__init__()
        sampler = sampler if isinstance(sampler, SamplerConfig) else SamplerConfig.from_config(sampler)
        sampler.check(schedule.num_timesteps)  # before the default fills in: sampler.steps=0 is refused
        self.sampler = replace(sampler, steps=sampler.steps or DEFAULT_STEPS)
        self.prediction, self.residual = check_prediction(prediction), residual
        if image_loss_weight < 0:
            raise ValueError(f"image_loss_weight must be >= 0, got {image_loss_weight}")
        self.image_loss_weight = image_loss_weight
        if gradient_loss_weight < 0:
            raise ValueError(f"gradient_loss_weight must be >= 0, got {gradient_loss_weight}")
        if gradient_loss_weight > 0 and getattr(net, "num_sources", 1) == 0:
            raise ValueError("gradient_loss_weight compares with the sources; an unconditional model has none")
        self.gradient_loss_weight = float(gradient_loss_weight)
        if not 0 <= sampler_timestep_fraction <= 1:
            raise ValueError(f"sampler_timestep_fraction must be in [0, 1], got {sampler_timestep_fraction}")
        self.sampler_timestep_fraction = float(sampler_timestep_fraction)
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        self.adversarial_weight, self.grad_clip = float(adversarial_weight), grad_clip
        self.discriminator = None
        if self.adversarial_weight > 0:
            from fusiondiff.models.discriminator import PatchDiscriminator

            self.discriminator = discriminator or PatchDiscriminator(getattr(net, "image_channels", 3))
            self.automatic_optimization = False
        elif discriminator is not None:
            raise ValueError("a discriminator was given but adversarial_weight is 0; set adversarial_weight > 0 to use it")
        if residual and getattr(net, "num_sources", 1) == 0:
            raise ValueError("residual diffusion needs source images; an unconditional model (num_sources=0) cannot use it")
        self.net = net
        self.schedule = schedule
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.ema = AveragedModel(net, multi_avg_fn=EMAUpdate(ema_decay)) if ema_decay > 0 else None
        if self.ema is not None:
            self.ema.requires_grad_(False)
        self.conditioning = model_conditioning(prediction, residual, task)
        self.val_seed = val_seed
        self.num_preview = num_preview
        self.bundle_config = {**(bundle_config or {}), "prediction": prediction, "residual": residual}
        if self.sampler_timestep_fraction == 1:  # trained at no other t: the pipeline warns on other step counts
            self.bundle_config["trained_steps"] = self.sampler.steps

    # ------------------------------------------------------------------ training
    @property
    def inference_net(self) -> nn.Module:
        """The EMA network if EMA is on, else the raw one."""
        return self.ema.module if self.ema is not None else self.net

    def training_timesteps(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """t for n training samples: U{0..T-1}, a ``sampler_timestep_fraction`` of them replaced by one of the
        timesteps the validation sampler visits."""
        t = torch.randint(0, self.schedule.num_timesteps, (n,), device=device)
        if self.sampler_timestep_fraction > 0:
            visited = self.sampler.timesteps(self.schedule.num_timesteps).to(device)
            pick = visited[torch.randint(0, len(visited), (n,), device=device)]
            t = torch.where(torch.rand(n, device=device) < self.sampler_timestep_fraction, pick, t)
        return t

    def diffusion_loss(self, batch: dict, return_x0: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The training loss of a batch (and, with ``return_x0``, the x̂0 *image* it implies, for the critic)."""
        sources = batch["sources"]
        base, cond = self.conditioning.prepare(sources)
        target = to_diffused(batch["target"], base)
        t = self.training_timesteps(target.shape[0], target.device)
        noise = torch.randn_like(target)
        x_t = self.schedule.q_sample(target, t, noise)
        out = self.net(x_t, t, cond)
        if self.prediction == "blend":
            out = self.conditioning.blend(out, sources)
        loss = F.mse_loss(out, training_target(self.schedule, self.prediction, target, noise, t))
        x0_hat = None
        if self.image_loss_weight > 0 or self.gradient_loss_weight > 0 or return_x0:
            if self.prediction in ("x0", "blend"):
                x0_hat = out.clamp(-2, 2)
            else:
                eps = eps_from_output(self.schedule, self.prediction, x_t, t, out)
                x0_hat = self.schedule.predict_x0(x_t, t, eps).clamp(-2, 2).to(out.dtype)  # bounded where ᾱ ≈ 0
        if self.image_loss_weight > 0:
            loss = loss + self.image_loss_weight * F.l1_loss(x0_hat, target)
        if return_x0 or self.gradient_loss_weight > 0:
            image = from_diffused(x0_hat, base)
        if self.gradient_loss_weight > 0:
            c = image.shape[1]
            sharpest = torch.stack([gradient_magnitude(sources[:, i, :c]) for i in range(sources.shape[1])]).amax(0)
            loss = loss + self.gradient_loss_weight * F.l1_loss(gradient_magnitude(image), sharpest)
        if return_x0:
            return loss, image
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "target" not in batch:
            raise ValueError("training needs ground-truth targets; this dataset has none")
        bs = batch["target"].shape[0]
        if self.discriminator is None:
            loss = self.diffusion_loss(batch)
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            return loss
        return self._adversarial_step(batch, bs)

    def _adversarial_step(self, batch: dict, bs: int) -> torch.Tensor:
        """One generator step (diffusion loss + λ_adv · hinge G loss), then one critic step (hinge D loss)."""
        from fusiondiff.models.discriminator import hinge_d_loss, hinge_g_loss

        opt_g, opt_d = self.optimizers()
        loss, fake = self.diffusion_loss(batch, return_x0=True)
        self.discriminator.requires_grad_(False)
        g_adv = hinge_g_loss(self.discriminator(fake))
        self.discriminator.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss + self.adversarial_weight * g_adv)
        if self.grad_clip:
            self.clip_gradients(opt_g, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt_g.step()
        d_loss = hinge_d_loss(self.discriminator(batch["target"]), self.discriminator(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self._update_ema()
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({"train/g_adv": g_adv, "train/d_loss": d_loss}, batch_size=bs)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self._update_ema()

    def _update_ema(self) -> None:
        """After every optimizer step, inside the step, so that a checkpoint written by any callback at the
        batch's end (interrupts, ``every_n_train_steps``) holds the EMA of the same step as the weights."""
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.net.parameters())
        scheduler = None if self.lr_scheduler_factory is None else self.lr_scheduler_factory(optimizer=optimizer)
        if self.discriminator is not None:  # manual optimization: the generator's scheduler is stepped by hand
            critic = self.optimizer_factory(params=self.discriminator.parameters())
            return [optimizer, critic], ([] if scheduler is None else [scheduler])
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------- validation
    def sample(self, sources: torch.Tensor, steps: int | None = None, seed: int | None = None) -> torch.Tensor:
        """Fuse a batch of sources [B, N, C, H, W] with the validation sampler and the EMA weights, through the
        same pipeline as inference (no tiling)."""
        sampler = self.sampler if steps is None else replace(self.sampler, steps=steps)
        pipe = FusionPipeline(self.inference_net, self.schedule, self.bundle_config, self.conditioning)
        return pipe(sources, sampler, seed=self.val_seed if seed is None else seed, tiling=Tiling(tile_size=None))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        sources = batch["sources"]
        fused = self.sample(sources, seed=self.val_seed + batch_idx)
        if "target" in batch:
            target = batch["target"]
            bs = target.shape[0]
            if sources.shape[1] > 0:  # unconditional samples are not meant to match the target
                self.log("val/psnr", psnr(fused, target).mean().float(), batch_size=bs, sync_dist=True, prog_bar=True)
                self.log("val/ssim", ssim(fused, target).mean().float(), batch_size=bs, sync_dist=True, prog_bar=True)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.val_seed + batch_idx)  # the same t and noise at every validation; and
                loss = self.diffusion_loss(batch)  # validation never moves the training's RNG (exact resume)
            self.log("val/loss", loss, batch_size=bs, sync_dist=True)
        if batch_idx == 0 and self.num_preview > 0:
            self._log_preview(sources, fused, batch.get("target"))

    def _log_preview(self, sources: torch.Tensor, fused: torch.Tensor, target: torch.Tensor | None) -> None:
        """Image grid, one row per sample: sources | fused | target, to the logger (or the log folder)."""
        from torchvision.utils import make_grid

        k = min(self.num_preview, fused.shape[0])
        # sources with more channels than the image (HDR: LDR + radiance estimate) show their first ones
        columns = [*sources[:k, :, : fused.shape[1]].unbind(1), fused[:k]] + ([target[:k]] if target is not None else [])
        tiles = torch.stack(columns, dim=1).flatten(0, 1)
        grid = make_grid(((tiles.clamp(-1, 1) + 1) / 2).float().cpu(), nrow=len(columns), padding=2, pad_value=1.0)
        caption = "sources | fused" + (" | target" if target is not None else "")
        if not self.trainer.is_global_zero:
            return
        logger = self.logger
        if logger is not None and hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key="val/preview", images=[grid], caption=[caption], step=self.global_step)
            return
        log_dir = getattr(logger, "log_dir", None) or self.trainer.default_root_dir
        from fusiondiff.data.io import write_image

        write_image(Path(log_dir) / "previews" / f"step_{self.global_step:07d}.png", grid * 2 - 1)

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fusiondiff"] = self.bundle_config
        checkpoint["fusiondiff_rng"] = _rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("fusiondiff_rng")

    def on_train_start(self) -> None:
        """A resumed run continues the RNG stream of the training step (timesteps, noise) where the checkpoint
        left it; restored here, after the sanity validation, right before the first step."""
        state, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        if state is not None:
            _set_rng_state(state)


def _rng_state() -> dict:
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # as tensors and plain numbers: Lightning loads
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),  # weights_only
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
