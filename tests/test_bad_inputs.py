"""The bad-input matrix: every ordinary user mistake is one ``error:`` line on stderr, exit code 2, no traceback,
and no file created or changed (the whole folder is hashed before and after). Each case runs through the CLI
functions in-process and, all together, through a real ``infer.py`` subprocess."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, save_png, synthetic_triplet

FUSE_CASES = {
    # name: (arguments with {a} {b} {dir} placeholders, a fragment of the expected message)
    "missing_file": (["inputs=[{a},{dir}/nope.png]"], "image not found"),
    "not_an_image": (["inputs=[{a},{dir}/text.png]"], "cannot decode"),
    "truncated_png": (["inputs=[{a},{dir}/cut.png]"], "truncated PNG"),
    "truncated_jpeg": (["inputs=[{a},{dir}/cut.jpg]"], "truncated or corrupt JPEG"),
    "different_sizes": (["inputs=[{a},{dir}/small.png]"], "differ in size"),
    "transparent_rgba": (["inputs=[{a},{dir}/rgba.png]"], "transparent alpha"),
    "one_pixel": (["inputs=[{dir}/dot.png,{dir}/dot2.png]"], "minimum"),
    "one_source": (["inputs=[{a}]"], "at least 2 source images"),
    "unknown_precision": (["inputs=[{a},{b}]", "precision=fp16"], "unknown precision 'fp16'; valid: fp32, bf16"),
    "output_is_input": (["inputs=[{a},{b}]", "output={a}", "overwrite=true"], "overwrite a source"),
    "output_exists": (["inputs=[{a},{b}]", "output={dir}/kept.png"], "exists; pass overwrite=true"),
    "read_only_folder": (["inputs=[{a},{b}]", "output={dir}/locked/fused.png"], "cannot write into"),
    "output_under_a_file": (["inputs=[{a},{b}]", "output={dir}/text.png/fused.png"], "is a file, not a folder"),
    "unknown_extension": (["inputs=[{a},{b}]", "output={dir}/out/fused.xyz"], "unknown image extension"),
    "sixteen_bit_jpeg": (["inputs=[{a},{b}]", "output={dir}/out/fused.jpg", "bit_depth=16"], "16-bit images need"),
    "steps_zero": (["inputs=[{a},{b}]", "sampler.steps=0"], "sampler.steps must be >= 1"),
    "steps_too_large": (["inputs=[{a},{b}]", "sampler.steps=100000"], "(the model's T)"),
    "steps_not_a_number": (["inputs=[{a},{b}]", "sampler.steps=many"], "whole number"),
    "unknown_key": (["inputs=[{a},{b}]", "fusion.ratio=0.5"], "unknown key 'fusion.ratio'"),
    "unknown_sampler": (["inputs=[{a},{b}]", "sampler=plms"], "Could not find 'sampler/plms'"),
    "corrupt_bundle": (["inputs=[{a},{b}]", "ckpt={dir}/bad.safetensors"], "is this a fusiondiff bundle"),
    "missing_bundle": (["inputs=[{a},{b}]", "ckpt={dir}/none.safetensors"], "model file not found"),
    "empty_input_dir": (["input_dir={dir}/empty", "output_dir={dir}/out"], "no samples found"),
    "unpaired_input_dir": (["input_dir={dir}/unpaired", "output_dir={dir}/out"], "lack a partner image"),
    "missing_input_dir": (["input_dir={dir}/nowhere", "output_dir={dir}/out"], "not found"),
    "inputs_and_input_dir": (["inputs=[{a},{b}]", "input_dir={dir}/unpaired"], "not both"),
    "stack_folder_of_one": (["inputs={dir}/single", "method=decision_map"], "holds 1 image"),
    "stack_glob_matches_none": (["inputs={dir}/*.tif", "method=decision_map"], "matches 0 image"),
    "stack_sizes_differ": (["inputs=[{a},{b},{dir}/small.png]", "method=decision_map"], "must have one size"),
    "stack_unknown_method": (["inputs=[{a},{b}]", "method=sharpest"], "unknown method"),
    "stack_reference_out_of_range": (["inputs=[{a},{b}]", "align=ecc", "align.reference=5"], "not a frame of this 2-frame"),
    "stack_unknown_motion": (["inputs=[{a},{b}]", "align=ecc", "align.motion=projective"], "unknown align.motion"),
    "stack_depth_output_exists": (["inputs=[{a},{b}]", "output={dir}/k.png", "depth=true", "method=decision_map"], "exists"),
    "stack_output_is_a_frame": (["inputs=[{a},{b},{a}]", "output={dir}/a.png", "method=decision_map"], "overwrite a source"),
    "ratio_out_of_range": (["mode=noise_fusion", "inputs=[{a},{b}]", "fusion.ratio=1.5"], "ratio must be in [0, 1]"),
    "fusion_steps_zero": (["mode=noise_fusion", "inputs=[{a},{b}]", "fusion.steps=0"], "fusion.steps must be >= 1"),
    "noise_fusion_output_is_input": (["mode=noise_fusion", "inputs=[{a},{b}]", "output={b}"], "overwrite a source"),
    "style_missing": (["mode=style_fusion", "content={a}", "style={dir}/nope.png"], "image not found"),
    "inpaint_mask_size": (["mode=inpaint", "input={a}", "mask={dir}/small.png"], "resize"),
    "restore_missing": (["mode=restore", "input={dir}/nope.png"], "image not found"),
    "hdr_missing_dir": (["mode=hdr", "input_dir={dir}/nowhere"], "not found"),
}


def _lock(folder: Path) -> bool:
    """Make ``folder`` refuse new files, also for root (immutable attribute); False if this machine can't."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def _unlock(folder: Path) -> None:
    if folder.exists():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def make_case_folder(root: Path) -> tuple[Path, Path, bool]:
    """Two good sources and every kind of bad file, in ``root``. Returns (a, b, whether 'locked/' is locked)."""
    a_img, b_img, _ = synthetic_triplet(3, 33, 41)
    a, b = save_png(root / "a.png", a_img), save_png(root / "b.png", b_img)
    (root / "text.png").write_text("not an image\n")
    data = a.read_bytes()
    (root / "cut.png").write_bytes(data[: len(data) * 9 // 10])  # some OpenCV builds decode such files
    ok, jpeg = cv2.imencode(".jpg", a_img[:, :, ::-1].copy())
    assert ok
    (root / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) * 3 // 4])
    save_png(root / "small.png", a_img[:20, :20])
    rgba = np.dstack([a_img[:, :, ::-1], np.full(a_img.shape[:2], 128, np.uint8)])
    assert cv2.imwrite(str(root / "rgba.png"), rgba)
    save_png(root / "dot.png", a_img[:1, :1])
    save_png(root / "dot2.png", b_img[:1, :1])
    shutil.copy(b, root / "kept.png")
    shutil.copy(b, root / "k_depth.png")  # the depth map of output k.png exists already
    save_png(root / "single" / "only.png", a_img)
    (root / "bad.safetensors").write_bytes(os.urandom(256))
    (root / "empty").mkdir()
    save_png(root / "unpaired" / "source_1" / "x.png", a_img)
    save_png(root / "unpaired" / "source_2" / "y.png", b_img)
    return a, b, _lock(root / "locked")


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content hash (folders: 'dir')."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}  # fmt: skip


def arguments(case: str, root: Path, a: Path, b: Path) -> list[str]:
    args, _ = FUSE_CASES[case]
    args = [arg.format(a=a, b=b, dir=root) for arg in args]
    if not any(arg.startswith("output=") for arg in args) and "mode=hdr" not in args:
        args.append(f"output={root}/out/fused.png")
    return args


def check_result(case: str, returncode: int, stderr: str, before: dict, after: dict) -> str | None:
    """None if the case behaved, else what went wrong."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    fragment = FUSE_CASES[case][1]
    if returncode != 2:
        return f"exit code {returncode}: {stderr[-600:]}"
    if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in stderr:
        return f"not one error line: {stderr[-600:]}"
    if fragment not in lines[0]:
        return f"message lacks {fragment!r}: {lines[0]}"
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        return f"files changed: {changed}"
    return None


@pytest.fixture
def case_folder(tmp_path):
    root = tmp_path / "case folder"  # a space in every path
    root.mkdir()
    a, b, locked = make_case_folder(root)
    yield root, a, b, locked
    _unlock(root / "locked")


def run_in_process(args: list[str], capsys) -> tuple[int, str]:
    """The console entry point's own steps without a new interpreter: the override check, Hydra's compose and
    the error boundary around infer()."""
    from fusiondiff.cli import main
    from fusiondiff.cli.infer import infer

    from helpers import compose_config

    capsys.readouterr()
    try:
        main._check_overrides("infer", args)
        main._boundary(infer)(compose_config("infer", args))
    except SystemExit as exit_:
        return int(exit_.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(FUSE_CASES))
def test_bad_input_through_the_cli_function(case, case_folder, capsys, monkeypatch):
    root, a, b, locked = case_folder
    if case == "read_only_folder" and not locked:
        pytest.skip("cannot make a folder read-only here")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    before = snapshot(root)
    code, err = run_in_process(arguments(case, root, a, b), capsys)
    problem = check_result(case, code, err, before, snapshot(root))
    assert problem is None, problem


def test_bad_input_matrix_through_infer_py(tmp_path):
    """Every case through a real ``python infer.py ...`` (four at a time), each in its own folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "FUSIONDIFF_DEBUG")}
    cases, running, problems = sorted(FUSE_CASES), {}, {}
    folders = {}
    try:
        for case in cases:
            root = tmp_path / case / "case folder"
            root.mkdir(parents=True)
            a, b, locked = make_case_folder(root)
            folders[case] = root
            if case == "read_only_folder" and not locked:
                continue
            before = snapshot(root)
            proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), *arguments(case, root, a, b)], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            running[case] = (proc, before)
            while sum(p.poll() is None for p, _ in running.values()) >= 4:
                next(iter(p for p, _ in running.values() if p.poll() is None)).wait()
        for case, (proc, before) in running.items():
            _, err = proc.communicate(timeout=300)
            problem = check_result(case, proc.returncode, err, before, snapshot(folders[case]))
            if problem:
                problems[case] = problem
    finally:
        for root in folders.values():
            _unlock(root / "locked")
    assert not problems, problems


OTHER_CASES = {
    # (command, arguments, a fragment of the message)
    "train_missing_data": ("train", ["data=paired_folder", "data.train.root={dir}/nowhere"], "dataset folder not found"),
    "train_unpaired_data": ("train", ["data=paired_folder", "data.train.root={dir}/unpaired"], "lack a partner image"),
    "train_missing_ckpt": ("train", ["ckpt_path={dir}/none.ckpt"], "no such checkpoint"),
    "train_steps_zero": ("train", ["sampler.steps=0"], "sampler.steps must be >= 1"),
    "train_bad_width": ("train", ["model.base_channels=-3"], "model.base_channels must be"),
    "train_unknown_key": ("train", ["trainer.max_stepz=3"], "unknown key 'trainer.max_stepz'"),
    "train_bad_trainer_value": ("train", ["trainer.max_steps=abc"], "lightning.pytorch.trainer.trainer.Trainer"),
    "evaluate_unknown_method": ("evaluate", ["suite=synthetic", "methods=[nope]"], "unknown method 'nope'"),
    "evaluate_unknown_metric": ("evaluate", ["suite=synthetic", "metrics=[nope]"], "nope"),
    "evaluate_unknown_precision": ("evaluate", ["suite=synthetic", "precision=half"], "unknown precision 'half'"),
    "evaluate_missing_dataset": ("evaluate", ["dataset={dir}/nowhere"], "not found"),
    "evaluate_unknown_task": ("evaluate", ["task=nope"], "Could not find 'task/nope'"),
    "zero_shot_bf16": ("infer", ["mode=noise_fusion", "precision=bf16", "inputs=[{a},{b}]"], "is for trained models"),
    "zero_shot_evaluate_bf16": ("evaluate", ["task=zero_shot", "precision=bf16"], "the zero-shot prior runs in float32"),
    "hub_prior_offline": ("infer", ["mode=noise_fusion", "prior=nobody/no-such-model", "inputs=[{a},{b}]"],
                          "cannot load the diffusers pipeline 'nobody/no-such-model'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_bad_settings_of_train_evaluate_and_priors(case, case_folder, capsys, monkeypatch):
    """train / evaluate / a hub prior through their CLI functions: one error line, exit 2, nothing changed."""
    from fusiondiff.cli import main
    from fusiondiff.cli.evaluate import evaluate
    from fusiondiff.cli.infer import infer
    from fusiondiff.cli.train import train

    from helpers import SYNTHETIC_TINY, TINY, compose_config

    root, a, b, _ = case_folder
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Lightning's log handlers hold the stderr of an earlier test's capture (closed): not this test's business
    monkeypatch.setattr(__import__("logging"), "raiseExceptions", False)
    command, args, fragment = OTHER_CASES[case]
    args = [arg.format(a=a, b=b, dir=root) for arg in args]
    synthetic = [] if any(arg.startswith("data=") for arg in args) else SYNTHETIC_TINY
    base = {"train": [*TINY, *synthetic, f"paths.output_dir={root}/run"], "evaluate": [f"output_dir={root}/eval"],
            "infer": [f"output={root}/out/fused.png"]}[command]  # fmt: skip
    body = {"train": train, "evaluate": evaluate, "infer": infer}[command]
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main._check_overrides(command, [*base, *args])
        main._boundary(body)(compose_config(command, [*base, *args]))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err[-1500:]
    assert fragment in lines[0], lines[0]
    assert snapshot(root) == before
