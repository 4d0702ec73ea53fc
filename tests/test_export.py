"""Exported files read back as they were written: NIfTI orientation, PNG views, atomic writes."""

import json

import numpy as np
import pytest
from PIL import Image

from diffuse_core.io.export import write_result
from diffuse_core.io.image import load_image
from diffuse_core.pipeline import CounterfactualResult


def _result(size=32):
    img = -np.ones((1, size, size), np.float32)
    img[0, 4:28, 6:26] = 0.2
    cf = img.copy()
    cf[0, 5:9, 7:11] = 0.9  # an asymmetric marker near the top-left (anterior, patient's right)
    mask = np.zeros((size, size), np.uint8)
    mask[5:9, 7:11] = 1
    return CounterfactualResult(image=img, counterfactual=cf, mask=mask, anomaly=np.abs(img - cf)[0],
                                brain_mask=(img[0] > -1).astype(np.uint8), k=10, steps=2, variant="paper", seed=0,
                                network_calls=4, seconds=0.1, device="cpu")


def test_nifti_counterfactual_reads_back_in_the_same_orientation(tmp_path):
    res = _result()
    write_result(res, tmp_path)
    back = load_image(tmp_path / "counterfactual.nii.gz")
    assert back.data.shape == (1, 32, 32)
    assert np.allclose(back.data, res.counterfactual)


def test_pngs_and_json(tmp_path):
    res = _result()
    summary = write_result(res, tmp_path, extra={"dice": None})
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(summary))
    over = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert over.shape == (32, 32, 3)
    m = np.asarray(Image.open(tmp_path / "mask.png"))
    assert set(np.unique(m)) == {0, 255} and m[6, 8] == 255
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left behind


def test_multichannel_counterfactual_reads_back_as_one_slice_with_its_channels(tmp_path):
    res = _result()
    cf = np.concatenate([res.counterfactual, -res.counterfactual, res.counterfactual * 0.5], axis=0)
    write_result(res, tmp_path, original_counterfactual=cf, spacing=(0.6, 0.9))
    back = load_image(tmp_path / "counterfactual.nii.gz")
    assert back.num_slices == 1 and back.data.shape == (3, 32, 32)
    np.testing.assert_allclose(back.data, cf)
    assert back.spacing == pytest.approx((0.6, 0.9))


def test_nifti_export_is_byte_for_byte_reproducible(tmp_path):
    res = _result()
    write_result(res, tmp_path / "a")
    write_result(res, tmp_path / "b")
    a, b = (tmp_path / run / "counterfactual.nii.gz" for run in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
