import numpy as np
import pytest
import torch

from fusiondiff.data import (
    ImageError,
    PairedFolderDataset,
    SyntheticMultiFocus,
    find_samples,
    load_sources,
    read_image,
    write_image,
)
from fusiondiff.data.datasets import PairedAugment

from conftest import save_png, synthetic_triplet


def test_fusiondiff_layout_pairs_by_name(fusiondiff_folder):
    samples = find_samples(fusiondiff_folder, require_target=True)
    assert [s.name for s in samples] == ["NYU-D (1)", "NYU-D (2)", "NYU-D (3)", "NYU-D (4)"]
    for s in samples:
        assert s.sources[0].parent.name == "source_1" and s.sources[1].name == s.sources[0].name
        assert s.target.name == s.sources[0].name


def test_suffix_layouts_pair_by_stem_not_listing_order(tmp_path):
    a, b, _ = synthetic_triplet(0, 16, 16)
    # names whose sorted orders differ between the folders
    save_png(tmp_path / "d" / "source_1" / "x_A.png", a)
    save_png(tmp_path / "d" / "source_1" / "y-A.png", a)
    save_png(tmp_path / "d" / "source_2" / "x_B.png", b)
    save_png(tmp_path / "d" / "source_2" / "Y-b.png", b)  # case-insensitive suffix, different stem case
    with pytest.raises(ValueError, match="'y': nothing in source_2"):
        find_samples(tmp_path / "d")
    (tmp_path / "d" / "source_2" / "Y-b.png").rename(tmp_path / "d" / "source_2" / "y-B.png")
    samples = find_samples(tmp_path / "d")
    assert [(s.name, s.sources[1].name) for s in samples] == [("x", "x_B.png"), ("y", "y-B.png")]
    assert all(s.target is None for s in samples)


def test_per_sample_folder_layout(tmp_path):
    a, b, f = synthetic_triplet(1, 16, 16)
    for name in ("scene one", "s(2)"):
        save_png(tmp_path / name / f"{name}_A.png", a)
        save_png(tmp_path / name / f"{name}_B.png", b)
    save_png(tmp_path / "s(2)" / "s(2)_GT.png", f)
    samples = find_samples(tmp_path)
    assert [s.name for s in samples] == ["s(2)", "scene one"]
    assert samples[0].target is not None and samples[1].target is None
    (tmp_path / "scene one" / "scene one_B.png").unlink()
    with pytest.raises(ValueError, match="scene one_B"):
        find_samples(tmp_path)


def test_missing_partner_and_missing_ground_truth(fusiondiff_folder, lytro_folder):
    (fusiondiff_folder / "full_clear" / "NYU-D (2).png").unlink()
    with pytest.raises(ValueError, match=r"'NYU-D \(2\)': nothing in full_clear"):
        find_samples(fusiondiff_folder)
    with pytest.raises(ValueError, match="needs ground truth"):
        find_samples(lytro_folder, require_target=True)
    with pytest.raises(FileNotFoundError):
        find_samples(lytro_folder / "nope")


def test_paired_dataset_items(fusiondiff_folder, lytro_folder):
    ds = PairedFolderDataset(fusiondiff_folder, crop_size=32, augment=True, require_target=True, seed=0)
    item = ds[1]
    assert item["sources"].shape == (2, 3, 32, 32) and item["target"].shape == (3, 32, 32)
    assert item["name"] == "NYU-D (2)" and -1 <= item["sources"].min() and item["target"].max() <= 1
    gray = PairedFolderDataset(lytro_folder, channels=1)[0]
    assert gray["sources"].shape == (2, 1, 37, 45) and "target" not in gray


def test_augmentation_is_shared_by_all_images():
    img = torch.rand(1, 3, 40, 50)
    stack = img.expand(3, -1, -1, -1)
    out = PairedAugment(crop_size=24)(stack, torch.Generator().manual_seed(5))
    assert out.shape == (3, 3, 24, 24)
    torch.testing.assert_close(out[0], out[1]) and torch.testing.assert_close(out[0], out[2])


def test_synthetic_generator_is_deterministic_and_complementary():
    ds = SyntheticMultiFocus(photos=["camera", "coffee"], num_samples=4, crop_size=32, deterministic=True, seed=3)
    a, b = ds[2], ds[2]
    torch.testing.assert_close(a["sources"], b["sources"], rtol=0, atol=0)
    assert a["sources"].shape == (2, 3, 32, 32)
    # each source is closer to the target where the other is blurred: both differ from it, their mean too
    err_a = (a["sources"][0] - a["target"]).abs().mean()
    err_b = (a["sources"][1] - a["target"]).abs().mean()
    assert err_a > 0 and err_b > 0
    assert not torch.equal(ds[0]["target"], ds[1]["target"])
    with pytest.raises(IndexError):
        ds[4]


def test_read_image_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="truncated PNG"):
        read_image(tmp_path / "broken.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 128
    save_png(tmp_path / "alpha.png", rgba)
    with pytest.raises(ImageError, match="alpha"):
        read_image(tmp_path / "alpha.png")
    rgba[..., 3] = 255
    save_png(tmp_path / "opaque.png", rgba)
    assert read_image(tmp_path / "opaque.png").shape == (3, 8, 8)


def test_sixteen_bit_keeps_precision(tmp_path):
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 7
    save_png(tmp_path / "deep.png", ramp)
    img = read_image(tmp_path / "deep.png", channels=1)
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535 * 2 - 1)
    torch.testing.assert_close(img[0], expected, atol=1e-6, rtol=0)
    write_image(tmp_path / "out16.png", img, bit_depth=16)
    torch.testing.assert_close(read_image(tmp_path / "out16.png", channels=1), img, atol=1e-6, rtol=0)


def test_load_sources_sizes_and_mixed_channels(tmp_path):
    a, b, _ = synthetic_triplet(3, 20, 24)
    save_png(tmp_path / "a.png", a)
    save_png(tmp_path / "b_gray.png", b[:, :, 0])
    save_png(tmp_path / "small.png", b[:18, :20])
    out = load_sources([tmp_path / "a.png", tmp_path / "b_gray.png"])
    assert out.shape == (2, 3, 20, 24)
    with pytest.raises(ImageError, match="differ in size"):
        load_sources([tmp_path / "a.png", tmp_path / "small.png"])
    assert load_sources([tmp_path / "a.png", tmp_path / "small.png"], resize=True).shape == (2, 3, 20, 24)
    with pytest.raises(ValueError, match="at least 2"):
        load_sources([tmp_path / "a.png"])


def test_write_image_is_atomic_and_checked(tmp_path):
    target = tmp_path / "out" / "x.png"
    with pytest.raises(ImageError, match="NaN"):
        write_image(target, torch.full((3, 4, 4), float("nan")))
    assert not target.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # no temporary file left
    write_image(target, torch.zeros(3, 4, 4))
    assert read_image(target).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "x.jpg", torch.zeros(3, 4, 4), bit_depth=16)


def test_concat_datasets_builds_partials_with_augment(fusiondiff_folder):
    from functools import partial

    from fusiondiff.data import PairedFolderDataset, SyntheticMultiFocus
    from fusiondiff.data.datasets import concat_datasets

    real = partial(PairedFolderDataset, fusiondiff_folder, crop_size=16)
    synthetic = SyntheticMultiFocus(num_samples=3, crop_size=16)
    both = concat_datasets([real, synthetic], augment=True)
    assert len(both) == len(real()) + 3 and both.datasets[0].augment
    assert both[len(both) - 1]["sources"].shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="at least one"):
        concat_datasets([])
