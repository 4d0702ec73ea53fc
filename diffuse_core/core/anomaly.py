"""Anomaly maps from a counterfactual (paper Sec. III-B, end of Algorithm 1).

The map is |x0 - x0_hat| averaged over channels, then a morphological opening (erosion followed by dilation, which
removes isolated bright pixels) and a closing (dilation followed by erosion, which fills small holes), both with a
square kernel, and finally kept inside the brain: the background carries only reconstruction noise.
Intensities are in the model's range, so the map lies in [0, 2].

The paper's kernel is 5 x 5 on 256 x 256 slices. On this project's 128 x 128 grid a 5 x 5 opening spans twice the
anatomy and erases lesions narrower than 5 pixels (punctate white-matter hyperintensities, small strokes), so the
kernel is a setting saved with the weights (card ``anomaly_kernel``, chosen on validation together with the anomaly
threshold): :func:`kernel_for_resolution` gives the paper's size scaled to a grid, :func:`anomaly_kernel_of` reads
a card (a card without the key keeps the paper's 5, with which its threshold was chosen).
"""

from __future__ import annotations

import cv2
import numpy as np

MORPHOLOGY_KERNEL = 5  # paper Sec. III-B: "erosion followed by dilation with a 5 x 5 kernel", then the reverse
PAPER_RESOLUTION = 256  # paper Sec. IV-A: slices resized to 256 x 256


def kernel_for_resolution(resolution: int) -> int:
    """The paper's 5 x 5 kernel (at 256 x 256) scaled to a ``resolution`` grid: the nearest odd size, at least 1
    (128 -> 3, 256 -> 5, 512 -> 9)."""
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    size = MORPHOLOGY_KERNEL * resolution / PAPER_RESOLUTION
    return max(1, 2 * int(round((size - 1) / 2)) + 1)


def anomaly_kernel_of(card: dict | None) -> int:
    """The opening/closing kernel a model's anomaly threshold was chosen with: its card's ``anomaly_kernel``, else
    the paper's 5."""
    k = (card or {}).get("anomaly_kernel", MORPHOLOGY_KERNEL)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"the model card's anomaly_kernel must be an odd positive integer, got {k!r}")
    return k


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _as_chw(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        return a
    raise ValueError(f"{name} must be a 2-D slice (H, W) or channel-first (C, H, W), got shape {a.shape}")


def clean_anomaly_map(diff: np.ndarray, kernel_size: int = MORPHOLOGY_KERNEL) -> np.ndarray:
    """Opening then closing of a 2-D difference map with a square kernel (grey-level morphology, OpenCV)."""
    if diff.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {diff.shape}")
    if kernel_size < 1:
        raise ValueError("kernel_size must be >= 1")
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    d = np.ascontiguousarray(diff, dtype=np.float32)
    d = cv2.morphologyEx(d, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)   # erosion -> dilation
    d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)  # dilation -> erosion
    return d


def anomaly_map(image, counterfactual, brain_mask=None, kernel_size: int = MORPHOLOGY_KERNEL) -> np.ndarray:
    """The Dif-fuse anomaly map of one slice: (H, W) float32 in [0, 2], zero outside ``brain_mask``.

    ``image`` and ``counterfactual`` are (C, H, W) or (H, W) arrays or tensors in [-1, 1].
    """
    x0, x0_hat = _as_chw(_as_numpy(image), "image"), _as_chw(_as_numpy(counterfactual), "counterfactual")
    if x0.shape != x0_hat.shape:
        raise ValueError(f"image {x0.shape} and counterfactual {x0_hat.shape} differ in shape")
    diff = np.abs(x0 - x0_hat).mean(axis=0)
    if not np.isfinite(diff).all():
        raise ValueError("the image or counterfactual holds NaN/inf values")
    out = clean_anomaly_map(diff, kernel_size)
    if brain_mask is not None:
        bm = _as_numpy(brain_mask).squeeze()
        if bm.shape != out.shape:
            raise ValueError(f"brain mask {bm.shape} does not match the image {out.shape}")
        out = out * (bm > 0)
    return out.astype(np.float32)


def binarize(anomaly: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose anomaly exceeds ``threshold`` (in intensity units of [-1, 1] images) -> uint8 {0, 1}."""
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    return (np.asarray(anomaly) > threshold).astype(np.uint8)
