"""SynthBrain: a built-in, deterministic data set of synthetic axial brain slices, healthy or with a lesion.

Anatomy comes from the ICBM152 2009 tissue templates shipped inside the nilearn wheel (grey matter, white matter and
brain mask at 1 mm, loaded offline; CSF = brain mask - GM - WM). Every sample is drawn from its integer seed:

* a random axial level within the brain (levels where the brain covers a decent area, as BraTS drops its top and
  bottom slices), a fixed 220 mm square field of view resized to ``size`` pixels (the brain fills most of it);
* a random affine (rotation +-15 deg, isotropic scale 0.9-1.1, small shear) and a smooth elastic deformation, applied
  once to the tissue maps, so tissue maps, brain mask and lesion stay consistent;
* optionally a lesion: ``glioma`` (irregular core, necrotic centre, enhancing rim, surrounding oedema, mild mass
  effect), ``stroke`` (ischaemic infarct in a vascular territory: MCA, ACA, PCA or lacunar) or ``wmh`` (white-matter
  hyperintensities, periventricular and deep);
* modality contrasts rendered from the same tissue maps and lesion: ``flair``, ``t1``, ``t2``, ``t1c`` and ``ct``
  (Hounsfield-like, shown through a brain window centre 40 / width 80), with per-sample tissue intensities, a smooth
  bias field (MRI), Rician (MRI) or Gaussian (CT) noise and a slight blur.

Images are float32 (C, H, W) in [-1, 1] inside the brain and exactly -1 outside it (skull-stripped). Random streams are
split so that ``generate_slice(seed, healthy=True)`` is the *paired healthy counterpart* of
``generate_slice(seed, healthy=False, ...)``: same anatomy, same noise, pixel-identical away from the lesion (and, for
a glioma, its mass effect). That gives a ground-truth healthy counterfactual for every diseased sample.

Display convention: row 0 is anterior, the image's right is the patient's left (radiological), as
:func:`diffuse_core.io.loaders.load_image` shows slices.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

try:  # torch is a project dependency; keep the generator importable without it
    import torch
    from torch.utils.data import Dataset as _TorchDataset
except Exception:  # pragma: no cover
    torch = None
    _TorchDataset = object

__all__ = ["SYNTHBRAIN_VERSION", "MODALITIES", "LESION_TYPES", "SPLITS", "SEED_SPLITS", "PRESETS", "SynthSlice",
           "sample_seed", "generate_slice", "SynthBrainDataset", "write_split", "render_grid", "to_uint8",
           "load_templates", "preset_modalities", "read_nifti_slice", "save_case", "seed_split"]

SYNTHBRAIN_VERSION = "1.0"
MODALITIES = ("flair", "t1", "t2", "t1c", "ct")
LESION_TYPES = ("glioma", "stroke", "wmh")
SPLITS = ("train", "val", "test")
SEED_SPLITS = SPLITS + ("teaching",)          # "teaching" seeds build the curated teaching sets
PRESETS = MODALITIES + ("mri4",)
MRI4 = ("flair", "t1", "t1c", "t2")           # channel order of the "mri4" preset (BraTS order used by the paper)

# Geometry ---------------------------------------------------------------------------------------------------------
FOV_MM = 220                                   # side of the square field of view, mm
LEVEL_RANGE = (48, 128)                        # axial template levels drawn (z index, inclusive); brain spans 0..154
# Levels per lesion type (WMH and gliomas are supratentorial; the healthy counterpart of a case uses its range)
LESION_LEVELS = {"glioma": (56, 124), "stroke": (48, 124), "wmh": (66, 122)}
MIN_SIZE, MAX_SIZE = 32, 512
# Lesion size classes by lesion area in pixels at 128 x 128 (scaled by (size / 128) ** 2 for other sizes)
LESION_SMALL_MAX_PX = 60                       # area <= 60 px: "small"
LESION_MEDIUM_MAX_PX = 300                     # 60 < area <= 300 px: "medium"; above: "large"
MIN_LESION_PX = 20                             # a diseased sample has at least this many lesion pixels at 128 x 128

# Seeds: split k owns [k * 2**48, (k + 1) * 2**48); base_seed and index each get 24 bits, so ranges never overlap.
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3, "teaching": 4}
_FIELD = 1 << 24

# Contrasts on a 0..1 scale (MRI) or in HU (CT). "d_*" are additive changes of the underlying tissue, "a_*" absolute
# intensities of tumour compartments that replace tissue.
_CONTRAST = {
    "flair": dict(csf=0.07, gm=0.50, wm=0.35, d_oedema=0.36, a_solid=0.70, a_necrosis=0.50, a_enh=0.70,
                  d_stroke=0.32, d_wmh=0.38),
    "t1": dict(csf=0.10, gm=0.42, wm=0.62, d_oedema=-0.12, a_solid=0.36, a_necrosis=0.15, a_enh=0.36,
               d_stroke=-0.15, d_wmh=-0.08),
    "t1c": dict(csf=0.10, gm=0.42, wm=0.62, d_oedema=-0.12, a_solid=0.40, a_necrosis=0.13, a_enh=0.93,
                d_stroke=-0.15, d_wmh=-0.08),
    "t2": dict(csf=0.92, gm=0.50, wm=0.33, d_oedema=0.36, a_solid=0.64, a_necrosis=0.86, a_enh=0.62,
               d_stroke=0.32, d_wmh=0.36),
    "ct": dict(csf=6.0, gm=38.0, wm=26.0, d_oedema=-9.0, a_solid=34.0, a_necrosis=15.0, a_enh=34.0,
               d_stroke=-11.0, d_wmh=-5.0),
}
CT_WINDOW = (40.0, 80.0)                       # centre, width (HU)


@dataclass
class SynthSlice:
    image: np.ndarray        # (C, H, W) float32 in [-1, 1], background -1
    lesion_mask: np.ndarray  # (H, W) uint8 {0,1}
    brain_mask: np.ndarray   # (H, W) uint8 {0,1}
    modalities: tuple[str, ...]
    lesion_type: str         # "none" for healthy, else one of LESION_TYPES
    seed: int
    level: int               # axial index in the template (z, mm)
    lesion_size: str         # "none" | "small" | "medium" | "large"
    location: str = ""       # e.g. "left frontal periventricular white matter" ("" when healthy)
    detail: str = ""         # e.g. "MCA territory", "high-grade (necrotic, enhancing)", "8 spots"
    contrast: float = 0.0    # lesion contrast factor used (0 when healthy)

    @property
    def healthy(self) -> bool:
        return self.lesion_type == "none"


# ------------------------------------------------------------------------------------------------------ templates
@functools.lru_cache(maxsize=1)
def load_templates() -> dict[str, np.ndarray]:
    """ICBM152 2009 templates as float32 (H, W, Z) volumes on a square ``FOV_MM`` mm grid at 1 mm.

    ``[:, :, z]`` is the axial slice at template level z; row 0 is anterior, the last column the patient's left.
    Keys: ``gm``, ``wm``, ``csf``, ``mask`` (0/1) and the scalars ``mid_col`` (midline column), ``ac_row`` (row of
    the anterior commissure plane, MNI y = 0) and ``z0`` (level of MNI z = 0). Loaded once per process.
    """
    from nilearn import datasets

    def reorient(img) -> np.ndarray:
        v = np.asarray(img.get_fdata(dtype=np.float32))            # (x: right+, y: anterior+, z)
        return v[::-1, ::-1, :].transpose(1, 0, 2)                   # rows: anterior->posterior, cols: right->left

    gm = reorient(datasets.load_mni152_gm_template(resolution=1))
    wm = reorient(datasets.load_mni152_wm_template(resolution=1))
    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    mask = (reorient(mask_img) > 0.5).astype(np.float32)
    affine = mask_img.affine
    ny, nx = mask.shape[:2]
    rows, cols = np.nonzero(mask.any(axis=2))
    rc = (rows.min() + rows.max()) // 2
    cc = (cols.min() + cols.max()) // 2
    r0, c0 = rc - FOV_MM // 2, cc - FOV_MM // 2

    def crop(v: np.ndarray) -> np.ndarray:
        out = np.zeros((FOV_MM, FOV_MM, v.shape[2]), np.float32)
        rs, re_ = max(r0, 0), min(r0 + FOV_MM, ny)
        cs, ce = max(c0, 0), min(c0 + FOV_MM, nx)
        out[rs - r0:re_ - r0, cs - c0:ce - c0] = v[rs:re_, cs:ce]
        return out

    gm, wm, mask = crop(gm) * crop(mask), crop(wm), crop(mask)
    wm *= mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    inv = np.linalg.inv(affine)
    ijk0 = inv @ np.array([0.0, 0.0, 0.0, 1.0])                     # voxel of MNI (0, 0, 0)
    mid_col = (nx - 1 - ijk0[0]) - c0
    ac_row = (ny - 1 - ijk0[1]) - r0
    vols = {"gm": np.ascontiguousarray(gm), "wm": np.ascontiguousarray(wm), "csf": np.ascontiguousarray(csf),
            "mask": np.ascontiguousarray(mask)}
    for a in vols.values():
        a.setflags(write=False)                                      # shared by every sample of the process
    return {**vols, "mid_col": float(mid_col), "ac_row": float(ac_row), "z0": float(ijk0[2])}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


@functools.lru_cache(maxsize=128)
def _source_slice(level: int, size: int) -> dict[str, np.ndarray]:
    """Template level resized to ``size``: stacked maps, edge and ventricle distances (mm) and hull points."""
    t = load_templates()
    stack = np.stack([t["gm"][:, :, level], t["wm"][:, :, level], t["mask"][:, :, level]], axis=-1)
    if size != FOV_MM:
        interp = cv2.INTER_AREA if size < FOV_MM else cv2.INTER_LINEAR
        stack = cv2.resize(stack, (size, size), interpolation=interp)
    mm = FOV_MM / size
    brain = (stack[..., 2] > 0.5).astype(np.uint8)
    d_edge = cv2.distanceTransform(brain, cv2.DIST_L2, 5).astype(np.float32) * mm
    csf = np.clip(stack[..., 2] - stack[..., 0] - stack[..., 1], 0, 1)
    t = load_templates()
    u_mm = np.abs(np.arange(size, dtype=np.float32) * mm - t["mid_col"])[None, :]
    vent = ((csf > 0.5) & (d_edge > 24.0) & (u_mm < 32.0)).astype(np.uint8)
    if vent.sum() * mm * mm >= 25.0:
        d_vent = cv2.distanceTransform(1 - vent, cv2.DIST_L2, 5).astype(np.float32) * mm
    else:
        d_vent = np.full_like(d_edge, 1e3)
    pts = np.argwhere(brain > 0)[:, ::-1].astype(np.float32)        # (x, y)
    hull = cv2.convexHull(pts).reshape(-1, 2) if len(pts) >= 3 else np.zeros((0, 2), np.float32)
    full = np.concatenate([stack, d_edge[..., None]], axis=-1)       # gm, wm, mask, d_edge (mm)
    for a in (full, d_vent, hull):
        a.setflags(write=False)
    return {"stack": full, "d_vent": d_vent, "hull": hull}


# ---------------------------------------------------------------------------------------------------------- seeds
def sample_seed(split: str, base_seed: int, index: int) -> int:
    """Seed of sample ``index`` of ``split`` under ``base_seed``; each split owns a disjoint range of seeds.

    Splits: ``train``, ``val``, ``test`` and ``teaching``. ``base_seed`` and ``index`` must lie in [0, 2**24).
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SEED_SPLITS)}")
    base_seed, index = int(base_seed), int(index)
    if not 0 <= base_seed < _FIELD:
        raise ValueError(f"base_seed must be in [0, {_FIELD}), got {base_seed}")
    if not 0 <= index < _FIELD:
        raise ValueError(f"index must be in [0, {_FIELD}), got {index}")
    return (_SPLIT_CODE[split] << 48) | (base_seed << 24) | index


def seed_split(seed: int) -> str | None:
    """The split whose range holds ``seed`` (None for an ad-hoc seed)."""
    code = int(seed) >> 48
    for name, c in _SPLIT_CODE.items():
        if c == code:
            return name
    return None


# ---------------------------------------------------------------------------------------------------------- utils
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field of unit standard deviation with about ``cells`` features across the image."""
    cells = int(max(2, cells))
    g = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    big = cv2.resize(g, (size + 2 * size // cells, size + 2 * size // cells), interpolation=cv2.INTER_CUBIC)
    o = size // cells
    out = big[o:o + size, o:o + size]
    return (out - out.mean()) / (out.std() + 1e-6)


def _soft(field: np.ndarray, px_per_unit: float, width_px: float = 1.2) -> np.ndarray:
    """Soft indicator of ``field > 0`` with an edge about ``width_px`` pixels wide (0.5 on the zero level)."""
    return np.clip(field * (px_per_unit / width_px) + 0.5, 0.0, 1.0).astype(np.float32)


def to_uint8(image2d: np.ndarray) -> np.ndarray:
    """Map an image in [-1, 1] to uint8 0..255 (values outside are clipped)."""
    a = np.asarray(image2d, dtype=np.float32)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _check_modalities(modalities) -> tuple[str, ...]:
    if isinstance(modalities, str):
        modalities = (modalities,)
    mods = tuple(str(m).lower().strip() for m in modalities)
    mods = tuple("t1c" if m in ("t1ce", "t1gd") else m for m in mods)
    if not mods:
        raise ValueError("modalities is empty: give at least one of " + ", ".join(MODALITIES))
    bad = [m for m in mods if m not in MODALITIES]
    if bad:
        raise ValueError(f"unknown modality {bad[0]!r}: use {', '.join(MODALITIES)}")
    return mods


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer number of pixels, got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels (128 default, 256 supported), "
                         f"got {size}")
    return int(size)


def preset_modalities(preset: str) -> tuple[str, ...]:
    """Channels of a ``write_split`` preset: a modality name, or ``mri4`` for flair, t1, t1c, t2."""
    key = str(preset).lower().strip()
    if key == "mri4":
        return MRI4
    if key in MODALITIES:
        return (key,)
    raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)} (mri4 = flair,t1,t1c,t2 stacked)")


# ------------------------------------------------------------------------------------------------------- geometry
@dataclass
class _Geometry:
    map_x: np.ndarray        # output pixel -> source (resized template) x
    map_y: np.ndarray
    scale: float             # output px per source px


def _draw_geometry(rng: np.random.Generator, level: int, size: int) -> _Geometry:
    xx, yy = _grid(size)
    c = (size - 1) / 2.0
    theta = math.radians(rng.uniform(-15.0, 15.0))
    scale = float(rng.uniform(0.9, 1.1))
    shear = float(rng.uniform(-0.06, 0.06))
    amp = float(rng.uniform(0.8, 2.5)) * size / 128.0              # elastic amplitude, px
    ex = _smooth_noise(rng, size, 4) * amp
    ey = _smooth_noise(rng, size, 4) * amp
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    fwd = rot @ np.array([[1.0, shear], [0.0, 1.0]])                # source -> output, before scaling
    hull = _source_slice(level, size)["hull"]
    if len(hull):
        p = (hull - c) @ fwd.T
        ext = float(np.abs(p).max())
        limit = c - 0.03 * size - amp
        if ext * scale > limit:                                      # keep the whole brain in the field of view
            scale = limit / ext
    inv = np.linalg.inv(fwd * scale)
    dx, dy = xx - c, yy - c
    map_x = (inv[0, 0] * dx + inv[0, 1] * dy + c + ex).astype(np.float32)
    map_y = (inv[1, 0] * dx + inv[1, 1] * dy + c + ey).astype(np.float32)
    return _Geometry(map_x, map_y, scale)


def _warp(src: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# -------------------------------------------------------------------------------------------------------- lesions
@dataclass
class _Lesion:
    kind: str
    alphas: dict             # compartment -> soft (H, W) map in [0, 1]
    mask: np.ndarray         # (H, W) bool, whole lesion
    detail: str
    map_x: np.ndarray | None = None   # displaced sampling maps (glioma mass effect)
    map_y: np.ndarray | None = None
    info: dict | None = None


def _pick(rng: np.random.Generator, cand: np.ndarray) -> tuple[float, float] | None:
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return None
    i = int(idx[rng.integers(idx.size)])
    w = cand.shape[1]
    return float(i % w) + float(rng.uniform(-0.5, 0.5)), float(i // w) + float(rng.uniform(-0.5, 0.5))


def _glioma(rng, src, geo, size, scale_f, tissue) -> _Lesion | None:
    mm = FOV_MM / size                                               # mm per source px
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
    n1 = (0.7 * _smooth_noise(rng, size, max(6, int(1.2 * cells)))
          + 0.45 * _smooth_noise(rng, size, max(12, int(3 * cells))))
    n2 = _smooth_noise(rng, size, max(5, int(cells)))
    n3 = _smooth_noise(rng, size, max(8, int(2.5 * cells)))
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
    warped = _warp(stack, mx, my)
    gm, wm, brain = warped[..., 0], warped[..., 1], warped[..., 2] > 0.5
    csf = np.clip(warped[..., 2] - gm - wm, 0, 1)
    r_oed = r * oed_f
    f_oed = 1.0 - rho / r_oed + 0.4 * n2 + 0.35 * (wm - 0.5) - 2.0 * np.clip(csf - 0.3, 0, 1)
    a_oed = _soft(f_oed * r_oed, geo.scale) * brain                   # field in source px -> edge in output px
    a_core = _soft(f_core * r, geo.scale) * brain
    alphas = {"oedema": a_oed, "solid": a_core}
    if high_grade:
        a_nec = _soft((f_core - nec_thr + 0.12 * n3) * r, geo.scale) * brain
        alphas["necrosis"] = a_nec
        alphas["enhancing"] = np.clip(a_core - a_nec, 0, 1)
    mask = ((a_core > 0.5) | (a_oed > 0.5)) & brain
    detail = "high-grade (necrotic centre, enhancing rim)" if high_grade else "low-grade (non-enhancing)"
    return _Lesion("glioma", alphas, mask, detail, mx, my)


def _stroke(rng, src, geo, size, scale_f, tissue, u, v) -> _Lesion | None:
    gm, wm, d_edge = tissue["gm"], tissue["wm"], tissue["d_edge"]
    paren = gm + wm
    side = 1.0 if rng.random() < 0.5 else -1.0
    territory = str(rng.choice(["mca", "mca", "mca", "mca_branch", "aca", "pca", "lacunar"]))
    noise = (_smooth_noise(rng, size, max(6, size // 12)) * float(rng.uniform(2.5, 5.0))
             + _smooth_noise(rng, size, max(10, size // 5)) * 1.5)                   # irregular border, mm
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
        mm = FOV_MM / size
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
    region = _soft(score, mm_px) * tissue["brain"]
    alpha = region * np.clip(paren, 0, 1)                              # only the tissue fraction is infarcted
    mask = (region > 0.5) & (paren > 0.3)
    gain = np.clip(1.0 + 0.18 * _smooth_noise(rng, size, max(8, size // 8)), 0.6, 1.4)   # heterogeneous signal
    return _Lesion("stroke", {"infarct": alpha}, mask, detail, info={"gain": gain.astype(np.float32)})


def _wmh(rng, src, geo, size, scale_f, tissue) -> _Lesion | None:
    stack, d_vent_src = src["stack"], src["d_vent"]
    mm = FOV_MM / size
    wm_s, d_edge_s = stack[..., 1], stack[..., 3]
    pv = (wm_s > 0.4) & (d_vent_src < 7.0)
    deep = (wm_s > 0.6) & (d_edge_s > 9.0) & (d_vent_src >= 7.0)
    n_spots = int(np.clip(round(rng.integers(2, 10) * scale_f), 1, 16))
    noise = _smooth_noise(rng, size, max(8, size // 8))
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
    alpha = _soft(field, geo.scale) * np.clip((wm - 0.2) / 0.35, 0, 1) * tissue["brain"]
    mask = alpha > 0.5
    detail = f"{n_spots} foci ({n_pv} periventricular)"
    return _Lesion("wmh", {"wmh": alpha}, mask, detail, info={"n": n_spots, "n_pv": n_pv})


# ------------------------------------------------------------------------------------------------------ rendering
def _render(mod: str, rng: np.random.Generator, tissue: dict, lesion: _Lesion | None, contrast: float,
            size: int, skull: bool) -> np.ndarray:
    p = _CONTRAST[mod]
    ct = mod == "ct"
    jit = (lambda v, s: v + rng.normal(0, s)) if ct else (lambda v, s: v * (1.0 + rng.normal(0, s)))
    csf_v = jit(p["csf"], 1.5 if ct else 0.08)
    gm_v = jit(p["gm"], 1.5 if ct else 0.04)
    wm_v = jit(p["wm"], 1.5 if ct else 0.04)
    if ct:
        gm_v = max(gm_v, wm_v + 7.0)
    elif mod in ("flair", "t2"):
        gm_v = max(gm_v, wm_v * 1.12)
    else:
        wm_v = max(wm_v, gm_v * 1.2)
    lscale = float(rng.uniform(0.85, 1.15))
    texture = _smooth_noise(rng, size, max(8, size // 5))
    bias_amp = float(rng.uniform(0.03, 0.15))
    bias = _smooth_noise(rng, size, 3)
    blur = float(rng.uniform(0.3, 0.8)) * size / 128.0
    sigma = float(rng.uniform(1.2, 3.5)) if ct else float(rng.uniform(0.006, 0.03))
    n1 = rng.standard_normal((size, size)).astype(np.float32)
    n2 = rng.standard_normal((size, size)).astype(np.float32)

    gm, wm, csf = tissue["gm"], tissue["wm"], tissue["csf"]
    base = gm * gm_v + wm * wm_v * (1.0 + (0.015 if ct else 0.025) * texture) + csf * csf_v
    img = base
    if lesion is not None:
        a = lesion.alphas
        les = base.copy()
        if lesion.kind == "glioma":
            les = les + a["oedema"] * p["d_oedema"] * lscale
            les = les * (1 - a["solid"]) + a["solid"] * p["a_solid"]
            if "necrosis" in a:
                enh = p["a_enh"] if mod == "t1c" else p["a_solid"]
                les = les * (1 - a["enhancing"]) + a["enhancing"] * enh
                les = les * (1 - a["necrosis"]) + a["necrosis"] * p["a_necrosis"]
        elif lesion.kind == "stroke":
            les = les + a["infarct"] * lesion.info["gain"] * p["d_stroke"] * lscale
        else:
            les = les + a["wmh"] * p["d_wmh"] * lscale
        img = base + contrast * (les - base)
    if blur > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    brain = tissue["brain"]
    if ct:
        img = img + sigma * n1
        lo = CT_WINDOW[0] - CT_WINDOW[1] / 2
        out = (img - lo) / CT_WINDOW[1] * 2.0 - 1.0
    else:
        img = img * np.exp(bias_amp * bias)
        img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)    # Rician magnitude
        out = img * 2.0 - 1.0
    out = np.clip(out, -1.0, 1.0).astype(np.float32)
    out[~brain] = -1.0
    if ct and skull:
        out[tissue["skull"]] = 1.0
    return out


# -------------------------------------------------------------------------------------------------------- location
def _describe(u: float, v: float, z_mni: float, d_edge: float, d_vent: float, wm: float, kind: str,
              area_mm2: float) -> str:
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


# ---------------------------------------------------------------------------------------------------------- sample
def _size_class(area: int, size: int) -> str:
    f = (size / 128.0) ** 2
    if area == 0:
        return "none"
    if area <= LESION_SMALL_MAX_PX * f:
        return "small"
    if area <= LESION_MEDIUM_MAX_PX * f:
        return "medium"
    return "large"


def generate_slice(seed: int, modalities=("flair",), size: int = 128, healthy: bool | None = None,
                   lesion_type: str | None = None, lesion_scale: float | None = None,
                   contrast: float | None = None, skull: bool = False) -> SynthSlice:
    """One SynthBrain slice, fully determined by its arguments.

    ``healthy=None`` draws healthy with p = 0.5, unless ``lesion_type`` is given (then the slice is diseased);
    ``healthy=True`` with a ``lesion_type`` gives the lesion-free counterpart of that diseased slice.
    ``lesion_type=None`` draws among the types suited to the modalities (``stroke`` when CT is among them, any for
    MRI). ``lesion_scale`` (about 0.4-1.6, default drawn) scales the lesion extent, ``contrast`` (about 0.3-1.1,
    default drawn, subtle ones included) scales its intensity change. ``skull=True`` adds a bone ring on CT channels.
    The same seed with ``healthy=True`` (and the same ``lesion_type``, when one was given or drawn) gives the paired
    healthy slice: same level, anatomy and noise.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    mods = _check_modalities(modalities)
    size = _check_size(size)
    if lesion_type is not None and lesion_type not in LESION_TYPES:
        raise ValueError(f"unknown lesion_type {lesion_type!r}: use one of {', '.join(LESION_TYPES)}")
    if lesion_scale is not None and not (0.05 <= float(lesion_scale) <= 4.0):
        raise ValueError(f"lesion_scale must be between 0.05 and 4, got {lesion_scale}")
    if contrast is not None and not (0.0 < float(contrast) <= 3.0):
        raise ValueError(f"contrast must be in (0, 3], got {contrast}")

    rng_geo = np.random.default_rng([seed, 1])
    rng_les = np.random.default_rng([seed, 2])
    # lesion draws happen in the same order whatever was requested, so that overrides keep the rest identical
    coin = rng_les.random()
    type_u = rng_les.random()
    scale_draw = float(math.exp(rng_les.uniform(math.log(0.45), math.log(1.5))))
    contrast_draw = float(rng_les.uniform(0.35, 0.6) if rng_les.random() < 0.3 else rng_les.uniform(0.7, 1.05))
    if healthy is None:
        healthy = False if lesion_type is not None else bool(coin < 0.5)
    if not healthy and lesion_type is None:
        suited = ("stroke",) if "ct" in mods else LESION_TYPES
        lesion_type = suited[min(int(type_u * len(suited)), len(suited) - 1)]
    lo, hi = LESION_LEVELS[lesion_type] if lesion_type is not None else LEVEL_RANGE
    scale_f = float(lesion_scale) if lesion_scale is not None else scale_draw
    contrast_v = float(contrast) if contrast is not None else contrast_draw

    level = min(hi, lo + int(rng_geo.random() * (hi - lo + 1)))
    geo = _draw_geometry(rng_geo, level, size)
    src = _source_slice(level, size)
    t = load_templates()
    mm = FOV_MM / size
    u = (geo.map_x - t["mid_col"] * size / FOV_MM) * mm             # atlas mm, + towards the image right
    v = (geo.map_y - t["ac_row"] * size / FOV_MM) * mm              # atlas mm, + posterior

    def tissue_from(map_x, map_y) -> dict:
        w = _warp(src["stack"], map_x, map_y)
        gm, wm = w[..., 0], w[..., 1]
        return {"gm": gm, "wm": wm, "csf": np.clip(w[..., 2] - gm - wm, 0, 1), "brain": w[..., 2] > 0.5,
                "d_edge": w[..., 3]}

    tissue = tissue_from(geo.map_x, geo.map_y)
    lesion = None
    if not healthy:
        min_px = max(4, int(round(MIN_LESION_PX * (size / 128.0) ** 2)))
        for attempt in range(40):
            f = scale_f * (1.0 + 0.15 * (attempt // 8))
            if lesion_type == "glioma":
                les = _glioma(rng_les, src, geo, size, f, tissue)
            elif lesion_type == "stroke":
                les = _stroke(rng_les, src, geo, size, f, tissue, u, v)
            else:
                les = _wmh(rng_les, src, geo, size, f, tissue)
            if les is not None and int(les.mask.sum()) >= min_px:
                lesion = les
                break
        if lesion is None:  # pragma: no cover - a level without room for the lesion; fall back to a glioma
            raise RuntimeError(f"SynthBrain could not place a {lesion_type} lesion for seed {seed}")
        if lesion.map_x is not None:
            tissue = tissue_from(lesion.map_x, lesion.map_y)
            for k in lesion.alphas:
                lesion.alphas[k] = lesion.alphas[k] * tissue["brain"]
            lesion.mask &= tissue["brain"]
        # rendered changes stay within a couple of pixels of the lesion mask (no faint unmasked abnormality)
        k = 2 * max(2, int(round(2 * size / 128))) + 1
        near = cv2.dilate(lesion.mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        for name in lesion.alphas:
            lesion.alphas[name] = lesion.alphas[name] * near
    if skull and "ct" in mods:
        b = tissue["brain"].astype(np.uint8)
        k = max(3, int(round(size / 128.0 * 6)) | 1)
        tissue["skull"] = (cv2.dilate(b, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0) & (b == 0)

    channels = []
    for m in mods:
        rng_m = np.random.default_rng([seed, 3, MODALITIES.index(m)])
        channels.append(_render(m, rng_m, tissue, lesion, contrast_v, size, skull))
    image = np.stack(channels).astype(np.float32)
    brain_mask = tissue["brain"].astype(np.uint8)
    if lesion is None:
        lesion_mask = np.zeros((size, size), np.uint8)
        location, detail, ltype, cval = "", "", "none", 0.0
    else:
        lesion_mask = (lesion.mask & tissue["brain"]).astype(np.uint8)
        ys, xs = np.nonzero(lesion_mask)
        # location from the lesion pixel nearest the centroid
        cy, cx = ys.mean(), xs.mean()
        j = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
        py, px = int(ys[j]), int(xs[j])
        sx = int(np.clip(round(geo.map_x[py, px]), 0, size - 1))
        sy = int(np.clip(round(geo.map_y[py, px]), 0, size - 1))
        area_mm2 = float(lesion_mask.sum()) * (mm / geo.scale) ** 2
        location = _describe(float(u[py, px]), float(v[py, px]), level - t["z0"], float(tissue["d_edge"][py, px]),
                             float(src["d_vent"][sy, sx]), float(tissue["wm"][py, px]), lesion.kind, area_mm2)
        if lesion.kind == "stroke" and lesion.detail.startswith(("MCA", "ACA", "PCA")):
            location = f"{location} ({lesion.detail})"
        if lesion.kind == "wmh":
            n, n_pv = lesion.info["n"], lesion.info["n_pv"]
            depth = ("periventricular white matter" if n_pv == n else "deep white matter" if n_pv == 0
                     else "periventricular and deep white matter")
            left = float((lesion_mask.astype(bool) & (u > 0)).sum()) / float(lesion_mask.sum())
            if 0.15 < left < 0.85:
                location = f"bilateral {depth}"
            else:
                location = " ".join(location.split()[:2]) + f" {depth}"
        detail, ltype, cval = lesion.detail, lesion.kind, contrast_v
    return SynthSlice(image=image, lesion_mask=lesion_mask, brain_mask=brain_mask, modalities=mods,
                      lesion_type=ltype, seed=seed, level=level,
                      lesion_size=_size_class(int(lesion_mask.sum()), size), location=location, detail=detail,
                      contrast=cval)


# --------------------------------------------------------------------------------------------------------- dataset
class SynthBrainDataset(_TorchDataset):
    """``n`` SynthBrain slices of ``split`` (generated on access, deterministic by ``base_seed`` and index)."""

    def __init__(self, split: str, n: int, base_seed: int = 0, modalities=("flair",), size: int = 128,
                 healthy: bool | None = None):
        if split not in SEED_SPLITS:
            raise ValueError(f"unknown split {split!r}: use one of {', '.join(SEED_SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or n >= _FIELD:
            raise ValueError(f"n must be an integer in [0, {_FIELD}), got {n!r}")
        sample_seed(split, base_seed, 0)
        self.split, self.n, self.base_seed = split, int(n), int(base_seed)
        self.modalities, self.size, self.healthy = _check_modalities(modalities), _check_size(size), healthy

    def __len__(self) -> int:
        return self.n

    def seed(self, index: int) -> int:
        return sample_seed(self.split, self.base_seed, index)

    def slice(self, index: int) -> SynthSlice:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} slices")
        index = index % self.n if self.n else index
        return generate_slice(self.seed(index), self.modalities, self.size, healthy=self.healthy)

    def __getitem__(self, index: int) -> dict:
        s = self.slice(int(index))
        return {"image": torch.from_numpy(s.image), "lesion_mask": torch.from_numpy(s.lesion_mask[None].copy()),
                "brain_mask": torch.from_numpy(s.brain_mask[None].copy()), "label": int(s.lesion_type != "none"),
                "lesion_type": s.lesion_type, "seed": s.seed}


# ---------------------------------------------------------------------------------------------------------- output
_OUTLINE = (255, 70, 40)


def _tile(s: SynthSlice, label: str | None = None, outline: bool = True) -> np.ndarray:
    """RGB uint8 tile: the channels side by side, the lesion outlined."""
    tiles = []
    m = s.lesion_mask.astype(np.uint8)
    edge = (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0 if m.any() and outline else np.zeros(m.shape, bool)
    for ch in s.image:
        g = to_uint8(ch)
        rgb = np.repeat(g[..., None], 3, axis=-1)
        rgb[edge] = _OUTLINE
        tiles.append(rgb)
    tile = np.concatenate(tiles, axis=1)
    if label:
        from PIL import Image, ImageDraw

        im = Image.fromarray(tile)
        ImageDraw.Draw(im).text((2, 1), label, fill=(255, 255, 90))
        tile = np.asarray(im)
    return tile


def render_grid(slices: list[SynthSlice], path, ncols: int = 6, labels: bool = True, outline=True) -> Path:
    """PNG grid of ``slices`` (channels side by side, lesion outlined, a short caption each); returns the path.

    ``outline``: draw lesion outlines, one bool for all slices or one per slice.
    """
    from PIL import Image

    if not slices:
        raise ValueError("render_grid needs at least one slice")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    caps = []
    for s in slices:
        cap = "+".join(s.modalities) + (" healthy" if s.lesion_type == "none" else f" {s.lesion_type} {s.lesion_size}")
        caps.append(cap if labels else None)
    outlines = [bool(outline)] * len(slices) if isinstance(outline, (bool, int)) else [bool(o) for o in outline]
    if len(outlines) != len(slices):
        raise ValueError(f"outline has {len(outlines)} entries for {len(slices)} slices")
    tiles = [_tile(s, c, o) for s, c, o in zip(slices, caps, outlines)]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    pad = 2
    grid = np.zeros((nrows * (h + pad) - pad, ncols * (w + pad) - pad, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + t.shape[0], c * (w + pad):c * (w + pad) + t.shape[1]] = t
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, optimize=True)
    return path


def _nifti_bytes(arr_display: np.ndarray) -> bytes:
    """Deterministic .nii.gz bytes of a displayed (H, W) or (C, H, W) array, stored in canonical RAS orientation.

    The loaders (:func:`diffuse_core.io.loaders.load_image`) show it exactly as displayed: anterior at the top, patient's
    left on the image right. Several channels go on the 4th axis: (X, Y, 1, C).
    """
    import nibabel as nib

    a = np.asarray(arr_display)
    if a.ndim == 2:
        data = np.ascontiguousarray(a[::-1, ::-1].T)
    else:
        data = np.ascontiguousarray(a[:, ::-1, ::-1].transpose(2, 1, 0)[:, :, None, :])
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm")
    img.set_qform(np.eye(4), code=1)
    img.set_sform(np.eye(4), code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def read_nifti_slice(path) -> np.ndarray:
    """Read a slice written by :func:`write_split` back in display orientation: (H, W) or (C, H, W)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    ornt = nib.orientations.io_orientation(img.affine)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4) or data.shape[2] != 1:
        raise ValueError(f"{path} is not a single slice (shape {data.shape})")
    data = nib.orientations.apply_orientation(data, ornt)            # to canonical RAS
    if data.ndim == 3:                                                # (X, Y, 1)
        return np.ascontiguousarray(data[:, :, 0].T[::-1, ::-1])
    return np.ascontiguousarray(data[:, :, 0, :].transpose(2, 1, 0)[:, ::-1, ::-1])


def save_case(s: SynthSlice, out_dir, case_id: str) -> dict[str, str]:
    """Write ``{id}_image.nii.gz``, ``{id}_mask.nii.gz`` and ``{id}.png`` for one slice; returns relative paths."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {"image": f"{case_id}_image.nii.gz", "mask": f"{case_id}_mask.nii.gz", "preview": f"{case_id}.png"}
    img = s.image[0] if s.image.shape[0] == 1 else s.image
    (out_dir / names["image"]).write_bytes(_nifti_bytes(img.astype(np.float32)))
    (out_dir / names["mask"]).write_bytes(_nifti_bytes(s.lesion_mask.astype(np.uint8)))
    Image.fromarray(_tile(s)).save(out_dir / names["preview"])
    return names


def write_split(out_dir, preset: str = "flair", n: int = 100, seed: int = 0, split: str = "test", size: int = 128,
                healthy_fraction: float = 0.5) -> Path:
    """Write ``n`` slices of ``split`` to ``out_dir``: NIfTI images and masks, PNG previews and ``index.csv``.

    Same arguments, byte-identical files. ``preset``: a modality name or ``mri4`` (flair, t1, t1c, t2 stacked).
    Healthy slices are spread evenly (slice i is healthy when floor((i+1)f) > floor(i f), f = healthy_fraction).
    ``index.csv`` columns: id,image,mask,modality,lesion_type,healthy,seed (paths relative to ``out_dir``; healthy
    is 1 or 0; modality is the channels joined by ``+``). Returns the path of ``index.csv``.
    """
    mods = preset_modalities(preset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n < _FIELD:
        raise ValueError(f"n must be a positive integer (number of slices), got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < _FIELD:
        raise ValueError(f"seed must be an integer in [0, {_FIELD}), got {seed!r}")
    size = _check_size(size)
    try:
        hf = float(healthy_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"healthy_fraction must be a number in [0, 1], got {healthy_fraction!r}") from None
    if not 0.0 <= hf <= 1.0:
        raise ValueError(f"healthy_fraction must be in [0, 1], got {healthy_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(int(n)):
        s_seed = sample_seed(split, int(seed), i)
        healthy = math.floor((i + 1) * hf + 1e-9) > math.floor(i * hf + 1e-9)
        s = generate_slice(s_seed, mods, size, healthy=healthy)
        cid = f"{split}_{i:05d}"
        names = save_case(s, out, cid)
        rows.append([cid, names["image"], names["mask"], "+".join(mods), s.lesion_type, int(healthy), s_seed])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "image", "mask", "modality", "lesion_type", "healthy", "seed"])
    w.writerows(rows)
    index = out / "index.csv"
    index.write_text(buf.getvalue(), encoding="utf-8")
    return index
