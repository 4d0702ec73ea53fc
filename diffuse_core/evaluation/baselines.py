"""What every method is measured against (issue: evaluation v2): the FLAIR intensity threshold, and the oracle mask
that splits Dif-fuse's error between its mask and its healthy model.

* The **FLAIR threshold** flags bright pixels: each pixel's intensity as a z-score over its slice's brain, thresholded
  at a value chosen on validation like every other method's (Meissen et al., BrainLes 2021, showed that this simple
  rule is level with most published unsupervised methods on BraTS: Dice 0.738).
* The **CT threshold** is its analogue for CT, where an infarct is dark: the darkness below the brain's mean in
  the HU window, thresholded the same way (:func:`hypodensity_maps`).
* The **oracle mask** is the true lesion dilated by :data:`ORACLE_RADIUS` pixels: Dif-fuse given it shows what the
  healthy model alone achieves; the gap to the ACAT-mask Dice is the saliency's share of the error.
"""

from __future__ import annotations

import cv2
import numpy as np

ZSCORE_GRID = tuple(np.round(np.arange(0.0, 3.01, 0.1), 2))   # thresholds tried on validation (z-score units)
ORACLE_RADIUS = 6                                             # pixels on the model grid (about 10 mm at 128)


def zscore_maps(images: np.ndarray, brains: np.ndarray) -> np.ndarray:
    """(N, H, W): each pixel's first-channel intensity as a z-score over its slice's brain (0 outside)."""
    out = np.zeros((len(images),) + images.shape[-2:], np.float32)
    for i, (x, b) in enumerate(zip(images[:, 0], brains.astype(bool))):
        if b.any():
            v = x[b]
            out[i][b] = (v - v.mean()) / (v.std() + 1e-6)
    return out


def hypodensity_maps(images: np.ndarray, brains: np.ndarray) -> np.ndarray:
    """(N, H, W): the CT analogue of :func:`zscore_maps` for the dark lesions of CT (an infarct is hypodense): each
    pixel's darkness below its slice's brain mean, in brain standard deviations (0 where brighter; 0 outside). CT
    slices are normalised through an HU window (:data:`diffuse_core.io.preprocess.CT_WINDOWS`), so this thresholds
    HU inside that window."""
    return np.maximum(-zscore_maps(images, brains), 0.0)


def oracle_masks(lesions: np.ndarray, brains: np.ndarray, radius: int = ORACLE_RADIUS) -> np.ndarray:
    """(N, H, W) uint8: the true lesion dilated by ``radius`` pixels, inside the brain (empty on healthy slices)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(np.asarray(l, np.uint8), k) & np.asarray(b, np.uint8)
                     for l, b in zip(lesions, brains)])
