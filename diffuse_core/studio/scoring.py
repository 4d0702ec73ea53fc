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
            "notes": list(lc.notes), "mask_rule": item["settings"].get("mask_rule", "percentile"),
            "verdict": None if item.get("verdict") is None else item["verdict"].to_dict(),
            "timings": {k: round(float(v), 4) for k, v in (item.get("timings") or r.timings).items()}}


def looks_normal(summary: dict) -> bool:
    """Whether a run calls its slice normal: the calibrated verdict where the model card has one, else under
    ``DEFAULTS["healthy_flag_fraction"]`` of the brain flagged (:func:`looks_healthy`)."""
    v = summary.get("verdict")
    return (not v["abnormal"]) if v else looks_healthy(summary["flagged_fraction_of_brain"])


def verdict_line(verdict: dict | None, modality: str | None = None) -> str:
    """The verdict as one line of markdown for the app. Without a calibrated verdict: "" when ``modality`` is None
    (no run), else :func:`no_verdict_line` (the app says so rather than keep silent)."""
    if not verdict:
        return "" if modality is None else no_verdict_line(modality)
    if verdict["abnormal"]:
        return (f"**Looks abnormal** — peak anomaly {verdict['score']:.2f}, above the {verdict['threshold']:.2f} "
                f"that {100 * (1 - verdict['false_abnormal_rate']):.0f} % of healthy validation slices stay under. "
                f"The overlay shows where.")
    return (f"**Looks normal** — peak anomaly {verdict['score']:.2f}, under the {verdict['threshold']:.2f} that "
            f"{100 * (1 - verdict['false_abnormal_rate']):.0f} % of healthy validation slices stay under, so no "
            f"region is flagged. (A teaching tool's call, not a diagnosis.)")


def no_verdict_line(modality: str | None) -> str:
    """What the app says of a run whose model card has no calibrated verdict (the shipped CT model's): no call."""
    what = "CT" if str(modality or "").lower() == "ct" else "this model"
    return (f"**No verdict for {what}** (no calibrated threshold: its model card has none), so no normal / abnormal "
            f"call is made. Read the anomaly map yourself.")


def looks_healthy(flagged_fraction_of_brain: float) -> bool:
    """Whether a run left a slice nearly unchanged: under ``DEFAULTS["healthy_flag_fraction"]`` of the brain
    flagged anomalous."""
    return flagged_fraction_of_brain < DEFAULTS["healthy_flag_fraction"]
