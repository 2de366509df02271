"""The evaluation CLI on a generated folder of 3 pairs: CSV, Markdown, JSON and plots; resume; folder methods."""

import csv
import json

import pytest

from fusiondiff.cli.evaluate import evaluate
from fusiondiff.evaluation import markdown_table

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
    assert abs(summary["fusiondiff (ddim, 1 step)"]["psnr"]["mean"] - summary["average"]["psnr"]["mean"]) < 0.5
    md = (out / "summary.md").read_text()
    assert "**" in md and "| decision_map |" in md
    report = json.loads((out / "summary.json").read_text())
    assert report["images"] == 3
    # paired against the decision map (the task's default baseline), recomputed from the CSV
    vs_dm = report["paired"]["average"]["qabf"]
    by = {(r["method"], r["image"]): float(r["qabf"]) for r in rows}
    d = [by[("average", i)] - by[("decision_map", i)] for i in ("p0", "p1", "p2")]
    assert vs_dm["vs"] == "decision_map" and vs_dm["n"] == 3 and vs_dm["wins"] == sum(x > 0 for x in d)
    assert vs_dm["mean"] == pytest.approx(sum(d) / 3, abs=1e-12) and vs_dm["mean"] < 0
    sd = (sum((x - sum(d) / 3) ** 2 for x in d) / 2) ** 0.5
    assert vs_dm["ci95"] == pytest.approx(1.96 * sd / 3**0.5, rel=1e-9)
    assert "Paired differences, method − decision_map" in md

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


def test_model_labels_keep_runs_apart(tmp_path, tiny_bundle):
    import shutil

    from omegaconf import OmegaConf

    from fusiondiff.tasks import get_task

    for run in ("a", "b", "x", "y"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        shutil.copy(tiny_bundle, tmp_path / "runs" / run / ("model.safetensors" if run in "ab" else "net.safetensors"))
    a, b = (tmp_path / "runs" / r / "model.safetensors" for r in "ab")
    cfg = OmegaConf.create({"methods": [f"model:{a}", f"model:{b}"], "steps": [1, 2], "ckpt": None,
                            "sampler": {"name": "ddim"}})  # fmt: skip
    task = get_task("multifocus")
    labels = [m.label for m in task.methods(cfg, {}, lambda pipe, s, t: None, [])]
    assert labels == ["a (ddim, 1 step)", "a (ddim, 2 steps)", "b (ddim, 1 step)", "b (ddim, 2 steps)"]
    cfg.methods = [f"model:{tmp_path / 'runs' / r / 'net.safetensors'}" for r in "xy"]
    with pytest.raises(ValueError, match="both be labelled"):
        task.methods(cfg, {}, lambda pipe, s, t: None, [])


def test_synthetic_suite_scores_float_outputs_against_ground_truth(tiny_bundle, tmp_path):
    """suite=synthetic: held-out generated pairs; methods stay in float (no 8-bit storage for anyone), so an
    untrained x0/residual model equals averaging exactly."""
    overrides = [
        "suite=synthetic",
        "num=3",
        "size=32",
        "steps=[1]",
        f"output_dir={tmp_path}",
        f"methods=[average,decision_map,model:{tiny_bundle}]",
    ]
    summary = evaluate(compose_config("evaluate", overrides))
    model = "tiny (ddim, 1 step)"
    assert set(summary[model]) >= {"psnr", "ssim", "lpips", "sf", "ag"} and "qabf" not in summary[model]
    assert summary[model]["psnr"]["mean"] == pytest.approx(summary["average"]["psnr"]["mean"], abs=1e-4)
    assert summary["decision_map"]["psnr"]["mean"] > summary["average"]["psnr"]["mean"]
