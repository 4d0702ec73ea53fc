"""Diseased examples for adapting the classifier: SynthBrain lesions pasted into real normal slices."""

import numpy as np
import pytest

from diffuse_core.core.brain import brain_masks
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.train.data import normalise_slices
from diffuse_core.train.pasted_lesions import lesion_difference, paste_lesions


def _normals(n=3):
    imgs = np.stack([generate_slice(sample_seed("val", 3, i), ("flair",), 128, healthy=True).image for i in range(n)])
    return normalise_slices(imgs.astype(np.float32), "tissue").astype(np.float32)


def test_a_pasted_lesion_changes_the_slice_inside_its_mask_and_brain_only():
    normals = _normals()
    images, masks = paste_lesions(normals, per_slice=2, seed=0)
    assert images.shape == (6, 1, 128, 128) and masks.shape == (6, 128, 128)
    brains = brain_masks(normals)
    for img, m in zip(images, masks):
        j = int(np.argmin([np.abs(img - n)[:, ~m.astype(bool)].max() for n in normals]))   # the slice it went into
        changed = np.abs(img - normals[j])[0] > 1e-4
        assert m.any() and not (changed & ~brains[j]).any()                   # nothing outside the brain moves
        assert changed[m.astype(bool)].mean() > 0.5                           # the lesion is there
        assert img[0][m.astype(bool)].mean() > normals[j][0][m.astype(bool)].mean()     # FLAIR lesions are bright


def test_the_lesion_difference_is_the_lesion_alone():
    seed = next(sample_seed("train", 7, i) for i in range(50) if lesion_difference(sample_seed("train", 7, i)))
    diff, mask = lesion_difference(seed)
    outside = np.abs(diff[0][~mask])
    assert np.abs(diff[0][mask]).mean() > 10 * max(outside.mean(), 1e-6)


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="expected normal slices"):
        paste_lesions(np.zeros((3, 128, 128), np.float32))
    with pytest.raises(ValueError, match="no SynthBrain lesion fitted"):
        paste_lesions(np.full((1, 1, 128, 128), -1.0, np.float32), per_slice=1, max_tries=3)
