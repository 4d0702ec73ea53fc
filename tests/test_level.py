"""The slice-level check: no normal / abnormal call on a slice outside the levels the healthy model learned."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffuse_core.data.synthbrain.anatomy import LEVEL_RANGE
from diffuse_core.data.synthbrain.scanner import SCANNER_LEVELS
from diffuse_core.models.checkpoint import load, load_level_estimator, save
from diffuse_core.models.classifier import ClassifierConfig
from diffuse_core.models.level import LEVEL_CENTRE, LEVEL_SPAN, new_level_estimator
from diffuse_core.run.level_check import is_slice_reason, outside_trained_levels, trained_levels, usable_with
from diffuse_core.models.registry import default_model_dir, is_installed
from diffuse_core.run.assembly import slice_verdict
from diffuse_core.studio.scoring import verdict_line

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "real_cases" / "brats2015"
FLAIR_CARD = {"data": {"generator": "SynthBrain", "realism": "default", "modalities": ["flair"]},
              "input_normalisation": "tissue",
              "verdict": {"percentile": 99.5, "threshold": 0.3, "false_abnormal_rate": 0.05}}
SMALL = ClassifierConfig(resolution=32, widths=(4, 8), num_classes=1)


def _estimator_at(level: float):
    """A real level estimator whose weights make it read every slice as ``level`` (head weights 0, bias set)."""
    est = new_level_estimator(SMALL)
    with torch.no_grad():
        est.head.weight.zero_()
        est.head.bias.fill_((level - LEVEL_CENTRE) / LEVEL_SPAN)
    est.card = {"data": {"modalities": ["flair"], "input_normalisation": "tissue"}}
    return est


def test_the_trained_levels_come_from_the_card():
    assert trained_levels(FLAIR_CARD) == LEVEL_RANGE
    scanner = {"data": {"generator": "SynthBrain", "realism": "edge,fov,levels,resolution,thickness"}}
    assert trained_levels(scanner) == SCANNER_LEVELS
    assert trained_levels({"data": {"source": "folder", "path": "x"}}) is None        # real slices: unknown
    assert trained_levels({}) is None
    adapted = {"data": {"source": "folder", "path": "x", "fine_tuned_from": scanner["data"]}}
    assert trained_levels(adapted) == SCANNER_LEVELS          # adapt's fine-tune keeps its base's levels learned


def test_a_slice_outside_the_trained_levels_gets_no_call_and_says_why():
    lo, hi = LEVEL_RANGE
    assert outside_trained_levels((lo + hi) / 2, FLAIR_CARD) is None
    assert outside_trained_levels(None, FLAIR_CARD) is None
    below = outside_trained_levels(lo - 12, FLAIR_CARD)
    assert is_slice_reason(below) and "below" in below and "skull base" in below and "12 mm" in below
    above = outside_trained_levels(hi + 5, FLAIR_CARD)
    assert is_slice_reason(above) and "above" in above and "vertex" in above
    assert outside_trained_levels(lo - 12, {"data": {"source": "folder"}}) is None    # levels unknown: no check
    assert not is_slice_reason("no calibrated threshold: its model card has none")


def test_the_estimator_is_used_only_on_the_input_it_was_trained_on():
    level_card = {"data": {"modalities": ["flair"], "input_normalisation": "tissue"}}
    assert usable_with(level_card, FLAIR_CARD)
    ct = {"data": {"generator": "SynthBrain", "realism": "default", "modalities": ["ct"]}}
    assert not usable_with(level_card, ct)
    assert not usable_with(level_card, {**FLAIR_CARD, "input_normalisation": "absolute"})
    assert not usable_with(level_card, {"data": {"source": "folder", "modalities": ["flair"]},
                                        "input_normalisation": "tissue"})
    adapted = {"data": {"source": "folder", "fine_tuned_from": FLAIR_CARD["data"]}, "input_normalisation": "tissue"}
    assert usable_with(level_card, adapted)                  # a base fine-tuned by adapt keeps the level check


def test_save_load_round_trip_keeps_the_kind_and_the_estimate(tmp_path):
    est = _estimator_at(30.0)
    save(est, tmp_path / "lv", card=est.card)
    back = load_level_estimator(tmp_path / "lv")
    image = np.zeros((1, 32, 32), np.float32)
    assert back.levels(image)[0] == pytest.approx(30.0, abs=1e-4)
    assert back.levels(np.stack([image, image])).shape == (2,)
    with pytest.raises(ValueError, match="level"):
        load(tmp_path / "lv", "classifier")                     # a level estimator is not ACAT's classifier


def test_slice_verdict_withholds_the_call_below_the_trained_levels():
    brain = np.ones((32, 32), np.uint8)
    anomaly = np.zeros((32, 32), np.float32)
    anomaly[8:16, 8:16] = 0.9                                    # abnormal by the card's threshold
    result = SimpleNamespace(image=np.zeros((1, 32, 32), np.float32), anomaly=anomaly, brain_mask=brain)
    v, level, why = slice_verdict(result, FLAIR_CARD, None)      # no estimator: the card's call
    assert v.abnormal and level is None and why is None
    v, level, why = slice_verdict(result, FLAIR_CARD, _estimator_at(90.0))
    assert v.abnormal and level == pytest.approx(90.0, abs=1e-3) and why is None
    v, level, why = slice_verdict(result, FLAIR_CARD, _estimator_at(30.0))
    assert v is None and is_slice_reason(why)
    near = _estimator_at(LEVEL_RANGE[0] - 3)
    assert slice_verdict(result, FLAIR_CARD, near)[2] is not None             # 3 below, margin 0: withheld
    near.card["level_margin"] = 4
    assert slice_verdict(result, FLAIR_CARD, near)[0].abnormal                 # within the estimator's margin: called
    line = verdict_line(None, "mri", why)
    assert "No normal / abnormal call for this slice" in line and "below the levels" in line
    assert "No verdict for this model" not in line
    v, _, why = slice_verdict(result, {k: c for k, c in FLAIR_CARD.items() if k != "verdict"}, _estimator_at(30.0))
    assert v is None and is_slice_reason(why)                     # no verdict in the card, and the slice is outside


def test_training_writes_a_loadable_estimator_with_its_measured_error(tmp_path, monkeypatch):
    from diffuse_core.train.level import measure_levels, train_level

    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    out = train_level(tmp_path / "lv", steps=6, batch_size=4, pool_size=12, size=64, normalise="tissue",
                      checkpoint_every=3, progress=False, measure=False)
    res = measure_levels(out, n_val=8, write=True)
    est = load_level_estimator(out)
    assert est.card["quality"]["levels"] == res and res["test"]["n"] == 8 and res["test"]["mean_abs_error_levels"] >= 0
    assert est.card["level_margin"] == res["margin"] == res["test"]["margin"]    # chosen on validation, read on test
    by = res["validation"]["by_margin"]
    assert by[str(res["margin"])]["inside_called_outside"] <= 0.01 or res["margin"] == 10
    assert all(by[str(m)]["inside_called_outside"] > 0.01 for m in range(res["margin"]))   # the smallest that fits
    assert "all_levels" in est.card["data"]["realism"]
    assert est.card["training"]["steps_done"] == 6
    more = train_level(tmp_path / "more", steps=8, batch_size=4, pool_size=12, size=64, normalise="tissue",
                       progress=False, measure=False, init_from=out)
    assert load_level_estimator(more).card["init_from"].startswith(f"{out} (6 steps)")


SHIPPED = default_model_dir("level")


@pytest.mark.skipif(not is_installed(SHIPPED), reason="no level estimator installed")
def test_the_shipped_estimator_meets_its_rule_on_synthbrain_validation():
    q = load_level_estimator(SHIPPED).card["quality"]["levels"]["test"]        # at the margin chosen on validation
    assert q["n"] >= 400 and q["inside_called_outside"] <= 0.03 and q["outside_caught"] >= 0.8


@pytest.mark.skipif(not (BRATS.is_dir() and any(BRATS.glob("brats_*"))), reason="real BraTS cases not available")
@pytest.mark.skipif(not is_installed(SHIPPED), reason="no level estimator installed")
def test_on_real_brats_the_estimate_follows_the_slice_order():
    """Read on real scans, never trained or chosen on them: each case's estimates rise with its slice index."""
    from scipy.stats import spearmanr

    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.preprocess import prepare_slice
    from diffuse_core.run.card import mri_reference_for, resolve_intensity
    from diffuse_core.run.models import read_card

    est = load_level_estimator(SHIPPED)
    card = read_card(default_model_dir("ddpm"))
    ref = mri_reference_for(SimpleNamespace(card=card), resolve_intensity(SimpleNamespace(card=card), "auto"))
    for case_dir in sorted(p for p in BRATS.iterdir() if p.is_dir()):
        case = load_brats_case(case_dir, modalities=("flair",))
        area = case.brain.sum(axis=(0, 1))
        zs = [z for z in case.brain_slices() if area[z] >= 0.5 * area.max()][::4]
        images = [prepare_slice(case.slice(z)[0], size=128, modality="mri", brain_mask=case.slice(z)[2],
                                mri_reference=ref).image for z in zs]
        assert spearmanr(zs, est.levels(np.stack(images)))[0] > 0.6, case_dir.name


def test_each_modality_has_its_own_estimator_folder():
    from diffuse_core.run.level_check import level_folder

    ct = {"data": {"generator": "SynthBrain", "modalities": ["ct"]}}
    assert level_folder(FLAIR_CARD) == default_model_dir("level")
    assert level_folder(ct) == default_model_dir("level", "ct")
    assert level_folder(None) == default_model_dir("level")


@pytest.mark.skipif(not is_installed(SHIPPED), reason="no level estimator installed")
def test_the_status_line_says_the_level_check_is_on(monkeypatch):
    pytest.importorskip("gradio")
    monkeypatch.delenv("DIFFUSE_ASSETS", raising=False)
    monkeypatch.delenv("DIFFUSE_MODEL_DIR", raising=False)
    from diffuse_core.ui import layout

    assert "Level check" in layout.status_markdown()
