"""The region a run redraws, in the app: the model card's mask rule or the paper's percentile (one place for the run
and the mask preview, so the preview is the region the run will redraw)."""

from __future__ import annotations

import numpy as np

from diffuse_core.cases import CaseInput


def redrawn_region(case: CaseInput, saliency: np.ndarray, percentile: float, rule: str, denoiser, models):
    """The region a saliency map redraws: the model card's ``mask_rule`` (``rule`` "card"; the slider's percentile
    where the card names none) or the paper's rule at ``percentile`` (``rule`` "percentile"), as ``run`` makes it."""
    from diffuse_core.core.masks import mask_from_saliency
    from diffuse_core.core.redraw import mask_rule_of, needs_probability, redrawn_mask
    from diffuse_core.saliency.dispatch import diseased_probability

    if rule not in ("card", "percentile"):
        raise ValueError(f"unknown mask rule {rule!r}: choose 'card' or 'percentile'")
    chosen = mask_rule_of(denoiser.card, percentile if rule == "percentile" else None)
    sal = np.asarray(saliency, np.float32) * case.brain_mask
    if chosen["kind"] == "percentile":
        return mask_from_saliency(sal, case.brain_mask, float(percentile))
    p = diseased_probability(case.image, models) if needs_probability(chosen) else None
    return redrawn_mask(sal, case.brain_mask, chosen, p)
