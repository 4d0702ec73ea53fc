"""The realism measure: a small classifier's held-out AUROC at telling real slices from SynthBrain."""

from pathlib import Path

import numpy as np
import pytest

from diffuse_core.evaluation.realism import build_set, realism_auroc, real_healthy_slices, synthbrain_healthy

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"


def _groups(n, folds=3):
    return np.arange(n) % folds


@pytest.mark.slow
def test_same_source_is_indistinguishable_and_a_changed_contrast_is_not():
    a = synthbrain_healthy(36, size=32, seed=0)
    b = synthbrain_healthy(36, size=32, seed=1)            # other slices of the same generator
    same = realism_auroc(build_set(a, _groups(len(a)), b), steps=60, batch=16)
    assert same["n_real"] == same["n_synthetic"] == 36 and same["folds"] == 3
    assert same["cnn"]["auroc"] < 0.8 and same["histogram"]["auroc"] < 0.8
    # the same slices with the brain brightened (gamma 0.5 on [0, 1]): a real gap, which both must see
    brighter = np.where(a > -1, ((a + 1) / 2) ** 0.5 * 2 - 1, -1.0).astype(np.float32)
    gap = realism_auroc(build_set(brighter, _groups(len(a)), b), steps=60, batch=16)
    assert gap["histogram"]["auroc"] > 0.95 and gap["cnn"]["auroc"] > 0.9
    lo, hi = gap["cnn"]["ci95"]
    assert lo <= gap["cnn"]["auroc"] <= hi


@pytest.mark.slow
def test_real_healthy_slices_are_tumour_free_and_grouped_by_case():
    cases = sorted(BRATS.glob("brats_*")) if BRATS.is_dir() else []
    if not cases:
        pytest.skip(f"real BraTS cases not available at {BRATS}")
    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.preprocess import prepare_slice

    images, brains, groups = real_healthy_slices(BRATS, size=64)
    assert images.shape[1:] == (1, 64, 64) and len(images) == len(brains) == len(groups)
    assert set(groups) == set(range(len(cases)))
    assert images.min() >= -1 and images.max() <= 1
    # every kept slice of the first two cases is found among the case's own slices, and that slice's label holds no
    # tumour voxel: the labels are read here, not through the function under test
    for i, case_dir in enumerate(cases[:2]):
        case = load_brats_case(case_dir, modalities=("flair",))
        assert (case.labels > 0).any(), f"{case_dir.name}: a case with a tumour tests the exclusion"
        by_slice = {}
        for z in case.brain_slices():
            raw, tumour, brain = case.slice(z)
            try:
                by_slice[z] = (prepare_slice(raw, size=64, modality="mri", brain_mask=brain).image, bool(tumour.any()))
            except ValueError:                  # a sliver of brain at the top or bottom: never one of the kept
                continue
        kept = images[groups == i]
        assert len(kept) > 0
        for image in kept:
            z = [z for z, (prepared, _) in by_slice.items() if np.array_equal(prepared, image)]
            assert len(z) == 1, f"{case_dir.name}: a kept slice that is no one slice of the case"
            assert not by_slice[z[0]][1], f"{case_dir.name}: slice {z[0]} holds tumour but was kept as healthy"


def test_synthetic_slices_on_the_apps_scale_span_the_brain_like_a_prepared_real_slice():
    a = synthbrain_healthy(4, size=32, seed=0)
    b = synthbrain_healthy(4, size=32, seed=0, normalisation="percentile")
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    for x, y in zip(a[:, 0], b[:, 0]):
        brain = x > -0.98
        assert np.percentile(x[brain], 99) < 0.5                       # SynthBrain's absolute FLAIR scale
        assert np.percentile(y[brain], 99) == pytest.approx(1.0, abs=0.05) and (y[~brain] == -1).all()
