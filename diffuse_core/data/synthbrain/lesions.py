"""SynthBrain lesions drawn on a warped template slice: ``glioma``, ``stroke`` and ``wmh``, with their location.

* ``glioma``: irregular core, necrotic centre and enhancing rim when high-grade, surrounding oedema, mild mass effect
  (the lesion returns displaced sampling maps, so the tissue around it is pushed away);
* ``stroke``: ischaemic infarct in a vascular territory (MCA, MCA branch, ACA, PCA) or a lacune;
* ``wmh``: white-matter hyperintensities, periventricular and deep.

Each drawer returns a :class:`Lesion`: soft compartment maps in [0, 1] (``alphas``) that :mod:`.render` turns into
intensity changes, and the binary mask. Lengths are in mm unless named ``*_px``; ``u``/``v`` are atlas mm from the
midline (+ towards the image right, the patient's left) and the anterior commissure plane (+ posterior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from diffuse_core.data.synthbrain.anatomy import FOV_MM, Geometry, load_templates, pixel_mm, warp
from diffuse_core.data.synthbrain.fields import smooth_noise, soft

LESION_TYPES = ("glioma", "stroke", "wmh")
# Levels per lesion type (WMH and gliomas are supratentorial; the healthy counterpart of a case uses its range)
LESION_LEVELS = {"glioma": (56, 124), "stroke": (48, 124), "wmh": (66, 122)}
# Lesion size classes by lesion area in pixels at 128 x 128 (scaled by (size / 128) ** 2 for other sizes)
LESION_SMALL_MAX_PX = 60                       # area <= 60 px: "small"
LESION_MEDIUM_MAX_PX = 300                     # 60 < area <= 300 px: "medium"; above: "large"
MIN_LESION_PX = 20                             # a diseased sample has at least this many lesion pixels at 128 x 128


@dataclass
class Lesion:
    """A drawn lesion: soft compartment maps, its binary mask and words describing it."""

    kind: str
    alphas: dict             # compartment -> soft (H, W) map in [0, 1]
    mask: np.ndarray         # (H, W) bool, whole lesion
    detail: str
    map_x: np.ndarray | None = None   # displaced sampling maps (glioma mass effect)
    map_y: np.ndarray | None = None
    info: dict | None = None


def _pick(rng: np.random.Generator, cand: np.ndarray) -> tuple[float, float] | None:
    """A random point (x, y) of the candidate pixels, jittered within its pixel; None if there are none."""
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return None
    i = int(idx[rng.integers(idx.size)])
    w = cand.shape[1]
    return float(i % w) + float(rng.uniform(-0.5, 0.5)), float(i // w) + float(rng.uniform(-0.5, 0.5))


def glioma(rng, src, geo: Geometry, size, scale_f, tissue, tracts: bool = False) -> Lesion | None:
    """Core (and, high-grade, necrosis and enhancing rim) inside oedema, centred in deep white matter, pushing the
    tissue around it away (mass effect). ``scale_f`` scales the radius; None when no centre fits this level.
    ``tracts``: the oedema follows the white matter further and spares the cortex (finger-like, as on real FLAIR);
    no extra draws, so the rest of the sample is unchanged."""
    mm = pixel_mm(size)                                              # mm per source px
    stack = src["stack"]
    r_mm = float(rng.uniform(5.0, 19.0)) * scale_f
    cand = (stack[..., 1] > 0.45) & (stack[..., 3] > min(0.7 * r_mm + 9.0, 28.0))
    centre = _pick(rng, cand)
    aspect = float(rng.uniform(0.75, 1.3))
    phi = float(rng.uniform(0, math.pi))
    high_grade = rng.random() < (0.75 if r_mm > 9 else 0.35)
    nec_thr = float(rng.uniform(0.25, 0.45))
    oed_f = float(rng.uniform(1.3, 2.3)) if high_grade else float(rng.uniform(1.0, 1.45))
    k_mass = float(rng.uniform(0.12, 0.32)) * min(1.0, r_mm / 16.0)
    cells = size * mm / r_mm                                          # noise features about one radius apart
    n1 = (0.7 * smooth_noise(rng, size, max(6, int(1.2 * cells)))
          + 0.45 * smooth_noise(rng, size, max(12, int(3 * cells))))
    n2 = smooth_noise(rng, size, max(5, int(cells)))
    n3 = smooth_noise(rng, size, max(8, int(2.5 * cells)))
    if centre is None:
        return None
    cx, cy = centre
    r = r_mm / mm                                                    # source px
    dx, dy = geo.map_x - cx, geo.map_y - cy
    ca, sa = math.cos(phi), math.sin(phi)
    du, dv = ca * dx + sa * dy, -sa * dx + ca * dy
    rho = np.sqrt((du / aspect) ** 2 + (dv * aspect) ** 2)
    f_core = 1.0 - rho / r + 0.32 * n1
    # mass effect: output pixels sample tissue from closer to the centre, so tissue is pushed away from it
    d2 = dx * dx + dy * dy
    shrink = 1.0 - k_mass * np.exp(-d2 / (1.6 * r) ** 2) * (d2 < (4.8 * r) ** 2)   # none beyond 3 widths
    mx = (cx + dx * shrink).astype(np.float32)
    my = (cy + dy * shrink).astype(np.float32)
    warped = warp(stack, mx, my)
    gm, wm, brain = warped[..., 0], warped[..., 1], warped[..., 2] > 0.5
    csf = np.clip(warped[..., 2] - gm - wm, 0, 1)
    r_oed = r * oed_f
    if tracts:                                                        # along white matter, not into cortex
        f_oed = 1.0 - rho / (1.3 * r_oed) + 0.5 * n2 + 0.9 * (wm - 0.5) - 2.0 * np.clip(csf - 0.3, 0, 1)
    else:
        f_oed = 1.0 - rho / r_oed + 0.4 * n2 + 0.35 * (wm - 0.5) - 2.0 * np.clip(csf - 0.3, 0, 1)
    a_oed = soft(f_oed * r_oed, geo.scale) * brain                    # field in source px -> edge in output px
    if tracts:
        a_oed = a_oed * np.clip((wm - 0.2) / 0.3, 0, 1)
    a_core = soft(f_core * r, geo.scale) * brain
    alphas = {"oedema": a_oed, "solid": a_core}
    if high_grade:
        a_nec = soft((f_core - nec_thr + 0.12 * n3) * r, geo.scale) * brain
        alphas["necrosis"] = a_nec
        alphas["enhancing"] = np.clip(a_core - a_nec, 0, 1)
    mask = ((a_core > 0.5) | (a_oed > 0.5)) & brain
    detail = "high-grade (necrotic centre, enhancing rim)" if high_grade else "low-grade (non-enhancing)"
    return Lesion("glioma", alphas, mask, detail, mx, my)


def stroke(rng, src, geo: Geometry, size, scale_f, tissue, u, v) -> Lesion | None:
    """Ischaemic infarct of one hemisphere: an MCA, MCA-branch, ACA or PCA territory in atlas mm (``u``, ``v``), or
    a deep lacune. Only the tissue fraction of a pixel is infarcted; None when no lacune site fits this level."""
    gm, wm, d_edge = tissue["gm"], tissue["wm"], tissue["d_edge"]
    paren = gm + wm
    side = 1.0 if rng.random() < 0.5 else -1.0
    territory = str(rng.choice(["mca", "mca", "mca", "mca_branch", "aca", "pca", "lacunar"]))
    noise = (smooth_noise(rng, size, max(6, size // 12)) * float(rng.uniform(2.5, 5.0))
             + smooth_noise(rng, size, max(10, size // 5)) * 1.5)                   # irregular border, mm
    su = side * u                                                    # mm into the chosen hemisphere
    if territory in ("mca", "mca_branch"):
        uo, vo = 20.0, float(rng.uniform(-5.0, 10.0))
        psi = np.arctan2(v - vo, su - uo)                            # 0 = lateral, <0 anterior
        rho = np.hypot(v - vo, su - uo)
        half = math.radians(rng.uniform(40, 70) if territory == "mca" else rng.uniform(12, 35)) * min(scale_f, 1.3)
        half = min(half, math.radians(68.0))                          # the MCA does not reach the poles
        centre = math.radians(rng.uniform(-25, 25) if territory == "mca" else rng.uniform(-60, 60))
        depth = float(rng.uniform(22, 45) if territory == "mca" else rng.uniform(12, 26)) * math.sqrt(scale_f)
        s_sector = (half - np.abs(psi - centre)) * np.maximum(rho, 5.0)
        score = np.minimum(np.minimum(s_sector, depth - d_edge), su - 3.0)
        detail = "MCA territory" if territory == "mca" else "MCA branch territory"
    elif territory == "aca":
        width = float(rng.uniform(14, 28)) * min(scale_f, 1.3)
        v_cut = float(rng.uniform(-15, 25))
        depth = float(rng.uniform(15, 40)) * scale_f
        score = np.minimum(np.minimum(su - 1.5, width - su), np.minimum(v_cut - v, depth - d_edge + 10.0))
        detail = "ACA territory"
    elif territory == "pca":
        width = float(rng.uniform(14, 35)) * min(scale_f, 1.4)
        v_cut = float(rng.uniform(45, 70)) - 10.0 * (scale_f - 1.0)
        score = np.minimum(np.minimum(su - 1.5, width - su), v - v_cut)
        detail = "PCA territory"
    else:
        stack = src["stack"]
        mm = pixel_mm(size)
        t = load_templates()
        ucol = side * (np.arange(size, dtype=np.float32) - t["mid_col"] / mm) * mm
        cand = ((stack[..., 0] + stack[..., 1]) > 0.6) & (stack[..., 3] > 28.0) & \
               (ucol[None, :] > 8.0) & (ucol[None, :] < 32.0)
        c = _pick(rng, cand)
        if c is None:
            return None
        r = float(rng.uniform(2.0, 6.0)) * min(scale_f, 1.5)
        cu = c[0] * mm - t["mid_col"]
        cv_ = c[1] * mm - t["ac_row"]
        score = r - np.hypot(u - cu, v - cv_) + 0.25 * noise
        detail = "lacunar infarct"
        noise = noise * 0.0
    score = score + noise
    mm_px = geo.scale * size / FOV_MM                                 # output px per mm
    region = soft(score, mm_px) * tissue["brain"]
    alpha = region * np.clip(paren, 0, 1)                              # only the tissue fraction is infarcted
    mask = (region > 0.5) & (paren > 0.3)
    gain = np.clip(1.0 + 0.18 * smooth_noise(rng, size, max(8, size // 8)), 0.6, 1.4)   # heterogeneous signal
    return Lesion("stroke", {"infarct": alpha}, mask, detail, info={"gain": gain.astype(np.float32)})


def wmh(rng, src, geo: Geometry, size, scale_f, tissue) -> Lesion | None:
    """2-9 (times ``scale_f``) white-matter foci, periventricular (near the ventricles) or deep; None if none fit."""
    stack, d_vent_src = src["stack"], src["d_vent"]
    mm = pixel_mm(size)
    wm_s, d_edge_s = stack[..., 1], stack[..., 3]
    pv = (wm_s > 0.4) & (d_vent_src < 7.0)
    deep = (wm_s > 0.6) & (d_edge_s > 9.0) & (d_vent_src >= 7.0)
    n_spots = int(np.clip(round(rng.integers(2, 10) * scale_f), 1, 16))
    noise = smooth_noise(rng, size, max(8, size // 8))
    field = np.full((size, size), -1e3, np.float32)
    n_pv = 0
    for _ in range(n_spots):
        use_pv = rng.random() < 0.55
        cand = pv if (use_pv and pv.any()) or not deep.any() else deep
        c = _pick(rng, cand)
        r_mm = float(rng.uniform(3.0, 7.5) if cand is pv else rng.uniform(1.5, 4.0)) * math.sqrt(scale_f)
        aspect = float(rng.uniform(0.6, 1.5))
        if c is None:
            continue
        n_pv += cand is pv
        r = r_mm / mm
        dx, dy = geo.map_x - c[0], geo.map_y - c[1]
        rho = np.sqrt((dx / aspect) ** 2 + (dy * aspect) ** 2)
        field = np.maximum(field, (r - rho) + 0.3 * r * noise)      # source px
    if field.max() < 0:
        return None
    wm = tissue["wm"]
    alpha = soft(field, geo.scale) * np.clip((wm - 0.2) / 0.35, 0, 1) * tissue["brain"]
    mask = alpha > 0.5
    detail = f"{n_spots} foci ({n_pv} periventricular)"
    return Lesion("wmh", {"wmh": alpha}, mask, detail, info={"n": n_spots, "n_pv": n_pv})


FAZEKAS_P = (0.35, 0.40, 0.25)                 # grades 1 (caps, pencil-thin lining), 2 (smooth halo), 3 (irregular)
WMH_LEVELS_REAL = (76, 122)                    # wmh_fazekas: from the lateral ventricles' lower bodies up


def wmh_fazekas(rng, src, geo: Geometry, size, scale_f, tissue) -> Lesion | None:
    """White-matter hyperintensities as real FLAIR shows them (shared/DOMAIN.md): a periventricular component, caps
    at the frontal and occipital horns and a rim along the lateral ventricles whose thickness grows with the Fazekas
    grade (1: thin caps and lining, 2: smooth halo, 3: irregular bands reaching into deep white matter), symmetric
    as it follows both ventricles; plus deep foci, punctate at grades 1-2 and confluent patches at grade 3. Only
    white matter is affected. None when the level has neither ventricles nor room for deep foci."""
    stack, d_vent_src = src["stack"], src["d_vent"]
    mm = pixel_mm(size)
    wm_s, d_edge_s = stack[..., 1], stack[..., 3]
    grade = 1 + int(rng.choice(3, p=FAZEKAS_P))
    t_rim = float(rng.uniform(*((0.8, 1.8), (2.0, 4.0), (4.0, 7.0))[grade - 1])) * scale_f
    t_cap = float(rng.uniform(*((2.5, 5.0), (4.5, 8.0), (7.0, 12.0))[grade - 1])) * scale_f
    rough = (0.15, 0.25, 0.45)[grade - 1]
    n_deep = int(rng.integers(*((0, 3), (0, 4), (0, 3))[grade - 1]))
    noise = smooth_noise(rng, size, max(8, size // 6))
    deep_noise = smooth_noise(rng, size, max(10, size // 4))
    field = np.full((size, size), -1e3, np.float32)                  # mm, > 0 inside
    k = max(3, int(round(3 * size / 128)) | 1)                        # the open ventricles, not the thin fissure
    vent = cv2.morphologyEx((d_vent_src < 0.5).astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n_pv = 0
    if vent.sum() * mm * mm >= 40.0:
        rows = np.nonzero(vent.any(axis=1))[0]
        v_src = geo.map_y * mm                                        # source row of each output pixel, mm
        front, back, fade = rows.min() * mm, rows.max() * mm, 12.0
        cap = np.clip((front + fade - v_src) / fade, 0, 1) + np.clip((v_src - (back - fade)) / fade, 0, 1)
        thick = t_rim + (t_cap - t_rim) * np.clip(cap, 0, 1)
        d_src = cv2.distanceTransform(1 - vent, cv2.DIST_L2, 5).astype(np.float32) * mm
        d_vent = warp(d_src, geo.map_x, geo.map_y) + 1e3 * (1.0 - warp(np.ones_like(d_src), geo.map_x, geo.map_y))
        field = thick * (1.0 + rough * noise) - d_vent
        n_pv = 1
    deep = (wm_s > 0.6) & (d_edge_s > 9.0) & (d_vent_src >= (4.0 if grade == 3 else 7.0))
    # (deep foci keep the generator's ventricle distance: away from any deep CSF)
    for _ in range(n_deep):
        c = _pick(rng, deep)
        r_mm = float(rng.uniform(3.0, 7.0) if grade == 3 else rng.uniform(1.2, 3.0)) * math.sqrt(scale_f)
        if c is None:
            continue
        rho = np.hypot(geo.map_x - c[0], geo.map_y - c[1]) * mm
        field = np.maximum(field, r_mm - rho + 0.35 * r_mm * deep_noise)
    if field.max() < 0:
        return None
    alpha = soft(field / mm, geo.scale) * np.clip((tissue["wm"] - 0.2) / 0.35, 0, 1) * tissue["brain"]
    mask = alpha > 0.5
    words = ("thin caps and lining", "smooth periventricular halo", "irregular periventricular bands")[grade - 1]
    deep_words = f"{n_deep} deep " + (("patch", "patches"), ("focus", "foci"))[grade < 3][n_deep > 1]
    detail = (f"Fazekas {grade}: {words}" + (f", {deep_words}" if n_deep else "")) if n_pv else \
        f"Fazekas {grade}, above the ventricles: {deep_words}"
    return Lesion("wmh", {"wmh": alpha}, mask, detail, info={"n": n_pv + n_deep, "n_pv": n_pv, "grade": grade})


def describe(u: float, v: float, z_mni: float, d_edge: float, d_vent: float, wm: float, kind: str,
             area_mm2: float) -> str:
    """Location words for a lesion point: side, lobe or deep structure, and depth (e.g. "left frontal cortex").
    ``u``/``v`` atlas mm, ``z_mni`` mm, distances to the brain edge and the ventricles in mm, ``wm`` in [0, 1]."""
    side = "left" if u > 0 else "right"                             # image right = patient's left
    y, ax = -v, abs(u)                                               # MNI y (anterior +), |x|
    if z_mni < -18 and y < -42:
        region = "cerebellar hemisphere"
        return f"{side} {region}"
    if ax < 30 and -32 < y < 22 and -6 < z_mni < 20 and d_edge > 25:
        deep = "basal ganglia" if y > -12 else "thalamus"
        return f"{side} {deep}"
    if y > 0:
        lobe = "frontal"
    elif z_mni < 8 and y > -50 and ax > 28:
        lobe = "temporal"
    elif y < -68:
        lobe = "occipital"
    elif z_mni < 8:
        lobe = "temporo-occipital"
    else:
        lobe = "parietal" if y < -22 else "frontoparietal"
    if area_mm2 > 1500 and kind != "wmh":
        depth = "cortex and white matter"
    elif d_vent < 8:
        depth = "periventricular white matter"
    elif d_edge < 7:
        depth = "cortex" if wm < 0.5 else "juxtacortical white matter"
    else:
        depth = "deep white matter" if wm >= 0.4 else "subcortical region"
    return f"{side} {lobe} {depth}"


def size_class(area: int, size: int) -> str:
    """``none``, ``small``, ``medium`` or ``large`` for a lesion of ``area`` pixels on a ``size`` x ``size`` slice."""
    f = (size / 128.0) ** 2
    if area == 0:
        return "none"
    if area <= LESION_SMALL_MAX_PX * f:
        return "small"
    if area <= LESION_MEDIUM_MAX_PX * f:
        return "medium"
    return "large"
