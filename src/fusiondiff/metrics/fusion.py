"""No-reference fusion metrics: a fused image F scored against its sources A and B.

Conventions (those of the VIFB benchmark code, reproduced to ~1e-12 relative in the tests
against values computed in Octave; see ``shared/metrics_golden/README.md``):

* Inputs are float tensors **in the 0..255 range** (8-bit levels, not rescaled), shaped
  [H, W], [C, H, W] or [B, C, H, W]; C is 1 or 3. Computation is float64.
* Colour: a metric is computed per channel k on (A_k, B_k, F_k) and averaged over k; a gray
  source with a colour F is used for every k. Spatial frequency instead lays the channels
  side by side.
* "correlate" filters are not flipped; "zero-padded same" treats pixels outside as 0.
* Every function returns a float64 tensor [B] (a 0-d tensor for unbatched input).

The Z. Liu toolbox variants (``*_liu``) are a separate convention: RGB is first converted
to gray (MATLAB ``rgb2gray`` rounding), and the formulas differ; they are not interchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fusiondiff.filters import gaussian_1d, separable_correlate
from fusiondiff.metrics.reference import ssim

Tensor = torch.Tensor

# ----------------------------------------------------------------------------- plumbing


def _as_batch(x: Tensor, name: str) -> tuple[Tensor, bool]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    unbatched = x.dim() <= 3
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[None]
    elif x.dim() != 4:
        raise ValueError(f"{name} must be [H, W], [C, H, W] or [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} has {x.shape[1]} channels; expected 1 (gray) or 3 (RGB)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1e-6 or hi > 255 + 1e-6:
        raise ValueError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}]; fusion metrics expect the 0..255 range "
            "((x + 1) * 127.5 for [-1, 1] images)"
        )
    return x.double(), unbatched


def _prepare(a: Tensor, b: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Validate, batch, and expand gray sources to F's channel count."""
    f, unbatched = _as_batch(f, "fused")
    a, _ = _as_batch(a, "source A")
    b, _ = _as_batch(b, "source B")
    for name, s in (("source A", a), ("source B", b)):
        if s.shape[-2:] != f.shape[-2:] or s.shape[0] != f.shape[0]:
            raise ValueError(f"{name} is {tuple(s.shape)} but fused is {tuple(f.shape)}: sizes must match")
        if s.shape[1] != f.shape[1] and s.shape[1] != 1:
            raise ValueError(f"{name} has {s.shape[1]} channels but fused has {f.shape[1]}")
    c = f.shape[1]
    return a.expand(-1, c, -1, -1), b.expand(-1, c, -1, -1), f, unbatched


def _per_channel(fn: Callable[..., Tensor], *images: Tensor) -> Tensor:
    """Apply ``fn`` to [N, 1, H, W] stacks of single channels; mean over channels -> [B]."""
    bsz, c = images[0].shape[:2]
    flat = [im.reshape(bsz * c, 1, *im.shape[-2:]) for im in images]
    return fn(*flat).reshape(bsz, c).mean(1)


def _finish(value: Tensor, unbatched: bool) -> Tensor:
    return value[0] if unbatched else value


def _correlate(x: Tensor, kernel: list[list[float]] | Tensor, padding: str = "zeros") -> Tensor:
    """'same'-size correlation of [N, 1, H, W] with a square kernel, zero or replicate borders."""
    k = torch.as_tensor(kernel, dtype=torch.float64, device=x.device)
    r = k.shape[-1] // 2
    if padding == "replicate":
        x = F.pad(x, (r, r, r, r), mode="replicate")
        return F.conv2d(x, k[None, None])
    return F.conv2d(x, k[None, None], padding=r)


def to_255(x: Tensor, quantise: bool = True) -> Tensor:
    """[-1, 1] images -> the 0..255 range of these metrics (float64); ``quantise`` rounds to the 8-bit levels a
    PNG would store (the convention of the evaluation: fused images are scored as if saved)."""
    y = (x.clamp(-1, 1) + 1) * 127.5
    return (y.round() if quantise else y).double()


def _round_half_away(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _minmax_255(x: Tensor) -> Tensor:
    """round(255 (x - min) / (max - min)) per image; constant images are left unchanged."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    scaled = _round_half_away(255 * (x - lo) / torch.where(span > 0, span, torch.ones_like(span)))
    return torch.where(span > 0, scaled, x)


def _frequency_filter(x: Tensor, scale: float, response: Callable[[Tensor], Tensor]) -> Tensor:
    """real(ifft2(ifftshift(fftshift(fft2(x)) * S(r)))) with r on the centred grid scaled by W/scale, H/scale."""
    h, w = x.shape[-2:]
    u = (torch.arange(w, dtype=torch.float64, device=x.device) - w // 2) * (2 / w) * (w / scale)
    v = (torch.arange(h, dtype=torch.float64, device=x.device) - h // 2) * (2 / h) * (h / scale)
    r = torch.sqrt(v[:, None] ** 2 + u[None, :] ** 2)
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)) * response(r)
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real


def _entropy_of_counts(counts: Tensor, log: Callable[[Tensor], Tensor]) -> Tensor:
    p = counts / counts.sum()
    p = p[p > 0]
    return -(p * log(p)).sum()


# ----------------------------------------------------------------------------- Q^AB/F


SOBEL_X_VIFB = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]  # left minus right
SOBEL_Y = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]  # bottom minus top
SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]


def _qabf_channel(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    def grad(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x * 255.0
        sx, sy = _correlate(x, SOBEL_X_VIFB), _correlate(x, SOBEL_Y)
        g = torch.sqrt(sx**2 + sy**2)
        alpha = torch.where(
            sx == 0, torch.full_like(sx, math.pi / 2), torch.atan(sy / torch.where(sx == 0, torch.ones_like(sx), sx))
        )
        return g, alpha

    ga, aa = grad(a)
    gb, ab = grad(b)
    gf, af = grad(f)

    def q(gs: Tensor, als: Tensor) -> Tensor:
        safe = lambda d: torch.where(d == 0, torch.ones_like(d), d)  # noqa: E731
        g_ratio = torch.where(gs > gf, gf / safe(gs), torch.where(gs < gf, gs / safe(gf), gf))
        angle = 1 - (als - af).abs() / (math.pi / 2)
        qg = 0.9994 / (1 + torch.exp(-15 * (g_ratio - 0.5)))
        qa = 0.9879 / (1 + torch.exp(-22 * (angle - 0.8)))
        return qg * qa

    num = (q(ga, aa) * ga + q(gb, ab) * gb).flatten(1).sum(1)
    return num / (ga + gb).flatten(1).sum(1)


def qabf(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Q^AB/F, Xydeas & Petrovic 2000: gradient strength/orientation preservation, in [0, 1], higher is better."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(_per_channel(_qabf_channel, a, b, f), unbatched)


# ----------------------------------------------------------------------------- Chen-Blum


def _gaussian_31(sigma: float) -> Tensor:
    """1-D factor g of the unnormalised 31x31 Gaussian exp(-(x²+y²)/2s²)/(2πs²) = g(x) g(y)."""
    x = torch.arange(-15, 16, dtype=torch.float64)
    return torch.exp(-(x**2) / (2 * sigma**2)) / math.sqrt(2 * math.pi * sigma**2)


def _chen_blum_csf(r: Tensor) -> Tensor:
    return torch.exp(-((r / 15.3870) ** 2)) - 0.7622 * torch.exp(-((r / 1.3456) ** 2))


def _qcb_channel(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    g2, g4 = _gaussian_31(2.0), _gaussian_31(4.0)

    def contrast(x: Tensor) -> Tensor:
        filtered = _frequency_filter(_minmax_255(x), 30.0, _chen_blum_csf)
        c = (separable_correlate(filtered, g2) / separable_correlate(filtered, g4) - 1).abs()
        return c**3 / (c**2 + 1e-4)

    ca, cb, cf = contrast(a), contrast(b), contrast(f)

    def ratio(cs: Tensor) -> Tensor:
        return torch.where(cs < cf, cs / cf, cf / cs)

    lam_a = ca**2 / (ca**2 + cb**2)
    lam_b = cb**2 / (ca**2 + cb**2)
    return (lam_a * ratio(ca) + lam_b * ratio(cb)).flatten(1).mean(1)


def qcb(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Q_CB, Chen & Blum 2009: contrast preservation through a human-vision CSF, in [0, 1], higher is better."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(_per_channel(_qcb_channel, a, b, f), unbatched)


# ----------------------------------------------------------------------------- Chen-Varshney


def _mannos_sakrison(r: Tensor) -> Tensor:
    return 2.6 * (0.0192 + 0.144 * r) * torch.exp(-((0.144 * r) ** 1.1))


def _block_sums(x: Tensor, size: int = 16) -> Tensor:
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % size, 0, (-h) % size))
    return F.avg_pool2d(x, size, stride=size, divisor_override=1).flatten(1)


def _qcv_channel(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    a, b, f = _minmax_255(a), _minmax_255(b), _minmax_255(f)

    def saliency(x: Tensor) -> Tensor:
        g = torch.sqrt(_correlate(x, SOBEL_X) ** 2 + _correlate(x, SOBEL_Y) ** 2)
        return _block_sums(g**5)

    def distortion(s: Tensor) -> Tensor:
        d = _frequency_filter(s - f, 8.0, _mannos_sakrison)
        return _block_sums(d**2) / 256.0

    la, lb = saliency(a), saliency(b)
    return (la * distortion(a) + lb * distortion(b)).sum(1) / (la + lb).sum(1)


def qcv(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Q_CV, Chen & Varshney 2007: saliency-weighted CSF-filtered distortion, >= 0, **lower** is better."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(_per_channel(_qcv_channel, a, b, f), unbatched)


# ----------------------------------------------------------------------------- SSIM / PSNR to sources


def ssim_fusion(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """SSIM(A, F) + SSIM(B, F) (VIFB's "SSIM" score, max 2); 11x11 Gaussian window, sigma 1.5, 'valid'."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(ssim(f, a, data_range=255.0) + ssim(f, b, data_range=255.0), unbatched)


def _psnr_channel(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    n = f.shape[-2] * f.shape[-1]
    e_a = torch.sqrt(((a - f) ** 2).flatten(1).sum(1)) / n
    e_b = torch.sqrt(((b - f) ** 2).flatten(1).sum(1)) / n
    return 20 * torch.log10(255.0 / torch.sqrt((e_a + e_b) / 2))


def psnr_fusion(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """VIFB's PSNR of F to its sources: e(X) = sqrt(sum (X-F)^2) / (M N), 20 log10(255 / sqrt(mean e)); ~60 dB scale."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(_per_channel(_psnr_channel, a, b, f), unbatched)


# ----------------------------------------------------------------------------- information


def _bins_minmax(x: Tensor) -> Tensor:
    lo, hi = x.min(), x.max()
    scaled = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return _round_half_away(255 * scaled).long().flatten()


def _mi_and_entropies(s: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """MI(S, F), H(S), H(F) in nats from the 256x256 joint histogram of min-max binned images."""
    joint = torch.bincount(_bins_minmax(s) * 256 + _bins_minmax(f), minlength=256 * 256).double().reshape(256, 256)
    h_s = _entropy_of_counts(joint.sum(1), torch.log)
    h_f = _entropy_of_counts(joint.sum(0), torch.log)
    h_sf = _entropy_of_counts(joint.flatten(), torch.log)
    return h_s + h_f - h_sf, h_s, h_f


def _mi_channel(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    return torch.stack([_mi_and_entropies(a[i], f[i])[0] + _mi_and_entropies(b[i], f[i])[0] for i in range(f.shape[0])])


def mutual_information(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """MI(A, F) + MI(B, F) in nats, 256-bin joint histograms of min-max rescaled images; higher is better."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(_per_channel(_mi_channel, a, b, f), unbatched)


def _nmi_channel(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    out = []
    for i in range(f.shape[0]):
        mi_a, h_a, h_fa = _mi_and_entropies(a[i], f[i])
        mi_b, h_b, h_fb = _mi_and_entropies(b[i], f[i])
        out.append(2 * (mi_a / (h_a + h_fa) + mi_b / (h_b + h_fb)))
    return torch.stack(out)


def normalized_mutual_information(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Hossny et al. 2008: 2 [MI(A,F)/(H(A)+H(F)) + MI(B,F)/(H(B)+H(F))], in [0, 2].

    Same histograms as :func:`mutual_information`."""
    a, b, f, unbatched = _prepare(a, b, f)
    return _finish(_per_channel(_nmi_channel, a, b, f), unbatched)


def _entropy_channel(f: Tensor) -> Tensor:
    levels = torch.floor(f).clamp(0, 255).long()
    return torch.stack(
        [_entropy_of_counts(torch.bincount(levels[i].flatten(), minlength=256).double(), torch.log2) for i in range(f.shape[0])]
    )


def entropy(f: Tensor) -> Tensor:
    """Shannon entropy (bits) of the 256-level histogram of floor(F), per channel; higher = more information."""
    f, unbatched = _as_batch(f, "fused")
    return _finish(_per_channel(_entropy_channel, f), unbatched)


# ----------------------------------------------------------------------------- gradients / statistics


def spatial_frequency(f: Tensor) -> Tensor:
    """sqrt(RF + CF): mean squared horizontal and vertical neighbour differences (divided by the pixel count).

    RGB is laid out side by side as one M x 3W image, seams included (VIFB).
    """
    f, unbatched = _as_batch(f, "fused")
    wide = torch.cat(f.unbind(1), dim=-1)  # [B, H, C*W]
    n = wide.shape[-2] * wide.shape[-1]
    rf = (wide[..., :, 1:] - wide[..., :, :-1]).pow(2).flatten(1).sum(1) / n
    cf = (wide[..., 1:, :] - wide[..., :-1, :]).pow(2).flatten(1).sum(1) / n
    return _finish(torch.sqrt(rf + cf), unbatched)


def _np_gradient(x: Tensor, dim: int) -> Tensor:
    """numpy.gradient along ``dim``: central differences inside, one-sided at the ends."""
    n = x.shape[dim]
    inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
    return torch.cat([first, inner, last], dim=dim)


def _ag_channel(f: Tensor) -> Tensor:
    gx, gy = _np_gradient(f, -1), _np_gradient(f, -2)
    m, n = f.shape[-2:]
    return torch.sqrt((gx**2 + gy**2) / 2).flatten(1).sum(1) / ((m - 1) * (n - 1))


def average_gradient(f: Tensor) -> Tensor:
    """Average gradient: sum sqrt((gx^2 + gy^2)/2) / ((M-1)(N-1)), numpy-style gradients; higher = sharper."""
    f, unbatched = _as_batch(f, "fused")
    if min(f.shape[-2:]) < 3:
        raise ValueError("average_gradient needs images of at least 3x3 px")
    return _finish(_per_channel(_ag_channel, f), unbatched)


def standard_deviation(f: Tensor) -> Tensor:
    """Population standard deviation of F per channel (VIFB calls it "Variance")."""
    f, unbatched = _as_batch(f, "fused")
    return _finish(_per_channel(lambda x: x.flatten(1).std(1, correction=0), f), unbatched)


def _ei_channel(f: Tensor) -> Tensor:
    k = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    gy = _correlate(f, k, padding="replicate")
    gx = _correlate(f, torch.tensor(k, dtype=torch.float64).T, padding="replicate")
    return torch.sqrt(gx**2 + gy**2).flatten(1).mean(1)


def edge_intensity(f: Tensor) -> Tensor:
    """Mean Sobel gradient magnitude of F (edge-replicated borders); higher = stronger edges."""
    f, unbatched = _as_batch(f, "fused")
    return _finish(_per_channel(_ei_channel, f), unbatched)


# ----------------------------------------------------------------------------- Liu toolbox variants


def rgb_to_gray_matlab(x: Tensor) -> Tensor:
    """MATLAB/Octave ``rgb2gray`` for uint8: round(0.298936 R + 0.587043 G + 0.114021 B); gray passes through."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.298936021293776, 0.587043074451121, 0.114020904255103], dtype=torch.float64, device=x.device)
    return _round_half_away((x * w.reshape(1, 3, 1, 1)).sum(1, keepdim=True)).clamp(0, 255)


def _prepare_gray(a: Tensor, b: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor, bool]:
    a, b, f, unbatched = _prepare(a, b, f)
    return rgb_to_gray_matlab(a), rgb_to_gray_matlab(b), rgb_to_gray_matlab(f), unbatched


def qabf_liu(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Q^AB/F as in Z. Liu's toolbox (``metricXydeas``): per-pixel normalised mean, other sigmoid constants, gray."""
    a, b, f, unbatched = _prepare_gray(a, b, f)

    def grad(x: Tensor) -> tuple[Tensor, Tensor]:
        gx, gy = _correlate(x, SOBEL_X), _correlate(x, SOBEL_Y)
        g = torch.sqrt(gx**2 + gy**2)
        gx = torch.where(gx == 0, gx + 1e-5, gx)
        return g, torch.atan(gy / gx)

    ga, aa = grad(a)
    gb, ab = grad(b)
    gf, af = grad(f)

    def q(gs: Tensor, als: Tensor, gf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mask = gs > gf
        gs = torch.where(gs == 0, gs + 1e-5, gs)
        r1 = gf / gs
        gf = torch.where(gf == 0, gf + 1e-5, gf)  # carries over to the next source's pass
        r2 = gs / gf
        g_ratio = torch.where(mask, r1, r2)
        angle = ((als - af).abs() - math.pi / 2).abs() * 2 / math.pi
        qv = 1 / (1 + torch.exp(-10 * (g_ratio - 0.5))) * 1 / (1 + torch.exp(-20 * (angle - 0.75)))
        return qv, gs, gf

    q_a, ga, gf = q(ga, aa, gf)
    q_b, gb, gf = q(gb, ab, gf)
    value = ((q_a * ga + q_b * gb) / (ga + gb)).flatten(1).mean(1)
    return _finish(value, unbatched)


def qcb_liu(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Z. Liu's ``metricChenBlum``: :func:`qcb` applied once to the MATLAB-gray images."""
    a, b, f, unbatched = _prepare_gray(a, b, f)
    return _finish(_qcb_channel(a, b, f), unbatched)


def _ssim_maps_7(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    g = gaussian_1d(7, 1.5).to(x.device)

    def win(z: Tensor) -> Tensor:
        return separable_correlate(z, g, padding=0)

    c = 2e-16
    mx, my = win(x), win(y)
    vx, vy = win(x * x) - mx**2, win(y * y) - my**2
    cxy = win(x * y) - mx * my
    smap = ((2 * mx * my + c) * (2 * cxy + c)) / ((mx**2 + my**2 + c) * (vx + vy + c))
    return smap, vx, vy


def qy_liu(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """Yang et al. 2008 SSIM-based fusion metric (Liu's ``metricYang``); 7x7 Gaussian window, in [0, 1]."""
    a, b, f, unbatched = _prepare_gray(a, b, f)
    s_ab, va, vb = _ssim_maps_7(a, b)
    s_af, _, _ = _ssim_maps_7(a, f)
    s_bf, _, _ = _ssim_maps_7(b, f)
    lam = va / (va + vb)
    q = torch.where(s_ab >= 0.75, lam * s_af + (1 - lam) * s_bf, torch.maximum(s_af, s_bf))
    return _finish(q.flatten(1).mean(1), unbatched)


# ----------------------------------------------------------------------------- registry

SOURCE_METRICS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "qabf": qabf,
    "qcb": qcb,
    "qcv": qcv,
    "ssim_fusion": ssim_fusion,
    "mi": mutual_information,
    "nmi": normalized_mutual_information,
    "psnr_fusion": psnr_fusion,
    "qabf_liu": qabf_liu,
    "qcb_liu": qcb_liu,
    "qy_liu": qy_liu,
}
FUSED_ONLY_METRICS: dict[str, Callable[[Tensor], Tensor]] = {
    "entropy": entropy,
    "sf": spatial_frequency,
    "ag": average_gradient,
    "sd": standard_deviation,
    "ei": edge_intensity,
}
LOWER_IS_BETTER = {"qcv"}
