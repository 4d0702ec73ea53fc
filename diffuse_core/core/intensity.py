"""MRI intensities on a model's own scale: the intensity reference of its training slices, and the linear map that
puts a real slice's brain onto it (``diffuse-studio run --intensity model``; measured in docs/real_scans.md)."""

from __future__ import annotations

import numpy as np

__all__ = ["REFERENCE_PERCENTILES", "TISSUE_SCALE", "intensity_reference", "standardize_mri", "tissue_peak", "tissue_scale"]

REFERENCE_PERCENTILES = (10.0, 25.0, 50.0, 75.0)   # brain landmarks of the intensity reference: below the bright
                                                   # lesions' share of most slices, above the CSF-only lowest tail


def slice_and_brain(image, brain_mask) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image as (C, H, W) float32, brain (H, W) bool, whether the image was 2-D), checked: a slice of the brain's
    size, a brain that is not empty."""
    arr = np.asarray(image, dtype=np.float32)
    squeeze = arr.ndim == 2
    arr = arr[None] if squeeze else arr
    if arr.ndim != 3:
        raise ValueError(f"expected a slice (H, W) or (C, H, W), got shape {arr.shape}")
    brain = np.asarray(brain_mask)
    brain = brain[0] if brain.ndim == 3 and brain.shape[0] == 1 else brain
    if brain.shape != arr.shape[1:]:
        raise ValueError(f"brain mask {brain.shape} and image {arr.shape[1:]} differ in size")
    brain = brain > 0
    if not brain.any():
        raise ValueError("the brain mask is empty: no brain to normalise (pass a mask, or check the image)")
    return arr, brain, squeeze


def intensity_reference(images, brains=None, percentiles=REFERENCE_PERCENTILES) -> dict:
    """Where a model's training slices put the brain's intensity landmarks: per channel, the median over slices of
    each brain percentile. ``images`` (N, C, H, W) on the model's scale; ``brains`` (N, H, W) (default: > -1).
    Saved in the DDPM's card and read by :func:`standardize_mri`."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 4 or len(imgs) == 0:
        raise ValueError(f"expected training slices (N, C, H, W), got shape {imgs.shape}")
    values = []
    for c in range(imgs.shape[1]):
        per_slice = []
        for i, im in enumerate(imgs[:, c]):
            inside = (im > -1.0 + 1e-3) if brains is None else np.asarray(brains[i]).astype(bool)
            if inside.sum() >= 16:
                per_slice.append(np.percentile(im[inside], percentiles))
        if not per_slice:
            raise ValueError("no slice holds a brain: cannot take an intensity reference")
        values.append([round(float(v), 5) for v in np.median(per_slice, axis=0)])
    return {"percentiles": [float(q) for q in percentiles], "values": values, "slices": int(len(imgs))}


def standardize_mri(image, brain_mask, reference: dict):
    """Per channel, the linear map a * x + b (least squares) that puts the brain's ``reference["percentiles"]`` on the
    reference's values (the model's training data, :func:`intensity_reference`); clipped to [-1, 1], background -1.
    Linear, so contrasts keep their ratios; fitted on the 10th-75th percentiles, so a bright lesion of up to about a
    quarter of the brain does not move it. Returns (image, ranges): ranges are the raw values mapped to -1 and 1."""
    arr, brain, squeeze = slice_and_brain(image, brain_mask)
    q = np.asarray(reference.get("percentiles", ()), dtype=np.float64)
    values = np.asarray(reference.get("values", ()), dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if q.ndim != 1 or len(q) < 2 or values.shape != (arr.shape[0], len(q)):
        raise ValueError(f"the intensity reference does not fit this image ({arr.shape[0]} channel(s)): expected "
                         f"'percentiles' and one row of 'values' per channel")
    out = np.full(arr.shape, -1.0, dtype=np.float32)
    ranges = []
    for c in range(arr.shape[0]):
        landmarks = np.percentile(arr[c][brain], q)
        if landmarks[-1] - landmarks[0] <= 1e-12 * max(1.0, abs(landmarks[-1])):
            scaled, lo, hi = np.zeros_like(arr[c]), float(landmarks[0]), float(landmarks[0])
        else:
            a, b = np.polyfit(landmarks, values[c], 1)
            scaled = a * arr[c] + b
            lo, hi = float((-1.0 - b) / a), float((1.0 - b) / a)
        out[c] = np.where(brain, np.clip(scaled, -1.0, 1.0), -1.0)
        ranges.append((lo, hi))
    return (out[0] if squeeze else out), tuple(ranges)


# ---------------------------------------------------------------------------------------------- the tissue scale
TISSUE_SCALE = {"method": "tissue", "tissue_level": -0.2, "mode_below_percentile": 75.0, "air_percentile": 5.0}
# The one MRI scale of the models trained since wave 3, the same for SynthBrain training slices and for a real scan:
# air -> -1 and the brain's main tissue peak -> ``tissue_level`` (a ratio scale, as MRI signal is proportional to
# the scanner's gain; in the spirit of White Stripe, Shinohara et al. 2014, NeuroImage Clin 6:9-19: landmarks on
# normal tissue, not on the bright tail). ``tissue_level`` -0.2 is where SynthBrain renders the brain's median
# (the shipped FLAIR card's intensity_reference, 50th percentile -0.2005), so the shipped model's inputs barely move.


def tissue_peak(values, below_percentile: float = 75.0, bins: int = 128, air: float | None = None) -> float:
    """The main tissue peak of a brain's intensities: the highest local maximum of their smoothed histogram between
    the 1st and the ``below_percentile``-th percentile. Bright lesions (FLAIR, T2) sit above it, so a tumour of up
    to about a quarter of the brain cannot move it. Values within 15 % of the range from ``air`` (when given) are
    left out (air and background that a loose brain mask takes in at the skull base); where no peak lies below the
    cut, the cut moves up (90th, then 99th percentile); with none at all, the median is taken."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 16:
        raise ValueError("too few brain pixels to find the tissue peak (need 16)")
    if air is not None:
        top = float(np.percentile(v, 99.0))
        kept = v[v > air + 0.15 * (top - air)]
        v = kept if kept.size >= 16 else v
    med = float(np.median(v))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    for cut in (below_percentile, 90.0, 99.0):
        lo, hi = np.percentile(v, [1.0, max(cut, below_percentile)])
        if hi <= lo:
            return med
        counts, edges = np.histogram(v[v < hi], bins=bins, range=(lo, hi))
        smooth = np.convolve(counts.astype(np.float64), kernel / kernel.sum(), mode="same")
        inner = smooth[1:-1]
        peaks = np.where((inner >= smooth[:-2]) & (inner >= smooth[2:]))[0] + 1    # local maxima
        peaks = peaks[peaks < bins - 3]          # one rising into the cut is a flank, not the tissue's peak
        if peaks.size:
            i = int(peaks[np.argmax(smooth[peaks])])
            return float(0.5 * (edges[i] + edges[i + 1]))
    return med


def tissue_scale(image, brain_mask, scale: dict | None = None):
    """Per channel, the linear map that puts air on -1 and the brain's tissue peak (:func:`tissue_peak`) on
    ``scale["tissue_level"]``; clipped to [-1, 1], background -1. Air is the darker of the slice's
    ``air_percentile``-th percentile and the brain's 1st (a skull-stripped scan's constant background, the air
    around a head, SynthBrain's -1). Returns (image, ranges): ranges are the raw values mapped to -1 and 1."""
    sc = {**TISSUE_SCALE, **(scale or {})}
    level = float(sc["tissue_level"])
    arr, brain, squeeze = slice_and_brain(image, brain_mask)
    out = np.full(arr.shape, -1.0, dtype=np.float32)
    ranges = []
    for c in range(arr.shape[0]):
        inside = arr[c][brain]
        air = min(float(np.percentile(arr[c], sc["air_percentile"])), float(np.percentile(inside, 1.0)))
        peak = tissue_peak(inside, sc["mode_below_percentile"], air=air)
        if peak - air <= 1e-6 * max(1.0, abs(peak)):
            out[c] = np.where(brain, 0.0, -1.0)
            ranges.append((air, air))
            continue
        gain = (level + 1.0) / (peak - air)
        out[c] = np.where(brain, np.clip((arr[c] - air) * gain - 1.0, -1.0, 1.0), -1.0)
        ranges.append((air, air + 2.0 / gain))
    return (out[0] if squeeze else out), tuple(ranges)
