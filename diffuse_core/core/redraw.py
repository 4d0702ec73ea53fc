"""The redrawn region and the anomaly score: settings saved with the weights (card ``mask_rule`` and ``score``).

Mask rules (which pixels Algorithm 1 redraws with DDPM steps):

- ``{"kind": "percentile", "percentile": 90}``: the paper's (Sec. III-B, IV-D): the smoothed saliency above its 90th
  percentile inside the brain, so always 10 % of the brain whatever the lesion.
- ``{"kind": "relative", "level": L, "max_share": S}``: the smoothed saliency at or above ``L`` times its maximum
  inside the brain, at most ``S`` of the brain (then the top ``S``): its size follows the saliency, small where the
  saliency is one focal peak, all of a large lesion where the saliency covers it.
- ``{"kind": "weighted", "level": L, "max_share": S}``: as "relative", with the saliency (ACAT's, normalised to a
  maximum of 1) first weighted by the classifier's P(diseased) of the slice: a slice the classifier calls healthy
  gets a small region or none, a diseased one all of its salient lesion.
- either of the last two with ``"margin": M`` (model pixels, default 0): the region then grown by a disc of radius M
  inside the brain, so that a small lesion's region holds its edges and some healthy tissue around them.

Scores (the map thresholded into the anomaly mask; all cleaned by the opening/closing of :mod:`.anomaly` and kept
inside the brain):

- ``"abs"``: the paper's |x0 - x0_hat|.
- ``"signed"``: the residual in the direction a lesion of the modality departs from healthy tissue: x0 - x0_hat
  (bright) for MRI (FLAIR/T2 lesions are bright; a T1-dark lesion is not what these models learn), x0_hat - x0
  (dark) for CT (infarcts are hypodense); negative values are 0.
- ``"signed-floor"``: ``signed`` less the slice's own noise floor, the 99th percentile of the signed residual in the
  brain the walk did not redraw (the grain DDIM does not return), so a slice whose redrawn region changed no more than
  its untouched brain scores 0.
"""

from __future__ import annotations

import numpy as np

from diffuse_core.core.anomaly import clean_anomaly_map
from diffuse_core.core.masks import DEFAULT_PERCENTILE, mask_from_saliency, smooth_saliency

PAPER_MASK_RULE = {"kind": "percentile", "percentile": DEFAULT_PERCENTILE}
SCORES = ("abs", "signed", "signed-floor")
FLOOR_PERCENTILE = 99.0


def mask_rule_of(card: dict | None, override=None) -> dict:
    """The mask rule to use: ``override`` (a rule dict, or a percentile number for the paper's rule), else the card's
    ``mask_rule``, else the paper's 90th percentile."""
    if override is not None:
        rule = {"kind": "percentile", "percentile": float(override)} if isinstance(override, (int, float)) else override
    else:
        rule = (card or {}).get("mask_rule") or PAPER_MASK_RULE
    return check_rule(dict(rule))


def check_rule(rule: dict) -> dict:
    kind = rule.get("kind")
    if kind == "percentile":
        p = float(rule.get("percentile", DEFAULT_PERCENTILE))
        if not 0.0 < p < 100.0:
            raise ValueError(f"percentile must lie strictly between 0 and 100 (the paper uses 90), got {p:g}")
        return {"kind": "percentile", "percentile": p}
    if kind in ("relative", "weighted"):
        level, share = float(rule.get("level", 0.4)), float(rule.get("max_share", 0.5))
        if not 0.0 < level < 1.0 or not 0.0 < share <= 1.0:
            raise ValueError(f"a {kind} mask needs 0 < level < 1 and 0 < max_share <= 1, got {level:g}, {share:g}")
        margin = int(rule.get("margin", 0) or 0)
        if not 0 <= margin <= 16 or margin != float(rule.get("margin", 0) or 0):
            raise ValueError(f"a mask margin is a whole number of model pixels from 0 to 16, got {rule.get('margin')}")
        out = {"kind": kind, "level": level, "max_share": share}
        return {**out, "margin": margin} if margin else out
    raise ValueError(f"unknown mask rule {kind!r}: 'percentile' (the paper's), 'relative' or 'weighted'")


def needs_probability(rule: dict) -> bool:
    """Whether ``rule`` weights the saliency by the classifier's P(diseased)."""
    return check_rule(rule)["kind"] == "weighted"


def redrawn_mask(saliency, brain_mask, rule: dict, p_diseased: float | None = None) -> np.ndarray:
    """The binary region (H, W) uint8 that ``rule`` redraws, from a saliency map (H, W) and the brain;
    ``p_diseased`` (the classifier's, in [0, 1]) is needed by the "weighted" rule."""
    rule = check_rule(rule)
    if rule["kind"] == "percentile":
        return mask_from_saliency(saliency, brain_mask, rule["percentile"])
    s = np.asarray(saliency, dtype=np.float32)
    brain = np.asarray(brain_mask).astype(bool)
    if s.shape != brain.shape:
        raise ValueError(f"brain mask {brain.shape} and saliency map {s.shape} differ in size")
    if not brain.any():
        raise ValueError("the brain mask is empty: nothing to threshold")
    smoothed = smooth_saliency(s)
    inside = smoothed[brain]
    top = float(inside.max())
    if top <= 0.0 or float(inside.min()) >= top:
        return np.zeros(s.shape, np.uint8)
    cut = rule["level"] * top
    if rule["kind"] == "weighted":
        if p_diseased is None or not 0.0 <= float(p_diseased) <= 1.0:
            raise ValueError(f"the weighted mask needs the classifier's P(diseased) in [0, 1], got {p_diseased!r}")
        if float(p_diseased) <= 0.0:
            return np.zeros(s.shape, np.uint8)
        cut = rule["level"] * top / float(p_diseased)               # s * p >= level * max(s)
    if (inside >= cut).mean() > rule["max_share"]:
        cut = float(np.percentile(inside, 100.0 * (1.0 - rule["max_share"])))
    region = ((smoothed >= cut) & brain).astype(np.uint8)
    if rule.get("margin") and region.any():
        import cv2

        r = int(rule["margin"])
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        region = (cv2.dilate(region, disc) & brain).astype(np.uint8)
    return region


def redrawn_masks(saliencies, brains, rule: dict, p_diseased=None) -> np.ndarray:
    """:func:`redrawn_mask` over a stack (N, H, W); ``p_diseased`` (N,) for the "weighted" rule."""
    ps = [None] * len(saliencies) if p_diseased is None else list(p_diseased)
    return np.stack([redrawn_mask(s, b, rule, p) for s, b, p in zip(saliencies, brains, ps)]).astype(np.uint8)


def score_of(card: dict | None, override: str | None = None) -> str:
    """The anomaly score to use: ``override``, else the card's ``score``, else the paper's "abs"."""
    s = override or (card or {}).get("score") or "abs"
    if s not in SCORES:
        raise ValueError(f"unknown anomaly score {s!r}: choose one of {', '.join(SCORES)}")
    return s


def score_map(image, counterfactual, brain_mask, redrawn, score: str = "abs", kernel_size: int = 5,
              modality: str = "mri") -> np.ndarray:
    """One slice's anomaly map (H, W) float32 >= 0 under ``score`` (see the module docstring)."""
    x = np.asarray(image, np.float32)
    c = np.asarray(counterfactual, np.float32)
    x, c = (x[None], c[None]) if x.ndim == 2 else (x, c)
    if x.shape != c.shape:
        raise ValueError(f"image {x.shape} and counterfactual {c.shape} differ in shape")
    brain = np.asarray(brain_mask).astype(bool).squeeze()
    if score == "abs":
        raw = np.abs(x - c).mean(axis=0)
    elif score in ("signed", "signed-floor"):
        sign = -1.0 if str(modality).lower() == "ct" else 1.0
        raw = np.maximum(sign * (x - c).mean(axis=0), 0.0)
        if score == "signed-floor":
            outside = brain & ~np.asarray(redrawn).astype(bool).squeeze()
            floor = float(np.percentile(raw[outside], FLOOR_PERCENTILE)) if outside.sum() >= 16 else 0.0
            raw = np.maximum(raw - floor, 0.0)
    else:
        raise ValueError(f"unknown anomaly score {score!r}: choose one of {', '.join(SCORES)}")
    if not np.isfinite(raw).all():
        raise ValueError("the image or counterfactual holds NaN/inf values")
    return (clean_anomaly_map(raw, kernel_size) * brain).astype(np.float32)


def score_maps(images, counterfactuals, brains, redrawn, score: str = "abs", kernel_size: int = 5,
               modality: str = "mri") -> np.ndarray:
    """:func:`score_map` over a stack: images/counterfactuals (N, C, H, W), brains/redrawn (N, H, W)."""
    return np.stack([score_map(x, c, b, m, score, kernel_size, modality)
                     for x, c, b, m in zip(images, counterfactuals, brains, redrawn)]).astype(np.float32)
