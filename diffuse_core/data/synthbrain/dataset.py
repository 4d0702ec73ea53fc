"""SynthBrain samples: the seed ranges of the splits, :func:`generate_slice` and the torch dataset.

Every sample is drawn from its integer seed: a random axial level within the brain (levels where the brain covers a
decent area, as BraTS drops its top and bottom slices), the random warp of :mod:`.anatomy`, optionally a lesion
(:mod:`.lesions`) and the requested contrasts (:mod:`.render`). Random streams are split so that
``generate_slice(seed, healthy=True, lesion_type=T)`` is the *paired healthy counterpart* of
``generate_slice(seed, healthy=False, lesion_type=T)``: same level, anatomy and noise, pixel-identical away from the
lesion (and, for a glioma, its mass effect). Without a lesion type the healthy slice draws its own level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from diffuse_core.data.synthbrain.anatomy import (FOV_MM, LEVEL_RANGE, draw_geometry, load_templates, pixel_mm,
                                                  source_slice, warp)
from diffuse_core.data.synthbrain.lesions import (LESION_LEVELS, LESION_TYPES, MIN_LESION_PX, WMH_LEVELS_REAL,
                                                  describe, glioma, size_class, stroke, wmh, wmh_fazekas)
from diffuse_core.data.synthbrain.render import MODALITIES, check_modalities, render
from diffuse_core.data.synthbrain.scanner import (ALL_LEVELS, SCANNER_LEVELS, check_realism, draw_channel, draw_slice,
                                                  head_layers, slab, strip_edge, strip_residue)

try:  # torch is a project dependency; keep the generator importable without it
    import torch
    from torch.utils.data import Dataset as _TorchDataset
except Exception:  # pragma: no cover
    torch = None
    _TorchDataset = object

SYNTHBRAIN_VERSION = "1.0"
SPLITS = ("train", "val", "test")
SEED_SPLITS = SPLITS + ("teaching",)          # "teaching" seeds build the curated teaching sets
MIN_SIZE, MAX_SIZE = 32, 512

# Seeds: split k owns [k * 2**48, (k + 1) * 2**48); base_seed and index each get 24 bits, so ranges never overlap.
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3, "teaching": 4}
SEED_FIELD = 1 << 24                           # base seeds, indices and counts lie in [0, SEED_FIELD)


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
    fov_mm: float = FOV_MM   # side of the square field of view (mm); realism "fov" draws it

    @property
    def healthy(self) -> bool:
        return self.lesion_type == "none"

    @property
    def spacing(self) -> tuple[float, float]:
        """``(row, col)`` pixel spacing in mm: the field of view (``fov_mm``) over the image's height and width."""
        h, w = self.image.shape[-2:]
        return pixel_mm(h) * self.fov_mm / FOV_MM, pixel_mm(w) * self.fov_mm / FOV_MM


# ---------------------------------------------------------------------------------------------------------- seeds
def sample_seed(split: str, base_seed: int, index: int) -> int:
    """Seed of sample ``index`` of ``split`` under ``base_seed``; each split owns a disjoint range of seeds.

    Splits: ``train``, ``val``, ``test`` and ``teaching``. ``base_seed`` and ``index`` must lie in [0, 2**24).
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SEED_SPLITS)}")
    base_seed, index = int(base_seed), int(index)
    if not 0 <= base_seed < SEED_FIELD:
        raise ValueError(f"base_seed must be in [0, {SEED_FIELD}), got {base_seed}")
    if not 0 <= index < SEED_FIELD:
        raise ValueError(f"index must be in [0, {SEED_FIELD}), got {index}")
    return (_SPLIT_CODE[split] << 48) | (base_seed << 24) | index


def seed_split(seed: int) -> str | None:
    """The split whose range holds ``seed`` (None for an ad-hoc seed)."""
    code = int(seed) >> 48
    for name, c in _SPLIT_CODE.items():
        if c == code:
            return name
    return None


def check_size(size) -> int:
    """``size`` (pixels a side) as an int in [MIN_SIZE, MAX_SIZE]; ValueError otherwise."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer number of pixels, got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels (128 default, 256 supported), "
                         f"got {size}")
    return int(size)


# ---------------------------------------------------------------------------------------------------------- sample
def generate_slice(seed: int, modalities=("flair",), size: int = 128, healthy: bool | None = None,
                   lesion_type: str | None = None, lesion_scale: float | None = None,
                   contrast: float | None = None, skull: bool = False, realism="default") -> SynthSlice:
    """One SynthBrain slice, fully determined by its arguments.

    ``healthy=None`` draws healthy with p = 0.5, unless ``lesion_type`` is given (then the slice is diseased);
    ``healthy=True`` with a ``lesion_type`` gives the lesion-free counterpart of that diseased slice.
    ``lesion_type=None`` draws among the types suited to the modalities (``stroke`` when CT is among them, any for
    MRI). ``lesion_scale`` (about 0.4-1.6, default drawn) scales the lesion extent, ``contrast`` (about 0.3-1.1,
    default drawn, subtle ones included) scales its intensity change. ``skull=True`` adds a bone ring on CT channels.
    The same seed with ``healthy=True`` (and the same ``lesion_type``, when one was given or drawn) gives the paired
    healthy slice: same level, anatomy and noise. Pixels are ``FOV_MM / size`` mm (:attr:`SynthSlice.spacing`).
    ``realism``: "default" (the generator the shipped models were trained on), "scanner" (whole-scan levels, field of
    view, slice thickness, acquisition resolution and noise, a real skull strip's edge, lesion shapes: :mod:`.scanner`)
    or a list of effects (contrast, caps, bias and ``"head"``, not skull-stripped on MRI, among them).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    mods = check_modalities(modalities)
    size = check_size(size)
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
    effects = check_realism(realism)
    scan = draw_slice(np.random.default_rng([seed, 4]))
    if lesion_type is None and "all_levels" in effects:
        lo, hi = ALL_LEVELS
    elif lesion_type is None and "levels" in effects:
        lo, hi = SCANNER_LEVELS
    elif lesion_type == "wmh" and "lesions" in effects:
        lo, hi = WMH_LEVELS_REAL
    elif lesion_type in ("glioma", "stroke") and "lesion_levels" in effects:
        lo, hi = ALL_LEVELS

    level = min(hi, lo + int(rng_geo.random() * (hi - lo + 1)))
    fov = scan["fov"] if "fov" in effects else float(FOV_MM)
    t = load_templates()
    mm = pixel_mm(size)

    def tissue_from(src, map_x, map_y) -> dict:
        w = warp(src["stack"], map_x, map_y)
        gm, wm = w[..., 0], w[..., 1]
        out = {"gm": gm, "wm": wm, "csf": np.clip(w[..., 2] - gm - wm, 0, 1), "brain": w[..., 2] > 0.5,
               "d_edge": w[..., 3]}
        if "caps" in effects:
            out["d_vent"] = warp(src["d_vent"], map_x, map_y)
        return out

    def place(at: int, rng_g):
        """The slice at template level ``at`` (its geometry from ``rng_g``) and, when a lesion type is set, the
        lesion placed on it (None when the level has no room for it)."""
        geo = draw_geometry(rng_g, at, size, FOV_MM / fov)
        src = slab(at, size, scan["thickness"]) if "thickness" in effects else source_slice(at, size)
        u = (geo.map_x - t["mid_col"] * size / FOV_MM) * mm             # atlas mm, + towards the image right
        v = (geo.map_y - t["ac_row"] * size / FOV_MM) * mm              # atlas mm, + posterior
        tissue = tissue_from(src, geo.map_x, geo.map_y)
        if lesion_type is None:
            return geo, src, tissue, u, v, None
        min_px = max(4, int(round(MIN_LESION_PX * (size / 128.0) ** 2)))
        for attempt in range(40):
            f = scale_f * (1.0 + 0.15 * (attempt // 8))
            if lesion_type == "glioma":
                les = glioma(rng_les, src, geo, size, f, tissue, tracts="lesions" in effects)
            elif lesion_type == "stroke":
                les = stroke(rng_les, src, geo, size, f, tissue, u, v)
            else:
                les = (wmh_fazekas if "lesions" in effects else wmh)(rng_les, src, geo, size, f, tissue)
            if les is not None and int(les.mask.sum()) >= min_px:
                return geo, src, tissue, u, v, les
        return geo, src, tissue, u, v, None

    # A level without room for the lesion (rare: e.g. Fazekas caps on a small brain in a wide field of view) moves
    # towards the middle of the lesion's levels, with a fresh geometry, up to three times. The healthy counterpart
    # of a typed lesion makes the same placements (and drops the lesion), so the pair keeps one level and geometry.
    geo, src, tissue, u, v, lesion = place(level, rng_geo)
    for retry in range(1, 4):
        if lesion_type is None or lesion is not None:
            break
        level = int(round(level + ((lo + hi) / 2.0 - level) * retry / 3.0))
        geo, src, tissue, u, v, lesion = place(level, np.random.default_rng([seed, 1, retry]))
    if lesion_type is not None and lesion is None:  # pragma: no cover - no level in the range had room
        raise RuntimeError(f"SynthBrain could not place a {lesion_type} lesion for seed {seed}")
    if healthy:
        lesion = None
    if lesion is not None:
        if lesion.map_x is not None:
            tissue = tissue_from(src, lesion.map_x, lesion.map_y)
            for k in lesion.alphas:
                lesion.alphas[k] = lesion.alphas[k] * tissue["brain"]
            lesion.mask &= tissue["brain"]
        # rendered changes stay within a couple of pixels of the lesion mask (no faint unmasked abnormality)
        k = 2 * max(2, int(round(2 * size / 128))) + 1
        near = cv2.dilate(lesion.mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        for name in lesion.alphas:
            lesion.alphas[name] = lesion.alphas[name] * near
    if "edge" in effects:
        tissue["brain"], tissue["rim"], kept_csf = strip_edge(tissue["brain"], scan, size, fov)
        tissue["csf"] = np.where(kept_csf, np.float32(1.0), tissue["csf"])
    if "residue" in effects and "ct" not in mods:                   # what the strip left at the skull base (MRI)
        residue = strip_residue(tissue["brain"], scan, size, fov, level - t["z0"])
        if residue is not None:
            tissue["residue"] = residue
            tissue["brain"] = tissue["brain"] | (residue["map"] > 0.5)
    if "head" in effects:
        tissue["head"] = head_layers(tissue["brain"], scan, size, fov)
    if skull and "ct" in mods:
        b = tissue["brain"].astype(np.uint8)
        k = max(3, int(round(size / 128.0 * 6)) | 1)
        tissue["skull"] = (cv2.dilate(b, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0) & (b == 0)

    channels = []
    for m in mods:
        rng_m = np.random.default_rng([seed, 3, MODALITIES.index(m)])
        acq = draw_channel(np.random.default_rng([seed, 5, MODALITIES.index(m)]), size) if effects else None
        channels.append(render(m, rng_m, tissue, lesion, contrast_v, size, skull, effects, acq))
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
        location = describe(float(u[py, px]), float(v[py, px]), level - t["z0"], float(tissue["d_edge"][py, px]),
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
                      lesion_size=size_class(int(lesion_mask.sum()), size), location=location, detail=detail,
                      contrast=cval, fov_mm=fov)


# --------------------------------------------------------------------------------------------------------- dataset
class SynthBrainDataset(_TorchDataset):
    """``n`` SynthBrain slices of ``split`` (generated on access, deterministic by ``base_seed`` and index)."""

    def __init__(self, split: str, n: int, base_seed: int = 0, modalities=("flair",), size: int = 128,
                 healthy: bool | None = None):
        if split not in SEED_SPLITS:
            raise ValueError(f"unknown split {split!r}: use one of {', '.join(SEED_SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or n >= SEED_FIELD:
            raise ValueError(f"n must be an integer in [0, {SEED_FIELD}), got {n!r}")
        sample_seed(split, base_seed, 0)
        self.split, self.n, self.base_seed = split, int(n), int(base_seed)
        self.modalities, self.size, self.healthy = check_modalities(modalities), check_size(size), healthy

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
