"""SynthBrain as a clinical scanner acquires it: the effects behind ``generate_slice(..., realism="scanner")``.

The default generator (``realism="default"``, what the shipped models were trained on) renders a clean, sharp,
skull-stripped slice. Each *effect* below adds one thing real scans have; each can be switched on alone (to measure
it: :mod:`diffuse_core.evaluation.realism`) or the kept ones (:data:`SCANNER`) together with ``realism="scanner"``:

* ``levels``: healthy slices drawn over every axial level where the brain covers at least half of its largest
  section (template levels 39-130: temporal poles and cerebellum at the bottom, the high convexity at the top), as a
  whole scan is read, instead of the default's middle levels 48-128;
* ``all_levels`` (not in "scanner"): healthy slices over every axial level where the brain covers at least a fifth
  of its largest section (template levels 21-144, MNI z -51 to +72): the skull-base slices of cerebellum, brainstem
  and inferior temporal lobes and the vertex, which a healthy model that never saw them flags (shared/DOMAIN.md);
  wins over ``levels`` when both are given;
* ``lesion_levels`` (not in "scanner"): gliomas and strokes also drawn over every level where the brain covers at
  least a fifth of its largest section (template levels 21-144: temporal-lobe and cerebellar gliomas, posterior-
  circulation strokes), so that a model trained with ``all_levels`` cannot learn "a skull-base slice is healthy";
  white-matter hyperintensities stay periventricular;
* ``fov``: the field of view 220-280 mm instead of the fixed 220 (clinical FOVs of 220-260 mm, BraTS 240 mm, and
  the ICBM152 brain is larger than most adults'): the brain smaller in the frame, the pixel ``fov / size`` mm;
* ``thickness``: a slice 1-6 mm thick: the tissue maps averaged over the slab (partial volume through-plane, as in a
  2-D clinical FLAIR with 4-6 mm slices);
* ``contrast``: each scanner's own contrast: grey/white ratio around typical values (FLAIR 1.2, the default 1.43),
  incomplete CSF suppression on FLAIR, white-matter texture, drawn wider than the default's small jitter;
* ``caps``: thin, smooth periventricular caps and rims, brighter on FLAIR/T2 (healthy variation in older brains);
* ``bias``: a stronger, smoother receive-coil bias field (log-gain s.d. 0.08-0.25 with a linear gradient);
* ``resolution``: an acquisition matrix of 45-100 % of the pixel grid, seen through its point spread function (the
  truncated k-space's sinc, with Gibbs ringing, or a Hann-windowed one; cut at 6 px so a lesion changes only pixels
  near it);
* ``noise``: complex Gaussian noise at a white-matter SNR of 8-40 before the magnitude (Rician), through the same PSF,
  so it is as correlated as the acquisition's resolution makes it;
* ``lesions``: lesion shapes as real scans show them (shared/DOMAIN.md): white-matter hyperintensities as
  periventricular caps and bands by Fazekas grade with deep foci (:func:`.lesions.wmh_fazekas`) instead of scattered
  round foci, glioma oedema that follows white matter and spares cortex; healthy slices are unchanged by it;
* ``head`` (not in "scanner"): not skull-stripped: a CSF space 1-3 mm, the skull (no signal) 3-7 mm and the scalp
  (fat, bright on FLAIR and T1) 3-7 mm around the brain on MRI channels; ``brain_mask`` stays the brain;
* ``edge``: a real skull strip: it keeps 0-3 mm of the dark subarachnoid CSF around the brain (as BraTS's masks
  do), its edge ragged by up to 1.5 px, sometimes a bright rim of dura left on it.
* ``residue`` (not in "scanner"): what a skull strip leaves at the skull base (shared/DOMAIN.md: partial volume at
  the skull base, orbits, sinuses): on MRI slices below MNI z = 0 (surely below z = -12, then less often up to
  z = +8) one to four irregular blobs 8-24 mm across, attached to the brain's edge in front (orbits, gyrus recti)
  or at the temporal poles, kept inside the brain mask: orbital fat and soft tissue, bright on FLAIR and T1 (0.8-1.7
  times scalp fat), some with dark voids of bone or air. Healthy variation that must not be flagged.

On CT channels only the slice's effects act (levels, all_levels, lesion_levels, fov, thickness, edge, lesions); contrast, caps, bias,
resolution, noise and head are MRI's. Draws come from the sample's own streams ([seed, 4] for the slice, [seed, 5, modality] per channel), never from the
default generator's, so ``realism="default"`` stays byte-identical and a healthy counterpart stays paired (same
effects, pixel-identical away from the lesion).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from diffuse_core.data.synthbrain.anatomy import source_slice
from diffuse_core.data.synthbrain.fields import smooth_noise

EFFECTS = ("levels", "all_levels", "lesion_levels", "fov", "thickness", "contrast", "caps", "bias", "resolution", "noise",
           "edge", "lesions", "head", "residue")
# realism="scanner": the effects that narrowed the measured domain gap (realism AUROC against real BraTS tumour-free
# slices, CNN or histogram, docs/research/2026-12-06-synthbrain-realism.md): alone, or "noise" on top of the others
# (neutral alone, it narrowed both beside the acquisition's resolution), and the lesion shapes. Skull-stripped, as
# BraTS and the app's input. "bias" widened the histogram gap; "contrast" and "caps" did not narrow it.
SCANNER = ("levels", "fov", "thickness", "resolution", "noise", "edge", "lesions")
FAT = {"flair": 0.55, "t1": 0.85, "t1c": 0.85, "t2": 0.65}   # scalp fat (MRI, 0..1 scale); bone gives no signal
BONE = 0.03
REALISMS = ("default", "scanner")
SCANNER_LEVELS = (39, 130)                      # template levels where the brain covers >= half its largest section
ALL_LEVELS = (21, 144)                          # ... >= a fifth of it: skull base (cerebellum, temporal poles) to vertex
FOV_RANGE = (220.0, 280.0)                      # field of view (mm) of the slice as the app resizes it


def check_realism(realism) -> frozenset:
    """The effects of ``realism``: "default" (none), "scanner" (:data:`SCANNER`), or an iterable (or comma-separated
    string) of effect names, "scanner" among them standing for its effects (e.g. "scanner,head"); ValueError for an
    unknown one."""
    if realism is None or realism == "default":
        return frozenset()
    if realism == "scanner":
        return frozenset(SCANNER)
    names = realism.split(",") if isinstance(realism, str) else list(realism)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    bad = [n for n in names if n not in EFFECTS + REALISMS]
    if bad:
        raise ValueError(f"unknown realism {bad[0]!r}: use {', '.join(REALISMS)} or effects among {', '.join(EFFECTS)}")
    return frozenset(e for n in names if n != "default" for e in (SCANNER if n == "scanner" else (n,)))


# ------------------------------------------------------------------------------------------------ slice effects
def slab(level: int, size: int, thickness_mm: float) -> dict:
    """The source maps of :func:`anatomy.source_slice` with the tissue stack (gm, wm, mask, edge distance) averaged
    over a slab ``thickness_mm`` thick centred on ``level`` (1 mm template levels, end levels weighted by their
    covered fraction); ventricle distance and hull of the centre level."""
    centre = source_slice(level, size)
    half = max(0.5, float(thickness_mm) / 2.0)
    lo, hi = level - half, level + half
    acc = np.zeros_like(centre["stack"])
    total = 0.0
    for z in range(int(math.floor(lo + 0.5)), int(math.ceil(hi - 0.5)) + 1):
        w = min(hi, z + 0.5) - max(lo, z - 0.5)                    # level z covers [z - 0.5, z + 0.5]
        if w <= 0 or not 0 <= z <= 180:
            continue
        acc += w * (centre["stack"] if z == level else source_slice(z, size)["stack"])
        total += w
    return {**centre, "stack": (acc / max(total, 1e-6)).astype(np.float32)}


def draw_slice(rng: np.random.Generator) -> dict:
    """The slice-level draws, in a fixed order whatever the effects: thickness (mm), the strip's edge, field of view
    (mm)."""
    return {"thickness": float(rng.uniform(1.0, 6.0)), "edge_amp": float(rng.uniform(0.0, 1.5)),
            "edge_cells": int(rng.integers(6, 16)), "rim": float(rng.uniform(0.0, 0.5)) * (rng.random() < 0.5),
            "edge_seed": int(rng.integers(0, 2 ** 31)),
            "fov": float(math.exp(rng.uniform(math.log(FOV_RANGE[0]), math.log(FOV_RANGE[1])))),
            "csf_mm": float(rng.uniform(1.0, 3.0)), "bone_mm": float(rng.uniform(3.0, 7.0)),
            "scalp_mm": float(rng.uniform(3.0, 7.0)), "head_cells": int(rng.integers(4, 9)),
            "head_seed": int(rng.integers(0, 2 ** 31)), "strip_csf_mm": float(rng.uniform(0.0, 3.0)),
            "residue_u": float(rng.random()), "residue_n": int(rng.integers(1, 5)),
            "residue_seed": int(rng.integers(0, 2 ** 31))}


RESIDUE_SURE, RESIDUE_TOP = -12.0, 8.0     # MNI z (mm): skull-strip residue on every slice below the first, none above
#                                            the second, and less often in between


def strip_residue(brain: np.ndarray, draw: dict, size: int, fov_mm: float, mni_z: float) -> dict | None:
    """Skull-strip residue at the skull base (effect ``residue``): ``map``, a soft map (H, W) in [0, 1] of the blobs a
    strip left attached to ``brain`` (bool) in front and at the temporal poles, and ``gain``, their intensity in units
    of scalp fat (0.8-1.7, 0.1 in voids of bone or air); None where the slice (at ``mni_z`` mm) lies too high, the
    draw says none or no blob found an edge. Row 0 is anterior."""
    chance = float(np.clip((RESIDUE_TOP - mni_z) / (RESIDUE_TOP - RESIDUE_SURE), 0.0, 1.0))
    if draw["residue_u"] >= chance or not brain.any():
        return None
    out = np.zeros((size, size), np.float32)
    rng = np.random.default_rng(draw["residue_seed"])
    mm = size / fov_mm                                              # pixels per mm
    ys, xs = np.nonzero(brain)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(draw["residue_n"]):
        side = 1.0 if rng.random() < 0.5 else -1.0
        front = rng.random() < 0.5                                  # orbits / gyrus recti, else a temporal pole
        angle = side * (rng.uniform(0.0, 0.6) if front else rng.uniform(0.7, 1.3))   # radians from anterior
        dy, dx = -math.cos(angle), math.sin(angle)
        t = np.arange(0, size, 0.5)
        py, px = np.clip(cy + dy * t, 0, size - 1).astype(int), np.clip(cx + dx * t, 0, size - 1).astype(int)
        on = np.nonzero(brain[py, px])[0]
        if not len(on):
            continue
        reach = t[on[-1]] + rng.uniform(0.0, 2.0) * mm              # the edge, then up to 2 mm beyond it
        by, bx = cy + dy * reach, cx + dx * reach
        radius = rng.uniform(4.0, 12.0) * mm
        wobble = np.exp(0.25 * np.clip(smooth_noise(rng, size, max(4, size // 12)), -2, 2))   # irregular outline
        d = np.sqrt((yy - by) ** 2 + ((xx - bx) * rng.uniform(0.6, 1.6)) ** 2) / (radius * wobble)
        out = np.maximum(out, np.clip(1.5 - d, 0.0, 1.0))
    if not out.any():
        return None
    gain = np.clip(1.25 + 0.45 * smooth_noise(rng, size, 12), 0.8, 1.7)
    gain = np.where(smooth_noise(rng, size, 10) > 0.75, 0.1, gain).astype(np.float32)
    return {"map": out, "gain": gain}


def strip_edge(brain: np.ndarray, draw: dict, size: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real skull strip of ``brain`` (bool): it keeps ``strip_csf_mm`` (0-3 mm, varying around the head) of the
    subarachnoid CSF around the brain, and its edge is ragged (moved by up to ``edge_amp`` px along a smooth random
    field). Returns the new brain, a rim gain (H, W) in [0, ``rim``] one pixel inside its edge (dura left on it)
    and the CSF it added (bool)."""
    rng = np.random.default_rng(draw["edge_seed"])
    b = brain.astype(np.uint8)
    inside = cv2.distanceTransform(b, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - b, cv2.DIST_L2, 3)
    signed = np.where(brain, inside, -outside).astype(np.float32)
    grow = draw["strip_csf_mm"] * size / fov_mm * np.clip(1.0 + 0.4 * smooth_noise(rng, size, 5), 0, 2)
    shift = draw["edge_amp"] * size / 128.0 * smooth_noise(rng, size, draw["edge_cells"])
    new = (signed + grow + shift) > 0.5
    d_new = cv2.distanceTransform(new.astype(np.uint8), cv2.DIST_L2, 3)
    rim = np.clip(1.5 - d_new, 0, 1) * new * (0.5 + 0.5 * smooth_noise(rng, size, 10) > 0) * draw["rim"]
    return new, rim.astype(np.float32), new & ~brain


def head_layers(brain: np.ndarray, draw: dict, size: int, fov_mm: float) -> dict:
    """Soft maps (H, W) of the tissues around a brain that was not skull-stripped: ``csf`` (the subarachnoid space),
    ``bone`` and ``scalp``, their thicknesses (mm) from ``draw`` varying smoothly around the head, and ``mask`` (bool,
    the whole head). ``fov_mm``: the slice's field of view."""
    rng = np.random.default_rng(draw["head_seed"])
    mm = fov_mm / size
    d = cv2.distanceTransform((~brain).astype(np.uint8), cv2.DIST_L2, 5) * mm     # mm outside the brain
    vary = 1.0 + 0.25 * smooth_noise(rng, size, draw["head_cells"])
    t1 = draw["csf_mm"] * vary
    t2 = t1 + draw["bone_mm"] * vary
    t3 = t2 + draw["scalp_mm"] * vary
    out = ~brain

    def band(a, b):
        return (np.clip(d - a + 0.5, 0, 1) * np.clip(b - d + 0.5, 0, 1) * out).astype(np.float32)

    return {"csf": band(0.0, t1), "bone": band(t1, t2), "scalp": band(t2, t3), "mask": out & (d < t3 + 0.5)}


# ---------------------------------------------------------------------------------------------- channel effects
def draw_channel(rng: np.random.Generator, size: int) -> dict:
    """One channel's scanner draws, in a fixed order whatever the effects."""
    return {"gm_ratio": float(np.exp(rng.normal(0.0, 0.10))), "csf_ratio": float(np.exp(rng.normal(0.3, 0.5))),
            "texture_amp": float(rng.uniform(0.01, 0.07)), "texture_cells": int(rng.integers(8, 40)),
            "cap_gain": float(rng.uniform(0.0, 0.35)), "cap_mm": float(rng.uniform(2.0, 5.0)),
            "bias_sd": float(rng.uniform(0.08, 0.25)), "bias_cells": int(rng.integers(2, 4)),
            "bias_grad": float(rng.uniform(-0.2, 0.2)), "bias_angle": float(rng.uniform(0, 2 * math.pi)),
            "acq_frac": float(rng.uniform(0.45, 1.0)), "taper": bool(rng.random() < 0.5),
            "snr": float(math.exp(rng.uniform(math.log(8.0), math.log(40.0)))),
            "field_seed": int(rng.integers(0, 2 ** 31))}


GM_WM = {"flair": 1.2, "t2": 1.3, "t1": 0.8, "t1c": 0.8}   # typical grey/white ratios at 1.5-3 T (the default's
#                                                        are 1.43, 1.52, 0.68: the contrast of a sharper template)


def tissue_values(csf_v: float, gm_v: float, wm_v: float, draw: dict, mod: str, default: dict) -> tuple[float, float]:
    """Grey matter and CSF of a scanner's contrast: grey/white ratio spread around the typical :data:`GM_WM`, CSF/white
    around the default's (``default``: the modality's csf, gm, wm)."""
    gm = wm_v * GM_WM[mod] * draw["gm_ratio"]
    csf = wm_v * default["csf"] / default["wm"] * draw["csf_ratio"]
    if default["gm"] > default["wm"]:
        gm = max(gm, wm_v * 1.05)
    else:
        gm = min(gm, wm_v / 1.1)
    return float(gm), float(max(csf, 0.0))


def texture(draw: dict, size: int) -> np.ndarray:
    """White-matter texture of a scanner (unit field times ``texture_amp``)."""
    rng = np.random.default_rng([draw["field_seed"], 0])
    return draw["texture_amp"] * smooth_noise(rng, size, draw["texture_cells"] * size // 128 + 2)


def caps(d_vent_mm: np.ndarray, wm: np.ndarray, draw: dict) -> np.ndarray:
    """Relative brightening (H, W) of periventricular white matter: ``cap_gain`` on the ventricle's rim, fading over
    ``cap_mm``."""
    return draw["cap_gain"] * np.exp(-np.maximum(d_vent_mm, 0) / draw["cap_mm"]) * np.clip(wm, 0, 1)


def bias_field(draw: dict, size: int) -> np.ndarray:
    """A multiplicative receive-coil bias field (H, W): smooth log-gain plus a linear gradient across the head."""
    rng = np.random.default_rng([draw["field_seed"], 1])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    grad = draw["bias_grad"] * 2 * (math.cos(draw["bias_angle"]) * xx + math.sin(draw["bias_angle"]) * yy)
    return np.exp(draw["bias_sd"] * smooth_noise(rng, size, draw["bias_cells"]) + grad).astype(np.float32)


PSF_RADIUS = 6                                   # px: the acquisition's point spread function is cut here


def psf(frac: float, taper: bool, size: int) -> np.ndarray:
    """1-D point spread function of a k-space truncated to ``frac`` of the grid: a sinc of main lobe 2 / ``frac`` px
    (Gibbs ringing), cut at :data:`PSF_RADIUS` (times ``size / 128``) px with a smooth end, or, ``taper``, the
    smoother PSF of a Hann-windowed k-space (less ringing, wider lobe). Sums to 1."""
    r = max(2, int(round(PSF_RADIUS * size / 128)))
    n = np.arange(-r, r + 1, dtype=np.float64)
    if taper:
        k = np.sinc(frac * n) / np.maximum(1.0 - (frac * n) ** 2, 1e-3) * (np.abs(frac * n) < 0.999)
        k[np.abs(np.abs(frac * n) - 1.0) < 1e-3] = 0.5                  # the Hann window's sinc pair, at its limit
    else:
        k = np.sinc(frac * n)
    k = k * np.cos(np.pi / 2 * n / (r + 1)) ** 2                       # no hard cut at the radius
    return (k / k.sum()).astype(np.float32)


def acquire(img: np.ndarray, draw: dict, n1: np.ndarray, n2: np.ndarray, wm_v: float, resolution: bool,
            noise: bool) -> np.ndarray:
    """Magnitude image of ``img`` (H, W, signal >= 0) as acquired: with ``resolution`` seen through the point spread
    function of the acquisition matrix (``acq_frac`` of the grid, :func:`psf`); with ``noise`` complex Gaussian
    noise (``n1``, ``n2``) at white-matter SNR ``snr``, through the same PSF (correlated as a zero-filled
    reconstruction makes it, its s.d. kept). The PSF is local, so a lesion changes only pixels near it."""
    size = img.shape[0]
    re_, im = img.astype(np.float32), np.zeros_like(img, dtype=np.float32)
    k = psf(draw["acq_frac"], draw["taper"], size) if resolution else None
    if k is not None:
        re_ = cv2.sepFilter2D(re_, -1, k, k, borderType=cv2.BORDER_CONSTANT)
    if noise:
        sd = wm_v / draw["snr"]                                          # each component's s.d.
        a, b = n1.astype(np.float32), n2.astype(np.float32)
        if k is not None:
            g = 1.0 / float(np.sum(k.astype(np.float64) ** 2))          # 2-D: (sum k^2)^2, per dimension once
            a = cv2.sepFilter2D(a, -1, k, k, borderType=cv2.BORDER_REFLECT) * g
            b = cv2.sepFilter2D(b, -1, k, k, borderType=cv2.BORDER_REFLECT) * g
        re_, im = re_ + sd * a, im + sd * b
    return np.sqrt(re_ ** 2 + im ** 2).astype(np.float32)
