"""SynthBrain: determinism, value ranges, masks, modality consistency, lesion contrast, split writing."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

from diffuse_core.data import synthbrain as sb

SEEDS = (11, 12, 13)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


def test_same_seed_same_slice_and_different_seeds_differ():
    a = sb.generate_slice(5, ("flair", "ct"))
    b = sb.generate_slice(5, ("flair", "ct"))
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.lesion_mask, b.lesion_mask) and np.array_equal(a.brain_mask, b.brain_mask)
    assert (a.lesion_type, a.level, a.lesion_size) == (b.lesion_type, b.level, b.lesion_size)
    c = sb.generate_slice(6, ("flair", "ct"))
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("mod", sb.MODALITIES)
def test_range_dtype_shape_and_background(mod):
    for seed in SEEDS:
        s = sb.generate_slice(seed, (mod,), size=64)
        assert s.image.shape == (1, 64, 64) and s.image.dtype == np.float32
        assert s.lesion_mask.dtype == np.uint8 and s.brain_mask.dtype == np.uint8
        assert s.image.min() >= -1.0 and s.image.max() <= 1.0
        brain = s.brain_mask.astype(bool)
        assert 0.25 < brain.mean() < 0.9                      # the brain fills much of the field of view
        assert np.all(s.image[0][~brain] == -1.0)             # skull-stripped: background exactly -1
        assert s.image[0][brain].mean() > -0.8                # and the brain is not background
        assert not brain[0].any() and not brain[-1].any() and not brain[:, 0].any() and not brain[:, -1].any()


@pytest.mark.parametrize("lesion_type", sb.LESION_TYPES)
def test_diseased_masks_non_empty_inside_brain(lesion_type):
    for seed in range(20, 28):
        s = sb.generate_slice(seed, ("flair",), healthy=False, lesion_type=lesion_type)
        assert s.lesion_type == lesion_type and s.lesion_size in ("small", "medium", "large")
        assert s.lesion_mask.sum() >= sb.MIN_LESION_PX
        assert not np.any(s.lesion_mask.astype(bool) & ~s.brain_mask.astype(bool))
        assert s.location and s.location.split()[0] in ("left", "right", "bilateral")


def test_healthy_masks_empty_and_default_draw_mixes():
    for seed in SEEDS:
        s = sb.generate_slice(seed, healthy=True)
        assert s.lesion_type == "none" and s.lesion_size == "none" and s.lesion_mask.sum() == 0
    kinds = {sb.generate_slice(seed).lesion_type for seed in range(40, 60)}
    assert "none" in kinds and len(kinds & set(sb.LESION_TYPES)) >= 2


def test_ct_draws_only_strokes():
    for seed in range(60, 70):
        s = sb.generate_slice(seed, ("ct",), healthy=False)
        assert s.lesion_type == "stroke"


def test_multichannel_consistent_with_single_channels():
    s = sb.generate_slice(31, sb.MRI4, healthy=False, lesion_type="glioma")
    assert s.image.shape == (4, 128, 128) and s.modalities == sb.MRI4
    brain = s.brain_mask.astype(bool)
    for c in range(4):
        assert np.all(s.image[c][~brain] == -1.0) and s.image[c][brain].mean() > -0.9
    for c, mod in enumerate(sb.MRI4):                          # each channel is the single-modality rendering
        one = sb.generate_slice(31, (mod,), healthy=False, lesion_type="glioma")
        assert np.array_equal(one.image[0], s.image[c])
        assert np.array_equal(one.lesion_mask, s.lesion_mask) and np.array_equal(one.brain_mask, s.brain_mask)


def test_healthy_counterpart_is_pixel_identical_away_from_lesion():
    for lt in ("stroke", "wmh"):
        d = sb.generate_slice(41, ("flair",), healthy=False, lesion_type=lt)
        h = sb.generate_slice(41, ("flair",), healthy=True, lesion_type=lt)
        assert h.lesion_mask.sum() == 0 and np.array_equal(d.brain_mask, h.brain_mask)
        far = ~dilate(d.lesion_mask, 6)
        assert np.array_equal(d.image[0][far], h.image[0][far])
        assert not np.array_equal(d.image, h.image)


@pytest.mark.parametrize("lesion_type", sb.LESION_TYPES)
def test_flair_lesion_brighter_than_surrounding_brain(lesion_type):
    for seed in range(70, 74):
        s = sb.generate_slice(seed, ("flair",), lesion_type=lesion_type, contrast=1.0)
        les = s.lesion_mask.astype(bool)
        ring = dilate(les, 5) & ~dilate(les, 1) & s.brain_mask.astype(bool)
        assert s.image[0][les].mean() > s.image[0][ring].mean() + 0.1, (seed, lesion_type)


def test_ct_stroke_darker_than_contralateral_and_than_healthy_tissue():
    diffs = []
    for seed in range(80, 86):
        s = sb.generate_slice(seed, ("ct",), lesion_type="stroke", contrast=1.0)
        h = sb.generate_slice(seed, ("ct",), healthy=True, lesion_type="stroke")
        les = s.lesion_mask.astype(bool)
        assert s.image[0][les].mean() < h.image[0][les].mean() - 0.1
        # contralateral: mirror the lesion about the brain's midline column
        cols = np.nonzero(s.brain_mask.any(axis=0))[0]
        mirror = np.zeros_like(les)
        ys, xs = np.nonzero(les)
        mx = np.clip(np.rint(cols.min() + cols.max() - xs).astype(int), 0, les.shape[1] - 1)
        mirror[ys, mx] = True
        mirror &= s.brain_mask.astype(bool) & ~les
        if mirror.sum() >= 10:
            diffs.append(s.image[0][mirror].mean() - s.image[0][les].mean())
    assert len(diffs) >= 3 and np.mean(diffs) > 0.1 and min(diffs) > 0.0


def test_contrast_and_scale_controls():
    weak = sb.generate_slice(90, ("flair",), lesion_type="stroke", contrast=0.4)
    strong = sb.generate_slice(90, ("flair",), lesion_type="stroke", contrast=1.0)
    h = sb.generate_slice(90, ("flair",), healthy=True, lesion_type="stroke")
    les = strong.lesion_mask.astype(bool)
    assert np.array_equal(weak.lesion_mask, strong.lesion_mask)
    gap_weak = (weak.image[0][les] - h.image[0][les]).mean()
    gap_strong = (strong.image[0][les] - h.image[0][les]).mean()
    assert 0 < gap_weak < gap_strong
    small = sb.generate_slice(91, lesion_type="glioma", lesion_scale=0.4)
    large = sb.generate_slice(91, lesion_type="glioma", lesion_scale=1.6)
    assert small.lesion_mask.sum() < large.lesion_mask.sum()


def test_sizes_64_and_256():
    s = sb.generate_slice(3, ("t2",), size=256, healthy=False, lesion_type="wmh")
    assert s.image.shape == (1, 256, 256) and s.lesion_mask.shape == (256, 256) and s.lesion_mask.any()
    s = sb.generate_slice(3, ("t2",), size=64, healthy=False, lesion_type="glioma")
    assert s.image.shape == (1, 64, 64) and s.lesion_mask.any()


def test_sample_seed_splits_disjoint_and_deterministic():
    seen = {}
    for split in sb.SEED_SPLITS:
        seeds = {sb.sample_seed(split, base, i) for base in (0, 1, 7) for i in range(300)}
        assert len(seeds) == 900
        for other, s in seen.items():
            assert not (seeds & s), (split, other)
        seen[split] = seeds
        assert sb.seed_split(sb.sample_seed(split, 3, 5)) == split
    assert sb.sample_seed("val", 2, 9) == sb.sample_seed("val", 2, 9)
    for bad in (("nope", 0, 0), ("train", -1, 0), ("train", 0, -1), ("train", 0, 2**24)):
        with pytest.raises(ValueError):
            sb.sample_seed(*bad)


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="modality"):
        sb.generate_slice(1, ("pet",))
    with pytest.raises(ValueError, match="lesion_type"):
        sb.generate_slice(1, lesion_type="tumour")
    with pytest.raises(ValueError, match="size"):
        sb.generate_slice(1, size=8)
    with pytest.raises(ValueError, match="preset"):
        sb.write_split(tmp_path, preset="pet", n=1)
    with pytest.raises(ValueError, match="n must"):
        sb.write_split(tmp_path, n=0)
    with pytest.raises(ValueError, match="split"):
        sb.write_split(tmp_path, n=1, split="holdout")
    with pytest.raises(ValueError, match="healthy_fraction"):
        sb.write_split(tmp_path, n=1, healthy_fraction=1.5)
    with pytest.raises(ValueError):
        sb.SynthBrainDataset("bogus", 3)


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_write_split_index_files_and_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    index = sb.write_split(a, preset="mri4", n=4, seed=3, split="val", size=64)
    sb.write_split(b, preset="mri4", n=4, seed=3, split="val", size=64)
    assert index == a / "index.csv"
    with open(index, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["id", "image", "mask", "modality", "lesion_type", "healthy", "seed", "spacing_mm"]
        rows = list(reader)
    assert len(rows) == 4 and {r["healthy"] for r in rows} == {"0", "1"}
    for r in rows:
        assert (a / r["image"]).is_file() and (a / r["mask"]).is_file() and (a / f"{r['id']}.png").is_file()
        img = sb.read_nifti_slice(a / r["image"])
        mask = sb.read_nifti_slice(a / r["mask"])
        s = sb.generate_slice(int(r["seed"]), sb.MRI4, 64, healthy=r["healthy"] == "1")
        assert np.array_equal(img, s.image) and np.array_equal(mask, s.lesion_mask)
        assert (r["lesion_type"] == "none") == (r["healthy"] == "1") and r["modality"] == "flair+t1+t1c+t2"
        assert sb.seed_split(int(r["seed"])) == "val" and float(r["spacing_mm"]) == 220 / 64
    assert _digest(a) == _digest(b)                             # same arguments, same bytes (gzip mtime fixed)
    c = tmp_path / "c"
    sb.write_split(c, preset="ct", n=2, seed=3, split="val", size=64)
    import nibabel as nib

    assert nib.load(str(c / "val_00000_image.nii.gz")).shape == (64, 64)


def test_dataset_items():
    torch = pytest.importorskip("torch")
    ds = sb.SynthBrainDataset("train", 3, base_seed=2, modalities=("flair", "t2"), size=64)
    assert len(ds) == 3
    item = ds[1]
    assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (2, 64, 64)
    assert item["lesion_mask"].dtype == torch.uint8 and tuple(item["lesion_mask"].shape) == (1, 64, 64)
    assert tuple(item["brain_mask"].shape) == (1, 64, 64)
    assert item["label"] == int(item["lesion_type"] != "none") and item["seed"] == sb.sample_seed("train", 2, 1)
    assert item["label"] == int(item["lesion_mask"].sum() > 0)
    healthy = sb.SynthBrainDataset("val", 2, healthy=True, size=64)
    assert all(healthy[i]["label"] == 0 for i in range(2))


def test_render_grid_and_to_uint8(tmp_path):
    from PIL import Image

    assert sb.to_uint8(np.array([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]
    slices = [sb.generate_slice(s, size=64, healthy=h) for s, h in ((1, True), (2, False), (3, False))]
    path = sb.render_grid(slices, tmp_path / "grid.png", ncols=2)
    im = Image.open(path)
    assert im.size == (2 * 64 + 2, 2 * 64 + 2) and im.mode == "RGB"


def test_synth_grid_shows_each_lesion_beside_its_healthy_counterpart(tmp_path):
    """`synth --grid`: pairs of tiles, the left with its lesion outlined, the right the same slice without it."""
    from PIL import Image

    from diffuse_core.cli import main

    assert main(["synth", "--n", "2", "--size", "64", "--out", str(tmp_path / "s"), "--grid",
                 str(tmp_path / "grid.png")]) == 0
    im = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB")).astype(int)
    assert im.shape == (3 * 64 + 2 * 2, 4 * 64 + 3 * 2, 3)                       # 6 pairs, 4 tiles a row
    for i in range(3):                                                       # the three pairs of the first two rows
        r, c = divmod(2 * i, 4)
        y, x = r * 66, c * 66
        sick, well = im[y + 14:y + 64, x:x + 64], im[y + 14:y + 64, x + 66:x + 130]  # below the captions
        s = sb.generate_slice(sb.sample_seed("test", 0, i), size=64, healthy=False)
        h = sb.generate_slice(s.seed, size=64, healthy=True, lesion_type=s.lesion_type)
        assert s.lesion_mask.any() and not h.lesion_mask.any()
        def outline(tile):                                                   # red-orange: no grey pixel is
            return (tile[..., 0] > 200) & (tile[..., 1] < 100) & (tile[..., 2] < 100)

        assert outline(sick).any() and not outline(well).any()
        assert np.array_equal(well[..., 0], sb.to_uint8(h.image[0])[14:])        # the healthy tile is that slice
    with pytest.raises(ValueError, match="n_pairs"):
        sb.pairs_grid("test", tmp_path / "x.png", n_pairs=0)


@pytest.mark.parametrize("size", [64, 96])
def test_spacing_is_the_field_of_view_over_the_pixel_count(size):
    s = sb.generate_slice(7, ("flair",), size=size)
    assert sb.FOV_MM == 220 and s.spacing == (220 / size, 220 / size) == (sb.pixel_mm(size),) * 2
    assert sb.pixel_mm(128) == pytest.approx(1.72, abs=0.01)


@pytest.mark.parametrize("preset,size", [("mri4", 64), ("ct", 96)])
def test_written_slices_load_back_with_the_same_pixels_and_true_spacing(tmp_path, preset, size):
    from diffuse_core.io.image import load_image, load_mask

    index = sb.write_split(tmp_path, preset=preset, n=2, seed=5, split="test", size=size)
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    mm = sb.FOV_MM / size
    for r in rows:
        s = sb.generate_slice(int(r["seed"]), sb.preset_modalities(preset), size, healthy=r["healthy"] == "1")
        loaded = load_image(tmp_path / r["image"])
        assert loaded.kind == "nifti" and np.array_equal(loaded.data, s.image)
        assert np.array_equal(load_mask(tmp_path / r["mask"], like=loaded), s.lesion_mask)
        assert loaded.spacing == pytest.approx((mm, mm), rel=1e-6)
        assert float(r["spacing_mm"]) == pytest.approx(mm, rel=1e-5)
        assert np.allclose(loaded.affine, np.diag([mm, mm, 1.0, 1.0]), rtol=1e-6)   # RAS, no rotation, z = 1 mm


def test_save_case_headers_carry_the_spacing(tmp_path):
    import nibabel as nib

    from diffuse_core.io.image import load_image

    s = sb.generate_slice(sb.sample_seed("test", 0, 3), ("t2",), size=128, lesion_type="glioma")
    names = sb.save_case(s, tmp_path, "c")
    for key in ("image", "mask"):
        img = nib.load(str(tmp_path / names[key]))
        assert img.header.get_xyzt_units()[0] == "mm" and int(img.header["sform_code"]) == 1
        assert tuple(float(z) for z in img.header.get_zooms()[:2]) == (1.71875, 1.71875)
        assert np.allclose(img.affine, img.get_qform()) and np.allclose(np.diag(img.affine), [1.71875, 1.71875, 1, 1])
    assert load_image(tmp_path / names["image"]).spacing == s.spacing
    assert np.array_equal(sb.read_nifti_slice(tmp_path / names["image"]), s.image[0])
    assert np.array_equal(sb.read_nifti_slice(tmp_path / names["mask"]), s.lesion_mask)
