"""Raw slices -> the model's input: intensities in [-1, 1] with background exactly -1, on a square grid.

The diffusion model is trained on square slices (128 x 128, 256 supported) whose brain is scaled to [-1, 1] and
whose background is -1. :func:`prepare_slice` takes a :class:`~diffuse_core.io.loaded.LoadedImage` (or a raw array)
and

1. decides CT or MRI (DICOM Modality, else Hounsfield-like values below -500 HU mean CT),
2. finds the brain (a given mask, else :func:`estimate_brain_mask`),
3. normalises at the original resolution: MRI per channel between the 1st and 99th percentiles computed INSIDE the
   brain (:func:`normalize_mri`), or, given the model's intensity reference, by one linear map that puts the brain's
   10th-75th percentiles where they lie in the model's training data (:func:`standardize_mri`); CT through a
   clinical window (:func:`normalize_ct`, :data:`CT_WINDOWS`),
4. maps the slice onto the model's grid keeping the aspect ratio (:func:`to_model_grid`): the longer side is resized
   to ``size`` and the shorter side padded with background; :class:`Geometry` records how, and
   :func:`from_model_grid` maps model outputs (counterfactuals, anomaly maps, masks) back to the original pixels.

Outside the brain the prepared image is exactly -1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from diffuse_core.io.image import LoadedImage, load_image
from diffuse_core.core.intensity import TISSUE_SCALE, intensity_reference, standardize_mri, tissue_scale

__all__ = ["Geometry", "PreparedSlice", "CT_WINDOWS", "to_model_grid", "from_model_grid", "estimate_brain_mask",
           "normalize_mri", "standardize_mri", "intensity_reference", "normalize_ct", "prepare_slice",
           "resolve_window", "resolve_modality"]

# Common clinical CT display presets for the head, as (center/level, width) in Hounsfield units:
# * brain: W 80 / L 40, the standard brain window (Radiopaedia, "Windowing (CT)").
# * stroke: W 40 / L 40, the narrow "stroke window" for early ischaemia (Turner & Holdsworth, Br J Radiol
#   2011;84:1061-6, doi:10.1259/bjr/99730184).
# * stroke_narrow: W 8 / L 32, the very narrow setting of Lev et al., Radiology 1999;213:150-5 (acute stroke
#   sensitivity 57% -> 71%).
# * subdural: W 215 / L 75, the middle of the usual subdural ranges W 130-300 / L 50-100 (Radiopaedia).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "stroke": (40.0, 40.0),
    "stroke_narrow": (32.0, 8.0),
    "subdural": (75.0, 215.0),
}
DEFAULT_CT_WINDOW = "brain"
HU_AIR_THRESHOLD = -500.0   # values below this (air, about -1000 HU) mark an image as CT in Hounsfield units
MASK_MAX_SIDE = 1024        # brain masks of larger slices are estimated on a copy this size and scaled back (the
                            # morphology's cost grows with pixels x radius; the model sees <= 256 pixels anyway)

_INTERPOLATION = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}


# --------------------------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class Geometry:
    """How an original (H0, W0) slice maps onto the model's square ``size`` grid, and back.

    The original is scaled by ``scale`` (model pixels per original pixel) to ``resized_shape`` (the longer side
    becomes ``size``) and padded by ``pad`` = (top, bottom, left, right) model pixels of background.
    """

    original_shape: tuple[int, int]
    size: int
    scale: float
    resized_shape: tuple[int, int]
    pad: tuple[int, int, int, int]

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of the image inside the model grid (half-open)."""
        top, bottom, left, right = self.pad
        return top, self.size - bottom, left, self.size - right

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(original_shape=tuple(d["original_shape"]), size=int(d["size"]), scale=float(d["scale"]),
                   resized_shape=tuple(d["resized_shape"]), pad=tuple(d["pad"]))

    @classmethod
    def for_shape(cls, shape: tuple[int, int], size: int) -> Geometry:
        h0, w0 = int(shape[0]), int(shape[1])
        if h0 < 1 or w0 < 1:
            raise ValueError(f"cannot map an empty {h0}x{w0} slice onto the model grid")
        size = int(size)
        if size < 8:
            raise ValueError(f"model grid size must be at least 8, got {size}")
        scale = size / max(h0, w0)
        h = size if h0 >= w0 else min(size, max(1, int(round(h0 * scale))))
        w = size if w0 >= h0 else min(size, max(1, int(round(w0 * scale))))
        top, left = (size - h) // 2, (size - w) // 2
        return cls(original_shape=(h0, w0), size=size, scale=float(scale), resized_shape=(h, w),
                   pad=(top, size - h - top, left, size - w - left))


def _as_chw(array) -> tuple[np.ndarray, bool]:
    arr = np.asarray(array)
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 3:
        return arr, False
    raise ValueError(f"expected a slice (H, W) or (C, H, W), got shape {arr.shape}")


def _resize_plane(plane: np.ndarray, out_hw: tuple[int, int], order: int) -> np.ndarray:
    h, w = out_hw
    if plane.shape == (h, w):
        return plane.copy()
    if order not in _INTERPOLATION:
        raise ValueError(f"interpolation order must be 0 (nearest, masks), 1 (linear) or 3 (cubic), got {order}")
    shrinking = h < plane.shape[0] or w < plane.shape[1]
    interp = cv2.INTER_AREA if (order > 0 and shrinking) else _INTERPOLATION[order]  # area averaging anti-aliases
    src = plane
    if src.dtype == bool:
        src = src.astype(np.uint8)
    elif src.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        src = src.astype(np.float32)
    return cv2.resize(np.ascontiguousarray(src), (w, h), interpolation=interp).astype(plane.dtype, copy=False)


def to_model_grid(image, size: int = 128, order: int = 1, pad_value: float | None = None
                  ) -> tuple[np.ndarray, Geometry]:
    """Map a slice (C, H, W) or (H, W) onto a ``size`` x ``size`` grid keeping the aspect ratio.

    The longer side is resized to ``size`` and the shorter one padded evenly with ``pad_value`` (default: the
    array's minimum, i.e. -1 for a normalised image, 0 for a mask). ``order`` 0 = nearest (use it for masks),
    1 = linear (area averaging when shrinking), 3 = cubic. Returns the array in the input's rank and dtype, and the
    :class:`Geometry` that :func:`from_model_grid` inverts.
    """
    arr, squeeze = _as_chw(image)
    geometry = Geometry.for_shape(arr.shape[1:], size)
    if pad_value is None:
        pad_value = float(arr.min()) if arr.size else 0.0
    top, bottom, left, right = geometry.pad
    out = np.full((arr.shape[0], geometry.size, geometry.size), pad_value, dtype=arr.dtype)
    r0, r1, c0, c1 = geometry.content_box
    for c in range(arr.shape[0]):
        out[c, r0:r1, c0:c1] = _resize_plane(arr[c], geometry.resized_shape, order)
    return (out[0] if squeeze else out), geometry


def from_model_grid(array, geometry: Geometry, order: int = 1) -> np.ndarray:
    """Inverse of :func:`to_model_grid`: crop the padding and resize back to the original (H0, W0).

    ``array`` is (C, size, size) or (size, size); the result keeps its rank and dtype. Use ``order=0`` for masks.
    """
    arr, squeeze = _as_chw(array)
    if arr.shape[1:] != (geometry.size, geometry.size):
        raise ValueError(f"expected a {geometry.size}x{geometry.size} array on the model grid, got "
                         f"{arr.shape[1]}x{arr.shape[2]}")
    r0, r1, c0, c1 = geometry.content_box
    planes = [_resize_plane(arr[c, r0:r1, c0:c1], geometry.original_shape, order) for c in range(arr.shape[0])]
    if squeeze:
        return planes[0]
    return planes[0][None] if len(planes) == 1 else np.stack(planes)   # no copy of a 16 MP plane to stack one


# --------------------------------------------------------------------------------------------------------------
# brain masks


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D values (between-class variance maximised over a histogram)."""
    v = values[np.isfinite(values)]
    lo, hi = np.percentile(v, [0.5, 99.5]) if v.size else (0.0, 0.0)
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return float(lo)
    hist, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros_like(m)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == best).astype(np.uint8)


def _clean(mask: np.ndarray, radius: int) -> np.ndarray:
    """Small opening (cuts thin bridges and specks), largest component, holes filled."""
    m = mask.astype(np.uint8)
    if radius > 0:
        opened = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(radius))
        if opened.any():
            m = opened
    m = _largest_component(m)
    return ndimage.binary_fill_holes(m).astype(np.uint8)


def _mri_mask(img: np.ndarray, radius: int) -> np.ndarray:
    h, w = img.shape
    b = max(1, min(h, w) // 64)
    border = np.concatenate([img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()])
    bg = float(np.median(border))
    span = float(img.max() - img.min())
    exact = np.abs(img - bg) <= 1e-6 * span
    if exact.mean() >= 0.2:
        # constant background (skull-stripped or zero-filled): everything that differs from it
        fg = ~exact
    else:
        # noisy background: Otsu separates air from tissue
        fg = img > _otsu_threshold(img.ravel())
    return _clean(fg, radius)


def _ct_mask(hu: np.ndarray, radius: int) -> np.ndarray:
    h, w = hu.shape
    soft = (hu > -20.0) & (hu < 100.0)          # brain parenchyma, CSF, fresh blood
    bone = (hu > 300.0).astype(np.uint8)         # skull
    inside = np.zeros_like(bone)
    if bone.any():
        closed = cv2.morphologyEx(bone, cv2.MORPH_CLOSE, _disk(max(2, min(h, w) // 50)))  # bridge foramina
        inside = ndimage.binary_fill_holes(closed).astype(np.uint8) & (1 - cv2.dilate(closed, _disk(1)))
    if inside.sum() > 0.01 * h * w:
        candidate = soft & inside.astype(bool)
    else:  # no closed skull (skull-stripped or cropped): soft tissue alone
        candidate = soft
    mask = _clean(candidate, radius)
    return mask if mask.any() else _mri_mask(hu, radius)


def estimate_brain_mask(image2d_raw, modality_hint: str | None = None) -> np.ndarray:
    """Brain mask (H, W) uint8 {0, 1} for a raw slice that came without one.

    MRI (default): a background that is exactly constant (skull-stripped / zero-filled images) is everything that
    differs from it; otherwise Otsu's threshold separates tissue from the noisy air. CT (``modality_hint="ct"``,
    Hounsfield units): soft tissue (-20..100 HU) inside the skull (> 300 HU, closed and filled). Either way a small
    opening removes specks and thin bridges, the largest component is kept and holes (ventricles) are filled.
    For MRI with skull and scalp this is a HEAD mask, not a skull-stripped brain: pass a real brain mask for
    better results. ``(C, H, W)`` input uses channel 0. Slices with a side over :data:`MASK_MAX_SIDE` are masked
    on a copy shrunk to that side (nearest neighbour, so a constant background stays exact) and the mask is scaled
    back (nearest neighbour): the cost stays bounded, and slices up to that side are unchanged.
    """
    arr = np.asarray(image2d_raw, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D slice (H, W), got shape {np.shape(image2d_raw)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"the slice holds {int((~np.isfinite(arr)).sum())} NaN/inf values")
    if arr.max() == arr.min():
        return np.zeros(arr.shape, np.uint8)
    if max(arr.shape) > MASK_MAX_SIDE:
        scale = MASK_MAX_SIDE / max(arr.shape)
        small_hw = (max(1, int(round(arr.shape[0] * scale))), max(1, int(round(arr.shape[1] * scale))))
        small = estimate_brain_mask(_resize_plane(arr, small_hw, order=0), modality_hint)
        return _resize_plane(small, arr.shape, order=0)
    radius = max(1, int(round(min(arr.shape) / 128)))
    hint = resolve_modality(modality_hint) if modality_hint is not None else "mri"
    if hint == "ct" and float(arr.min()) < HU_AIR_THRESHOLD / 2:
        return _ct_mask(arr, radius)
    return _mri_mask(arr, radius)


# --------------------------------------------------------------------------------------------------------------
# intensities


def _brain_bool(brain_mask, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(brain_mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise ValueError(f"brain mask {m.shape} and image {tuple(shape)} differ in size")
    m = m > 0 if m.dtype != bool else m
    if not m.any():
        raise ValueError("the brain mask is empty: no brain to normalise (pass a mask, or check the image)")
    return m


def _normalize_mri(image, brain_mask, low_pct: float, high_pct: float):
    arr, squeeze = _as_chw(np.asarray(image, dtype=np.float32))
    brain = _brain_bool(brain_mask, arr.shape[1:])
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_pct}, {high_pct}")
    out = np.full(arr.shape, -1.0, dtype=np.float32)
    ranges = []
    for c in range(arr.shape[0]):
        values = arr[c][brain]
        lo, hi = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
        if hi > lo:
            scaled = (np.clip(arr[c], lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
        else:  # a channel constant inside the brain carries no contrast: mid-grey
            scaled = np.zeros_like(arr[c])
        out[c] = np.where(brain, scaled, -1.0)
        ranges.append((lo, hi))
    return (out[0] if squeeze else out), tuple(ranges)


def normalize_mri(image, brain_mask, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Per channel: the ``low_pct`` / ``high_pct`` percentiles computed INSIDE the brain map to -1 / 1 (values
    clipped between them); background exactly -1. (C, H, W) or (H, W) in, same rank out, float32.

    A channel that is constant inside the brain becomes 0 there.
    """
    return _normalize_mri(image, brain_mask, low_pct, high_pct)[0]


def normalize_ct(image_hu, brain_mask, center: float = 40.0, width: float = 80.0) -> np.ndarray:
    """Window Hounsfield units to [center - width/2, center + width/2] and scale that to [-1, 1]; background -1.

    (C, H, W) or (H, W) in, same rank out, float32. See :data:`CT_WINDOWS` for presets.
    """
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"CT window width must be positive, got center {center}, width {width}")
    arr, squeeze = _as_chw(np.asarray(image_hu, dtype=np.float32))
    brain = _brain_bool(brain_mask, arr.shape[1:])
    lo = center - width / 2.0
    scaled = np.clip((arr - lo) / width, 0.0, 1.0) * 2.0 - 1.0
    out = np.where(brain[None], scaled, -1.0).astype(np.float32)
    return out[0] if squeeze else out


def resolve_window(window) -> tuple[float, float]:
    """A preset name (:data:`CT_WINDOWS`), a (center, width) pair or None (the brain window) -> (center, width)."""
    if window is None:
        return CT_WINDOWS[DEFAULT_CT_WINDOW]
    if isinstance(window, str):
        key = window.lower().strip().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}: choose one of {', '.join(CT_WINDOWS)} or give "
                             f"(center, width) in HU")
        return CT_WINDOWS[key]
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"a CT window is a preset name or (center, width) in HU, got {window!r}") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"CT window width must be positive, got center {center}, width {width}")
    return center, width


def resolve_modality(modality: str) -> str:
    """"ct" or "mri" from user spellings (CT, MR, MRI, T1, T2, FLAIR, ...)."""
    key = str(modality).lower().strip()
    if key in ("ct", "cta", "ncct"):
        return "ct"
    if key in ("mr", "mri", "t1", "t1c", "t1ce", "t1w", "t2", "t2w", "flair", "pd", "dwi"):
        return "mri"
    raise ValueError(f"unknown modality {modality!r}: use 'ct' or 'mri'")


# --------------------------------------------------------------------------------------------------------------
# the whole preparation


@dataclass
class PreparedSlice:
    """A slice ready for the model, with what is needed to map results back."""

    image: np.ndarray                 # (C, size, size) float32 in [-1, 1], background exactly -1
    brain_mask: np.ndarray            # (size, size) uint8 {0, 1}
    geometry: Geometry
    modality: str                     # "mri" | "ct"
    window: tuple[float, float] | None = None          # CT (center, width) in HU
    percentiles: tuple[float, float] | None = None     # MRI (low, high) percentiles used
    intensity_ranges: tuple[tuple[float, float], ...] = ()  # per channel raw values mapped to -1 and +1
    brain_mask_estimated: bool = False
    original_brain_mask: np.ndarray | None = None       # (H0, W0) uint8, the mask at the original resolution
    original_image: np.ndarray | None = None            # (C, H0, W0) float32: normalised at the original resolution
    channel_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_original(self, array, order: int = 1) -> np.ndarray:
        """Map a model-grid array (C, size, size) or (size, size) back to the original slice's pixels."""
        return from_model_grid(array, self.geometry, order=order)


def _decide_modality(loaded: LoadedImage, modality, window) -> tuple[str, str]:
    if modality is not None:
        return resolve_modality(modality), "given"
    if window is not None:
        return "ct", "a CT window was given"
    m = (loaded.modality or "").upper()
    if m == "CT":
        return "ct", "DICOM modality CT"
    if m in ("MR", "MRI"):
        return "mri", "DICOM modality MR"
    if float(loaded.data.min()) < HU_AIR_THRESHOLD:
        return "ct", f"values below {HU_AIR_THRESHOLD:g} (air in Hounsfield units)"
    return "mri", "no CT evidence (no values below -500)"


def prepare_slice(loaded, size: int = 128, modality: str | None = None, brain_mask=None, window=None,
                  low_pct: float = 1.0, high_pct: float = 99.0, mri_reference: dict | None = None) -> PreparedSlice:
    """Normalise a raw slice and put it on the model's ``size`` x ``size`` grid (see the module docstring).

    ``loaded`` is a :class:`LoadedImage` or a raw array (H, W) / (C, H, W). ``modality`` "ct"/"mri" overrides the
    automatic choice; ``window`` (CT only) is a preset name of :data:`CT_WINDOWS` or (center, width) in HU, default
    "brain". ``brain_mask`` (H, W) at the original resolution; estimated with :func:`estimate_brain_mask` when
    missing. ``mri_reference`` (a model's intensity reference): MRI is matched to it (:func:`standardize_mri`)
    instead of stretched between ``low_pct`` and ``high_pct``.
    """
    if not isinstance(loaded, LoadedImage):
        loaded = load_image(np.asarray(loaded))
    data = np.asarray(loaded.data, dtype=np.float32)
    notes = list(loaded.notes)
    kind, why = _decide_modality(loaded, modality, window)
    notes.append(f"modality {kind}: {why}")
    if kind == "mri" and window is not None:
        raise ValueError("a CT window applies to CT only: leave window out for MRI, or pass modality='ct'")
    if kind == "ct" and float(data.min()) >= -200.0:
        notes.append("CT values do not look like Hounsfield units (no air below -200): the window may not fit")

    estimated = brain_mask is None
    if estimated:
        brain = estimate_brain_mask(data[0], modality_hint=kind)
        if not brain.any():
            raise ValueError("could not find the brain in this slice (the estimated brain mask is empty): pass a "
                             "brain mask")
        notes.append("brain mask estimated from the image")
    else:
        brain = _brain_bool(brain_mask, data.shape[1:]).astype(np.uint8)

    if kind == "ct":
        center, width = resolve_window(window)
        normalised = normalize_ct(data, brain, center, width)
        win, pct = (center, width), None
        ranges = tuple((center - width / 2, center + width / 2) for _ in range(data.shape[0]))
    elif mri_reference is not None and mri_reference.get("method") == "tissue":
        normalised, ranges = tissue_scale(data, brain, mri_reference)
        win, pct = None, None
        notes.append("MRI intensities on the tissue scale the model was trained on (air -1, the brain's tissue peak "
                     f"{float(mri_reference.get('tissue_level', TISSUE_SCALE['tissue_level'])):g})")
    elif mri_reference is not None:
        normalised, ranges = standardize_mri(data, brain, mri_reference)
        win, pct = None, None
        notes.append("MRI intensities matched to the model's training data (brain percentiles "
                     f"{'-'.join(f'{q:g}' for q in mri_reference['percentiles'])})")
    else:
        normalised, ranges = _normalize_mri(data, brain, low_pct, high_pct)
        win, pct = None, (float(low_pct), float(high_pct))

    grid, geometry = to_model_grid(normalised, size=size, order=1, pad_value=-1.0)
    brain_grid, _ = to_model_grid(brain, size=size, order=0, pad_value=0)
    if not brain_grid.any():
        raise ValueError(f"the brain vanishes at {size}x{size} (it is too small in this {data.shape[1]}x"
                         f"{data.shape[2]} slice): crop the image around the head first")
    grid = np.where(brain_grid[None].astype(bool), np.clip(grid, -1.0, 1.0), -1.0).astype(np.float32)
    return PreparedSlice(image=np.ascontiguousarray(grid), brain_mask=brain_grid.astype(np.uint8),
                         geometry=geometry, modality=kind, window=win, percentiles=pct, intensity_ranges=ranges,
                         brain_mask_estimated=estimated, original_brain_mask=brain.astype(np.uint8),
                         original_image=np.where(brain[None].astype(bool), np.clip(normalised, -1.0, 1.0),
                                                 -1.0).astype(np.float32),
                         channel_names=tuple(loaded.channel_names), notes=tuple(notes))
