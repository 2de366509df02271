"""Style-fusion scores: a style distance (Gram matrices of VGG16 features) and a content distance (LPIPS).

The VGG16 is LPIPS's backbone (the ImageNet VGG16 convolutions, loaded with real weights exactly as for
LPIPS, see :mod:`fusiondiff.metrics.perceptual`), read at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
after LPIPS's input scaling. The Gram matrix of a layer with C channels and N = H W positions is
F Fᵀ / (C N) (Gatys et al. 2016, normalised by size); the style distance is the mean over layers of the
mean squared difference of the two Gram matrices, times 1e3 for readable numbers. Lower is closer in style.
"""

from __future__ import annotations

import torch

from fusiondiff.metrics.perceptual import load_lpips, lpips_distance


def _batch(x: torch.Tensor, name: str) -> torch.Tensor:
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be [B, C, H, W] or [C, H, W] with C in (1, 3), got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < -1.001 or x.max() > 1.001:
        raise ValueError(f"{name} must be finite and in [-1, 1]")
    return x.expand(-1, 3, -1, -1).float() if x.shape[1] == 1 else x.float()


def gram_matrices(images: torch.Tensor, weights: str | None = None) -> list[torch.Tensor]:
    """Per VGG16 layer, the normalised Gram matrices [B, C, C] of images [B, 3, H, W] in [-1, 1]."""
    model = load_lpips("vgg", weights)
    x = _batch(images, "images")
    with torch.no_grad():
        feats = model.net(model.scaling_layer(x.to(next(model.parameters()).device)))
    grams = []
    for f in feats:
        b, c, h, w = f.shape
        flat = f.reshape(b, c, h * w).double()
        grams.append(flat @ flat.transpose(1, 2) / (c * h * w))
    return grams


def style_distance(output: torch.Tensor, style: torch.Tensor, weights: str | None = None) -> torch.Tensor:
    """Gram-matrix distance between ``output`` and the ``style`` image (per batch item; sizes may differ)."""
    unbatched = output.dim() == 3
    ga, gb = gram_matrices(output, weights), gram_matrices(style, weights)
    d = torch.stack([(a - b).pow(2).mean(dim=(1, 2)) for a, b in zip(ga, gb, strict=True)]).mean(0) * 1e3
    return d[0] if unbatched else d


def content_distance(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """LPIPS (AlexNet) between ``output`` and the ``content`` image: lower keeps more of A's structure."""
    return lpips_distance(output, content)
