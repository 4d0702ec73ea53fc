"""The redrawn region and the anomaly score (issue 31, items 3 and 4)."""

import numpy as np
import pytest

from diffuse_core.core.redraw import (PAPER_MASK_RULE, check_rule, mask_rule_of, redrawn_mask, score_map,
                                      score_of)


def _blob(size=64, centre=(32, 32), radius=10.0):
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * radius ** 2)).astype(np.float32)


def test_the_paper_mask_is_always_a_tenth_of_the_brain_and_the_relative_one_follows_the_saliency():
    brain = np.ones((64, 64), np.uint8)
    small, large = _blob(radius=3.0), _blob(radius=14.0)
    for s in (small, large):
        assert abs(redrawn_mask(s, brain, PAPER_MASK_RULE).mean() - 0.10) < 0.01
    rule = {"kind": "relative", "level": 0.3, "max_share": 0.5}
    a, b = redrawn_mask(small, brain, rule).mean(), redrawn_mask(large, brain, rule).mean()
    assert a < 0.03 and b > 0.25                       # a focal peak: a small region; a broad one: all of it
    capped = redrawn_mask(_blob(radius=40.0), brain, {"kind": "relative", "level": 0.1, "max_share": 0.2})
    assert abs(capped.mean() - 0.2) < 0.02             # never more than max_share of the brain


def test_the_weighted_mask_shrinks_with_the_classifiers_belief():
    brain = np.ones((64, 64), np.uint8)
    s = _blob(radius=10.0)
    rule = {"kind": "weighted", "level": 0.2, "max_share": 0.5}
    shares = [redrawn_mask(s, brain, rule, p).mean() for p in (1.0, 0.5, 0.25, 0.1, 0.0)]
    assert shares[0] > shares[1] > shares[2] > 0 and shares[3] == shares[4] == 0.0
    with pytest.raises(ValueError, match="P\\(diseased\\)"):
        redrawn_mask(s, brain, rule)


def test_rules_and_scores_come_from_the_card_and_bad_ones_are_refused():
    assert mask_rule_of({}) == PAPER_MASK_RULE
    assert mask_rule_of({"mask_rule": {"kind": "relative", "level": 0.3}})["max_share"] == 0.5
    assert mask_rule_of({"mask_rule": {"kind": "weighted", "level": 0.3}}, 85) == {"kind": "percentile",
                                                                                   "percentile": 85.0}
    assert score_of({}) == "abs" and score_of({"score": "signed"}) == "signed"
    for bad in ({"kind": "percentile", "percentile": 100}, {"kind": "relative", "level": 1.5}, {"kind": "blob"}):
        with pytest.raises(ValueError):
            check_rule(bad)
    with pytest.raises(ValueError, match="unknown anomaly score"):
        score_of({"score": "max"})


def test_the_signed_score_keeps_the_direction_a_lesion_takes_by_modality():
    brain = np.ones((32, 32), np.uint8)
    x = np.zeros((1, 32, 32), np.float32)
    cf = x.copy()
    x[0, 4:12, 4:12] = 0.6          # brighter than its counterfactual (a FLAIR lesion)
    cf[0, 20:28, 20:28] = 0.6       # darker than its counterfactual (a CT infarct)
    redrawn = np.ones((32, 32), np.uint8)
    ab = score_map(x, cf, brain, redrawn, "abs", 3)
    mri = score_map(x, cf, brain, redrawn, "signed", 3, "mri")
    ct = score_map(x, cf, brain, redrawn, "signed", 3, "ct")
    assert ab[8, 8] > 0.5 and ab[24, 24] > 0.5
    assert mri[8, 8] > 0.5 and mri[24, 24] == 0.0
    assert ct[24, 24] > 0.5 and ct[8, 8] == 0.0


def test_the_noise_floor_removes_the_grain_the_walk_does_not_return():
    rng = np.random.default_rng(0)
    brain = np.ones((64, 64), np.uint8)
    x = np.zeros((1, 64, 64), np.float32)
    cf = (x + rng.normal(0, 0.05, x.shape)).astype(np.float32)     # grain everywhere
    x[0, 20:36, 20:36] += 0.5                                       # and a lesion the walk removed
    redrawn = np.zeros((64, 64), np.uint8)
    redrawn[16:40, 16:40] = 1
    plain = score_map(x, cf, brain, redrawn, "signed", 1)
    floored = score_map(x, cf, brain, redrawn, "signed-floor", 1)
    outside = redrawn == 0
    assert (plain[outside] > 0.05).mean() > 0.1 and (floored[outside] > 0.05).mean() < 0.01
    assert floored[28, 28] > 0.3


def test_a_margin_grows_the_region_by_its_radius_inside_the_brain_and_none_stays_none():
    brain = np.zeros((64, 64), np.uint8)
    brain[4:60, 4:60] = 1
    s = _blob(radius=3.0)
    rule = {"kind": "weighted", "level": 0.2, "max_share": 0.5}
    tight = redrawn_mask(s, brain, rule, 1.0)
    wide = redrawn_mask(s, brain, {**rule, "margin": 3}, 1.0)
    assert tight.sum() > 0 and (wide >= tight).all() and wide.sum() > tight.sum()
    rows = np.where(tight.any(axis=1))[0]
    rows_wide = np.where(wide.any(axis=1))[0]
    assert rows_wide.min() == rows.min() - 3 and rows_wide.max() == rows.max() + 3    # grown by the radius
    edge = _blob(centre=(5, 32), radius=3.0)
    assert not (redrawn_mask(edge, brain, {**rule, "margin": 4}, 1.0) & (brain == 0)).any()   # never past the brain
    assert redrawn_mask(s, brain, {**rule, "margin": 3}, 0.0).sum() == 0      # a healthy call stays without a region
    assert check_rule(rule) == rule and check_rule({**rule, "margin": 0}) == rule    # no margin: the rule as before
    for bad in (-1, 17, 2.5):
        with pytest.raises(ValueError, match="margin"):
            check_rule({**rule, "margin": bad})
