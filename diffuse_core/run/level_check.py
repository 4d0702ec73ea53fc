"""The level check of a run: which levels a healthy model learned, whether a level estimator reads its input, and
why a slice outside those levels gets no normal / abnormal call (the estimator: :mod:`diffuse_core.models.level`)."""

from __future__ import annotations

from pathlib import Path


def trained_levels(card: dict | None) -> tuple[int, int] | None:
    """The template levels (lowest, highest) a SynthBrain-trained model saw, from its card's data realism (none
    recorded: the default, as every card written before realism existed); None for a model trained on anything else
    (a folder of real slices)."""
    from diffuse_core.data.synthbrain import check_realism
    from diffuse_core.data.synthbrain.anatomy import LEVEL_RANGE
    from diffuse_core.data.synthbrain.scanner import ALL_LEVELS, SCANNER_LEVELS

    data = synthbrain_data(card)
    if data is None:
        return None
    effects = check_realism(data.get("realism", "default"))     # a card from before realism existed: the default
    if "all_levels" in effects:
        return ALL_LEVELS
    return SCANNER_LEVELS if "levels" in effects else LEVEL_RANGE


def synthbrain_data(card: dict | None) -> dict | None:
    """The SynthBrain ``data`` block a model learned from: its card's own, or, for a model fine-tuned on a folder of
    a user's slices (``diffuse-studio adapt``), its base's (kept under ``fine_tuned_from``: the base's levels and
    modalities are still what it learned); None for a model trained on real slices alone."""
    data = (card or {}).get("data") or {}
    if data.get("generator") == "SynthBrain":
        return data
    base = data.get("fine_tuned_from") or {}
    return base if base.get("generator") == "SynthBrain" else None


def usable_with(level_card: dict | None, denoiser_card: dict | None) -> bool:
    """Whether a level estimator (its card) reads the slices a denoiser (its card) is given: the same modalities and
    the same input scale, and a denoiser whose trained levels are known."""
    lc, dc = level_card or {}, denoiser_card or {}
    same_modalities = ((lc.get("data") or {}).get("modalities") == (synthbrain_data(dc) or {}).get("modalities"))
    same_scale = (lc.get("data") or {}).get("input_normalisation") == dc.get("input_normalisation", "absolute")
    return same_modalities and same_scale and trained_levels(dc) is not None


SLICE_REASON = "this slice lies"     # how every reason of :func:`outside_trained_levels` begins


def is_slice_reason(why: str | None) -> bool:
    """Whether a reason for withholding a verdict is about the slice's level (not about the model card)."""
    return bool(why) and str(why).startswith(SLICE_REASON)


def outside_trained_levels(level: float | None, denoiser_card: dict | None, margin: float = 0.0) -> str | None:
    """Why a slice of estimated template ``level`` gets no normal / abnormal call under this denoiser (one phrase),
    or None where the level lies within the levels it learned (widened by ``margin`` on each side) or is unknown."""
    levels = trained_levels(denoiser_card)
    if level is None or levels is None:
        return None
    lo, hi = levels
    if lo - margin <= level <= hi + margin:
        return None
    where = "below" if level < lo else "above"
    part = "towards the skull base" if level < lo else "towards the vertex"
    return (f"{SLICE_REASON} {where} the levels the healthy model learned ({part}; estimated "
            f"{abs(level - (lo if level < lo else hi)):.0f} mm {where} them), where its counterfactual redraws "
            f"anatomy it never saw")


def level_folder(denoiser_card: dict | None) -> Path:
    """Where the level estimator for a denoiser's slices is installed: ``assets/ct/level`` for a CT model,
    ``assets/level`` for the MRI ones."""
    from diffuse_core.models.registry import default_model_dir

    modalities = list(((denoiser_card or {}).get("data") or {}).get("modalities") or [])
    return default_model_dir("level", "ct" if modalities == ["ct"] else "mri")
