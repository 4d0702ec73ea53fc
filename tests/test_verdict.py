"""The slice verdict and the real-data measures behind it (issue 36 item 1, issue 31 item 6)."""

import numpy as np
import pytest

from diffuse_core.core.verdict import slice_score, verdict_of
from diffuse_core.evaluation.real_data import case_bootstrap, leave_case_out, lesion_contrast_kept, verdicts

CARD = {"verdict": {"percentile": 99.5, "threshold": 0.3, "false_abnormal_rate": 0.05}}


def test_a_flat_map_is_normal_and_a_lesion_is_abnormal():
    brain = np.ones((64, 64), np.uint8)
    flat = np.full((64, 64), 0.05, np.float32)
    lesion = flat.copy()
    lesion[20:30, 20:30] = 0.8
    assert verdict_of(flat, brain, CARD).label == "normal"
    v = verdict_of(lesion, brain, CARD)
    assert v.abnormal and v.score == pytest.approx(0.8) and "abnormal" in v.sentence()
    assert "normal" in verdict_of(flat, brain, CARD).sentence()
    assert verdict_of(flat, brain, {}) is None                     # no calibrated verdict: none is given
    one_pixel = flat.copy()
    one_pixel[5, 5] = 2.0                                          # a single hot pixel does not make a lesion
    assert verdict_of(one_pixel, brain, CARD).label == "normal"
    assert slice_score(lesion, np.zeros_like(brain)) == 0.0
    with pytest.raises(ValueError):
        slice_score(lesion, brain[:10])


def test_leave_one_case_out_chooses_on_the_other_cases_only():
    # case a's lesions need a low threshold, case b's a high one: each is scored at the other's choice
    grid = np.array([0.1, 0.5])
    lesion = np.zeros((8, 8), bool)
    lesion[2:6, 2:6] = True
    weak = np.where(lesion, 0.3, 0.0)                    # found at 0.1 only
    strong = np.where(lesion, 0.9, 0.2)                  # 0.1 also flags the background: 0.5 is right
    out = leave_case_out([weak, strong], [lesion, lesion], ["a", "b"], grid)
    assert out[0] == 0.0                                  # a scored at b's choice (0.5): misses its weak lesion
    assert out[1] < 1.0                                   # b scored at a's choice (0.1): background flagged too


def test_contrast_kept_is_zero_when_the_lesion_is_gone_and_one_when_untouched():
    rng = np.random.default_rng(0)
    brain = np.ones((64, 64), bool)
    lesion = np.zeros((64, 64), bool)
    lesion[20:34, 20:34] = True
    healthy = rng.normal(0.0, 0.05, (1, 64, 64)).astype(np.float32)
    image = healthy.copy()
    image[0][lesion] += 0.6
    assert lesion_contrast_kept(image, image, lesion, brain) == pytest.approx(1.0)
    assert abs(lesion_contrast_kept(image, healthy, lesion, brain)) < 0.1
    half = healthy.copy()
    half[0][lesion] += 0.3
    assert lesion_contrast_kept(image, half, lesion, brain) == pytest.approx(0.5, abs=0.1)


def test_case_level_intervals_resample_cases():
    values = np.array([1.0, 1.0, 0.0, 0.0])
    lo, hi = case_bootstrap(values, ["a", "a", "b", "b"])
    assert lo == 0.0 and hi == 1.0
    assert np.isnan(case_bootstrap(values, ["a"] * 4)[0])


def test_verdicts_compare_both_methods_on_the_same_slices():
    brain = np.ones((16, 16), np.uint8)
    maps, zs, tum, groups = [], [], [], []
    for case in "abc":
        for t in (True, False):
            m = np.zeros((16, 16), np.float32)
            if t:
                m[4:8, 4:8] = 1.0
            maps.append(m)
            zs.append(np.ones((16, 16), np.float32))        # the threshold's score tells nothing here
            tum.append(t)
            groups.append(case)
    out = verdicts(np.stack(maps), np.stack(zs), np.stack([brain] * 6), tum, groups, CARD)
    assert out["auroc"]["dif_fuse"] == 1.0 and out["auroc"]["threshold"] == 0.5
    assert out["card"]["sensitivity"] == 1.0 and out["card"]["specificity"] == 1.0
    assert out["leave_case_out"]["dif_fuse"]["specificity"] == 1.0


def test_a_verdict_that_misses_most_validation_lesions_is_withheld():
    """A "looks normal" hides the map, so a card whose threshold called fewer than MIN_SENSITIVITY of its validation
    lesions abnormal gives no verdict, and says why; at the bar, or without a record, the verdict is used."""
    from diffuse_core.core.verdict import MIN_SENSITIVITY, withheld_because

    brain = np.ones((32, 32), np.uint8)
    flat = np.full((32, 32), 0.05, np.float32)
    card = {"verdict": {"percentile": 99.5, "threshold": 0.3, "false_abnormal_rate": 0.05}}
    assert withheld_because(card) is None and verdict_of(flat, brain, card).label == "normal"
    weak = {**card, "calibration": {"verdict": {"sensitivity_on_validation": 5 / 24, "diseased": 24}}}
    assert verdict_of(flat, brain, weak) is None
    assert "21 % (5 of 24)" in withheld_because(weak) and "80 %" in withheld_because(weak)
    at_bar = {**card, "calibration": {"verdict": {"sensitivity_on_validation": MIN_SENSITIVITY}}}
    assert verdict_of(flat, brain, at_bar) is not None
    assert "no calibrated threshold" in withheld_because({})


def test_a_threshold_chosen_on_the_users_scans_says_so_in_every_sentence():
    """A card from ``diffuse-studio calibrate-verdict`` names what its threshold was chosen on; the engine's sentence
    and the app's line say it instead of "healthy validation slices"."""
    from diffuse_core.studio.scoring import verdict_line

    brain = np.ones((32, 32), np.uint8)
    amap = np.zeros((32, 32), np.float32)
    amap[10:14, 10:14] = 0.9
    card = {"verdict": {"percentile": 99.5, "threshold": 0.5, "false_abnormal_rate": 0.05,
                        "chosen_on": "40 normal slices of your scans"},
            "calibration": {"verdict": {"sensitivity_on_validation": 0.9, "diseased": 10}}}
    v = verdict_of(amap, brain, card)
    assert v.abnormal and v.chosen_on == "40 normal slices of your scans"
    assert "95 % of 40 normal slices of your scans stay under" in v.sentence()
    assert "95 % of 40 normal slices of your scans stay under" in verdict_line(v.to_dict(), "mri")
    plain = verdict_of(np.zeros((32, 32), np.float32), brain, {"verdict": {"threshold": 0.5}})
    assert "healthy SynthBrain validation slices" in plain.sentence() and "SynthBrain" in verdict_line(
        plain.to_dict(), "mri")


def test_a_ct_sized_threshold_reads_with_its_digits():
    """The CT verdict's threshold (about 0.012) must not read as 0.01, nor a healthy CT peak of 0 as 0.00."""
    from diffuse_core.core.verdict import Verdict, anomaly_number

    assert anomaly_number(0.2104) == "0.21" and anomaly_number(0.0116) == "0.012" and anomaly_number(0.0) == "0"
    line = Verdict("normal", 0.0, 0.0116, 0.05).sentence()
    assert "peak anomaly 0, under the 0.012" in line


def test_a_ct_verdict_says_it_was_set_on_ct_slices():
    from diffuse_core.core.verdict import verdict_of

    brain = np.ones((8, 8), np.uint8)
    ct = {"verdict": {"threshold": 0.01}, "calibration": {"data": {"modality": "ct"}}}
    assert "healthy SynthBrain CT validation slices" in verdict_of(np.zeros((8, 8)), brain, ct).sentence()
    flair = {"verdict": {"threshold": 0.01}}
    assert "healthy SynthBrain validation slices" in verdict_of(np.zeros((8, 8)), brain, flair).sentence()
