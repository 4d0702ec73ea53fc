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
        return panel_side(self.anomaly.shape[0])


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


# display presets: (centre, width) in the slice's display units, where -1 and 1 are the darkest and brightest values
# of the range the slice was loaded with (MRI: its brain's intensity range; CT: the loading window, brain W80/L40 HU
# unless chosen otherwise, so that a CT preset narrower than it is exact in HU)
WINDOW_PRESETS = {
    "As loaded": (0.0, 2.0),
    "MRI: more contrast": (0.0, 1.2),
    "MRI: brighter": (-0.3, 1.6),
    "MRI: bright lesions": (0.35, 1.3),
    "CT stroke W40/L40 HU (brain-window cases)": (0.0, 1.0),
    "CT stroke narrow W8/L32 HU (brain-window cases)": (-0.2, 0.2),
}
ZOOM_RANGE = (1.0, 6.0)


def windowed(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Intensities in [-1, 1] through a display window: ``centre - width/2`` shows black, ``centre + width/2``
    white (clipped), returned in [-1, 1]."""
    width = max(float(width), 1e-3)
    return np.clip((np.asarray(x, np.float32) - float(centre)) / (width / 2), -1.0, 1.0)


def view_box(side: int, zoom: float = 1.0, focus=None) -> tuple[int, int, int]:
    """(top, left, crop side) in pixels of the square a zoom about ``focus`` shows, kept inside the slice."""
    zoom = float(np.clip(zoom or 1.0, *ZOOM_RANGE))
    crop = max(8, min(side, int(round(side / zoom))))
    fr, fc = (0.5, 0.5) if focus is None else (float(focus[0]), float(focus[1]))
    top = int(np.clip(round(fr * side - crop / 2), 0, side - crop))
    left = int(np.clip(round(fc * side - crop / 2), 0, side - crop))
    return top, left, crop


def panel_side(crop: int) -> int:
    """The side in pixels of a panel showing ``crop`` pixels (as :attr:`Display.panel_size`)."""
    return int(min(MAX_PANEL_SIZE, max(DEFAULTS["display_size"], crop)))


def view(d: Display, centre: float = 0.0, width: float = 2.0, zoom: float = 1.0, focus=None) -> Display:
    """``d`` as the panels show it under a window (applied to the slice and the counterfactual alike) and a zoom
    ``zoom`` >= 1 about ``focus`` ((row, col) as fractions of the side; default the centre). The heat scale
    (``vmax``) stays that of the whole slice, so zooming never changes what a colour means."""
    top, left, crop = view_box(d.anomaly.shape[0], zoom, focus)
    box = (slice(top, top + crop), slice(left, left + crop))

    def cut(a):
        return None if a is None else a[(Ellipsis,) + box]

    return Display(windowed(cut(d.image), centre, width), windowed(cut(d.counterfactual), centre, width),
                   cut(d.anomaly), cut(d.mask), cut(d.saliency), cut(d.brain), cut(d.truth), d.vmax)
