"""The tissue scale: one MRI preparation for SynthBrain training slices and for real scans (issue 31, item 1)."""

import numpy as np
import pytest

from diffuse_core.run.card import mri_reference_for, resolve_intensity
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.core.intensity import TISSUE_SCALE, tissue_peak, tissue_scale
from diffuse_core.io.preprocess import prepare_slice
from diffuse_core.train.data import normalise_slices


def _slice(i, healthy=True, size=96):
    return generate_slice(sample_seed("val", 0, i), ("flair",), size, healthy=healthy)


def test_the_tissue_peak_is_the_histograms_mode_not_the_median():
    rng = np.random.default_rng(0)
    tissue = rng.normal(100.0, 5.0, 6000)
    csf = rng.normal(30.0, 5.0, 1500)
    assert abs(tissue_peak(np.r_[tissue, csf]) - 100.0) < 3.0
    # a bright lesion of a fifth of the brain does not move the peak, though it moves the median
    lesion = rng.normal(200.0, 10.0, 1900)
    both = np.r_[tissue, csf, lesion]
    assert abs(tissue_peak(both) - 100.0) < 3.0
    assert np.median(both) > np.median(np.r_[tissue, csf]) + 2.0
    with pytest.raises(ValueError, match="too few"):
        tissue_peak(np.ones(5))


def test_a_scanners_gain_and_offset_come_back_to_one_scale():
    img = _slice(3).image[0]
    brain = img > -1
    ref, _ = tissue_scale(img, brain)
    for gain, offset in ((900.0, 0.0), (3.7, 12.0), (0.01, -4.0)):
        raw = np.where(brain, offset + gain * (img + 1.0), offset)        # air at the offset, as a scanner writes it
        out, ranges = tissue_scale(raw, brain)
        np.testing.assert_allclose(out, ref, atol=2e-3)
        assert np.all(out[~brain] == -1.0)
        assert ranges[0][0] == pytest.approx(offset, abs=1e-3 * gain)
    # the peak lands on the level: SynthBrain's brain median, where the shipped model learnt it
    assert abs(tissue_peak(ref[brain]) - TISSUE_SCALE["tissue_level"]) < 0.03


def test_a_bright_lesion_leaves_normal_tissue_in_place():
    healthy_img = _slice(5).image[0]
    brain = healthy_img > -1
    yy, xx = np.mgrid[:96, :96]
    ys, xs = np.nonzero(brain)
    cy, cx = ys.mean(), xs.mean() + 10
    lesion = brain & ((yy - cy) ** 2 + (xx - cx) ** 2 < 16 ** 2)
    assert 0.1 < lesion.sum() / brain.sum() < 0.4                          # a large tumour
    img = np.where(lesion, 0.5, healthy_img)                              # bright, as on FLAIR
    out, _ = tissue_scale(img, brain)
    normal = brain & ~lesion
    ref, _ = tissue_scale(img, normal)            # the scale of the normal brain alone: what the lesion must not move
    moved = np.abs(out[normal] - ref[normal]).mean()
    assert moved < 0.02                            # within two bins of the tissue histogram
    assert out[lesion].mean() > ref[normal].mean() + 0.4                  # the lesion keeps its contrast
    from diffuse_core.io.preprocess import normalize_mri

    stretched = np.abs(normalize_mri(img, brain)[normal] - normalize_mri(img, normal)[normal]).mean()
    assert stretched > 5 * max(moved, 1e-3)                              # the percentile stretch moves it


def test_training_slices_and_an_upload_get_the_same_preparation():
    s = _slice(7)
    trained = normalise_slices(s.image[None].astype(np.float32), "tissue")[0]
    brain = s.image[0] > -1
    raw = np.where(brain, 250.0 * (s.image[0] + 1.0), 0.0)               # the same slice as a scanner file
    prep = prepare_slice(raw, size=96, modality="mri", brain_mask=brain, mri_reference=dict(TISSUE_SCALE))
    np.testing.assert_allclose(prep.image[0][brain], trained[0][brain], atol=5e-3)
    assert any("tissue scale" in n for n in prep.notes)


def test_auto_intensity_follows_the_card():
    assert resolve_intensity({"input_normalisation": "tissue"}, "auto") == "tissue"
    assert resolve_intensity({"input_normalisation": "absolute"}, None) == "percentile"
    assert mri_reference_for({"input_normalisation": "absolute"}, "auto") is None
    ref = mri_reference_for({"input_normalisation": "tissue", "tissue_scale": {"tissue_level": -0.3}}, "auto")
    assert ref["method"] == "tissue" and ref["tissue_level"] == -0.3
    with pytest.raises(ValueError, match="unknown intensity"):
        resolve_intensity({}, "bogus")
