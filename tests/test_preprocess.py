"""Preprocessing: the model grid and its inverse, brain masks, MRI/CT normalisation, prepare_slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffuse_core.io.brats import load_brats_case
from diffuse_core.io.loaded import LoadedImage
from diffuse_core.io.preprocess import (CT_WINDOWS, Geometry, estimate_brain_mask, from_model_grid, normalize_ct,
                                     normalize_mri, prepare_slice, resolve_window, to_model_grid)

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"


def smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (np.sin(yy / 17.0) + np.cos(xx / 23.0) + 0.5 * yy / h).astype(np.float32)


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def head_phantom(h: int = 200, w: int = 170, ct: bool = False, seed: int = 0):
    """A head: scalp ring, skull ring, brain with a darker ventricle; returns (image, true brain mask)."""
    rng = np.random.default_rng(seed)
    cy, cx = h / 2, w / 2
    head = ellipse(h, w, cy, cx, 0.45 * h, 0.42 * w)
    skull_outer = ellipse(h, w, cy, cx, 0.41 * h, 0.38 * w)
    brain = ellipse(h, w, cy, cx, 0.37 * h, 0.34 * w)
    ventricle = ellipse(h, w, cy, cx, 0.08 * h, 0.05 * w)
    if ct:
        img = np.full((h, w), -1000.0, np.float32)
        img[head] = 40.0                     # scalp soft tissue
        img[skull_outer] = 1200.0            # bone
        img[brain] = 35.0                    # parenchyma
        img[ventricle] = 5.0                 # CSF
        img += rng.normal(0, 3, img.shape).astype(np.float32)
    else:
        img = np.abs(rng.normal(0, 8, (h, w))).astype(np.float32)   # Rician-ish air noise
        img[head] = 500.0
        img[skull_outer] = 60.0              # dark bone
        img[brain] = 350.0
        img[ventricle] = 150.0
        img[head] += rng.normal(0, 10, int(head.sum())).astype(np.float32)
    return img, brain.astype(np.uint8)


def dice(a, b) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


# ------------------------------------------------------------------------------------------------ model grid


@pytest.mark.parametrize("shape", [(240, 200), (100, 180), (128, 128), (300, 300)])
@pytest.mark.parametrize("size", [128, 256])
def test_grid_round_trip(shape, size):
    img = np.stack([smooth(*shape), -smooth(*shape)])
    grid, geo = to_model_grid(img, size=size)
    assert grid.shape == (2, size, size) and grid.dtype == np.float32
    assert geo.original_shape == shape and max(geo.resized_shape) == size
    top, bottom, left, right = geo.pad
    assert geo.resized_shape == (size - top - bottom, size - left - right)
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    if top:
        assert np.all(grid[:, :top] == img.min())  # padding = background (the minimum)
    back = from_model_grid(grid, geo)
    assert back.shape == img.shape
    assert np.abs(back - img).max() < 0.06
    assert np.abs(back - img).mean() < 0.01
    assert Geometry.from_dict(geo.to_dict()) == geo
    # 2-D in, 2-D out
    g2, geo2 = to_model_grid(img[0], size=size)
    assert g2.shape == (size, size) and from_model_grid(g2, geo2).shape == shape


def test_grid_mask_nearest_round_trip():
    mask = ellipse(240, 200, 120, 90, 60, 50).astype(np.uint8)
    grid, geo = to_model_grid(mask, size=128, order=0)
    assert grid.dtype == np.uint8 and set(np.unique(grid)) <= {0, 1} and grid[:, :5].max() == 0
    back = from_model_grid(grid, geo, order=0)
    assert back.shape == mask.shape and back.dtype == np.uint8 and dice(back, mask) > 0.97


def test_grid_rejects_wrong_input():
    _, geo = to_model_grid(np.zeros((60, 40), np.float32), size=128)
    with pytest.raises(ValueError, match="128x128"):
        from_model_grid(np.zeros((64, 64)), geo)
    with pytest.raises(ValueError, match="shape"):
        to_model_grid(np.zeros((2, 3, 4, 5)))


# ------------------------------------------------------------------------------------------------ brain masks


def test_brain_mask_mri_noisy_background():
    img, brain = head_phantom()
    est = estimate_brain_mask(img)
    head = ellipse(*img.shape, img.shape[0] / 2, img.shape[1] / 2, 0.45 * img.shape[0], 0.42 * img.shape[1])
    assert est.dtype == np.uint8 and est[:5, :5].max() == 0
    assert est[brain.astype(bool)].mean() > 0.98                # the whole brain, ventricle included
    assert dice(est, brain) > 0.85 or dice(est, head) > 0.9     # brain or (at worst) head


def test_brain_mask_skull_stripped_constant_background():
    _, brain = head_phantom()
    img = np.where(brain > 0, 200.0 + 50 * smooth(*brain.shape), -0.7).astype(np.float32)  # z-score-like bg
    img[90:110, 80:90] = 150.0  # dark region inside the brain stays brain
    assert dice(estimate_brain_mask(img), brain) > 0.98


def test_brain_mask_ct_inside_skull():
    hu, brain = head_phantom(ct=True)
    est = estimate_brain_mask(hu, modality_hint="ct")
    assert dice(est, brain) > 0.95  # scalp outside the skull excluded


# -------------------------------------------------------------------------------------------- normalisation


def test_brain_mask_of_a_large_slice_is_estimated_at_bounded_resolution(monkeypatch):
    """Above MASK_MAX_SIDE the mask comes from a shrunk copy (fast) and still covers the head; at and below 512
    pixels nothing changes (the same mask as with no bound at all)."""
    from diffuse_core.io import preprocess

    def head(side):
        yy, xx = np.mgrid[:side, :side]
        img = np.where(np.hypot(yy - side / 2, xx - side / 2) < 0.4 * side, 100.0, 0.0).astype(np.float32)
        return img + np.random.default_rng(0).normal(0, 1, img.shape).astype(np.float32) * (img > 0)

    big = head(4096)
    shapes = []                                     # what the estimate actually works on (its time: benchmarks)
    monkeypatch.setattr(preprocess, "estimate_brain_mask",
                        lambda a, *r, **k: shapes.append(np.shape(a)) or estimate_brain_mask(a, *r, **k))
    mask = preprocess.estimate_brain_mask(big)
    monkeypatch.undo()
    assert shapes == [(4096, 4096), (1024, 1024)], shapes          # the morphology ran on a copy at the bound
    truth = big > 50
    assert mask.shape == big.shape and (mask.astype(bool) & truth).sum() / (mask.astype(bool) | truth).sum() > 0.99
    small = head(512)
    reference = estimate_brain_mask(small)
    monkeypatch.setattr(preprocess, "MASK_MAX_SIDE", 10**6)
    np.testing.assert_array_equal(estimate_brain_mask(small), reference)


def test_normalize_mri_percentiles_inside_brain():
    rng = np.random.default_rng(1)
    brain = ellipse(64, 64, 32, 32, 25, 20).astype(np.uint8)
    img = rng.normal(100, 20, (2, 64, 64)).astype(np.float32)
    img[:, brain == 0] = 5000.0   # a wild background must not change anything
    out = normalize_mri(img, brain)
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.all(out[:, brain == 0] == -1.0)
    inside = out[:, brain > 0]
    assert inside.min() == -1.0 and inside.max() == pytest.approx(1.0)
    for c in range(2):
        lo, hi = np.percentile(img[c][brain > 0], [1, 99])
        assert np.mean(inside[c] <= -1.0 + 1e-6) == pytest.approx(0.01, abs=0.005)
        mid = img[c][brain > 0][np.argsort(img[c][brain > 0])[len(inside[c]) // 2]]
        expect = (mid - lo) / (hi - lo) * 2 - 1
        assert np.any(np.isclose(inside[c], expect, atol=1e-5))
    img2 = img.copy()
    img2[:, brain == 0] = -3.0
    np.testing.assert_array_equal(normalize_mri(img2, brain), out)
    assert normalize_mri(img[0], brain).shape == (64, 64)
    with pytest.raises(ValueError, match="empty"):
        normalize_mri(img, np.zeros((64, 64)))


def test_normalize_ct_windows():
    brain = np.ones((32, 32), np.uint8)
    brain[:2] = 0
    hu = np.full((32, 32), 40.0, np.float32)
    hu[10, :5] = [-1000, 0, 20, 80, 2000]
    out = normalize_ct(hu, brain, *CT_WINDOWS["brain"])
    np.testing.assert_allclose(out[10, :5], [-1, -1, -0.5, 1, 1])
    assert out[15, 15] == 0.0 and np.all(out[:2] == -1.0)
    out = normalize_ct(hu, brain, *CT_WINDOWS["stroke"])  # 20..60 HU
    np.testing.assert_allclose(out[10, 1:4], [-1, -1, 1])
    assert out[15, 15] == 0.0
    assert resolve_window("Subdural") == (75.0, 215.0) and resolve_window((30, 60)) == (30.0, 60.0)
    assert resolve_window(None) == CT_WINDOWS["brain"] == (40.0, 80.0)
    with pytest.raises(ValueError, match="unknown CT window"):
        resolve_window("lung")
    with pytest.raises(ValueError, match="positive"):
        resolve_window((40, 0))


# ------------------------------------------------------------------------------------------------ prepare_slice


def check_prepared(p, size):
    assert p.image.dtype == np.float32 and p.image.shape[1:] == (size, size)
    assert p.image.min() >= -1.0 and p.image.max() <= 1.0
    assert p.brain_mask.shape == (size, size) and p.brain_mask.dtype == np.uint8 and p.brain_mask.any()
    assert np.all(p.image[:, p.brain_mask == 0] == -1.0)


def test_prepare_ct_from_dicom_like_image():
    hu, brain = head_phantom(240, 180, ct=True)
    loaded = LoadedImage(data=hu[None], kind="dicom", spacing=(0.5, 0.5), modality="CT", num_slices=1,
                         slice_index=0, channel_names=("HU",), source="x.dcm")
    p = prepare_slice(loaded, size=128)
    check_prepared(p, 128)
    assert p.modality == "ct" and p.window == (40.0, 80.0) and p.brain_mask_estimated
    assert p.geometry.original_shape == (240, 180)
    # 35 HU parenchyma -> (35 - 0) / 80 * 2 - 1 = -0.125 with the brain window
    assert np.median(p.image[0][p.brain_mask > 0]) == pytest.approx(-0.125, abs=0.1)
    back = p.to_original(p.image)
    assert back.shape == (1, 240, 180)
    # value range alone identifies CT, and a named window is used
    p2 = prepare_slice(hu, size=128, window="stroke")
    assert p2.modality == "ct" and p2.window == (40.0, 40.0)
    with pytest.raises(ValueError, match="CT only"):
        prepare_slice(hu, modality="mri", window="brain")


def test_prepare_mri_with_and_without_mask():
    img, brain = head_phantom(150, 210)
    p = prepare_slice(img, size=256, brain_mask=brain)
    check_prepared(p, 256)
    assert p.modality == "mri" and p.percentiles == (1.0, 99.0) and not p.brain_mask_estimated
    assert p.geometry.resized_shape[1] == 256 and p.geometry.pad[0] > 0
    assert np.all(p.image[:, : p.geometry.pad[0]] == -1.0)
    p2 = prepare_slice(img, size=128)
    check_prepared(p2, 128)
    assert p2.brain_mask_estimated
    with pytest.raises(ValueError, match="differ in size"):
        prepare_slice(img, brain_mask=np.ones((10, 10)))


@pytest.fixture(scope="module")
def brats_case():
    cases = sorted(BRATS.glob("brats_*")) if BRATS.is_dir() else []
    if not cases:
        pytest.skip(f"real BraTS cases not available at {BRATS}")
    return load_brats_case(cases[1], modalities=("flair",))


def test_prepare_real_brats_slice(brats_case):
    z = brats_case.tumour_slices()[len(brats_case.tumour_slices()) // 2]
    img, tumour, brain = brats_case.slice(z)
    p = prepare_slice(img, size=128, brain_mask=brain, modality="mri")
    check_prepared(p, 128)
    t128, _ = to_model_grid(tumour, size=128, order=0)
    inside = p.image[0][(p.brain_mask > 0) & (t128 == 0)]
    assert p.image[0][t128 > 0].mean() > inside.mean() + 0.3
    # the estimated mask agrees with the case's brain mask on a skull-stripped slice
    raw, _, _ = brats_case.slice(z, apply_brain_mask=False)
    assert dice(estimate_brain_mask(raw[0]), brain) > 0.97
