"""SynthBrain anatomy: the ICBM152 tissue templates, the axial level's source maps and the random deformation.

Anatomy comes from the ICBM152 2009 tissue templates shipped inside the nilearn wheel (grey matter, white matter and
brain mask at 1 mm, loaded offline; CSF = brain mask - GM - WM). A slice is a template level cut to a fixed
``FOV_MM`` mm square field of view and resized to ``size`` pixels, so one pixel is ``FOV_MM / size`` mm
(:func:`pixel_mm`; 1.72 mm at 128). It is then warped once by a random affine (rotation +-15 deg, isotropic scale
0.9-1.1, small shear) and a smooth elastic deformation (:func:`draw_geometry`), so tissue maps, brain mask and lesion
stay consistent.

Orientation: row 0 is anterior, the last column the patient's left (radiological display).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from diffuse_core.data.synthbrain.fields import smooth_noise

FOV_MM = 220                                   # side of the square field of view, mm
LEVEL_RANGE = (48, 128)                        # axial template levels drawn (z index, inclusive); brain spans 0..154


def pixel_mm(size: int) -> float:
    """Side of one pixel in mm of a ``size`` x ``size`` SynthBrain slice: ``FOV_MM / size`` (1.71875 at 128)."""
    return FOV_MM / size


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
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x, y)`` of a ``size`` x ``size`` image, float32."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


@functools.lru_cache(maxsize=128)
def source_slice(level: int, size: int) -> dict[str, np.ndarray]:
    """Template level resized to ``size``: ``stack`` (gm, wm, mask, distance to the brain edge in mm),
    ``d_vent`` (distance to the ventricles, mm) and ``hull`` (convex hull points of the brain, x, y)."""
    t = load_templates()
    stack = np.stack([t["gm"][:, :, level], t["wm"][:, :, level], t["mask"][:, :, level]], axis=-1)
    if size != FOV_MM:
        interp = cv2.INTER_AREA if size < FOV_MM else cv2.INTER_LINEAR
        stack = cv2.resize(stack, (size, size), interpolation=interp)
    mm = pixel_mm(size)
    brain = (stack[..., 2] > 0.5).astype(np.uint8)
    d_edge = cv2.distanceTransform(brain, cv2.DIST_L2, 5).astype(np.float32) * mm
    csf = np.clip(stack[..., 2] - stack[..., 0] - stack[..., 1], 0, 1)
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


@dataclass
class Geometry:
    """The random warp of one sample: output pixel -> source (resized template) pixel."""

    map_x: np.ndarray        # (H, W) float32 source x of each output pixel
    map_y: np.ndarray        # (H, W) float32 source y
    scale: float             # output px per source px


def draw_geometry(rng: np.random.Generator, level: int, size: int, zoom: float = 1.0) -> Geometry:
    """Random affine (rotation, isotropic scale, shear) plus a smooth elastic field, shrunk if needed so the whole
    brain of ``level`` stays inside the field of view. ``zoom`` multiplies the drawn scale (a scanner's field of view
    other than ``FOV_MM``: ``FOV_MM / fov``)."""
    xx, yy = pixel_grid(size)
    c = (size - 1) / 2.0
    theta = math.radians(rng.uniform(-15.0, 15.0))
    scale = float(rng.uniform(0.9, 1.1)) * zoom
    shear = float(rng.uniform(-0.06, 0.06))
    amp = float(rng.uniform(0.8, 2.5)) * size / 128.0              # elastic amplitude, px
    ex = smooth_noise(rng, size, 4) * amp
    ey = smooth_noise(rng, size, 4) * amp
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    fwd = rot @ np.array([[1.0, shear], [0.0, 1.0]])                # source -> output, before scaling
    hull = source_slice(level, size)["hull"]
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
    return Geometry(map_x, map_y, scale)


def warp(src: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Bilinear resampling of ``src`` (H, W[, K]) at ``(map_x, map_y)``; zero outside."""
    return cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
