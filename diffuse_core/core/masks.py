"""From a saliency map to the binary Dif-fuse mask m (paper Sec. III-B, Algorithm 1 lines 1-2, Fig. 5).

The saliency map is smoothed with a 5x5 Gaussian kernel, so that the mask is more uniform with fewer isolated pixels,
and binarised at a percentile (the paper's best is the 90th): m = 1 where the smoothed saliency exceeds that
percentile. The percentile is computed over the brain only; over the whole image the black background would drag it
down and the mask would swell.
"""

from __future__ import annotations

import cv2
import numpy as np

from diffuse_core.core.defaults import PAPER_PERCENTILE

SMOOTHING_KERNEL = 5      # paper Sec. III-B: "smooth the saliency map with a Gaussian kernel of size 5 x 5"
DEFAULT_PERCENTILE = PAPER_PERCENTILE  # paper Sec. IV-D, Fig. 5


def smooth_saliency(saliency: np.ndarray, kernel_size: int = SMOOTHING_KERNEL) -> np.ndarray:
    """5x5 Gaussian smoothing (sigma derived from the size by OpenCV: 0.3 ((k - 1) / 2 - 1) + 0.8 = 1.1)."""
    s = np.ascontiguousarray(saliency, dtype=np.float32)
    return cv2.GaussianBlur(s, (kernel_size, kernel_size), 0, borderType=cv2.BORDER_REPLICATE)


def mask_from_saliency(saliency, brain_mask=None, percentile: float = DEFAULT_PERCENTILE,
                       kernel_size: int = SMOOTHING_KERNEL) -> np.ndarray:
    """Binary mask (H, W) uint8 {0, 1}: smoothed saliency above its ``percentile`` inside the brain.

    ``saliency`` is (H, W), any non-negative scale. ``brain_mask`` (H, W) restricts both the percentile and the mask;
    without it the whole image counts as brain. A constant saliency map carries no information and gives an empty
    mask (Dif-fuse then reconstructs the image unchanged).
    """
    s = np.asarray(saliency, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"the saliency map must be 2-D (H, W), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("the saliency map holds NaN/inf values")
    if not 0.0 < float(percentile) < 100.0:
        raise ValueError(f"percentile must lie strictly between 0 and 100 (the paper uses 90), got {percentile}")
    brain = np.ones_like(s, dtype=bool) if brain_mask is None else np.asarray(brain_mask).astype(bool)
    if brain.shape != s.shape:
        raise ValueError(f"brain mask {brain.shape} and saliency map {s.shape} differ in size")
    if not brain.any():
        raise ValueError("the brain mask is empty: nothing to threshold")
    smoothed = smooth_saliency(s, kernel_size)
    threshold = np.percentile(smoothed[brain], percentile)
    return ((smoothed > threshold) & brain).astype(np.uint8)
