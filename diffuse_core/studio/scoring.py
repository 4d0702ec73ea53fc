"""How a run scores: the anomaly map binarised at the model card's threshold, compared with the ground truth
(Dice, IoU) where there is one, and the share of the brain flagged."""

from __future__ import annotations

from diffuse_core.studio.settings import DEFAULTS


def scores(result, truth, threshold: float, full=None) -> dict:
    """{"threshold", "anomaly_pixels", "flagged_fraction_of_brain"} and, with ``truth`` {0, 1}, "dice" and "iou"
    (left out without it). ``result`` is a :class:`diffuse_core.pipeline.CounterfactualResult`; ``full`` (its
    :class:`~diffuse_core.io.full_resolution.FullResolution`) scores at the input's size, ``truth`` then on that grid,
    as ``diffuse-studio run`` does."""
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.core.metrics import dice, iou

    anomaly, brain = (full.anomaly, full.brain) if full is not None else (result.anomaly, result.brain_mask)
    predicted = binarize(anomaly, threshold)
    brain = brain.astype(bool)
    out = {"threshold": threshold, "anomaly_pixels": int(predicted.sum()),
           "flagged_fraction_of_brain": float(predicted[brain].mean()) if brain.any() else 0.0}
    if truth is not None:
        out["dice"] = dice(predicted, truth)
        out["iou"] = iou(predicted, truth)
    return out


def result_summary(lc, item: dict) -> dict:
    """The JSON summary of a finished run (a "result" item of :func:`diffuse_core.studio.runs.run_case`) of the
    loaded case ``lc``: the engine's summary, the scores, the settings and the model version."""
    r = item["result"]
    full = lc.case.full_resolution(r)
    return {**r.summary(), **scores(r, lc.case.truth_at_input_size, item["threshold"], full),
            "output_size": list(full.shape), "case": lc.title,
            "modality": lc.case.modality, "percentile": item["settings"]["percentile"],
            "mask_from": item["settings"]["mask_from"], "model_version": item["model_version"],
            "notes": list(lc.notes),
            "timings": {k: round(float(v), 4) for k, v in (item.get("timings") or r.timings).items()}}


def looks_healthy(flagged_fraction_of_brain: float) -> bool:
    """Whether a run left a slice nearly unchanged: under ``DEFAULTS["healthy_flag_fraction"]`` of the brain
    flagged anomalous."""
    return flagged_fraction_of_brain < DEFAULTS["healthy_flag_fraction"]
