"""The evaluation CLI on a generated folder of 3 pairs: CSV, Markdown, JSON and plots; resume; folder methods."""

import csv
import json

import pytest

from fusiondiff.cli.evaluate import evaluate, markdown_table

from conftest import save_png, synthetic_triplet
from helpers import compose_config, write_tiny_bundle


@pytest.fixture
def gt_folder(tmp_path):
    root = tmp_path / "pairs"
    for k in range(3):
        a, b, f = synthetic_triplet(20 + k, 48, 56)
        save_png(root / "source_1" / f"p{k}-A.png", a)
        save_png(root / "source_2" / f"p{k}-B.png", b)
        save_png(root / "full_clear" / f"p{k}.png", f)
    return root


@pytest.fixture
def tiny_bundle(tmp_path):
    # untrained (zero output layer) x0 + residual model: it starts exactly at averaging
    return write_tiny_bundle(tmp_path / "tiny.safetensors", num_timesteps=50, init_std=None, prediction="x0", residual=True)


def test_evaluate_writes_every_report_and_resumes(gt_folder, tiny_bundle, tmp_path):
    out = tmp_path / "eval"
    overrides = [f"dataset={gt_folder}", f"output_dir={out}", f"ckpt={tiny_bundle}", "steps=[1,2]",
                 "methods=[average,decision_map,fusiondiff]", "metrics=[qabf,qcb,sf,psnr,ssim]"]  # fmt: skip
    summary = evaluate(compose_config("evaluate", overrides))
    for name in ("per_image.csv", "summary.md", "summary.json", "metrics_bar.png", "steps_fusiondiff.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 3 * 4 and {r["image"] for r in rows} == {"p0", "p1", "p2"}
    assert summary["decision_map"]["qabf"]["mean"] > summary["average"]["qabf"]["mean"]
    # an untrained x0/residual model starts at averaging: equal PSNR to the average (quantisation aside)
    assert abs(summary["fusiondiff (ddim, 1 steps)"]["psnr"]["mean"] - summary["average"]["psnr"]["mean"]) < 0.5
    md = (out / "summary.md").read_text()
    assert "**" in md and "| decision_map |" in md
    assert json.loads((out / "summary.json").read_text())["images"] == 3

    # resume: nothing recomputed, the CSV does not grow
    evaluate(compose_config("evaluate", overrides))
    assert len(list(csv.DictReader((out / "per_image.csv").open()))) == 12


def test_folder_method_and_no_ground_truth(lytro_folder, tmp_path):
    fused_dir = tmp_path / "mine"
    for k in range(1, 4):
        a, _, _ = synthetic_triplet(10 + k, 37, 45)
        save_png(fused_dir / f"lytro-0{k}.png", a)
    out = tmp_path / "eval"
    methods = f"methods=[average,folder:{fused_dir}]"
    overrides = [f"dataset={lytro_folder}", f"output_dir={out}", methods, "metrics=[qabf,ag,psnr]"]
    summary = evaluate(compose_config("evaluate", overrides))
    assert set(summary) == {"average", "mine"}
    assert "psnr" not in summary["average"]  # no ground truth: reference metrics are left out


def test_unknown_method_and_metric(gt_folder, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'wavelet'"):
        evaluate(compose_config("evaluate", [f"dataset={gt_folder}", f"output_dir={tmp_path}", "methods=[wavelet]"]))
    with pytest.raises(ValueError, match="unknown metric 'vif'"):
        evaluate(
            compose_config("evaluate", [f"dataset={gt_folder}", f"output_dir={tmp_path}", "methods=[average]", "metrics=[vif]"])
        )


def test_markdown_marks_best_respecting_direction():
    summary = {"a": {"qabf": {"mean": 0.5, "std": 0.1}, "qcv": {"mean": 10.0, "std": 1.0}},
               "b": {"qabf": {"mean": 0.7, "std": 0.1}, "qcv": {"mean": 20.0, "std": 1.0}}}  # fmt: skip
    table = markdown_table(summary, ["qabf", "qcv"])
    assert "| a | 0.5 ± 0.1 | **10 ± 1** |" in table and "| b | **0.7 ± 0.1** | 20 ± 1 |" in table


def test_model_labels_keep_runs_apart(tmp_path):
    from omegaconf import OmegaConf

    from fusiondiff.cli.evaluate import parse_methods

    cfg = OmegaConf.create({"methods": ["model:runs/a/model.safetensors", "model:runs/b/model.safetensors"], "steps": [1],
                            "ckpt": None, "sampler": {"name": "ddim"}})  # fmt: skip
    assert [m.label for m in parse_methods(cfg)] == ["a/model (ddim, 1 steps)", "b/model (ddim, 1 steps)"]
    cfg.methods = ["model:x/net.ckpt", "model:y/net.ckpt"]
    with pytest.raises(ValueError, match="both be labelled"):
        parse_methods(cfg)
