"""Anomaly-map morphology, saliency masks and the overlap metrics."""

import numpy as np
import pytest

from diffuse_core.core.anomaly import (anomaly_kernel_of, anomaly_map, binarize, clean_anomaly_map,
                                      kernel_for_resolution)
from diffuse_core.core.masks import mask_from_saliency
from diffuse_core.core.metrics import dice, iou


def test_opening_removes_isolated_pixels():
    d = np.zeros((32, 32), np.float32)
    d[5, 5] = 1.0          # an isolated speck
    d[10:20, 10:20] = 1.0  # a real 10x10 anomaly
    out = clean_anomaly_map(d)
    assert out[5, 5] == 0.0
    assert (out[10:20, 10:20] == 1.0).all()


def test_closing_fills_one_pixel_holes():
    d = np.zeros((32, 32), np.float32)
    d[4:28, 4:28] = 1.0
    d[10, 16] = 0.0  # a one-pixel hole
    d[18, 4:28] = 0.0  # a one-pixel crack across the region
    out = clean_anomaly_map(d)
    assert out[10, 16] == 1.0 and (out[18, 4:28] == 1.0).all()
    assert (out == d.clip(min=0) + (d == 0) * out).all() and out.sum() == 24 * 24


def test_anomaly_map_is_mean_abs_difference_kept_in_brain():
    x = -np.ones((2, 32, 32), np.float32)
    y = x.copy()
    y[:, 8:20, 8:20] += 0.5
    y[:, 0:6, 0:6] += 1.0  # a big change in the background
    brain = np.zeros((32, 32), np.uint8)
    brain[4:28, 4:28] = 1
    a = anomaly_map(x, y, brain)
    assert a.shape == (32, 32)
    assert a[12, 12] == pytest.approx(0.5)
    assert a[1, 1] == 0.0 and a[:4].max() == 0.0
    assert anomaly_map(x, y)[1, 1] == pytest.approx(1.0)


def test_the_paper_kernel_scaled_to_a_grid_keeps_a_3_pixel_lesion_the_paper_kernel_erases():
    assert [kernel_for_resolution(r) for r in (64, 128, 256, 512)] == [1, 3, 5, 9]
    d = np.zeros((32, 32), np.float32)
    d[10:13, 10:13] = 0.5      # a punctate lesion 3 pixels wide (about 5 mm at 128 x 128)
    assert clean_anomaly_map(d, 5).max() == 0.0
    kept = clean_anomaly_map(d, kernel_for_resolution(128))
    assert (kept[10:13, 10:13] == 0.5).all() and kept.sum() == pytest.approx(d.sum())
    with pytest.raises(ValueError):
        kernel_for_resolution(0)


def test_the_kernel_is_read_from_the_card_and_defaults_to_the_papers():
    assert anomaly_kernel_of(None) == 5 and anomaly_kernel_of({"anomaly_threshold": 0.14}) == 5
    assert anomaly_kernel_of({"anomaly_kernel": 3}) == 3
    for bad in (4, 0, -3, 2.5, "3", True):
        with pytest.raises(ValueError, match="odd positive integer"):
            anomaly_kernel_of({"anomaly_kernel": bad})


def test_anomaly_map_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        anomaly_map(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
    with pytest.raises(ValueError, match="brain mask"):
        anomaly_map(np.zeros((8, 8)), np.zeros((8, 8)), np.ones((4, 4)))
    with pytest.raises(ValueError):
        anomaly_map(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)))


def test_binarize():
    assert binarize(np.array([[0.1, 0.3]]), 0.2).tolist() == [[0, 1]]
    with pytest.raises(ValueError):
        binarize(np.zeros((2, 2)), float("nan"))


def test_dice_and_iou_on_hand_made_masks():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    a[0, 0:2] = 1  # 2 pixels
    b[0, 1:4] = 1  # 3 pixels, overlap 1
    assert dice(a, b) == pytest.approx(2 * 1 / 5)
    assert iou(a, b) == pytest.approx(1 / 4)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0 and iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice(a, np.zeros((3, 3)))


def test_mask_percentile_is_computed_inside_the_brain():
    rng = np.random.default_rng(0)
    sal = np.zeros((64, 64), np.float32)
    brain = np.zeros((64, 64), np.uint8)
    brain[16:48, 16:48] = 1  # a quarter of the image
    sal[brain.astype(bool)] = rng.random(int(brain.sum()))
    sal[20:30, 20:30] += 5.0  # a salient blob
    m = mask_from_saliency(sal, brain, percentile=90)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    assert m[~brain.astype(bool)].sum() == 0
    frac = m[brain.astype(bool)].mean()
    assert 0.07 < frac < 0.13  # about 10% of the brain, not 10% of the image
    assert m[22:28, 22:28].all()  # the blob is in the mask


def test_mask_from_saliency_bad_inputs():
    with pytest.raises(ValueError, match="percentile"):
        mask_from_saliency(np.zeros((8, 8)), percentile=100)
    with pytest.raises(ValueError, match="2-D"):
        mask_from_saliency(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        mask_from_saliency(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="differ in size"):
        mask_from_saliency(np.zeros((8, 8)), np.ones((4, 4)))
    assert mask_from_saliency(np.zeros((8, 8))).sum() == 0  # constant saliency: nothing to redraw
