"""Zero-shot fusion in the edit-friendly DDPM noise space of any :class:`~fusiondiff.zero_shot.priors.Prior`.

    fuser = NoiseSpaceFusion(load_prior("runs/uncond/model.safetensors"))
    inv = fuser.invert(images)                      # N images, one batched network call per step
    fused = fuser.fuse(inv, [0.7, 0.3], "layer_selective", skip=5)
    reconstructions = fuser.reconstruct(inv)        # each input from its own maps (inversion check)
    styled = fuser.fuse(fuser.invert(torch.stack([content, style])), [0.6, 0.4], "style")[0]
    filled = fuser.inpaint(image, hole_mask, method="repaint", jump_length=10, resample=5)

All N images are inverted with the **same** source prompt and guidance (a fused trajectory must
come from one model), and regenerated with the target prompt and guidance, which default to the
source ones (fusion, not editing). For latent priors the reconstruction is exact in latent space;
the image then carries the VAE's own reconstruction error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fusiondiff.data.io import check_image_tensor
from fusiondiff.diffusion.inpainting import edit_friendly_inpaint, keep_known, repaint
from fusiondiff.diffusion.inversion import Inversion, inversion_timesteps, invert, regenerate
from fusiondiff.errors import InputError
from fusiondiff.registry import Registry
from fusiondiff.zero_shot.priors import Prior
from fusiondiff.zero_shot.rules import RULES, fuse_inversions


@dataclass
class Prompts:
    """Source prompt / guidance for inversion, target ones for regeneration (None: same as source)."""

    src: str = ""
    tar: str | None = None
    cfg_src: float = 1.0
    cfg_tar: float | None = None

    def target(self) -> tuple[str, float]:
        return (self.src if self.tar is None else self.tar), (self.cfg_src if self.cfg_tar is None else self.cfg_tar)


class NoiseSpaceFusion:
    """Invert, fuse and regenerate with one prior; the chain state is float64 unless ``dtype`` says otherwise."""

    def __init__(
        self, prior: Prior, prompts: Prompts | None = None, dtype: torch.dtype = torch.float64, on_step: Any = None
    ) -> None:
        """``on_step``: called with no arguments after every network evaluation (progress bars)."""
        self.prior, self.prompts, self.dtype, self.on_step = prior, prompts or Prompts(), dtype, on_step

    def _denoiser(self, prompt: str, guidance: float) -> Any:
        den = self.prior.denoiser(prompt, guidance)
        if self.on_step is None:
            return den

        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            out = den(*args, **kwargs)
            self.on_step()
            return out

        return counted

    @torch.inference_mode()
    def invert(self, images: torch.Tensor, steps: int = 50, eta: float = 1.0, seed: int = 0) -> Inversion:
        """Edit-friendly inversion of N images [N, C, H, W] in [-1, 1] as one batch."""
        check_image_tensor(images, "images")
        if images.dim() != 4 or images.shape[0] < 1:
            raise InputError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
        if images.shape[1] != self.prior.channels:
            raise InputError(f"{self.prior.name} takes {self.prior.channels}-channel images, got {images.shape[1]}")
        self.prior.check_size(*images.shape[-2:])
        z0 = self.prior.encode(images.to(self.prior.device, torch.float32)).to(self.dtype)
        ts = inversion_timesteps(self.prior.schedule.num_timesteps, steps)
        gen = torch.Generator(device=self.prior.device).manual_seed(seed)
        den = self._denoiser(self.prompts.src, self.prompts.cfg_src)
        return invert(den, self.prior.schedule, z0, ts, eta=eta, generator=gen, clip_x0=self.prior.clip_x0)

    def _regenerate(
        self, x_start: torch.Tensor, zs: torch.Tensor, inv: Inversion, skip: int, callback=None, decode: bool = True
    ) -> torch.Tensor:
        den = self._denoiser(*self.prompts.target())
        z = regenerate(
            den, self.prior.schedule, x_start, zs, inv.timesteps, eta=inv.eta, skip=skip, clip_x0=inv.clip_x0, callback=callback
        )
        return self.prior.decode(z.float()) if decode else z

    @torch.inference_mode()
    def reconstruct(self, inv: Inversion, skip: int = 0, decode: bool = True) -> torch.Tensor:
        """Every input regenerated from its own maps in one batch: [N, C, H, W] (the inversion check).

        ``decode=False`` returns the diffusion variable (the latents of a latent prior), which is exact.
        """
        return self._regenerate(inv.xs[skip], inv.zs, inv, skip, decode=decode)

    @torch.inference_mode()
    def fuse(
        self,
        inv: Inversion,
        weights: Sequence[float] | torch.Tensor,
        mode: str = "linear",
        skip: int = 0,
        mask: torch.Tensor | None = None,
        slerp: bool = False,
        strip_frames: int = 0,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fusion of the N inverted images [C, H, W], and ``strip_frames`` x̂0 estimates along the way."""
        RULES[mode]  # an unknown mode lists the valid ones
        n, k = inv.xs.shape[1], len(inv.timesteps)
        if not 0 <= skip < k:
            raise InputError(f"skip must be in 0..{k - 1} for {k} steps, got {skip}")
        if mask is not None and tuple(mask.shape[-2:]) != tuple(inv.xs.shape[-2:]):
            # a mask of image size on a latent prior: average it down to the latent grid
            mask = F.interpolate(mask.double().reshape(1, 1, *mask.shape[-2:]), inv.xs.shape[-2:], mode="area")[0, 0]
        per_image = [Inversion(inv.timesteps, inv.xs[:, i : i + 1], inv.zs[:, i : i + 1], inv.eta, inv.clip_x0) for i in range(n)]
        x_start, zs = fuse_inversions(per_image, weights, mode, skip=skip, mask=mask, slerp=slerp)
        visited = list(range(skip, k))
        keep = {visited[round(j * (len(visited) - 1) / max(strip_frames - 1, 1))] for j in range(strip_frames)}
        frames: list[torch.Tensor] = []

        def collect(i: int, t: int, x: torch.Tensor, x0_hat: torch.Tensor) -> None:
            if i in keep:
                frames.append(self.prior.decode(x0_hat.float())[0].cpu())

        fused = self._regenerate(x_start, zs, inv, skip, callback=collect if strip_frames else None)
        return fused[0].cpu(), frames

    @torch.inference_mode()
    def inpaint(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        steps: int = 50,
        method: str = "repaint",
        jump_length: int = 10,
        resample: int = 1,
        eta: float = 1.0,
        seed: int = 0,
    ) -> torch.Tensor:
        """Fill the hole (``mask`` [H, W] or [1, H, W], 1 = hole, binary) of ``image`` [C, H, W] in [-1, 1].

        ``method``: ``repaint`` (known region re-noised from the input at every step, with ``resample``
        passes per ``jump_length`` jump) or ``edit_friendly`` (the input's own inversion maps outside the
        hole, fresh noise inside; see :mod:`fusiondiff.diffusion.inpainting`). The known region of the
        output equals the input. A latent prior works on the mask brought down to the latent grid (a latent
        cell is hole if any of its pixels is) and the input's pixels are copied back after decoding.
        """
        from fusiondiff.data.degradations import check_mask

        INPAINT_METHODS.check(method)
        check_image_tensor(image, "image")
        if image.dim() != 3 or image.shape[0] != self.prior.channels:
            raise InputError(f"image must be [{self.prior.channels}, H, W] for {self.prior.name}, got {tuple(image.shape)}")
        mask = check_mask(mask.float().cpu(), *image.shape[-2:])
        self.prior.check_size(*image.shape[-2:])
        device = self.prior.device
        z0 = self.prior.encode(image[None].to(device, torch.float32)).to(self.dtype)
        m = mask[None].to(device, self.dtype)
        if z0.shape[-2:] != m.shape[-2:]:
            m = F.adaptive_max_pool2d(m, z0.shape[-2:])
        ts = inversion_timesteps(self.prior.schedule.num_timesteps, steps)
        gen = torch.Generator(device=device).manual_seed(seed)
        den = self._denoiser(*self.prompts.target())
        if method == "repaint":
            z = repaint(den, self.prior.schedule, z0, m, ts, eta=eta, jump_length=jump_length, resample=resample,
                        generator=gen, clip_x0=self.prior.clip_x0)  # fmt: skip
        else:
            inv = self.invert(image[None], steps, eta, seed)
            z = edit_friendly_inpaint(den, self.prior.schedule, inv, z0, m, generator=gen)
        out = self.prior.decode(z.float())[0].cpu()
        pixel_mask = mask.to(out.dtype)
        return keep_known(out, image.cpu().to(out.dtype), pixel_mask)


INPAINT_METHODS = Registry("inpainting method", {"repaint": repaint, "edit_friendly": edit_friendly_inpaint})
