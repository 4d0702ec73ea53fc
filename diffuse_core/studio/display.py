"""What the app shows of a run: the result at the input's own size (:mod:`diffuse_core.io.full_resolution`), padded
to a square so that every panel keeps the slice's proportions, and the size the panels are drawn at."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuse_core.studio.settings import DEFAULTS

MAX_PANEL_SIZE = 1024     # pixels a side at most: a larger input is shown downsampled (the files keep every pixel)


@dataclass
class Display:
    """Square arrays at the input's resolution: image/counterfactual (C, S, S) in [-1, 1], maps (S, S)."""

    image: np.ndarray
    counterfactual: np.ndarray
    anomaly: np.ndarray
    mask: np.ndarray
    saliency: np.ndarray | None
    brain: np.ndarray
    truth: np.ndarray | None
    vmax: float

    @property
    def panel_size(self) -> int:
        """The panels' side: the input's own (at least the display size, at most :data:`MAX_PANEL_SIZE`)."""
        return int(min(MAX_PANEL_SIZE, max(DEFAULTS["display_size"], self.anomaly.shape[0])))


def _square(a: np.ndarray | None, fill: float) -> np.ndarray | None:
    if a is None:
        return None
    h, w = a.shape[-2:]
    if h == w:
        return a
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    out = np.full(a.shape[:-2] + (s, s), fill, dtype=a.dtype)
    out[..., top:top + h, left:left + w] = a
    return out


def display_result(case, result) -> Display:
    """The run ``result`` of ``case`` (a :class:`~diffuse_core.cases.CaseInput`) at the input's size, squared."""
    full = case.full_resolution(result)
    truth = case.truth_at_input_size
    return Display(_square(full.image, -1.0), _square(full.counterfactual, -1.0), _square(full.anomaly, 0.0),
                   _square(full.mask, 0), _square(full.saliency, 0.0), _square(full.brain, 0),
                   _square(None if truth is None else np.asarray(truth, np.uint8), 0),
                   max(float(full.anomaly.max()), 1e-3))
