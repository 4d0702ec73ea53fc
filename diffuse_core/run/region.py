"""The region a run redraws (the Dif-fuse mask m) and the saliency map it comes from.

From a saliency method (ACAT, Grad-CAM, gradient: :mod:`diffuse_core.saliency`), thresholded by the model card's
mask rule (sized to the lesion, :mod:`diffuse_core.core.redraw`) or the paper's percentile; or from a mask file or
array the user gives. One place for the run and the app's mask preview, so the preview is the region the run
redraws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse_core.core.masks import DEFAULT_PERCENTILE, mask_from_saliency

SALIENCY_CHOICES = ("acat", "gradcam", "gradient")


def redrawn_region(case, saliency: np.ndarray, rule: dict, saliency_models=None) -> np.ndarray:
    """The region (R, R) uint8 a saliency map (R, R) of ``case`` redraws under ``rule`` (a resolved mask rule,
    :func:`diffuse_core.run.settings.mask_rule`); the "weighted" rule asks the classifier for P(diseased)."""
    from diffuse_core.core.redraw import needs_probability, redrawn_mask

    sal = np.asarray(saliency, np.float32) * case.brain_mask
    if rule.get("kind") == "percentile":
        return mask_from_saliency(sal, case.brain_mask, float(rule["percentile"]))
    p = None
    if needs_probability(rule):
        if saliency_models is None:
            raise ValueError(f"the {rule['kind']} mask rule needs the ACAT classifier")
        from diffuse_core.saliency.dispatch import diseased_probability

        p = diseased_probability(case.image, saliency_models)
    return redrawn_mask(sal, case.brain_mask, rule, p)


def mask_for_case(case, mask_from="acat", percentile: float = DEFAULT_PERCENTILE,
                  saliency_models=None, device="cpu", seed: int = 0,
                  rule: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Dif-fuse mask m (R, R) uint8 and the saliency map it came from (R, R) float32 in [0, 1].

    ``mask_from`` is a saliency method (:data:`SALIENCY_CHOICES`, needing ``saliency_models``), a file, or an array.
    A binary file/array is used as the mask itself; any other map is treated as a saliency map and thresholded:
    by ``rule`` (a model card's ``mask_rule``, :func:`diffuse_core.core.redraw.redrawn_mask`) where given, else at
    ``percentile`` (the paper's rule).
    """
    if isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES:
        from diffuse_core.saliency.dispatch import compute_saliency

        if saliency_models is None:
            raise ValueError(f"--mask-from {mask_from} needs the ACAT autoencoder and classifier")
        saliency = compute_saliency(mask_from, case.image, saliency_models, brain_mask=case.brain_mask)
    else:
        if isinstance(mask_from, (str, Path)):
            from diffuse_core.io.image import load_image

            p = Path(mask_from)
            if not p.exists():
                raise FileNotFoundError(f"--mask-from {mask_from}: no such file; use acat, gradcam, gradient or a "
                                        f"mask file")
            z = case.slice_index if case.num_slices > 1 else None
            try:
                raw = load_image(p, slice_index=z).data[0]
            except ValueError as err:
                if "constant" not in str(err):
                    raise
                from diffuse_core.io.image import load_mask

                raw = load_mask(p, slice_index=z).astype(np.float32)  # an all-empty mask file
        else:
            raw = np.asarray(mask_from, np.float32)
            if raw.ndim == 3:
                raw = raw[0]
        from diffuse_core.io.preprocess import to_model_grid

        size = case.image.shape[-1]
        if raw.shape != (size, size):
            if case.geometry is None or raw.shape != tuple(case.geometry.original_shape):
                raise ValueError(f"the mask file is {raw.shape[0]}x{raw.shape[1]} but the image is "
                                 f"{'x'.join(map(str, case.geometry.original_shape)) if case.geometry else size}")
        values = np.unique(raw)
        binary = len(values) <= 2
        if raw.shape != (size, size):
            raw = to_model_grid(raw, size=size, order=0 if binary else 1)[0]
        if binary:
            m = (raw > raw.min()).astype(np.uint8) if len(values) == 2 else np.zeros_like(raw, np.uint8)
            return (m & case.brain_mask.astype(np.uint8)).astype(np.uint8), m.astype(np.float32)
        saliency = np.clip(raw - raw.min(), 0, None)
        saliency = saliency / max(float(saliency.max()), 1e-8)
    saliency = np.asarray(saliency, np.float32) * case.brain_mask
    from_method = isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES
    if rule is None or rule.get("kind") == "percentile" or not from_method:   # a saliency file: the paper's rule
        pct = rule["percentile"] if rule is not None and rule.get("kind") == "percentile" else percentile
        rule = {"kind": "percentile", "percentile": pct}
    return redrawn_region(case, saliency, rule, saliency_models), saliency
