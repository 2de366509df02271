"""Fusion metrics against ../shared/metrics_golden (values from the VIFB / Z. Liu MATLAB code run in Octave)."""

import json
from pathlib import Path

import cv2
import pytest
import torch

from fusiondiff.metrics import fusion as M

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "metrics_golden"
NAMES = {
    "Qabf": "qabf", "Qcb": "qcb", "Qcv": "qcv", "Ssim": "ssim_fusion", "Mutinf": "mi", "Psnr": "psnr_fusion",
    "Entropy": "entropy", "Spatial_frequency": "sf", "Avg_gradient": "ag", "Variance": "sd", "Edge_intensity": "ei",
    "Qabf_liu": "qabf_liu", "Qcb_liu": "qcb_liu", "Qy_liu": "qy_liu",
}  # fmt: skip
# Not implemented (informational in the golden README): FMI_gradient_liu, Qp_liu (needs Kovesi's phase congruency).
SKIPPED = {"FMI_gradient_liu", "Qp_liu"}


def _golden():
    if not (GOLDEN / "golden.json").is_file():
        return []
    data = json.loads((GOLDEN / "golden.json").read_text())
    tol = data["tolerance"]["default_rel"]
    out = []
    for case in data["cases"]:
        for block in ("vifb", "liu_toolbox"):
            for metric, value in case[block].items():
                if metric not in SKIPPED:
                    out.append(pytest.param(case, metric, value, tol, id=f"{case['name']}-{metric}"))
    return out


def _load(name: str) -> torch.Tensor:
    img = cv2.imread(str(GOLDEN / name), cv2.IMREAD_UNCHANGED)
    t = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1) if img.ndim == 3 else torch.from_numpy(img)
    return t.double()


@pytest.mark.skipif(not (GOLDEN / "golden.json").is_file(), reason="shared/metrics_golden not found beside the repository")
@pytest.mark.parametrize(("case", "metric", "expected", "tol"), _golden())
def test_golden(case, metric, expected, tol):
    a, b, f = (_load(case["files"][k]) for k in "ABF")
    name = NAMES[metric]
    value = M.SOURCE_METRICS[name](a, b, f) if name in M.SOURCE_METRICS else M.FUSED_ONLY_METRICS[name](f)
    assert value.item() == pytest.approx(expected, rel=tol)


def test_every_golden_metric_is_covered():
    if not (GOLDEN / "golden.json").is_file():
        pytest.skip("shared/metrics_golden not found")
    data = json.loads((GOLDEN / "golden.json").read_text())
    assert set(data["vifb_metrics"]) <= set(NAMES)
    assert set(data["liu_metrics"]) <= set(NAMES) | SKIPPED


def test_batched_equals_single_and_gray_source_with_colour_fused():
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 24, 30) * 255, torch.rand(2, 3, 24, 30) * 255
    f = (a + b) / 2
    for name, fn in M.SOURCE_METRICS.items():
        batched = fn(a, b, f)
        single = torch.stack([fn(a[i], b[i], f[i]) for i in range(2)])
        torch.testing.assert_close(batched, single, msg=name)
    gray_a = a[:, :1]
    torch.testing.assert_close(M.qabf(gray_a, b, f), M.qabf(gray_a.expand(-1, 3, -1, -1), b, f))


def test_identical_images_score_perfectly():
    img = torch.rand(1, 40, 40, generator=torch.Generator().manual_seed(1)).double() * 255
    assert M.ssim_fusion(img, img, img).item() == pytest.approx(2.0)
    assert M.qcv(img, img, img).item() == pytest.approx(0.0, abs=1e-9)
    assert M.qcb(img, img, img).item() == pytest.approx(1.0)


def test_bad_inputs():
    a = torch.rand(1, 16, 16) * 255
    with pytest.raises(ValueError, match="sizes must match"):
        M.qabf(a, a, torch.rand(1, 16, 17) * 255)
    with pytest.raises(ValueError, match="0..255"):
        M.qabf(a, a, torch.rand(1, 16, 16) * 2 - 1)
    with pytest.raises(ValueError, match="channels"):
        M.qcb(a, a, torch.rand(4, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        M.entropy(torch.full((1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="3 channels but fused has 1"):
        M.qabf(torch.rand(3, 16, 16), a, a)
