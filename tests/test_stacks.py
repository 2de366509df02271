"""Focus stacks: N frames for every method, registration (pinned transforms), bounded-memory tiling, depth
map, valid region, 8/16-bit PNG/TIFF with the reference frame's EXIF and ICC profile."""

import json
import math

import cv2
import numpy as np
import pytest
import torch

from fusiondiff import align, stacking
from fusiondiff.align import AlignConfig
from fusiondiff.cli.infer import infer
from fusiondiff.data.io import read_image, write_image
from fusiondiff.data.layered import LayeredDefocus
from fusiondiff.data.stacks import Metadata, natural_key, read_metadata, stack_files
from fusiondiff.errors import ConfigError, InputError
from fusiondiff.focus import decision_weights
from fusiondiff.metrics import REFERENCE_METRICS
from fusiondiff.tasks import load_pipeline
from fusiondiff.tasks.multifocus import CLASSICAL_METHODS

from helpers import compose_config, write_tiny_bundle


def to_u8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def save(path, arr: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, arr[:, :, ::-1] if arr.ndim == 3 and arr.shape[2] == 3 else arr)
    path.write_bytes(data.tobytes())
    return path


def similarity(h, w, dx, dy, degrees, scale):
    """The 3x3 matrix of a similarity about the image centre (maps reference to frame coordinates)."""
    c = np.array([w / 2, h / 2])
    r = math.radians(degrees)
    a = scale * np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return np.vstack([np.hstack([a, (c + [dx, dy] - a @ c)[:, None]]), [0, 0, 1]])


def corner_error(m1, m2, h, w) -> float:
    pts = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float).T
    p1, p2 = m1 @ pts, m2 @ pts
    return float(np.hypot(*(p1[:2] / p1[2] - p2[:2] / p2[2])).max())


@pytest.fixture(scope="module")
def stack8():
    data = LayeredDefocus(photos=["coffee", "rocket", "astronaut", "chelsea"], num_samples=3, size=64, planes=8, layers=(3, 3),
                          radius=(2.0, 6.0), deterministic=True, seed=3)  # fmt: skip
    return [data[i] for i in range(3)]


def test_natural_order_of_folders_and_globs(tmp_path):
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img2b.png", "img10.png"]
    frame = np.zeros((8, 8, 3), np.uint8)
    for n in names:
        save(tmp_path / "stack" / n, frame)
    (tmp_path / "stack" / "notes.txt").write_text("x")
    expected = [tmp_path / "stack" / n for n in ["IMG1.png", "img2.png", "img2b.png", "img10.png"]]
    assert stack_files(tmp_path / "stack") == expected
    assert stack_files(str(tmp_path / "stack" / "img*.png")) == expected[1:]
    assert stack_files([expected[3], expected[0]]) == [expected[3], expected[0]]  # a list keeps its order
    with pytest.raises(InputError, match="matches 0 image"):
        stack_files(str(tmp_path / "stack" / "*.tif"))
    with pytest.raises(FileNotFoundError, match="image not found"):
        stack_files([expected[0], tmp_path / "nope.png"])


def test_classical_methods_fuse_eight_frames_and_beat_the_mean(stack8):
    for item in stack8:
        sources, truth = item["sources"], item["target"]
        assert sources.shape[0] == 8
        mean_psnr = REFERENCE_METRICS["psnr"](CLASSICAL_METHODS["average"](sources), truth).item()
        for name in ("decision_map", "laplacian_pyramid", "guided_filter"):
            fused = CLASSICAL_METHODS[name](sources)
            assert REFERENCE_METRICS["psnr"](fused, truth).item() > mean_psnr + 2, name


def test_tiled_and_spilled_stack_fusion_equals_whole_image_fusion(stack8, tmp_path, monkeypatch):
    """The bounded-memory path (frames in a temp folder, 64 px tiles) gives the decision map and the mean
    exactly as the whole-image functions; the depth map is the decision map's choice."""
    sources = torch.cat([stack8[0]["sources"], stack8[1]["sources"]], dim=-1)  # 64 x 128, 8 frames
    paths = [save(tmp_path / f"f{k}.png", to_u8(s)) for k, s in enumerate(sources)]
    loaded = torch.stack([read_image(p) for p in paths])
    monkeypatch.setattr(stacking, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(stacking, "TILE_BUDGET_BYTES", 8 * 3 * 4 * (64 + 2 * 32) ** 2)  # 64 px tiles + 32 px margins
    assert stacking.tile_side(8, 3, 32, 64, 128) == 64
    for name in ("decision_map", "average"):
        result = stacking.fuse_stack(paths, CLASSICAL_METHODS[name], margin=stacking.MARGINS[name], depth=True)
        assert torch.equal(result.fused, CLASSICAL_METHODS[name](loaded)), name
    expected = decision_weights(loaded[None])[0, :, 0].argmax(0).numpy()
    assert np.array_equal(result.depth, expected) and result.valid.all()
    assert not list(tmp_path.glob("fusiondiff-stack-*"))


def test_a_two_source_model_is_chained_over_a_stack(tmp_path):
    pipe = load_pipeline(write_tiny_bundle(tmp_path / "tiny.safetensors", task={"name": "multifocus"}))
    frames = torch.rand(3, 3, 16, 16) * 2 - 1

    def run(s):
        return pipe(s, steps=2, seed=0)

    fused = stacking.chained(run)(frames)
    assert torch.equal(fused, run(torch.stack([run(frames[:2]), frames[2]])))


@pytest.mark.parametrize("motion", ["affine", "homography"])
def test_ecc_recovers_a_known_similarity_between_differently_focused_frames(motion):
    """The default (ECC, affine) within 0.25 px on every corner; a full homography (8 free parameters) 0.4 px."""
    data = LayeredDefocus(photos=["coffee", "rocket", "astronaut", "chelsea"], num_samples=4, size=192, radius=(1.0, 4.0),
                          deterministic=True, seed=5)  # fmt: skip
    rng = np.random.default_rng(1)
    for i in range(4):
        a, b = (to_u8(s) for s in data[i]["sources"])
        h, w = a.shape[:2]
        truth = similarity(h, w, *rng.uniform(-4, 4, 2), rng.uniform(-1, 1), 1 + rng.uniform(-0.01, 0.01))
        moved = cv2.warpAffine(b, truth[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        ga, _ = align.working_image(a)
        gb, _ = align.working_image(moved)
        found, _ = align.register_pair(ga, gb, AlignConfig("ecc", motion=motion))
        assert corner_error(found, truth, h, w) < {"affine": 0.25, "homography": 0.4}[motion], i


def drifting_frames(num: int, h: int = 160, w: int = 200, shift: float = 1.5, zoom: float = 0.002):
    """Frames of one sharp photo drifting ``shift`` px right and growing ``zoom`` per frame about the centre:
    frame k at pixel p shows the scene at m_k p. Returns the frames and the m_k."""
    from skimage import data

    big = cv2.resize(data.astronaut(), (w + 80, h + 80), interpolation=cv2.INTER_AREA)
    offset = np.array([[1, 0, 40], [0, 1, 40], [0, 0, 1]], float)
    frames, ms = [], []
    for k in range(num):
        m = similarity(h, w, shift * (k - num // 2), 0.0, 0.0, 1 + zoom * (k - num // 2))
        frames.append(cv2.warpAffine(big, (offset @ m)[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
        ms.append(m)
    return frames, ms


def test_feature_homography_recovers_a_known_transform():
    (a, b), (ma, mb) = drifting_frames(2, h=240, w=320, shift=3.0, zoom=0.01)
    ga, _ = align.working_image(a)
    gb, _ = align.working_image(b)
    found, inliers = align.register_pair(ga, gb, AlignConfig("homography"))
    assert inliers >= 12 and corner_error(found, np.linalg.inv(mb) @ ma, 240, 320) < 0.5


def test_chained_registration_of_a_drifting_stack_and_the_valid_region(tmp_path):
    """Five frames drifting 1.5 px right and 0.2 % larger each: chained through neighbours to the middle
    frame, each transform to the reference within 0.25 px; the output keeps the reference's size, the
    valid mask is false exactly along the uncovered edges, and those pixels are filled (no black border)."""
    h, w = 160, 200
    frames, ms = drifting_frames(5, h, w)
    truths = [np.linalg.inv(m) for m in ms]  # frame k at p shows the scene at m_k p: reference -> frame k = m_k^-1 m_2
    paths = [save(tmp_path / f"frame{k + 1}.png", f) for k, f in enumerate(frames)]
    result = stacking.fuse_stack(paths, CLASSICAL_METHODS["decision_map"], AlignConfig("ecc"), margin=16)
    assert result.reference == 2 and result.fused.shape == (3, h, w)
    for k, reg in enumerate(result.registrations):
        expected = truths[k] @ np.linalg.inv(truths[2])
        assert reg.status == ("reference" if k == 2 else "ok")
        assert corner_error(np.asarray(reg.matrix), expected, h, w) < 0.25 * max(1, abs(k - 2)), k  # per link
    middle = result.valid[h // 2]  # frames 0 and 4 are shifted by 3 px: their edge columns are missing
    assert not middle[:2].any() and not middle[-2:].any() and result.valid[8:-8, 8:-8].all()
    assert (result.fused[:, :, :2] > -0.99).any() and torch.isfinite(result.fused).all()


def test_a_frame_that_cannot_be_registered_is_reported_and_left_out(tmp_path, caplog):
    data = LayeredDefocus(photos=["coffee", "rocket"], num_samples=1, size=96, planes=3, deterministic=True, seed=2)
    frames = [to_u8(s) for s in data[0]["sources"]]
    frames[2] = np.random.default_rng(0).integers(0, 256, frames[2].shape, dtype=np.uint8)  # noise, not the scene
    paths = [save(tmp_path / f"f{k}.png", f) for k, f in enumerate(frames)]
    result = stacking.fuse_stack(paths, CLASSICAL_METHODS["decision_map"], AlignConfig("ecc"), margin=16)
    statuses = [r.status for r in result.registrations]
    assert statuses[:2] == ["ok", "reference"] and statuses[2] in ("failed", "implausible")
    assert "f2.png" in caplog.text and "left out" in caplog.text
    only = stacking.fuse_stack(paths[:2], CLASSICAL_METHODS["decision_map"], AlignConfig("ecc", reference="last"), margin=16)
    assert torch.equal(result.fused, only.fused)  # the bad frame did not take part
    with pytest.raises(InputError, match="could be registered"):
        stacking.fuse_stack([paths[1], paths[2]], CLASSICAL_METHODS["decision_map"], AlignConfig("ecc", reference="first"))


def test_align_settings_are_checked():
    with pytest.raises(ConfigError, match="unknown align method"):
        AlignConfig("sift").check()
    with pytest.raises(ConfigError, match="not a frame of this 3-frame stack"):
        AlignConfig("ecc", reference=5).check(3)
    with pytest.raises(ConfigError, match="align.motion"):
        AlignConfig("ecc", motion="projective").check()
    assert AlignConfig(reference="middle").reference_index(4) == 1


def test_metadata_is_carried_into_png_jpeg_and_tiff(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    icc = b"\x00\x00\x01\x00fake-profile" * 40
    meta = Metadata(exif=exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else exif.tobytes(), icc=icc)
    image = torch.linspace(-1, 1, 24).expand(3, 20, 24) * torch.tensor([1.0, 0.5, -0.8])[:, None, None]
    for name, bits in (("o.png", 8), ("o16.png", 16), ("o.jpg", 8), ("o.tif", 16)):
        out = write_image(tmp_path / name, image, bit_depth=bits, metadata=meta)
        back = read_metadata(out)
        assert back.icc == icc, name
        if not name.endswith(".tif"):
            with Image.open(out) as im:
                assert im.getexif().get(0x010F) == "TestCam", name
        plain = write_image(tmp_path / f"plain_{name}", image, bit_depth=bits)
        assert torch.equal(read_image(out), read_image(plain)), name  # the pixels are those of a file without metadata


def test_infer_fuses_a_stack_folder_with_alignment_depth_mask_and_16_bit_tiff(tmp_path):
    data = LayeredDefocus(photos=["coffee", "rocket"], num_samples=1, size=96, planes=3, deterministic=True, seed=5)
    frames = [((s.clamp(-1, 1) + 1) / 2 * 65535).round().to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)
              for s in data[0]["sources"]]  # fmt: skip
    folder = tmp_path / "stack"
    for k, f in zip((10, 2, 1), frames, strict=True):  # natural order: s1, s2, s10 = frames 2, 1, 0
        save(folder / f"s{k}.tif", f)
    out = tmp_path / "out" / "fused.tif"
    cfg = compose_config("infer", [f"inputs={folder}", f"output={out}", "method=decision_map", "align=ecc", "depth=true",
                                   "valid_mask=true", "bit_depth=16"])  # fmt: skip
    written = infer(cfg)
    assert {p.name for p in written} == {"fused.tif", "fused_depth.png", "fused_depth.npy", "fused_depth_preview.png",
                                         "fused_valid.png", "fused.transforms.json"}  # fmt: skip
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused.dtype == np.uint16 and fused.shape == (96, 96, 3)
    report = json.loads((tmp_path / "out" / "fused.transforms.json").read_text())
    assert report["reference"] == 1 and [f["status"] for f in report["frames"]] == ["ok", "reference", "ok"]
    depth = np.load(tmp_path / "out" / "fused_depth.npy")
    assert set(np.unique(depth)) <= {0, 1, 2} and len(np.unique(depth)) >= 2
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "fused_depth.png"), cv2.IMREAD_UNCHANGED), depth.astype(np.uint16))
    truth = data[0]["target"]
    best_frame = max(REFERENCE_METRICS["psnr"](read_image(p), truth) for p in folder.iterdir())
    assert REFERENCE_METRICS["psnr"](read_image(out), truth) > best_frame + 1


def test_infer_chains_the_model_over_three_frames_instead_of_refusing(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "tiny.safetensors", task={"name": "multifocus"})
    frames = [save(tmp_path / "in" / f"f{k}.png", np.random.default_rng(k).integers(0, 256, (24, 20, 3), dtype=np.uint8))
              for k in range(3)]  # fmt: skip
    out = tmp_path / "fused.png"
    (written,) = infer(compose_config("infer", [f"ckpt={bundle}", f"inputs=[{','.join(map(str, frames))}]", f"output={out}",
                                                "sampler.steps=2"]))  # fmt: skip
    pipe = load_pipeline(bundle)
    loaded = torch.stack([read_image(p) for p in frames])
    expected = stacking.chained(lambda s: pipe(s, steps=2, seed=0))(loaded)
    assert torch.equal(read_image(written), read_image(write_image(tmp_path / "e.png", expected)))


def write_tiny_stack_bundle(path):
    """A tiny FrameSharedUNet blend model (random weights) as an inference bundle."""
    from safetensors.torch import save_file

    from fusiondiff.models import FrameSharedUNet

    net_cfg = {"_target_": "fusiondiff.models.FrameSharedUNet", "image_channels": 3, "base_channels": 8, "channel_mult": [1, 2],
               "num_res_blocks": 1, "frames_per_pass": 3}  # fmt: skip
    torch.manual_seed(0)
    net = FrameSharedUNet(**{k: v for k, v in net_cfg.items() if k != "_target_"})
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    meta = {"net": net_cfg, "schedule": {"name": "cosine", "num_timesteps": 100}, "prediction": "blend",
            "residual": "decision_map", "task": {"name": "multifocus"}, "sampler": {"steps": 1}}  # fmt: skip
    save_file(net.state_dict(), str(path), metadata={"fusiondiff": json.dumps(meta)})
    return path


def test_the_n_frame_model_takes_any_count_in_any_order(tmp_path):
    """FrameSharedUNet + blend: 2..7 frames, chunked passes equal one pass, shuffling the frames does not
    change the fused image (but at ties of the decision-map prior), every pixel is
    a convex combination of the frames."""
    pipe = load_pipeline(write_tiny_stack_bundle(tmp_path / "stack.safetensors"))
    assert pipe.num_sources is None
    gen = torch.Generator().manual_seed(0)
    for n in (2, 4, 7):
        frames = LayeredDefocus(photos=["coffee", "rocket"], num_samples=1, size=32, planes=n, deterministic=True)[0]["sources"]
        fused = pipe(frames, seed=0)
        perm = torch.randperm(n, generator=gen)
        same = (pipe(frames[perm], seed=0) - fused).abs().amax(0) < 1e-5
        assert same.float().mean() > 0.95, n  # all but near ties of the decision-map prior (the first frame wins)
        assert (fused >= frames.amin(0) - 1e-5).all() and (fused <= frames.amax(0) + 1e-5).all()
    pipe.net.frames_per_pass = 16
    assert torch.allclose(pipe(frames, seed=0), fused, atol=1e-6)  # 3 passes of 3, 3, 1 frames = one pass of 7


def test_stack_batches_share_a_frame_count_and_keep_every_layer_plane():
    from fusiondiff.data.layered import StackBatches

    data = LayeredDefocus(photos=["coffee", "rocket", "astronaut"], num_samples=8, size=32, planes=6, layers=(2, 4),
                          deterministic=True, seed=1)  # fmt: skip
    items = [data[i] for i in range(8)]
    collate = StackBatches(frames=(2, 6), seed=0)
    batch = collate(items)
    n = batch["sources"].shape[1]
    assert batch["sources"].shape[0] == 8 and max(int(it["planes"].sum()) for it in items) <= n <= 6
    for it, sources in zip(items, batch["sources"], strict=True):
        kept = [k for k in range(6) if any(torch.equal(sources[j], it["sources"][k]) for j in range(n))]
        assert set(torch.nonzero(it["planes"]).flatten().tolist()) <= set(kept) and kept == sorted(kept)
    assert torch.equal(collate(items)["sources"], batch["sources"])  # a function of the batch (exact resume)
    assert "planes" not in batch and "depth" not in batch


def test_the_stack_and_misaligned_suites(tmp_path):
    """suite=stack scores N-frame methods against ground truth (a native N-frame model and the same model
    chained); suite=misaligned on exactly registered pairs: the exact inverse warp beats no alignment by
    far, and ECC closes most of that gap."""
    from fusiondiff.cli.evaluate import evaluate

    bundle = write_tiny_stack_bundle(tmp_path / "stack.safetensors")
    cfg = compose_config("evaluate", ["suite=stack", "num=2", "frames=4", "size=[48,48]", f"output_dir={tmp_path / 's'}",
                                      f"methods=[decision_map,average,model:{bundle},chained:{bundle}]"])  # fmt: skip
    summary = evaluate(cfg)
    assert summary["decision_map"]["psnr"]["mean"] > summary["average"]["psnr"]["mean"]
    assert any(label.endswith("chained") for label in summary) and len(summary) == 4
    cfg = compose_config("evaluate", ["suite=misaligned", "dataset=layered", "num=3", "size=[128,128]", "methods=[decision_map]",
                                      f"output_dir={tmp_path / 'm'}"])  # fmt: skip
    summary = evaluate(cfg)
    none, ecc, exact = (summary[f"decision_map | align={a}"]["qabf"]["mean"] for a in ("none", "ecc", "exact"))
    assert exact > none + 0.05 and ecc - none > 0.8 * (exact - none)


def test_misaligned_registered_removes_the_pairs_own_misregistration(tmp_path):
    """registered=true: a pair whose B is 0.6 % larger than A (focus breathing) is first brought into A's
    geometry by the pair's own ECC estimate, so the scores' reference pair is registered; without it B keeps
    the scale change."""
    from fusiondiff.tasks.multifocus import misaligned_pairs

    rng = np.random.default_rng(3)
    a = cv2.GaussianBlur(cv2.resize(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), (160, 160)), (0, 0), 1.5)
    zoom = cv2.getRotationMatrix2D((80, 80), 0, 1.006)
    b = cv2.warpAffine(a, zoom, (160, 160), borderMode=cv2.BORDER_REFLECT)
    for k, image in enumerate((a, b), start=1):
        (tmp_path / f"source_{k}").mkdir()
        cv2.imwrite(str(tmp_path / f"source_{k}" / "p1.png"), image)
    errors = {}
    for registered in (False, True):
        cfg = compose_config("evaluate", ["suite=misaligned", f"dataset={tmp_path}", "move=false", f"registered={registered}"])
        item = misaligned_pairs(cfg)[0].load()
        m = item["margin"]
        errors[registered] = (item["original"][0] - item["original"][1])[..., m:-m, m:-m].abs().mean().item()
    # the floor: B brought back by the exact inverse zoom (what bilinear resampling alone leaves)
    back = cv2.warpAffine(b, zoom, (160, 160), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    m = item["margin"]
    floor = np.abs(back.astype(np.float32) - a.astype(np.float32))[m:-m, m:-m].mean() / 127.5
    assert errors[True] < 1.5 * floor and errors[False] > 2 * errors[True], (errors, floor)


def test_the_shipped_n_frame_model_beats_chaining_itself_and_the_decision_map_on_held_out_stacks():
    """ckpt=multifocus_stack (shipped; trained on layered stacks of scikit-image training photos and NYU-D
    1-80): on held-out 6-frame stacks of coffee / rocket it is better than the same model fused pair by pair,
    and than the decision map (mean PSNR over 4 scenes; suite=stack in README measures 100 scenes)."""
    pipe = load_pipeline("multifocus_stack")
    assert pipe.num_sources is None
    data = LayeredDefocus(photos=["coffee", "rocket"], num_samples=4, size=64, planes=6, layers=(3, 4), deterministic=True,
                          seed=11)  # fmt: skip

    def run(s):
        return pipe(s, seed=0)

    scores = {"native": [], "chained": [], "decision_map": []}
    for i in range(4):
        sources, truth = data[i]["sources"], data[i]["target"]
        for name, fused in (("native", run(sources)), ("chained", stacking.chained(run)(sources)),
                            ("decision_map", CLASSICAL_METHODS["decision_map"](sources))):  # fmt: skip
            scores[name].append(REFERENCE_METRICS["psnr"](fused, truth).item())
    mean = {k: sum(v) / len(v) for k, v in scores.items()}
    assert mean["native"] > mean["chained"] + 1 and mean["native"] > mean["decision_map"], mean
