"""How a run scores: the anomaly map binarised at the model card's threshold, compared with the ground truth
(Dice, IoU) where there is one, and the share of the brain flagged."""

from __future__ import annotations

from diffuse_core.core.verdict import Verdict, anomaly_number
from diffuse_core.studio.settings import DEFAULTS


def scores(result, truth, threshold: float, full=None, verdict=None) -> dict:
    """{"threshold", "anomaly_pixels", "above_threshold_fraction_of_brain", "flagged_fraction_of_brain"} and, with
    ``truth`` {0, 1}, "dice" and "iou" (left out without it). ``result`` is a
    :class:`diffuse_core.pipeline.CounterfactualResult`; ``full`` (its
    :class:`~diffuse_core.io.full_resolution.FullResolution`) scores at the input's size, ``truth`` then on that grid,
    as ``diffuse-studio run`` does. ``anomaly_pixels`` and ``above_threshold_fraction_of_brain`` count the map above
    the threshold; "flagged" is what the app marks anomalous: the same, except on a slice the calibrated ``verdict``
    (a :class:`~diffuse_core.core.verdict.Verdict` or its dict) calls normal, where nothing is flagged (no red)."""
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.core.metrics import dice, iou

    anomaly, brain = (full.anomaly, full.brain) if full is not None else (result.anomaly, result.brain_mask)
    predicted = binarize(anomaly, threshold)
    brain = brain.astype(bool)
    above = float(predicted[brain].mean()) if brain.any() else 0.0
    out = {"threshold": threshold, "anomaly_pixels": int(predicted.sum()), "above_threshold_fraction_of_brain": above,
           "flagged_fraction_of_brain": 0.0 if called_normal(verdict) else above}
    if truth is not None:
        out["dice"] = dice(predicted, truth)
        out["iou"] = iou(predicted, truth)
    return out


def called_normal(verdict) -> bool:
    """Whether a calibrated verdict (a Verdict, its dict, or None: no verdict) calls the slice normal."""
    if verdict is None:
        return False
    abnormal = verdict.get("abnormal") if isinstance(verdict, dict) else verdict.abnormal
    return not abnormal


def flagged_row(s: dict, digits: int = 1) -> tuple[str, str]:
    """The (measure, value) row of the flagged share for the app's tables, from :func:`scores`' dict: on a slice
    called normal it says that nothing is flagged and how much of the map lies above the pixel threshold."""
    above = s.get("above_threshold_fraction_of_brain", s["flagged_fraction_of_brain"])
    if s["flagged_fraction_of_brain"] == above:
        return (f"Flagged as anomalous (anomaly > {s['threshold']:.3g})",
                f"{100 * s['flagged_fraction_of_brain']:.{digits}f} % of the brain")
    return ("Flagged as anomalous", f"none: the slice is called normal ({100 * above:.{digits}f} % of the brain lies "
                                    f"above the pixel threshold {s['threshold']:.3g}, not shown)")


def result_summary(lc, item: dict) -> dict:
    """The JSON summary of a finished run (a "result" item of :func:`diffuse_core.studio.runs.run_case`) of the
    loaded case ``lc``: the engine's summary, the scores, the settings and the model version."""
    r = item["result"]
    full = lc.case.full_resolution(r)
    return {**r.summary(), **scores(r, lc.case.truth_at_input_size, item["threshold"], full, item.get("verdict")),
            "output_size": list(full.shape), "case": lc.title,
            "modality": lc.case.modality, "percentile": item["settings"]["percentile"],
            "mask_from": item["settings"]["mask_from"], "model_version": item["model_version"],
            "notes": list(lc.notes), "mask_rule": item["settings"].get("mask_rule", "percentile"),
            "verdict": None if item.get("verdict") is None else item["verdict"].to_dict(),
            "verdict_withheld": _withheld(item),
            "level": _level(item),
            "timings": {k: round(float(v), 4) for k, v in (item.get("timings") or r.timings).items()}}


def _level(item: dict) -> float | None:
    """The slice's estimated template level (diffuse_core.models.level), None where the run did not estimate it."""
    level = getattr(item.get("outcome"), "level", None)
    return None if level is None else round(float(level), 1)


def _withheld(item: dict) -> str | None:
    """Why the run made no call: the slice lies outside the levels its model learned, or its own model card gives no
    verdict (None when it made one, or when the run does not say which card it used)."""
    from diffuse_core.core.verdict import withheld_because

    outcome = item.get("outcome")
    if item.get("verdict") is not None or outcome is None:
        return None
    return getattr(outcome, "withheld", None) or withheld_because(getattr(outcome, "card", None) or {})


def looks_normal(summary: dict) -> bool:
    """Whether a run calls its slice normal: the calibrated verdict where the model card has one, else under
    ``DEFAULTS["healthy_flag_fraction"]`` of the brain flagged (:func:`looks_healthy`)."""
    v = summary.get("verdict")
    return (not v["abnormal"]) if v else looks_healthy(summary["flagged_fraction_of_brain"])


def verdict_line(verdict: dict | None, modality: str | None = None, withheld: str | None = None) -> str:
    """The verdict as one line of markdown for the app. Without a calibrated verdict: "" when ``modality`` is None
    (no run), else :func:`no_verdict_line` (the app says so rather than keep silent; ``withheld``: why the run's own
    model card gives none, where the run said)."""
    if not verdict:
        return "" if modality is None else no_verdict_line(modality, withheld)
    on = verdict.get("chosen_on") or Verdict.chosen_on      # or a user's scans (calibrate-verdict)
    if verdict["abnormal"]:
        return (f"**Looks abnormal** — peak anomaly {anomaly_number(verdict['score'])}, above the "
                f"{anomaly_number(verdict['threshold'])} "
                f"that {100 * (1 - verdict['false_abnormal_rate']):.0f} % of {on} stay under. "
                f"The overlay shows where.")
    return (f"**Looks normal** — peak anomaly {anomaly_number(verdict['score'])}, under the "
            f"{anomaly_number(verdict['threshold'])} that "
            f"{100 * (1 - verdict['false_abnormal_rate']):.0f} % of {on} stay under, so no "
            f"region is flagged. (A teaching tool's call, not a diagnosis.)")


def no_verdict_line(modality: str | None, why: str | None = None) -> str:
    """What the app says of a run whose model card gives no verdict (none calibrated, or one that would miss most
    lesions: :func:`diffuse_core.core.verdict.withheld_because`): no call, and why (``why``: the run's own card's
    reason; else the installed model's for the modality)."""
    from diffuse_core.core.verdict import withheld_because
    from diffuse_core.run.level_check import is_slice_reason
    from diffuse_core.studio.model_store import MODELS

    if is_slice_reason(why):
        return (f"**No normal / abnormal call for this slice**: {why}. Read the anomaly map with care: red here may "
                f"be normal anatomy.")
    ct = str(modality or "").lower() == "ct"
    if why is None:
        try:
            why = withheld_because(MODELS.ddpm_info("ct" if ct else None).get("card") or {})
        except (OSError, ValueError):
            why = None
    why = why or "no calibrated threshold: its model card has none"
    return (f"**No verdict for {'CT' if ct else 'this model'}** ({why}), so no normal / abnormal call is made. Read "
            f"the anomaly map yourself.")


def looks_healthy(flagged_fraction_of_brain: float) -> bool:
    """Whether a run left a slice nearly unchanged: under ``DEFAULTS["healthy_flag_fraction"]`` of the brain
    flagged anomalous."""
    return flagged_fraction_of_brain < DEFAULTS["healthy_flag_fraction"]
