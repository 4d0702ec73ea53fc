"""The app's "Adapt the healthy model" (issue 31, item 5) without a browser: the sets it offers, an adaptation in the
background that finishes with its card and is then listed and used by a run, a cancel that leaves nothing, and the
checks before anything starts. Tiny untrained models keep it fast; the browser test is in test_app_browser_adapt.py."""

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tiny_app import ROOT, app_env, one_torch_thread, tiny_models

R = 64


def tiny_assets(assets: Path) -> Path:
    """A tiny untrained DDPM (with a card carrying the app's settings) and tiny ACAT models under ``assets``."""
    from diffuse_core.models.checkpoint import update_card

    tiny_models(assets, R)
    settings = {"anomaly_threshold": 0.15, "recommended_settings": {"k": 100, "percentile": 90.0, "steps": 3}}
    try:
        update_card(assets / "ddpm", settings, by="calibrate")       # a card whose fields name their writer
    except TypeError:
        update_card(assets / "ddpm", settings)
    return assets


@contextmanager
def adapt_env(tmp_path, monkeypatch):
    """The app's environment on tiny models (:func:`tiny_assets`) and the project's teaching sets, on one thread;
    adapt's classifier stage on a few steps and SynthBrain slices."""
    from diffuse_core.train.saliency import ADAPT_CLF

    monkeypatch.setitem(ADAPT_CLF, "steps", 3)
    monkeypatch.setitem(ADAPT_CLF, "synthbrain", 16)
    with one_torch_thread():
        app_env(monkeypatch, tmp_path, tiny_assets(tmp_path / "assets"))
        yield


@pytest.fixture()
def env(tmp_path, monkeypatch):
    with adapt_env(tmp_path, monkeypatch):
        yield tmp_path


def wait(job, seconds=240):
    assert job.done.wait(seconds), f"the adaptation did not end within {seconds} s (stage {job.stage})"


def test_the_teaching_sets_normal_mri_slices_are_offered_and_ct_left_out(env):
    from diffuse_core.studio import adapt_jobs

    slices = adapt_jobs.normal_slices("teaching/default")
    manifest = json.loads((ROOT / "teaching_sets" / "default" / "manifest.json").read_text())
    expected = {c["id"] for c in manifest["cases"] if c["healthy"] and c["modality"] != "ct"}
    assert {cid for cid, _ in slices} == expected and all(p.is_file() for _, p in slices)
    assert ("default (5 normal slices, teaching)", "teaching/default") in adapt_jobs.adapt_sources()


def test_an_adaptation_writes_a_model_with_its_card_that_a_run_then_uses(env):
    from diffuse_core.studio import adapt_jobs
    from diffuse_core.studio.library import load_library_case
    from diffuse_core.studio.runs import run_case

    job = adapt_jobs.start_adapt("teaching/default", minutes=0.02)
    with pytest.raises(ValueError, match="already running"):
        adapt_jobs.start_adapt("teaching/default", minutes=0.02)
    seen = set()
    while not job.done.wait(0.05):
        seen.add(job.stage)
    assert job.error is None and job.record is not None, job.error
    assert "fine-tuning" in seen and job.fraction == 1.0
    rec = job.record
    assert rec["normal_slices"] == 5 and rec["trained_on"] == 4 and rec["held_out"] == 1 and rec["steps"] >= 1
    card = json.loads((job.out / "model_card.json").read_text())
    assert card["adaptation"]["false_flags_after"] == rec["false_flags_after"]
    assert job.out.parent == env / "data" / "models"

    listed = adapt_jobs.adapted_models()
    assert [m.name for m in listed] == [job.name] and "4 normal slices" in listed[0].label
    assert adapt_jobs.adapted_model_dir(job.name) == job.out and adapt_jobs.adapted_model_dir("") is None

    lc = load_library_case("teaching/default/case16_flair_healthy")
    versions = {}
    for name, folder in (("installed", None), ("adapted", job.out)):
        *_, result = run_case(lc, "acat", k=20, steps=2, seed=0, model_dir=folder)
        versions[name] = (result["model_version"], result["result"].counterfactual)
    assert versions["installed"][0] != versions["adapted"][0]           # another model's weights ran
    assert not np.array_equal(versions["installed"][1], versions["adapted"][1])


def test_cancel_stops_the_training_and_leaves_no_model(env):
    from diffuse_core.studio import adapt_jobs

    job = adapt_jobs.start_adapt("teaching/default", minutes=5)
    t0 = time.monotonic()
    while job.stage != "fine-tuning" and not job.done.is_set():
        assert time.monotonic() - t0 < 180, f"never reached fine-tuning (stage {job.stage})"
        time.sleep(0.05)
    job.cancel()
    wait(job, 60)
    assert job.cancelled and job.record is None and "no model" in job.error
    assert not job.out.exists() and adapt_jobs.adapted_models() == []
    assert job.elapsed < 120                                            # far short of the 5-minute budget


def test_what_is_refused_before_anything_starts(env):
    from diffuse_core.studio import adapt_jobs

    for bad in (-1, "x", 10_000):
        with pytest.raises(ValueError, match="time budget"):
            adapt_jobs.start_adapt("teaching/default", minutes=bad)
    with pytest.raises(ValueError, match="unknown set"):
        adapt_jobs.start_adapt("elsewhere/default", minutes=1)
    for name in ("nothing-here", "../assets"):
        with pytest.raises(ValueError, match="no adapted model"):
            adapt_jobs.adapted_model_dir(name)
    assert adapt_jobs.current_job() is None or not adapt_jobs.current_job().running


def test_the_panels_card_says_what_was_measured_and_never_calls_zero_to_zero_halved():
    from diffuse_core.ui.adapt_panel import card_markdown

    rec = {"normal_slices": 120, "trained_on": 96, "held_out": 24, "measured_on": 24, "steps": 900, "batch_size": 8,
           "seconds": 1200.0, "hardware": "2 cores", "halved": True,
           "false_flags_before": {"mean": 0.08, "max": 0.2}, "false_flags_after": {"mean": 0.03, "max": 0.09}}
    md = card_markdown(rec, "mine")
    assert "96 trained on, 24 held out" in md and "before **8.0 %**" in md and "after **3.0 %**" in md
    assert "at least halved" in md and "20.0 min" in md
    zero = {**rec, "false_flags_before": {"mean": 0.0, "max": 0.0}, "false_flags_after": {"mean": 0.0, "max": 0.0}}
    assert "nothing to halve" in card_markdown(zero, "mine") and "at least halved" not in card_markdown(zero, "m")
    worse = {**rec, "halved": False}
    assert "not halved" in card_markdown(worse, "mine")
    assert "not measured: no labelled lesion slices" in md and "no verdict on this model's card" in md
    calls = {**rec, "normal_called_abnormal_before": {"measured": 24, "called": 20, "abnormal": 9},
             "normal_called_abnormal_after": {"measured": 24, "called": 20, "abnormal": 3}}
    assert ("before **9 of 20** called, after **3 of 20** (4 of 24 get no call: outside the levels learned)"
            in card_markdown(calls, "m"))
    found = {**rec, "lesion_dice_before": {"mean": 0.71, "n": 6}, "lesion_dice_after": {"mean": 0.69, "n": 6}}
    assert "Dice before **0.71**, after **0.69** on 6 slices" in card_markdown(found, "m")
    assert "with care" not in card_markdown(found, "m")
    blind = {**found, "lesion_dice_after": {"mean": 0.40, "n": 6}}
    assert "redraws lesions too" in card_markdown(blind, "m")


def test_a_verdict_calibrated_on_the_users_scans_is_listed_and_used(env):
    """``diffuse-studio calibrate-verdict --out <data folder>/models/NAME`` is offered beside adapted models, labelled
    by what it measured, and a run with it gives its verdict in words that say where the threshold came from."""
    from PIL import Image

    from diffuse_core.data.synthbrain import generate_slice, sample_seed
    from diffuse_core.studio import adapt_jobs
    from diffuse_core.studio.library import load_library_case
    from diffuse_core.studio.runs import run_case

    scans = env / "my_scans"
    scans.mkdir()
    for i in range(8):
        img = generate_slice(sample_seed("val", 0, i), ("flair",), R, healthy=True).image[0]
        Image.fromarray(np.where(img > -1, 30 + 110 * (img + 1), 0).astype(np.uint8)).save(scans / f"n{i}.png")
    out = env / "data" / "models" / "my-scanner"
    from diffuse_core.cli import main

    assert main(["calibrate-verdict", "--data", str(scans), "--out", str(out), "--device", "cpu"]) == 0
    rec = json.loads((out / "verdict_calibration.json").read_text())
    assert rec["chosen_on"]["normal_slices"] == 5 and rec["held_out"]["normal_slices"] == 3
    assert "SynthBrain" in rec["sensitivity_measured_on"]["source"]     # no labelled lesion slice of the user's
    listed = adapt_jobs.adapted_models()
    assert [m.name for m in listed] == ["my-scanner"]
    assert listed[0].label.startswith("Verdict calibrated: my-scanner") and "from 5 of your normal" in listed[0].label
    lc = load_library_case("teaching/default/case16_flair_healthy")
    *_, result = run_case(lc, "acat", k=20, steps=2, seed=0, model_dir=adapt_jobs.adapted_model_dir("my-scanner"))
    from diffuse_core.studio.scoring import result_summary, verdict_line

    summary = result_summary(lc, result)
    verdict = summary["verdict"]
    if rec["verdict_used"]:
        assert verdict is not None and verdict["threshold"] == pytest.approx(rec["threshold"], abs=1e-4)
        assert verdict["chosen_on"] == "5 normal slices of your scans"
        assert "of 5 normal slices of your scans stay under" in verdict_line(verdict, "mri")
    else:                           # withheld for this model's own reason, not the installed model's (which has none)
        assert verdict is None and "of the validation lesions abnormal" in summary["verdict_withheld"]
        line = verdict_line(None, "mri", summary["verdict_withheld"])
        assert "No verdict" in line and summary["verdict_withheld"] in line


def curated_normals(n: int, name: str = "my-normals") -> str:
    """A curated set of ``n`` normal SynthBrain slices saved the way Curate saves them; its adapt source value."""
    from diffuse_core.data import curation
    from diffuse_core.data.curated_case import CuratedCase
    from diffuse_core.data.synthbrain import generate_slice, sample_seed

    for i in range(n):
        s = generate_slice(sample_seed("val", 0, 100 + i), ("flair",), R, healthy=True)
        zero = np.zeros((R, R), np.float32)
        curation.save_case(name, CuratedCase(case_id=f"normal{i}", image=s.image, counterfactual=s.image,
                                             anomaly=zero, mask=zero.astype(np.uint8), settings={}, healthy=True,
                                             brain_mask=s.brain_mask, modality="mri"))
    return f"curated/{name}"


def test_the_verdict_calibrated_from_the_app_is_written_listed_and_shown(env):
    """The panel's "Calibrate the verdict" runs calibrate-verdict on a set's normal slices in the background: no
    training, a model folder with the verdict's record, listed for Explore, and the card shown in words."""
    from diffuse_core.studio import adapt_jobs
    from diffuse_core.ui.adapt_panel import stage_text, verdict_markdown

    source = curated_normals(8)
    job = adapt_jobs.start_adapt(source, minutes="not used", kind="verdict")
    assert job.kind == "verdict" and "Calibrating the verdict on 8 normal slices" in stage_text(job)
    wait(job)
    assert job.error is None and job.record is not None, job.error
    rec = json.loads((job.out / "verdict_calibration.json").read_text())
    assert rec["chosen_on"]["normal_slices"] == 5 and rec["held_out"]["normal_slices"] == 3
    assert not (job.out / "adaptation.json").exists()                  # nothing was trained
    assert [m.name for m in adapt_jobs.adapted_models()] == [job.name] and "verdict" in job.name
    text = verdict_markdown(job.record, job.name)
    assert f"chosen on 5 normal slices" in text and "3 slices of 3 held-out case(s)" in text
    assert ("The app uses it" in text) == bool(rec["verdict_used"])


def test_the_verdict_needs_enough_normal_slices_and_a_known_task(env):
    from diffuse_core.studio import adapt_jobs

    with pytest.raises(ValueError, match="calibrating the verdict needs at least 5"):
        adapt_jobs.start_adapt("teaching/default", kind="verdict")          # 5 normal slices: 3 to choose on
    with pytest.raises(ValueError, match="unknown adaptation"):
        adapt_jobs.start_adapt("teaching/default", kind="retrain")
    assert adapt_jobs.adapted_models() == []


def test_a_stopped_verdict_calibration_writes_nothing(env, tmp_path):
    from diffuse_core.evaluation.adapt import AdaptCancelled
    from diffuse_core.evaluation.scanner_verdict import calibrate_on_scans
    from diffuse_core.studio import adapt_jobs

    slices = adapt_jobs.normal_slices(curated_normals(8, "stop-me"))
    data = tmp_path / "scans"
    data.mkdir()
    (data / "index.csv").write_text("image,healthy,case\n" + "".join(f"{p},1,{c}\n" for c, p in slices))
    stages = []

    def stop_when_scoring(stage, fraction):
        stages.append(stage)
        return stage == "scoring the slices"

    out = tmp_path / "data" / "models" / "stopped"
    with pytest.raises(AdaptCancelled):
        calibrate_on_scans(data, out, on_progress=stop_when_scoring)
    assert stages[-1] == "scoring the slices" and not (out / "verdict_calibration.json").exists()
    assert not (out / "model.safetensors").exists()
