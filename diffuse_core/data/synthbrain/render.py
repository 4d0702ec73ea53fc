"""SynthBrain modality contrasts: one channel rendered from the warped tissue maps and the lesion.

``flair``, ``t1``, ``t2``, ``t1c`` (MRI, on a 0..1 scale) and ``ct`` (Hounsfield-like, shown through a brain window
centre 40 / width 80 HU), with per-sample tissue intensities, a smooth bias field (MRI), Rician (MRI) or Gaussian
(CT) noise and a slight blur. Output: float32 (H, W) in [-1, 1], exactly -1 outside the brain (skull-stripped).
"""

from __future__ import annotations

import cv2
import numpy as np

from diffuse_core.data.synthbrain import scanner
from diffuse_core.data.synthbrain.fields import smooth_noise
from diffuse_core.data.synthbrain.lesions import Lesion

MODALITIES = ("flair", "t1", "t2", "t1c", "ct")
MRI4 = ("flair", "t1", "t1c", "t2")           # channel order of the "mri4" preset (BraTS order used by the paper)
PRESETS = MODALITIES + ("mri4",)

# Contrasts on a 0..1 scale (MRI) or in HU (CT). "d_*" are additive changes of the underlying tissue, "a_*" absolute
# intensities of tumour compartments that replace tissue.
CONTRAST = {
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


def check_modalities(modalities) -> tuple[str, ...]:
    """Modality names, lower-cased (``t1ce``/``t1gd`` -> ``t1c``); ValueError for an empty or unknown one."""
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


def preset_modalities(preset: str) -> tuple[str, ...]:
    """Channels of a ``write_split`` preset: a modality name, or ``mri4`` for flair, t1, t1c, t2."""
    key = str(preset).lower().strip()
    if key == "mri4":
        return MRI4
    if key in MODALITIES:
        return (key,)
    raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)} (mri4 = flair,t1,t1c,t2 stacked)")


def render(mod: str, rng: np.random.Generator, tissue: dict, lesion: Lesion | None, contrast: float,
           size: int, skull: bool, effects: frozenset = frozenset(), acq: dict | None = None) -> np.ndarray:
    """One ``mod`` channel (H, W) in [-1, 1] from ``tissue`` (gm, wm, csf, brain[, skull, d_vent, rim]) and
    ``lesion`` scaled by ``contrast``. Draws from ``rng`` in a fixed order, lesion or not, so a healthy counterpart
    has the same noise. ``effects`` (:mod:`.scanner`, MRI only but ``edge``) use the channel's scanner draws ``acq``."""
    p = CONTRAST[mod]
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
    texture = smooth_noise(rng, size, max(8, size // 5))
    bias_amp = float(rng.uniform(0.03, 0.15))
    bias = smooth_noise(rng, size, 3)
    blur = float(rng.uniform(0.3, 0.8)) * size / 128.0
    sigma = float(rng.uniform(1.2, 3.5)) if ct else float(rng.uniform(0.006, 0.03))
    n1 = rng.standard_normal((size, size)).astype(np.float32)
    n2 = rng.standard_normal((size, size)).astype(np.float32)
    fx = effects if not ct else effects & {"edge"}
    wm_gain = 1.0 + (0.015 if ct else 0.025) * texture
    if "contrast" in fx:
        gm_v, csf_v = scanner.tissue_values(csf_v, gm_v, wm_v, acq, mod, p)
        wm_gain = 1.0 + scanner.texture(acq, size)

    gm, wm, csf = tissue["gm"], tissue["wm"], tissue["csf"]
    if "caps" in fx and mod in ("flair", "t2"):
        wm_gain = wm_gain * (1.0 + scanner.caps(tissue["d_vent"], wm, acq))
    base = gm * gm_v + wm * wm_v * wm_gain + csf * csf_v
    head = tissue.get("head") if "head" in fx else None
    if head is not None:                                              # not skull-stripped
        base = base + head["csf"] * csf_v + head["bone"] * scanner.BONE + head["scalp"] * scanner.FAT[mod]
    if "edge" in fx and "rim" in tissue and not ct:
        base = base * (1.0 + tissue["rim"] * (1.0 if mod in ("flair", "t2") else -0.5))   # dura, CSF left
    residue = tissue.get("residue") if "residue" in fx and not ct else None
    if residue is not None:                                         # orbital fat and soft tissue, bone or air voids
        base = base * (1 - residue["map"]) + residue["map"] * scanner.FAT[mod] * residue["gain"]
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
    if blur > 0.05 and "resolution" not in fx:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    brain = tissue["brain"]
    if ct:
        img = img + sigma * n1
        lo = CT_WINDOW[0] - CT_WINDOW[1] / 2
        out = (img - lo) / CT_WINDOW[1] * 2.0 - 1.0
    elif fx & {"bias", "resolution", "noise"}:
        img = img * (scanner.bias_field(acq, size) if "bias" in fx else np.exp(bias_amp * bias))
        if "noise" not in fx:
            img = scanner.acquire(img, acq, n1, n2, wm_v, "resolution" in fx, False)
            img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
        else:
            img = scanner.acquire(img, acq, n1, n2, wm_v, "resolution" in fx, True)
        out = img * 2.0 - 1.0
    else:
        img = img * np.exp(bias_amp * bias)
        img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)    # Rician magnitude
        out = img * 2.0 - 1.0
    out = np.clip(out, -1.0, 1.0).astype(np.float32)
    out[~(brain | head["mask"]) if head is not None else ~brain] = -1.0
    if ct and skull:
        out[tissue["skull"]] = 1.0
    return out
