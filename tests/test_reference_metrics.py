import math

import pytest
import torch
from skimage.metrics import structural_similarity

from fusiondiff.metrics import hdr, lpips_distance, psnr, ssim
from fusiondiff.metrics.perceptual import cached_backbone_path


def test_psnr_closed_form():
    a = torch.zeros(2, 1, 8, 8)
    b = a.clone()
    b[0] += 0.1
    b[1, :, :4] += 0.2  # MSE 0.02
    out = psnr(b, a, data_range=1.0)
    assert out[0].item() == pytest.approx(20.0)
    assert out[1].item() == pytest.approx(10 * math.log10(1 / 0.02))
    assert psnr(a[0], a[0]).item() == math.inf


@pytest.mark.parametrize("shape", [(1, 32, 40), (3, 37, 29)])
def test_ssim_matches_scikit_image(shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=gen, dtype=torch.float64)
    y = (x + 0.15 * torch.randn(*shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ref = structural_similarity(
        x.permute(1, 2, 0).numpy(),
        y.permute(1, 2, 0).numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=2,
    )
    assert ssim(x, y, data_range=1.0).item() == pytest.approx(ref, abs=1e-4)
    assert ssim(x, x, data_range=1.0).item() == pytest.approx(1.0)


def test_reference_metric_input_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="NaN"):
        ssim(torch.full((1, 16, 16), float("nan")), torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))


def test_hdr_metrics():
    h = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(hdr.inverse_mu_law(hdr.mu_law(h)), h)
    assert hdr.mu_law(torch.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]
    noisy = (h + 0.01).clamp(0, 1)
    assert hdr.psnr_mu(noisy, h) < hdr.psnr_l(noisy, h)  # μ-law magnifies dark-region errors
    assert hdr.ssim_mu(h, h).item() == pytest.approx(1.0) and hdr.ssim_l(h, h).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        hdr.mu_law(torch.tensor([-0.1]))


requires_weights = pytest.mark.skipif(
    not cached_backbone_path("alex").is_file(), reason="LPIPS weights not prepared: run python scripts/prepare_lpips_weights.py"
)


@requires_weights
def test_lpips_real_weights_on_fixed_inputs():
    import skimage.data
    import torch.nn.functional as F

    from fusiondiff.filters import blur, gaussian_kernel

    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    photo = F.interpolate(photo[None], (256, 256), mode="area")[0]
    assert lpips_distance(photo, photo).item() == pytest.approx(0.0, abs=1e-7)
    mild, strong = (
        lpips_distance(blur(photo, gaussian_kernel(1.0)), photo),
        lpips_distance(blur(photo, gaussian_kernel(2.0)), photo),
    )
    assert 0.35 < strong.item() < 0.45  # ~0.40 for AlexNet with the real weights; a random backbone gives other values
    assert 0 < mild < strong
    gray = photo[:1]
    assert lpips_distance(gray, gray).item() == pytest.approx(0.0, abs=1e-7)


@requires_weights
def test_lpips_input_checks_and_hdr_lpips():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        lpips_distance(torch.full((3, 32, 32), 2.0), torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="valid: alex, vgg"):
        lpips_distance(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32), net="squeezenet")
    h = torch.rand(1, 3, 32, 32)
    assert hdr.lpips_mu(h, h).item() == pytest.approx(0.0, abs=1e-7)


def test_missing_explicit_weights_file_is_an_error(tmp_path):
    from fusiondiff.metrics.perceptual import LPIPSWeightsMissing, load_lpips

    with pytest.raises(LPIPSWeightsMissing, match="not found"):
        load_lpips("alex", str(tmp_path / "nope.pth"))
