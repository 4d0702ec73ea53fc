"""Overlap metrics between binary masks (paper Sec. IV-E: Dice and IoU of anomaly maps against lesion masks).

Convention: foreground is any non-zero pixel. When both masks are empty the prediction is perfect (Dice = IoU = 1);
when exactly one is empty the score is 0.
"""

from __future__ import annotations

import numpy as np


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool)
    t = np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {t.shape} masks differ in shape")
    return p, t


def dice(pred, target) -> float:
    """Dice = 2 |P & T| / (|P| + |T|), in [0, 1]."""
    p, t = _pair(pred, target)
    total = p.sum() + t.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(p, t).sum() / total)


def iou(pred, target) -> float:
    """Intersection over union |P & T| / |P | T|, in [0, 1]."""
    p, t = _pair(pred, target)
    union = np.logical_or(p, t).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, t).sum() / union)
