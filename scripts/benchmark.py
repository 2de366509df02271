"""Speed and memory benchmark: one table per question, printed and written as JSON.

    python scripts/benchmark.py                         # CPU, the shipped bundle, 520 x 520
    python scripts/benchmark.py --device cuda --json outputs/bench_gpu.json
    python scripts/benchmark.py --quick                 # fewer step counts, no 4K run

0. the model at its default step count against the classical decision map, per pair, warm, in one process
   (their time ratio, and the network's forward calls alone on the same inputs; ``--ratio``: only this);
1. seconds and peak memory per 520 x 520 pair for each sampler and step count (model: ``--model``,
   default the shipped bundle);
2. one denoising step of the FusionDiff-size network (29 M parameters) at 520 x 520, and the
   2000-step cost of the official sampler extrapolated from it;
3. training samples per second of every ``conf/model`` config (forward + backward + AdamW step);
4. tiled inference of a 3840 x 2160 pair (time, peak memory);
5. with ``--stacks``: focus stacks of 24-megapixel frames (6000 x 4000, synthetic, written as PNG to a temporary
   folder), N = ``--stack-frames`` (default 2, 8, 32, 50) fused by ``infer.py method=decision_map`` (and the
   longest one again with ``align=ecc``): seconds and the peak RSS of the whole ``infer.py`` process.

Every measurement runs in a fresh subprocess so that its peak RSS (CPU) or peak allocated memory
(CUDA) is its own. Times are the median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from fusiondiff.machine import cpu_name


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _pair(size: tuple[int, int], device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(2, 3, *size, generator=g) * 2 - 1).to(device)


def job_sample(args: dict) -> dict:
    from fusiondiff.tasks import load_pipeline

    torch.set_num_threads(args["threads"])
    pipe = load_pipeline(args["model"], device=args["device"], precision="bf16" if args.get("bf16") else "fp32")
    if not args.get("channels_last", True):  # the pipeline uses channels_last by default
        pipe.net = pipe.net.to(memory_format=torch.contiguous_format)
    sources = _pair(args["size"], args["device"])
    tile = args.get("tile_size")

    def run():
        batch = args.get("tile_batch", 1)
        pipe(sources, sampler=args["sampler"], steps=args["steps"], tile_size=tile, tile_overlap=64, tile_batch=batch)

    seconds = _time(run, args["repeats"], args["device"])
    return {"seconds": seconds, "peak_mb": _peak_mb(args["device"])}


def job_versus_decision_map(args: dict) -> dict:
    """The model at its own default steps and the classical decision map on one pair, warm, one process."""
    from fusiondiff.tasks import load_pipeline
    from fusiondiff.tasks.multifocus import decision_map

    torch.set_num_threads(args["threads"])
    pipe = load_pipeline(args["model"], device=args["device"], precision="bf16" if args.get("bf16") else "fp32")
    sources = _pair(args["size"], args["device"])

    def autocast():  # as the pipeline runs its network (EpsDenoiser)
        return torch.autocast(args["device"].split(":")[0], dtype=torch.bfloat16) if args.get("bf16") else nullcontext()

    def run_model() -> torch.Tensor:
        return pipe(sources, tile_size=None)

    calls = []  # the network's inputs in one call of the model, to time the network alone
    hook = pipe.net.register_forward_pre_hook(lambda _, a, k: calls.append((a, k)), with_kwargs=True)
    run_model()
    hook.remove()

    @torch.inference_mode()
    def run_network() -> None:
        with autocast():
            for a, k in calls:
                pipe.net(*a, **k)

    runs = [  # interleaved, so that a machine slowing down or speeding up affects all alike
        (
            _time(run_model, 1, args["device"]),
            _time(lambda: decision_map(sources[None]), 1, args["device"]),
            _time(run_network, 1, args["device"]),
        )
        for _ in range(args["repeats"])
    ]
    model, classical = statistics.median(m for m, _, _ in runs), statistics.median(c for _, c, _ in runs)
    ratio = statistics.median(m / c for m, c, _ in runs)
    out = {"model_s": model, "decision_map_s": classical, "ratio": ratio, "steps": pipe.default_steps,
           "network_s": statistics.median(n for _, _, n in runs), "network_calls": len(calls),
           "network_ratio": statistics.median(n / c for _, c, n in runs)}  # fmt: skip
    if args.get("bf16"):  # what bfloat16 changes: the largest output difference, in 8-bit levels
        bf16 = run_model()
        pipe.precision = "fp32"
        out["bf16_max_levels"] = float((bf16 - run_model()).abs().max() * 127.5)
    return out


def job_net_step(args: dict) -> dict:
    from fusiondiff.models.bundle import build_net

    torch.set_num_threads(args["threads"])
    net = build_net(args["net"]).eval().to(args["device"])
    x = torch.randn(1, 3, *args["size"], device=args["device"])
    cond = torch.randn(1, 2, 3, *args["size"], device=args["device"])
    t = torch.tensor([100], device=args["device"])

    def run():
        with torch.inference_mode():
            net(x, t, cond)

    return {"seconds": _time(run, args["repeats"], args["device"]), "peak_mb": _peak_mb(args["device"]),
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6}  # fmt: skip


def job_train(args: dict) -> dict:
    import torch.nn.functional as F

    from fusiondiff.models.bundle import build_net

    torch.set_num_threads(args["threads"])
    net = build_net(args["net"]).train().to(args["device"])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    b, c = args["batch"], args["crop"]
    x = torch.randn(b, 3, c, c, device=args["device"])
    cond = torch.randn(b, 2, 3, c, c, device=args["device"])
    t = torch.randint(0, 1000, (b,), device=args["device"])

    def run():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(net(x, t, cond), x).backward()
        opt.step()

    seconds = _time(run, args["repeats"], args["device"])
    return {
        "samples_per_s": b / seconds,
        "peak_mb": _peak_mb(args["device"]),
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
    }


PLAN = {"total": 0, "done": 0, "start": time.perf_counter()}


def in_subprocess(fn, args: dict) -> dict:
    """One measurement in a fresh process; a progress line on stderr before each (the tables go to stdout)."""
    import sys

    PLAN["done"] += 1
    k, n, elapsed = PLAN["done"], PLAN["total"], time.perf_counter() - PLAN["start"]
    eta = f", ETA {elapsed / (k - 1) * (n - k + 1):.0f} s" if k > 1 else ""
    print(f"benchmark: measurement {k}/{n} ({fn.__name__}), {elapsed:.0f} s elapsed{eta}", file=sys.stderr, flush=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, (args,))


def make_stack(folder: Path, frames: int, height: int = 4000, width: int = 6000) -> list[Path]:
    """Synthetic focus stack: a textured scene whose depth ramps from left to right; frame k is sharp where
    the depth is near k / (frames - 1) and blurred elsewhere, and drifts by 0.5 px per frame (handheld)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    sharp = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    sharp += rng.normal(0, 20, (height, width, 1)).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    depth = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(frames):
        w = np.exp(-(((depth - k / max(frames - 1, 1)) * frames) ** 2))
        frame = np.clip(w * sharp + (1 - w) * blurred, 0, 255).astype(np.uint8)
        frame = cv2.warpAffine(frame, np.float32([[1, 0, 0.5 * k], [0, 1, 0]]), (width, height), borderMode=cv2.BORDER_REFLECT)
        path = folder / f"frame{k + 1}.png"
        cv2.imwrite(str(path), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        paths.append(path)
    return paths


def job_stack(args: dict) -> dict:
    """``infer.py`` on a stack folder in a child process: wall time and the child's peak RSS."""
    import subprocess
    import sys

    cmd = [sys.executable, "infer.py", f"inputs={args['folder']}", f"output={args['output']}", "method=decision_map",
           f"align={args['align']}", "overwrite=true", "device=cpu"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"infer.py failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def stack_benchmark(args, report: dict) -> None:
    import shutil
    import tempfile

    largest = max(args.stack_frames)
    print("\n## Focus stacks of 24 MP frames (6000 x 4000, PNG), infer.py method=decision_map\n")
    print("| frames | align | seconds | peak RSS MB (whole infer.py) |\n|---|---|---|---|")
    root = Path(tempfile.mkdtemp(prefix="fusiondiff-bench-stack-"))
    rows = []
    try:
        paths = make_stack(root / "all", largest)
        runs = [(n, "none") for n in args.stack_frames] + [(largest, "ecc")]
        for n, how in runs:
            folder = root / f"n{n}"
            if not folder.exists():
                folder.mkdir()
                for p in paths[:n]:
                    (folder / p.name).symlink_to(p)
            r = in_subprocess(job_stack, {"folder": str(folder), "output": str(root / f"fused_{n}_{how}.png"), "align": how})
            rows.append({"frames": n, "align": how, **r})
            print(f"| {n} | {how} | {r['seconds']:.0f} | {r['peak_mb']:.0f} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["stacks_24mp"] = rows


def model_configs() -> dict[str, dict]:
    from omegaconf import OmegaConf

    out = {}
    for path in sorted(Path("conf/model").glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        if cfg.get("_target_") not in ("fusiondiff.models.ConditionalUNet", "fusiondiff.models.DecisionMapUNet"):
            continue  # HDR networks have their own inputs
        # resolved as for task=multifocus: 3-channel images, two sources, ε output
        out[path.stem] = cfg | {"image_channels": 3, "num_sources": 2, "source_channels": None, "out_channels": None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle or .ckpt (default: the shipped bundle)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", type=int, nargs=2, default=[520, 520], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--samplers", nargs="+", default=["ddim", "fusiondiff"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false", help="NCHW weights (for comparison)")
    parser.add_argument("--bf16", action="store_true", help="the model at precision=bf16 (GPU, or a CPU with AMX)")
    parser.add_argument("--quick", action="store_true", help="steps 1 and 4, ddim only, no 4K run")
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"))
    parser.add_argument("--stacks", action="store_true", help="only the 24 MP focus-stack table (section 5)")
    parser.add_argument("--stack-frames", type=int, nargs="+", default=[2, 8, 32, 50])
    parser.add_argument("--ratio", action="store_true", help="only the model / decision map time ratio (section 0)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.samplers = [1, 4], ["ddim"]
    dev = args.device
    header = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "device": dev,
              "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else None}  # fmt: skip
    mem = "peak GPU MB" if dev.startswith("cuda") else "peak RSS MB"
    print(
        f"# {header['cpu']}, {args.threads} threads, torch {header['torch']}, device {dev}"
        + (f" ({header['gpu']})" if header["gpu"] else "")
    )
    report: dict = {"header": header, "args": {k: str(v) for k, v in vars(args).items()}}
    common = {"device": dev, "threads": args.threads, "repeats": args.repeats, "size": tuple(args.size), "model": args.model,
              "channels_last": args.channels_last, "bf16": args.bf16}  # fmt: skip

    PLAN["total"] = 1
    print(f"\n## Model vs classical decision map, {args.size[0]} x {args.size[1]} pair, warm, one process, "
          f"{args.repeats} interleaved pairs (medians)\n")  # fmt: skip
    r = in_subprocess(job_versus_decision_map, common)
    print(f"model ({r['steps']} step{'s' if r['steps'] != 1 else ''}{', bf16 autocast' if args.bf16 else ''}): "
          f"{r['model_s']:.3f} s, decision map: "
          f"{r['decision_map_s']:.3f} s, ratio {r['ratio']:.1f}x")  # fmt: skip
    calls = f"{r['network_calls']} call{'s' if r['network_calls'] != 1 else ''}"
    print(
        f"the network alone ({calls}, same inputs): {r['network_s']:.3f} s, {r['network_ratio']:.1f}x the decision map; "
        f"the rest of the model's call {r['model_s'] - r['network_s']:.3f} s"
    )
    if "bf16_max_levels" in r:
        print(f"bfloat16 vs float32 output: largest difference {r['bf16_max_levels']:.2f} 8-bit levels")
    report["versus_decision_map"] = r
    if args.ratio:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        return
    if args.stacks:
        PLAN["total"] = len(args.stack_frames) + 2
        stack_benchmark(args, report)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwritten {args.json}")
        return
    PLAN["total"] = 1 + len(args.samplers) * len(args.steps) + 1 + len(model_configs()) + (0 if args.quick else 1)
    print(f"\n## Fusing one {args.size[0]} x {args.size[1]} pair (model: {args.model or 'shipped bundle'})\n")
    print(f"| sampler | steps | seconds | {mem} |\n|---|---|---|---|")
    rows = []
    for sampler in args.samplers:
        for steps in args.steps:
            r = in_subprocess(job_sample, common | {"sampler": sampler, "steps": steps, "tile_size": None})
            rows.append({"sampler": sampler, "steps": steps, **r})
            print(f"| {sampler} | {steps} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |", flush=True)
    report["sampling"] = rows

    print("\n## FusionDiff-size network (one step, batch 1) and the official 2000-step sampler\n")
    cfgs = model_configs()
    r = in_subprocess(job_net_step, common | {"net": cfgs["fusiondiff"], "repeats": max(1, args.repeats - 1)})
    r["extrapolated_2000_steps_s"] = 2000 * r["seconds"]
    report["fusiondiff_step"] = r
    print(f"| params | s / step | 2000 steps (extrapolated) | {mem} |\n|---|---|---|---|")
    print(
        f"| {r['params_m']:.1f} M | {r['seconds']:.2f} | {r['extrapolated_2000_steps_s'] / 3600:.2f} h | {r['peak_mb']:.0f} |",
        flush=True,
    )

    print("\n## Training throughput (64 px crops, batch 8, forward + backward + AdamW)\n")
    print(f"| model | params | samples / s | {mem} |\n|---|---|---|---|")
    report["training"] = {}
    for name, net in cfgs.items():
        r = in_subprocess(job_train, common | {"net": net, "batch": 8, "crop": 64})
        report["training"][name] = r
        print(f"| {name} | {r['params_m']:.2f} M | {r['samples_per_s']:.1f} | {r['peak_mb']:.0f} |", flush=True)

    if not args.quick:
        print("\n## Tiled 3840 x 2160 pair (ddim, 1 step, 512 px windows, 64 px overlap)\n")
        r = in_subprocess(
            job_sample, common | {"sampler": "ddim", "steps": 1, "tile_size": 512, "size": (2160, 3840), "repeats": 1}
        )
        report["tiled_4k"] = r
        print(f"| seconds | {mem} |\n|---|---|\n| {r['seconds']:.1f} | {r['peak_mb']:.0f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
