"""What a model card says about using its model: the anomaly threshold, and how MRI intensities reach the model.

A card is the dict saved with the weights (``config.json``'s ``card``); every function here takes either a loaded
denoiser (its ``.card``) or the card dict itself, so the app can read a card without loading the weights.
"""

from __future__ import annotations

DEFAULT_ANOMALY_THRESHOLD = 0.15  # used only when a model card carries none (intensity units of [-1, 1] images)

INTENSITY_CHOICES = ("auto", "tissue", "percentile", "model")
"""How MRI intensities reach the model. "auto" (the default): the model's own preparation, its card's
``input_normalisation`` ("tissue" for a model trained on the tissue scale, else "percentile"). "tissue": air -> -1
and the brain's tissue peak -> the card's ``tissue_scale`` level (:func:`diffuse_core.core.intensity.tissue_scale`),
the preparation SynthBrain training slices get too, robust to bright lesions. "percentile" stretches the brain's
1st-99th percentiles to [-1, 1] (the default until wave 3); "model" matches the brain's 10th-75th percentiles to
where the model's training data has them (the card's ``intensity_reference``). Measured on real BraTS FLAIR:
docs/results.md, real-data section."""


def card_of(denoiser) -> dict:
    """A denoiser's card, or the card itself (a dict read from model_card.json without loading the weights)."""
    return denoiser if isinstance(denoiser, dict) else (getattr(denoiser, "card", None) or {})


def anomaly_threshold_of(denoiser) -> float:
    """The binarisation threshold stored in the model card (chosen on validation data), or the fallback."""
    t = card_of(denoiser).get("anomaly_threshold")
    return float(t) if t is not None else DEFAULT_ANOMALY_THRESHOLD


def intensity_reference_of(denoiser) -> dict | None:
    """The model card's intensity reference (its training slices' brain percentiles), or None."""
    ref = card_of(denoiser).get("intensity_reference")
    return ref if isinstance(ref, dict) and ref.get("values") else None


def input_normalisation_of(denoiser) -> str:
    """How the model's SynthBrain training slices were scaled (the card's ``input_normalisation``): "absolute" (as
    SynthBrain renders them; models without the field), "percentile" (stretched) or "tissue" (the tissue scale).
    Evaluations that feed SynthBrain arrays directly put them on this scale first
    (:func:`diffuse_core.train.data.normalise_slices`)."""
    return str(card_of(denoiser).get("input_normalisation") or "absolute")


def tissue_scale_of(denoiser) -> dict:
    """The card's ``tissue_scale`` over the default :data:`diffuse_core.core.intensity.TISSUE_SCALE`."""
    from diffuse_core.core.intensity import TISSUE_SCALE

    given = card_of(denoiser).get("tissue_scale")
    return {**TISSUE_SCALE, **(given if isinstance(given, dict) else {})}


def resolve_intensity(denoiser, intensity: str | None) -> str:
    """``intensity`` with "auto" / None resolved to the model's own preparation."""
    if intensity in (None, "auto"):
        return "tissue" if input_normalisation_of(denoiser) == "tissue" else "percentile"
    if intensity not in INTENSITY_CHOICES:
        raise ValueError(f"unknown intensity {intensity!r}: choose one of {', '.join(INTENSITY_CHOICES)}")
    return intensity


def mri_reference_for(denoiser, intensity: str | None) -> dict | None:
    """The reference :func:`diffuse_core.cases.prepare_case` needs for ``intensity`` (:data:`INTENSITY_CHOICES`);
    ValueError if the model has none."""
    intensity = resolve_intensity(denoiser, intensity)
    if intensity == "percentile":
        return None
    if intensity == "tissue":
        return tissue_scale_of(denoiser)
    ref = intensity_reference_of(denoiser)
    if ref is None:
        raise ValueError("this model's card holds no intensity_reference: use --intensity percentile, or write one "
                         "with `python -m diffuse_core.train.data --reference MODEL_DIR`")
    return ref


def model_modality_of(denoiser) -> str:
    """"ct" for a DDPM trained on CT (its card's ``data.modalities``), else "mri"."""
    mods = (card_of(denoiser).get("data") or {}).get("modalities") or ["flair"]
    if isinstance(mods, str):
        mods = mods.split(",")
    return "ct" if str(mods[0]).strip().lower() == "ct" else "mri"
