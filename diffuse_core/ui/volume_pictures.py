"""The Volume tab's pictures and curve: an axial slice as read, its counterfactual and its anomaly overlay at the
slice's physical aspect (pixel spacing kept), coronal and sagittal reformats of a stacked volume (display only), and
the Plotly curve of the anomaly score per slice. Colours as in Explore: cyan outlines the region Dif-fuse redrew,
magenta the pixels flagged (anomaly above the model card's threshold), heat maps from black to bright yellow."""

from __future__ import annotations

import cv2
import numpy as np

from diffuse_core.io.export import heat_map, outline
from diffuse_core.ui.pictures import MASK_COLOR, MODEL_COLOR

PANEL = 512                   # pixels along the longer side of an axial panel
REFORMAT = 384                # pixels along the longer side of a coronal / sagittal view
SLICE_LINE = (255, 210, 0)    # the slice in view, on the coronal / sagittal views
HEAT_TOP = 2.0                # the overlay's heat map is bright yellow at this multiple of the threshold
PENDING_DIM = 0.45            # how bright a slice still computing (or not run) is drawn


def grey(raw2d: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Raw values -> uint8 grey through ``window`` (black, white)."""
    lo, hi = window
    return (np.clip((np.asarray(raw2d, np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def physical_size(shape: tuple[int, int], row_mm: float, col_mm: float, longest: int) -> tuple[int, int]:
    """(height, width) in pixels of a picture of ``shape`` rows x columns whose pixels are ``row_mm`` high and
    ``col_mm`` wide, its longer side ``longest``."""
    h_mm, w_mm = shape[0] * float(row_mm or 1.0), shape[1] * float(col_mm or 1.0)
    s = longest / max(h_mm, w_mm)
    return max(1, int(round(h_mm * s))), max(1, int(round(w_mm * s)))


def _fit(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    h, w = size
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def _rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _outline(rgb: np.ndarray, mask, color, size) -> np.ndarray:
    if mask is not None and np.asarray(mask).any():
        outline(rgb, _fit((np.asarray(mask) > 0).astype(np.uint8), size, nearest=True), color,
                max(1, rgb.shape[0] // 256))
    return rgb


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` dimmed, with ``text`` written across its middle (a slice still computing, or not run)."""
    out = (rgb.astype(np.float32) * PENDING_DIM).astype(np.uint8)
    scale = max(0.5, out.shape[1] / 620)
    thick = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    org = (max(4, (out.shape[1] - tw) // 2), (out.shape[0] + th) // 2)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def axial_panels(raw, counterfactual, result, window, spacing, threshold: float, opacity: float,
                 pending_text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input, counterfactual, overlay) RGB pictures of one axial slice: ``raw`` as read, ``counterfactual`` in
    the input's units (None while pending), ``result`` its :class:`~diffuse_core.volumes.compute.SliceResult`
    (None while pending: both result panels show the dimmed input with ``pending_text``)."""
    size = physical_size(raw.shape, spacing[0], spacing[1], PANEL)
    base = _rgb(_fit(grey(raw, window), size))
    if result is None:
        dim = caption(base, pending_text)
        return base, dim, dim.copy()
    cf = _outline(_rgb(_fit(grey(counterfactual, window), size)), result.redrawn, MASK_COLOR, size)
    top = max(HEAT_TOP * float(threshold), 1e-3)
    a = _fit(np.asarray(result.anomaly, np.float32), size)
    weight = float(np.clip(opacity, 0, 1)) * np.clip(a / top, 0, 1)[..., None]
    over = (base.astype(np.float32) * (1 - weight) + heat_map(a, top).astype(np.float32) * weight).astype(np.uint8)
    over = _outline(over, result.flagged, MODEL_COLOR, size)
    return base.copy(), cf, over


def reformats(stack: np.ndarray, done: np.ndarray, z: int, row: int, col: int, window, spacing, step: float,
              anomaly: np.ndarray | None = None, threshold: float = 1.0, opacity: float = 0.6
              ) -> tuple[np.ndarray, np.ndarray]:
    """(coronal at ``row``, sagittal at ``col``) RGB views of ``stack`` (Z, H, W raw values; superior at the top,
    the patient's right on the left of the coronal, anterior on the left of the sagittal), ``anomaly`` (Z, H, W) as
    a heat map on top where given, the slice ``z`` in view as a yellow line, slices without a result (``done``
    False) dimmed."""
    views = []
    for cut, px_mm in ((stack[:, row, :], spacing[1]), (stack[:, :, col], spacing[0])):
        size = physical_size(cut.shape, step, px_mm, REFORMAT)
        g = grey(cut[::-1], window).astype(np.float32)
        rgb = _rgb(_fit(g, size)).astype(np.float32)
        if anomaly is not None:
            a_cut = (anomaly[:, row, :] if len(views) == 0 else anomaly[:, :, col])[::-1]
            top = max(HEAT_TOP * float(threshold), 1e-3)
            a = _fit(a_cut.astype(np.float32), size)
            weight = float(np.clip(opacity, 0, 1)) * np.clip(a / top, 0, 1)[..., None]
            rgb = rgb * (1 - weight) + heat_map(a, top).astype(np.float32) * weight
        shade = _fit(np.where(done[::-1], 1.0, PENDING_DIM).astype(np.float32)[:, None].repeat(cut.shape[1], 1), size,
                     nearest=True)
        rgb = (rgb * shade[..., None]).astype(np.uint8)
        n = stack.shape[0]
        y = int(round((n - 1 - z + 0.5) / n * size[0]))
        cv2.line(rgb, (0, y), (size[1] - 1, y), SLICE_LINE, max(1, size[0] // 200))
        views.append(rgb)
    return views[0], views[1]


def score_curve(scores: list, brain: list[int], z: int, worst: list[int], total_done: int,
                outside: list[bool] | None = None):
    """The Plotly curve of the anomaly score (flagged area in mm^2) per slice: computed slices as a line, brain
    slices still computing as grey ticks at zero, slices outside the levels the model learned (``outside``) as grey
    crosses, the slice in view as a vertical line, the worst slices marked; a click on a point jumps there (the
    tab's script)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    xs = [i for i, s in enumerate(scores) if s is not None]
    fig.add_trace(go.Scatter(x=xs, y=[scores[i] for i in xs], mode="lines+markers", name="flagged area",
                             line={"color": "#7c3aed"}, marker={"size": 7},
                             hovertemplate="slice %{x}: %{y:.0f} mm²<extra>click to view</extra>"))
    pending = [i for i in brain if scores[i] is None]
    if pending:
        fig.add_trace(go.Scatter(x=pending, y=[0] * len(pending), mode="markers", name="computing",
                                 marker={"color": "#9ca3af", "symbol": "line-ns-open", "size": 10},
                                 hovertemplate="slice %{x}: computing<extra>click to view</extra>"))
    far = [i for i in xs if outside and outside[i]]
    if far:
        fig.add_trace(go.Scatter(x=far, y=[scores[i] for i in far], mode="markers",
                                 name="outside the levels the model learned",
                                 marker={"color": "#6b7280", "size": 11, "symbol": "x"},
                                 hovertemplate="slice %{x}: %{y:.0f} mm²<extra>outside the levels the model learned: "
                                               "red here may be normal anatomy</extra>"))
    top = [w for w in worst if scores[w] and not (outside and outside[w])]
    if top:
        fig.add_trace(go.Scatter(x=top, y=[scores[w] for w in top], mode="markers+text", name="most abnormal",
                                 marker={"color": "#dc2626", "size": 12, "symbol": "diamond"},
                                 text=[str(w) for w in top], textposition="top center",
                                 hovertemplate="slice %{x}: %{y:.0f} mm²<extra>most abnormal</extra>"))
    fig.add_vline(x=z, line_color="#d97706", line_width=2)
    peak = max([scores[i] for i in xs] + [1.0])
    fig.update_layout(height=260, margin={"l": 60, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      title={"text": f"Anomaly per slice ({total_done} of {len(brain)} brain slices computed) — "
                                     f"click a point to view that slice", "font": {"size": 13}},
                      xaxis={"title": "axial slice (inferior → superior)", "range": [-0.5, len(scores) - 0.5]},
                      yaxis={"title": "flagged area (mm²)", "range": [-0.05 * peak, 1.25 * peak]},
                      showlegend=True, legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right",
                                               "yanchor": "bottom"}, clickmode="event")
    return fig
