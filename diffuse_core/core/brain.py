"""The brain mask of a slice on the model's grid: the one definition every layer uses.

Images are in [-1, 1] with the background exactly -1 (see :mod:`diffuse_core.io.preprocess`). A pixel is brain when
any channel rises more than ``BRAIN_THRESHOLD`` above -1; interior holes (dark CSF in a ventricle) are filled, since
they are brain too.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BRAIN_THRESHOLD = 0.02  # intensity units of [-1, 1] images: above the background by this much in some channel


def brain_mask_from_image(image, threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """(H, W) uint8 brain mask of one slice, (H, W) or (C, H, W), numpy array or torch tensor."""
    img = _as_numpy(image)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"expected a slice (H, W) or (C, H, W), got shape {img.shape}")
    return brain_masks(img[None], threshold)[0].astype(np.uint8)


def brain_masks(images, threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """(B, H, W) bool brain masks of a batch (B, C, H, W)."""
    x = _as_numpy(images)
    if x.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {x.shape}")
    inside = (x > -1.0 + threshold).any(axis=1)
    return np.stack([ndimage.binary_fill_holes(m) for m in inside]).astype(bool)


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)
