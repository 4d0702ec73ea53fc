"""Pictures the page shows: model-grid slices ([-1, 1]) and maps as RGB uint8 at the display size, with the mask
outlined in cyan and the ground truth in green (the colours of :mod:`diffuse_core.io.export`); and the reverse, a
painted ``gr.ImageEditor`` value back to a mask."""

from __future__ import annotations

import cv2
import numpy as np

from diffuse_core.io.export import LESION_OUTLINE_RGB, MASK_OUTLINE_RGB, heat_map, outline, to_uint8
from diffuse_core.studio.settings import DEFAULTS

USER_COLOR = (255, 70, 60)        # the trainee's drawing: red
MODEL_COLOR = (230, 60, 230)      # the model's binarised anomaly map: magenta
GT_COLOR = LESION_OUTLINE_RGB     # ground truth: green
MASK_COLOR = MASK_OUTLINE_RGB     # Dif-fuse mask: cyan
THUMBNAIL_SIZE = 128              # pixels a side of a gallery thumbnail (a review tile is 2 x 2 of them)
MASK_TINT = 0.55                  # how much of the mask colour a masked pixel takes


def resize(rgb: np.ndarray, size: int, interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    """A square picture or map at ``size`` x ``size`` (a copy when it already is)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb.copy()
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def resize_mask(mask, size: int) -> np.ndarray:
    """A mask ((H, W) or (1, H, W), any value > 0 is in) as (size, size) uint8 {0, 1}."""
    m = np.asarray(mask, np.uint8)
    if m.ndim == 3:
        m = m[0]
    return cv2.resize((m > 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def grey_rgb(image2d, size: int | None = None) -> np.ndarray:
    """[-1, 1] slice -> grey RGB uint8 at ``size`` (display size by default)."""
    size = size or DEFAULTS["display_size"]
    g = resize(to_uint8(np.clip(np.asarray(image2d, np.float32), -1, 1)), size)
    return np.repeat(g[..., None], 3, axis=2)


def with_outlines(rgb: np.ndarray, mask=None, truth=None, thickness: int = 1) -> np.ndarray:
    """``rgb`` with the mask outlined in cyan and the ground truth in green (in place; returned)."""
    size = rgb.shape[0]
    if mask is not None and np.asarray(mask).any():
        outline(rgb, resize_mask(mask, size), MASK_COLOR, thickness)
    if truth is not None and np.asarray(truth).any():
        outline(rgb, resize_mask(truth, size), GT_COLOR, thickness)
    return rgb


def tint_mask(rgb: np.ndarray, mask) -> np.ndarray:
    """``rgb`` with the mask's pixels blended towards cyan."""
    out = rgb.astype(np.float32)
    m = resize_mask(mask, rgb.shape[0]).astype(bool)
    out[m] = out[m] * (1 - MASK_TINT) + np.array(MASK_COLOR, np.float32) * MASK_TINT
    return out.astype(np.uint8)


def mask_picture(image2d, mask, size: int | None = None) -> np.ndarray:
    """The slice with the mask tinted and outlined in cyan (at ``size``, default the display size)."""
    rgb = grey_rgb(image2d, size)
    return with_outlines(tint_mask(rgb, mask), mask, thickness=max(1, rgb.shape[0] // 256))


def saliency_picture(saliency, brain, size: int | None = None) -> np.ndarray:
    """The saliency map as a heat map inside the brain."""
    return resize(heat_map(np.asarray(saliency, np.float32), brain_mask=brain), size or DEFAULTS["display_size"],
                  cv2.INTER_LINEAR)


def overlay_picture(image2d, anomaly, opacity: float, mask=None, truth=None, vmax: float | None = None,
                    size: int | None = None) -> np.ndarray:
    """The slice in grey with the anomaly heat map on top at ``opacity`` (0..1), mask cyan, ground truth green."""
    size = size or DEFAULTS["display_size"]
    a = np.asarray(anomaly, np.float32)
    top = max(float(vmax if vmax is not None else a.max()), 1e-3)
    grey = grey_rgb(image2d, size).astype(np.float32)
    heat = resize(heat_map(a, top), size, cv2.INTER_LINEAR).astype(np.float32)
    weight = float(np.clip(opacity, 0, 1)) * np.clip(resize(a, size, cv2.INTER_LINEAR) / top, 0, 1)[..., None]
    out = (grey * (1 - weight) + heat * weight).astype(np.uint8)
    return with_outlines(out, mask, truth, max(1, size // 256))


def thumbnail(image_chw, truth=None, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """A gallery thumbnail: the slice's first channel in grey, the ground truth outlined in green."""
    rgb = grey_rgb(np.asarray(image_chw)[0], size)
    if truth is not None and np.asarray(truth).any():
        outline(rgb, resize_mask(truth, size), GT_COLOR, 1)
    return rgb


def review_tile(record: dict, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """2 x 2 tile of a run record: input (green truth) | counterfactual / anomaly map | mask. A slice the verdict
    calls normal (``record["summary"]["verdict"]``) shows an empty anomaly map: no red, as in Explore and the quiz."""
    a = with_outlines(grey_rgb(record["image"][0], size), truth=record.get("truth"))
    b = grey_rgb(record["counterfactual"][0], size)
    verdict = (record.get("summary") or {}).get("verdict")
    anomaly = np.zeros_like(record["anomaly"]) if verdict and not verdict["abnormal"] else record["anomaly"]
    c = resize(heat_map(anomaly, record["vmax"]), size, cv2.INTER_LINEAR)
    d = tint_mask(a, record["mask"])
    gap = np.full((size, 2, 3), 255, np.uint8)
    top, bottom = np.concatenate([a, gap, b], axis=1), np.concatenate([c, gap, d], axis=1)
    return np.concatenate([top, np.full((2, top.shape[1], 3), 255, np.uint8), bottom], axis=0)


def drawing_to_mask(editor_value, size: int) -> np.ndarray:
    """The strokes of a gr.ImageEditor value (any layer pixel with alpha > 0) -> (size, size) uint8 {0, 1}."""
    if editor_value is None:
        return np.zeros((size, size), np.uint8)
    layers = editor_value.get("layers") if isinstance(editor_value, dict) else None
    drawn = None
    for layer in layers or []:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[2] == 4:
            m = a[..., 3] > 0
        elif a.ndim == 3:
            m = a.max(axis=2) > 0
        else:
            m = a > 0
        drawn = m if drawn is None else (drawn | m) if drawn.shape == m.shape else drawn
    if drawn is None:
        return np.zeros((size, size), np.uint8)
    return (cv2.resize(drawn.astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
