"""A result on the model's grid (128 x 128) brought back to the input's own pixels (issue: models v2, item 4).

The model redraws only what it must: in Algorithm 1 the DDPM walk inside the mask m replaces the tissue there, and
outside m the DDIM walk reconstructs the input, which at the input's resolution is better served by the input
itself. So, at the input's size:

* **counterfactual**: the input's own pixels outside the redrawn region; inside it the model's counterfactual,
  upsampled (cubic), blended over a ramp of :data:`FEATHER_MODEL_PX` model pixels outside m so that no seam shows;
* **anomaly map**: the model-grid map |x0 - x0_hat| (already opened/closed inside the brain) upsampled linearly, so a
  threshold gives smooth outlines rather than 4 x 4 blocks; zero outside the input's brain mask;
* **mask** and **saliency**: upsampled linearly (the mask then thresholded at 1/2), inside the brain.

Binarising and scoring (Dice/IoU against a ground truth at the input's size) happen on these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from diffuse_core.io.preprocess import Geometry, from_model_grid

BLEND_GRID_PX = 8.0         # blend weights of large inputs are computed at this many pixels per model pixel
FEATHER_MODEL_PX = 3.0      # width of the blend ramp outside the mask, in model pixels (1.7 mm each at 128 on 220 mm)


@dataclass
class FullResolution:
    """Arrays at the input's size (H0, W0): images (C, H0, W0) in [-1, 1], maps (H0, W0)."""

    image: np.ndarray               # the input, normalised as the model saw it (background -1)
    counterfactual: np.ndarray      # the input outside the redrawn region, the model's redrawing inside
    anomaly: np.ndarray             # float32 >= 0, zero outside the brain
    mask: np.ndarray                # uint8 {0, 1}: the Dif-fuse mask m
    saliency: np.ndarray | None     # float32 in [0, 1]
    brain: np.ndarray               # uint8 {0, 1}
    blend: np.ndarray               # float32 in [0, 1]: the model's share of each counterfactual pixel

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.anomaly.shape)


def blend_weight(mask: np.ndarray, pixels_per_model_px: float, feather: float = FEATHER_MODEL_PX) -> np.ndarray:
    """1 inside ``mask`` (H, W), falling linearly to 0 over ``feather`` model pixels outside it, lightly smoothed.

    The ramp and its smoothing span several model pixels, so on a large input (more than
    2 x :data:`BLEND_GRID_PX` input pixels per model pixel) they are computed on a grid of :data:`BLEND_GRID_PX`
    pixels per model pixel and interpolated up (linear): a 4096 x 4096 slice costs a 512 x 512 blur, not a
    sigma-64 one over 16 MP (issue 35)."""
    m = np.asarray(mask, np.uint8)
    if not m.any():
        return np.zeros(m.shape, np.float32)
    factor = pixels_per_model_px / BLEND_GRID_PX
    if factor <= 2.0:
        w = _ramp(m, pixels_per_model_px, feather)
    else:
        small = (max(1, int(np.ceil(m.shape[1] / factor))), max(1, int(np.ceil(m.shape[0] / factor))))
        m_small = (cv2.resize(m.astype(np.float32), small, interpolation=cv2.INTER_AREA) >= 0.5).astype(np.uint8)
        w = cv2.resize(_ramp(m_small, BLEND_GRID_PX, feather), (m.shape[1], m.shape[0]),
                       interpolation=cv2.INTER_LINEAR)
    w[m > 0] = 1.0
    return w


def _ramp(m: np.ndarray, pixels_per_model_px: float, feather: float) -> np.ndarray:
    ramp = max(1.0, feather * pixels_per_model_px)
    dist = cv2.distanceTransform((m == 0).astype(np.uint8), cv2.DIST_L2, 5)
    w = np.clip(1.0 - dist / ramp, 0.0, 1.0).astype(np.float32)
    sigma = max(0.5, 0.5 * pixels_per_model_px)
    return cv2.GaussianBlur(w, (0, 0), sigma)


def to_input_grid(image: np.ndarray, brain: np.ndarray, geometry: Geometry | None, counterfactual: np.ndarray,
                  anomaly: np.ndarray, mask: np.ndarray, saliency: np.ndarray | None = None) -> FullResolution:
    """Bring a model-grid result back to the input's grid (see the module docstring).

    ``image`` (C, H0, W0) and ``brain`` (H0, W0) are the input at its own size, normalised as for the model;
    ``counterfactual`` (C, R, R), ``anomaly``, ``mask`` and ``saliency`` (R, R) are on the model's grid, which
    ``geometry`` maps back (None: the input is the model grid; the arrays are returned as they are).
    """
    image = np.asarray(image, np.float32)
    brain = (np.asarray(brain) > 0).astype(np.uint8)
    if geometry is None:
        m = (np.asarray(mask) > 0).astype(np.uint8)
        return FullResolution(image, np.asarray(counterfactual, np.float32), np.asarray(anomaly, np.float32), m,
                              None if saliency is None else np.asarray(saliency, np.float32), brain,
                              m.astype(np.float32))
    if image.shape[-2:] != tuple(geometry.original_shape) or brain.shape != tuple(geometry.original_shape):
        raise ValueError(f"the input is {image.shape[-2]}x{image.shape[-1]} but the result maps back to "
                         f"{geometry.original_shape[0]}x{geometry.original_shape[1]}")
    inside = brain.astype(bool)
    mask_full = ((from_model_grid(np.asarray(mask, np.float32), geometry, order=1) > 0.5) & inside).astype(np.uint8)
    up = from_model_grid(np.asarray(counterfactual, np.float32), geometry, order=3).astype(np.float32, copy=False)
    np.clip(up, -1.0, 1.0, out=up)
    w = (blend_weight(mask_full, 1.0 / geometry.scale) * inside).astype(np.float32, copy=False)
    # w x up + (1 - w) x image, which is the image itself outside the brain (w = 0 there); computed in place, as a
    # 16 MP input's temporaries are 64 MB each (issue 35)
    up -= image
    up *= w[None]
    up += image
    cf = up
    ano = from_model_grid(np.asarray(anomaly, np.float32), geometry, order=1).astype(np.float32, copy=False)
    np.maximum(ano, 0.0, out=ano)
    ano *= inside
    sal = None
    if saliency is not None:
        sal = from_model_grid(np.asarray(saliency, np.float32), geometry, order=1).astype(np.float32, copy=False)
        np.clip(sal, 0.0, 1.0, out=sal)
        sal *= inside
    return FullResolution(image, cf, ano.astype(np.float32), mask_full, sal, brain, w.astype(np.float32))
