"""Smooth random fields and soft indicators: the two building blocks of SynthBrain's deformation, lesions and
rendering. Sizes are in pixels; fields are float32 (H, W)."""

from __future__ import annotations

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field of unit standard deviation with about ``cells`` features across the image."""
    cells = int(max(2, cells))
    g = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    big = cv2.resize(g, (size + 2 * size // cells, size + 2 * size // cells), interpolation=cv2.INTER_CUBIC)
    o = size // cells
    out = big[o:o + size, o:o + size]
    return (out - out.mean()) / (out.std() + 1e-6)


def soft(field: np.ndarray, px_per_unit: float, width_px: float = 1.2) -> np.ndarray:
    """Soft indicator of ``field > 0`` with an edge about ``width_px`` pixels wide (0.5 on the zero level)."""
    return np.clip(field * (px_per_unit / width_px) + 0.5, 0.0, 1.0).astype(np.float32)
