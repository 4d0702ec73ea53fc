"""Normal or abnormal: a slice verdict from its anomaly map, calibrated on healthy validation slices.

A slice's score is its peak anomaly, the ``percentile``-th percentile (99.5) of its anomaly map inside the brain:
one number that a lesion raises and that the grain of a healthy slice's walk back keeps low. The card's ``verdict``
block holds the percentile, the threshold and the false-abnormal rate the threshold was chosen for on healthy
SynthBrain validation slices (:mod:`diffuse_core.evaluation.calibrate`). A model card without it gives no verdict
(None): the app then says nothing rather than guess. Nor does a card whose threshold, on its validation slices,
called fewer than :data:`MIN_SENSITIVITY` of the diseased ones abnormal: a slice called normal shows no red, so such
a verdict would hide most lesions' maps behind "looks normal" (:func:`withheld_because` says why).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_SENSITIVITY = 0.8      # a verdict must call at least this share of its validation lesions abnormal to be used


@dataclass
class Verdict:
    label: str                 # "normal" | "abnormal"
    score: float               # the slice's peak anomaly
    threshold: float           # above it: abnormal
    false_abnormal_rate: float  # the share of healthy validation slices the threshold calls abnormal
    chosen_on: str = "healthy SynthBrain validation slices"   # or a user's scans (calibrate-verdict)

    @property
    def abnormal(self) -> bool:
        return self.label == "abnormal"

    def to_dict(self) -> dict:
        return {**asdict(self), "abnormal": self.abnormal}

    def sentence(self) -> str:
        """One line for a reader."""
        if self.abnormal:
            return (f"Looks abnormal: peak anomaly {anomaly_number(self.score)}, above the "
                    f"{anomaly_number(self.threshold)} that "
                    f"{100 * (1 - self.false_abnormal_rate):.0f} % of {self.chosen_on} stay under.")
        return (f"Looks normal: peak anomaly {anomaly_number(self.score)}, under the "
                f"{anomaly_number(self.threshold)} that "
                f"{100 * (1 - self.false_abnormal_rate):.0f} % of {self.chosen_on} stay under; no region "
                f"is flagged.")


def anomaly_number(x: float) -> str:
    """A peak anomaly or threshold for a reader: two decimals (FLAIR's 0.21), two significant digits under 0.1 (CT's
    0.012, which two decimals would show as 0.01; a healthy CT slice's 0)."""
    x = float(x)
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.2g}"


def slice_score(anomaly, brain_mask, percentile: float = 99.5) -> float:
    """The peak anomaly of one slice: the ``percentile``-th percentile of its map inside the brain (0 if none)."""
    a = np.asarray(anomaly, np.float32)
    b = np.asarray(brain_mask).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"anomaly map {a.shape} and brain mask {b.shape} differ in size")
    return float(np.percentile(a[b], percentile)) if b.any() else 0.0


def withheld_because(card: dict | None) -> str | None:
    """Why a model card gives no verdict (one phrase), or None when its verdict is used."""
    v = (card or {}).get("verdict")
    if not isinstance(v, dict) or v.get("threshold") is None:
        return "no calibrated threshold: its model card has none"
    measured = ((card or {}).get("calibration") or {}).get("verdict") or {}
    sens = measured.get("sensitivity_on_validation")
    if sens is not None and float(sens) < MIN_SENSITIVITY:
        n = measured.get("diseased")
        of = f" ({round(float(sens) * n)} of {n})" if isinstance(n, int) and n > 0 else ""
        return (f"its calibrated threshold called only {100 * float(sens):.0f} %{of} of the validation lesions "
                f"abnormal, under the {100 * MIN_SENSITIVITY:.0f} % a verdict needs: a \"looks normal\" would hide "
                f"most lesions")
    return None


def verdict_of(anomaly, brain_mask, card: dict | None) -> Verdict | None:
    """The slice verdict under a model card's ``verdict`` block, or None where the card gives none
    (:func:`withheld_because`)."""
    if withheld_because(card) is not None:
        return None
    v = card["verdict"]
    score = slice_score(anomaly, brain_mask, float(v.get("percentile", 99.5)))
    thr = float(v["threshold"])
    return Verdict("abnormal" if score > thr else "normal", round(score, 4), round(thr, 4),
                   float(v.get("false_abnormal_rate", 0.05)), str(v.get("chosen_on") or _synthbrain_slices(card)))


def _synthbrain_slices(card: dict) -> str:
    """What a verdict calibrated by ``calibrate`` was chosen on, naming CT where its record says CT."""
    modality = (((card.get("calibration") or {}).get("data") or {}).get("modality") or "").lower()
    return "healthy SynthBrain CT validation slices" if modality == "ct" else Verdict.chosen_on
