"""The layered defocus generator: the defocus spread, the boundary band where no blend of the sources is right,
depth maps, determinism; and the held-out benchmark suite with band metrics."""

import pytest
import torch

from fusiondiff.data.layered import LayeredDefocus, layer_alpha, render


def scenes(**kwargs):
    args = {"photos": ["astronaut", "chelsea", "coffee"], "num_samples": 6, "size": 96, "deterministic": True,
            "seed": 3, "min_band": 0.005} | kwargs  # fmt: skip
    return LayeredDefocus(**args)


def test_a_blurred_foreground_spreads_over_the_sharp_background():
    """One flat foreground disk in front of a textured background, the pair focused on background / disk:
    in the background-focused source the disk's blur covers background pixels beside its outline (alpha 0
    there), and far from the outline both sources are exact copies of the truth."""
    gen = torch.Generator().manual_seed(0)
    background = torch.rand(3, 64, 64, generator=gen) * 2 - 1
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    alpha = (((yy - 32) ** 2 + (xx - 32) ** 2) < 12**2).float()[None]
    colour = torch.tensor([0.9, -0.8, 0.2]).reshape(3, 1, 1).expand(3, 64, 64)
    (focus_bg, focus_fg), truth = render([(background, torch.ones(1, 64, 64), 0), (colour, alpha, 1)], 2, 5.0, "disk")
    dist = ((yy - 32) ** 2 + (xx - 32) ** 2).sqrt()
    ring = (dist > 13) & (dist < 16)  # background, just outside the outline
    assert (alpha[0][ring] == 0).all() and (truth[:, ring] == background[:, ring]).all()
    spread = (focus_bg - truth).abs().amax(0)
    assert spread[ring].mean() > 0.1  # the red of the blurred disk lies over the sharp background
    far = dist > 12 + 5 + 2
    assert torch.allclose(focus_bg[:, far], truth[:, far], atol=1e-6)  # sharp background, untouched
    inside = dist < 12 - 5 - 2
    assert torch.allclose(focus_fg[:, inside], truth[:, inside], atol=1e-6)  # the sharp disk itself


def test_views_move_and_expose_each_source_and_the_truth_follows_the_sharp_source():
    """render(views=): source k sees the scene moved by (dx, dy) and exposed by its gain; the truth shows the
    background as the background-focused source sees it and the disk as the disk-focused source does."""
    gen = torch.Generator().manual_seed(1)
    background = torch.rand(3, 64, 64, generator=gen) * 1.6 - 0.8
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    dist = ((yy - 32) ** 2 + (xx - 32) ** 2).sqrt()
    alpha = (dist < 12).float()[None]
    colour = torch.tensor([0.6, -0.5, 0.2]).reshape(3, 1, 1).expand(3, 64, 64)
    layers = [(background, torch.ones(1, 64, 64), 0), (colour, alpha, 1)]
    plain, plain_truth = render(layers, 2, 4.0, "disk")
    assert torch.equal(render(layers, 2, 4.0, "disk", [(0, 0, 1), (0, 0, 1)])[0], plain)
    moved, truth = render(layers, 2, 4.0, "disk", [(2.0, 0.0, 1.1), (0.0, -1.0, 0.9)])
    torch.testing.assert_close(moved[0][..., 2:], (plain[0][..., :-2] + 1) * 1.1 - 1, atol=1e-5, rtol=0)  # 2 px right
    up = (plain[1][..., 1:, :] + 1) * 0.9 - 1  # 1 px up (away from the borders, where the blur sees the padding)
    torch.testing.assert_close(moved[1][..., 6:-7, 6:-6], up[..., 6:-6, 6:-6], atol=1e-5, rtol=0)
    inside, outside = dist < 10, dist > 20  # beyond the disk, its move and its blur
    torch.testing.assert_close(truth[:, inside], (colour[:, inside] + 1) * 0.9 - 1)  # the disk as source 1 sees it
    torch.testing.assert_close(truth[:, outside & (xx > 3)], moved[0][:, outside & (xx > 3)], atol=1e-5, rtol=0)
    assert not torch.allclose(truth, plain_truth, atol=0.05)


def test_in_the_band_no_source_and_no_blend_of_them_is_right():
    data = scenes()
    for i in range(len(data)):
        d = data[i]
        a, b = d["sources"]
        truth, band = d["target"], d["band"][0]
        assert band.dtype == torch.bool and 0.005 <= band.float().mean() < 0.6
        errors = (d["sources"] - truth).abs().amax(1)
        assert (errors[:, band] > data.band_threshold).all()
        assert ((errors.amin(0) <= data.band_threshold) | band).all()  # outside the band some source is right
        # the best per-pixel convex blend (an oracle decision map / guided filter) still misses most of the band
        diff = a - b
        w = (((truth - b) * diff).sum(0) / diff.pow(2).sum(0).clamp_min(1e-12)).clamp(0, 1)
        oracle = (w * a + (1 - w) * b - truth).abs().amax(0)
        assert (oracle[band] > data.band_threshold / 2).float().mean() > 0.7


def test_scenes_are_deterministic_or_fresh_and_have_depth_maps():
    first, again = scenes()[2], scenes()[2]
    assert all(torch.equal(first[k], again[k]) for k in ("sources", "target", "band", "depth"))
    assert not torch.equal(scenes()[3]["target"], first["target"])
    fresh = scenes(deterministic=False)
    assert not torch.equal(fresh[0]["sources"], fresh[0]["sources"])
    stack = scenes(planes=3, layers=(3, 3), size=(48, 64))[1]
    assert stack["sources"].shape[0] == 3 and 48 <= stack["target"].shape[-1] <= 64
    assert set(stack["depth"].unique().tolist()) <= {0, 1, 2} and len(stack["depth"].unique()) >= 2
    # depth names the sharpest source: where it says k, source k is (nearly) the truth away from edges
    for k in range(3):
        where = stack["depth"][0] == k
        if where.any():
            close = ((stack["sources"][k] - stack["target"]).abs().amax(0)[where] < 0.03).float().mean()
            assert close > 0.5


def test_shapes_noise_and_jpeg():
    gen = torch.Generator().manual_seed(1)
    for kind in ("blob", "object", "thin"):
        alpha = layer_alpha(64, kind, gen)
        assert alpha.shape == (1, 64, 64) and 0 <= alpha.min() and alpha.max() <= 1
        assert 0.005 < alpha.mean() < 0.95 and ((alpha > 0.01) & (alpha < 0.99)).any()  # soft edges
    thin = layer_alpha(64, "thin", gen)
    assert thin.mean() < 0.3  # lines, not areas
    clean, stored = scenes(num_samples=2)[0], scenes(num_samples=2, noise=(0.01, 0.01), jpeg=1.0)[0]
    assert torch.equal(clean["target"], stored["target"]) and not torch.equal(clean["sources"], stored["sources"])
    assert (stored["sources"] - clean["sources"]).abs().mean() < 0.05 and stored["sources"].abs().max() <= 1
    with pytest.raises(ValueError, match="unknown kernel/shape"):
        scenes(shapes=("star",))
    no_maps = scenes(maps=False)[0]
    assert set(no_maps) == {"sources", "target", "name"}


def test_the_layered_suite_scores_inside_the_band(tmp_path):
    """scripts/evaluate.py task=multifocus suite=layered: band metrics beside the whole-image ones; the
    band PSNR is the PSNR of the band pixels alone (checked against a direct computation)."""
    import json

    from omegaconf import open_dict

    from fusiondiff.cli.evaluate import evaluate
    from fusiondiff.metrics import psnr
    from fusiondiff.tasks import get_task
    from fusiondiff.tasks.multifocus import decision_map

    from helpers import compose_config

    cfg = compose_config("evaluate", ["suite=layered", "num=3", "size=[48,64]", f"output_dir={tmp_path}",
                                      "methods=[decision_map,laplacian_pyramid]",
                                      "metrics=[psnr,psnr_band,lpips_band,qabf]"])  # fmt: skip
    summary = evaluate(cfg)
    assert set(summary["decision_map"]) >= {"psnr", "psnr_band", "lpips_band", "qabf"}
    report = json.loads((tmp_path / "summary.json").read_text())
    assert "paired" in report
    with open_dict(cfg):
        cfg.methods = None
    evaluation = get_task("multifocus").evaluation(cfg)
    d = evaluation.items[0].load()
    band = d["band"]
    fused = decision_map(d["sources"])
    expected = 10 * torch.log10(4 / ((fused - d["target"]).double() ** 2).mean(0)[band[0]].mean())
    assert psnr(fused, d["target"], mask=band).item() == pytest.approx(expected.item(), rel=1e-9)
    rows = [r for r in (tmp_path / "per_image.csv").read_text().splitlines()[1:] if r.startswith("decision_map")]
    assert float(rows[0].split(",")[5]) == pytest.approx(expected.item(), rel=1e-6)  # psnr_band column


def test_decision_boundary_models_copy_the_decision_map_away_from_its_switches():
    """residual=decision_boundary: whatever the network outputs, pixels farther than BOUNDARY_RADIUS + 2 px
    from a decision-map switch are the classical decision map exactly; near the switch the network acts."""
    from fusiondiff.focus import decision_weights
    from fusiondiff.tasks import get_task
    from fusiondiff.tasks.multifocus import BOUNDARY_RADIUS, CLASSICAL_METHODS

    scene = scenes(num_samples=1, size=64, seed=5)[0]
    sources = scene["sources"][None]
    conditioning = get_task("multifocus").conditioning("blend", "decision_boundary")
    out = torch.randn(1, 2 + 3, 64, 64, generator=torch.Generator().manual_seed(0))  # any network output
    fused = conditioning.blend(out, sources)
    expected = CLASSICAL_METHODS["decision_map"](sources)
    w = decision_weights(sources)[:, 0, 0]
    switch = (torch.nn.functional.max_pool2d(w[None], 3, 1, 1) + torch.nn.functional.max_pool2d(-w[None], 3, 1, 1))[0] > 0.5
    assert switch.any() and not switch.all()
    far = torch.nn.functional.max_pool2d(switch.float()[None], 2 * (BOUNDARY_RADIUS + 2) + 1, 1, BOUNDARY_RADIUS + 2)[0] == 0
    near = switch.expand_as(far)
    assert far.any() and torch.equal(fused[:, :, far[0]], expected[:, :, far[0]])
    assert (fused - expected).abs()[:, :, near[0]].mean() > 0.05


def test_decision_boundary_output_snaps_small_departures_to_the_decision_map():
    """At inference (Conditioning.finish) a departure from the decision map below BOUNDARY_SNAP becomes the
    decision map exactly, one above 2 x BOUNDARY_SNAP stays as the model made it, linear in between; the
    training path (Conditioning.blend) never snaps."""
    from fusiondiff.tasks import get_task
    from fusiondiff.tasks.multifocus import BOUNDARY_SNAP, CLASSICAL_METHODS

    sources = scenes(num_samples=1, size=32, seed=3)[0]["sources"][None]
    conditioning = get_task("multifocus").conditioning("blend", "decision_boundary")
    copy = CLASSICAL_METHODS["decision_map"](sources)
    change = torch.zeros_like(copy)
    change[..., :8] = 0.5 * BOUNDARY_SNAP  # small: dropped
    change[..., 8:16] = 1.5 * BOUNDARY_SNAP  # halfway: half kept
    change[..., 16:24] = -3 * BOUNDARY_SNAP  # large: kept
    change[:, 1:, :, 24:] = 2.5 * BOUNDARY_SNAP  # one channel large: the whole pixel kept
    out = conditioning.finish(copy + change, sources)
    assert torch.equal(out[..., :8], copy[..., :8])
    assert torch.allclose(out[..., 8:16] - copy[..., 8:16], torch.full_like(copy[..., 8:16], 0.75 * BOUNDARY_SNAP), atol=1e-6)
    assert torch.allclose(out[..., 16:], (copy + change)[..., 16:], atol=1e-6)
    assert get_task("multifocus").conditioning("blend", "decision_map").finish is None


def test_pipeline_applies_finish_once_to_the_sampled_image(tmp_path):
    """FusionPipeline runs its conditioning's ``finish`` on the sampler's result (inference only)."""
    from dataclasses import replace

    from fusiondiff.tasks import load_pipeline

    pipe = load_pipeline()
    sources = scenes(num_samples=1, size=32, seed=3)[0]["sources"]
    plain = pipe(sources)
    calls = []
    pipe.conditioning = replace(pipe.conditioning, finish=lambda fused, src: calls.append(src.shape) or -fused)
    assert torch.equal(pipe(sources), -plain) and calls == [(1, 2, 3, 32, 32)]


def test_boundary_gate_leaves_out_small_islands_of_the_decision_map():
    """With the island filter (islands=15) an island of the other source (6 x 6 px) far from the real focus
    boundary gets no gate (a patch, not a boundary); the boundary between the two halves keeps it; without
    the filter (the default, ISLAND_RADIUS = 0) the island's edges are gated too; the gate never reaches
    farther than BOUNDARY_RADIUS + 2 px from a switch."""
    from fusiondiff.tasks.multifocus import BOUNDARY_RADIUS, ISLAND_RADIUS, boundary_gate

    assert ISLAND_RADIUS == 0
    choice = torch.zeros(1, 1, 80, 96)
    choice[..., 48:] = 1  # the right half from source 1
    choice[..., 37:43, 12:18] = 1  # an island of source 1 inside the left half
    weights = torch.cat([1 - choice, choice], 1)[:, :, None]
    gate, plain = boundary_gate(weights, islands=15), boundary_gate(weights)
    assert (gate[..., 40, 47:49] == 1).all() and (plain[..., 40, 47:49] == 1).all()
    assert gate[..., :, :30].abs().sum() == 0 and (plain[..., 40, 10:20] == 1).all()
    assert torch.equal(gate[..., :, 30:], plain[..., :, 30:])
    assert plain[..., :, 18 + BOUNDARY_RADIUS + 3 : 48 - BOUNDARY_RADIUS - 3].abs().sum() == 0


def test_edge_guard_withholds_departures_that_smooth_a_sources_detail_and_keeps_the_rest():
    """snap_to_decision_map(edges=E): a departure that blurs texture which a source holds sharp (the local
    edge energy falls short of the sharpest source's) goes back to the decision map; a departure that keeps
    or adds detail (a colour correction of a flat area, the sharp texture with more contrast than the source)
    is kept as without the guard; edges=0 (the default) is the guard off."""
    from fusiondiff.filters import blur, gaussian_kernel
    from fusiondiff.tasks.multifocus import _decision_copy, decision_weights, snap_to_decision_map

    gen = torch.Generator().manual_seed(0)
    texture = (torch.rand(1, 3, 48, 64, generator=gen) - 0.5).repeat_interleave(2, -1).repeat_interleave(2, -2)[..., :48, :64]
    smooth = blur(texture, gaussian_kernel(3.0, 9))
    a, b = texture.clone(), texture.clone()
    a[..., 32:], b[..., :32] = smooth[..., 32:], smooth[..., :32]  # A sharp on the left, B on the right
    a[..., 40:, 8:24] = b[..., 40:, 8:24] = 0.3  # a flat patch both hold
    sources = torch.stack([a, b], 1)
    copy = _decision_copy(sources, decision_weights(sources))
    fused = copy.clone()
    fused[..., 4:20, 8:24] = smooth[..., 4:20, 8:24]  # blurs A's sharp texture
    fused[..., 42:46, 12:20] = -0.3  # recolours the flat patch (large, keeps every edge)
    plain = snap_to_decision_map(fused, sources, edges=0)
    guarded = snap_to_decision_map(fused, sources, edges=0.5)
    assert torch.equal(plain, snap_to_decision_map(fused, sources))  # BOUNDARY_EDGES = 0: off unless asked
    inner = (..., slice(6, 18), slice(10, 22))
    assert (plain[inner] - copy[inner]).abs().mean() > 0.05 and torch.allclose(guarded[inner], copy[inner])
    assert torch.allclose(guarded[..., 42:46, 12:20], plain[..., 42:46, 12:20]) and (guarded[..., 43, 15] == -0.3).all()
    restored = copy.clone()
    restored[..., 4:20, 8:24] = texture[..., 4:20, 8:24] * 1.2  # more contrast than A holds: no shortfall
    assert torch.allclose(snap_to_decision_map(restored, sources, edges=0.5), snap_to_decision_map(restored, sources, edges=0))


def test_ground_truth_is_a_method_of_suites_with_a_truth_and_is_scored_like_a_fused_image(tmp_path):
    """methods=[ground_truth] scores each item's target as if it were the fused image (SSIM 1 against itself;
    its Q^AB/F is the metric of the target and the sources); a paired folder without ground truth refuses it."""
    from fusiondiff.cli.evaluate import evaluate
    from fusiondiff.data.io import write_image
    from fusiondiff.errors import ConfigError
    from fusiondiff.metrics import fusion
    from fusiondiff.tasks import get_task

    from helpers import compose_config

    cfg = compose_config("evaluate", ["suite=layered", "num=2", "size=[48,48]", f"output_dir={tmp_path}",
                                      "methods=[decision_map,ground_truth]", "metrics=[ssim,ssim_band,qabf]"])  # fmt: skip
    summary = evaluate(cfg)
    truth = summary["ground_truth"]
    assert truth["ssim"]["mean"] == pytest.approx(1.0) and truth["ssim_band"]["mean"] == pytest.approx(1.0)
    assert summary["decision_map"]["ssim_band"]["mean"] < 0.99
    items = [item.load() for item in get_task("multifocus").evaluation(cfg).items]
    expected = sum(fusion.qabf(*fusion.to_255(d["sources"], False), fusion.to_255(d["target"], False)).item() for d in items) / 2
    assert truth["qabf"]["mean"] == pytest.approx(expected, rel=1e-6)

    folder = tmp_path / "no_truth"
    for name in ("source_1/x.png", "source_2/x.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(folder / name, torch.zeros(3, 16, 16))
    cfg = compose_config("evaluate", [f"dataset={folder}", "methods=[ground_truth]", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="ground_truth needs a ground truth"):
        get_task("multifocus").evaluation(cfg)


def test_the_shipped_boundary_model_corrects_the_band_and_copies_the_decision_map_elsewhere():
    """ckpt=multifocus_boundary (opt-in): on held-out layered scenes (photos never trained on) it is closer to
    the truth than the decision map inside the boundary band, by more than 1 dB on average, and farther than
    BOUNDARY_RADIUS + 2 px from the decision map's switches its output is the decision map exactly."""
    from fusiondiff.data.datasets import SKIMAGE_HELDOUT_PHOTOS, skimage_photos
    from fusiondiff.focus import decision_weights
    from fusiondiff.metrics import psnr
    from fusiondiff.tasks import load_pipeline
    from fusiondiff.tasks.multifocus import BOUNDARY_RADIUS, decision_map

    pipe = load_pipeline("multifocus_boundary")
    held_out = LayeredDefocus(photos=skimage_photos(SKIMAGE_HELDOUT_PHOTOS), num_samples=6, size=128, deterministic=True,
                              seed=7, min_band=0.01)  # fmt: skip
    gains = []
    for d in held_out:
        out, dm = pipe(d["sources"]), decision_map(d["sources"][None])[0]
        gains.append((psnr(out, d["target"], mask=d["band"]) - psnr(dm, d["target"], mask=d["band"])).item())
        w = decision_weights(d["sources"][None])[0, 0]
        switch = torch.nn.functional.max_pool2d(w, 3, 1, 1) + torch.nn.functional.max_pool2d(-w, 3, 1, 1) > 0.5
        reach = BOUNDARY_RADIUS + 2
        far = torch.nn.functional.max_pool2d(switch.float(), 2 * reach + 1, 1, reach)[0] == 0
        assert far.any() and torch.equal(out[:, far], dm[:, far])
    assert sum(gains) / len(gains) > 1.0 and sum(g > 0 for g in gains) >= 5, gains
