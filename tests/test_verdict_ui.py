"""The verdict as the app shows it (issue 36): "looks normal / abnormal" where the model card carries a calibrated
verdict it can use (the shipped FLAIR and CT models), an honest "no verdict" and why where it does not (none, or one
that misses too many validation lesions), never silence after a run; a
slice called normal shows no red and has nothing flagged, in Explore, the quiz reveal, Curate and the Healthy check."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from diffuse_core.core.verdict import MIN_SENSITIVITY, verdict_of, withheld_because  # noqa: E402
from diffuse_core.models.registry import default_model_dir, is_installed  # noqa: E402
from diffuse_core.studio.model_store import MODELS  # noqa: E402
from diffuse_core.studio.scoring import verdict_line  # noqa: E402
from diffuse_core.ui import explore  # noqa: E402

CARD = {"verdict": {"percentile": 99.5, "threshold": 0.3, "false_abnormal_rate": 0.05}}


def _flat_run(card, level: float = 0.05):
    brain = np.ones((32, 32), np.uint8)
    v = verdict_of(np.full((32, 32), level, np.float32), brain, card)
    return None if v is None else v.to_dict()


def test_explore_shows_the_verdict_or_says_there_is_none():
    assert explore.verdict_view(None)["visible"] is False                     # before any run: nothing
    mri = explore.verdict_view({"verdict": _flat_run(CARD), "modality": "mri"})
    assert mri["visible"] and "Looks normal" in mri["value"]
    ct = explore.verdict_view({"verdict": _flat_run({}), "modality": "ct"})
    why = withheld_because(MODELS.ddpm_info("ct").get("card") or {}) or "no calibrated threshold"
    assert ct["visible"] and "No verdict for CT" in ct["value"] and why in ct["value"]   # and says why
    other = explore.verdict_view({"verdict": None, "modality": "mri"})
    assert "No verdict for this model" in other["value"]
    assert verdict_line(None) == ""                                           # no run, no line


def test_the_shipped_ct_models_verdict_is_calibrated_and_used_because_it_reaches_the_bar():
    """The CT card carries a verdict calibrated on healthy SynthBrain CT validation slices, with its record. It is
    used because its threshold called at least MIN_SENSITIVITY of the validation strokes abnormal (20 of 24 since
    the CT classifier was trained longer; docs/research/2026-12-07-ct-classifier-continuation.md), so the app says
    "looks normal / abnormal" on CT; the same card with a sensitivity under the bar makes no call and says why."""
    folder = default_model_dir("ddpm", "ct")
    if not is_installed(folder):
        pytest.skip("no shipped CT model")
    card = json.loads((folder / "model_card.json").read_text())
    v, rec = card["verdict"], card["calibration"]
    assert v["percentile"] == 99.5 and v["false_abnormal_rate"] == 0.05 and v["threshold"] > 0
    assert rec["data"]["modality"] == "ct" and rec["verdict"]["threshold"] == v["threshold"]
    assert rec["command"].startswith("python -m diffuse_core.evaluation.calibrate") and rec["hardware"]
    assert card["written_by"]["verdict"]["writer"] == "calibrate"
    assert rec["verdict"]["sensitivity_on_validation"] >= MIN_SENSITIVITY and withheld_because(card) is None
    assert "Looks normal" in verdict_line(_flat_run(card, v["threshold"] / 2), "ct")   # a flat map under it
    assert "Looks abnormal" in verdict_line(_flat_run(card, 2 * v["threshold"]), "ct")
    weak_sens = MIN_SENSITIVITY - 0.13
    weak = {**card, "calibration": {**rec, "verdict": {**rec["verdict"], "sensitivity_on_validation": weak_sens}}}
    assert _flat_run(weak, 2 * v["threshold"]) is None
    assert f"{100 * weak_sens:.0f} %" in withheld_because(weak)
    assert "No verdict for CT" in verdict_line(None, "ct", withheld_because(weak))


def _record(verdict_abnormal: bool | None):
    brain = np.ones((32, 32), np.uint8)
    anomaly = np.zeros((32, 32), np.float32)
    anomaly[10:14, 10:14] = 0.5
    summary = {"verdict": None if verdict_abnormal is None else {
        "label": "abnormal" if verdict_abnormal else "normal", "abnormal": verdict_abnormal, "score": 0.5,
        "threshold": 0.3, "false_abnormal_rate": 0.05}}
    return {"image": np.zeros((1, 32, 32), np.float32), "counterfactual": np.zeros((1, 32, 32), np.float32),
            "anomaly": anomaly, "mask": np.zeros((32, 32), np.uint8), "brain": brain, "vmax": 0.5,
            "summary": summary}


def _reddish(rgb) -> int:
    rgb = np.asarray(rgb).astype(int)
    return int(((rgb[..., 0] > 80) & (rgb[..., 0] > rgb[..., 2] + 30)).sum())


def test_the_curate_tile_of_a_slice_called_normal_shows_no_red():
    from diffuse_core.ui.pictures import review_tile

    assert _reddish(review_tile(_record(True))) > 0 and _reddish(review_tile(_record(None))) > 0
    assert _reddish(review_tile(_record(False))) == 0


def test_a_slice_called_normal_has_nothing_flagged_and_the_tables_say_why():
    from types import SimpleNamespace

    from diffuse_core.studio.scoring import flagged_row, scores

    brain = np.ones((32, 32), np.uint8)
    anomaly = np.zeros((32, 32), np.float32)
    anomaly[:2, :16] = 0.2                                                 # 32 of 1024 pixels above 0.1
    r = SimpleNamespace(anomaly=anomaly, brain_mask=brain)
    normal = verdict_of(anomaly, brain, {"verdict": {"threshold": 0.3}})
    abnormal = verdict_of(anomaly, brain, {"verdict": {"threshold": 0.01}})
    s = scores(r, None, 0.1, verdict=normal)
    assert s["flagged_fraction_of_brain"] == 0.0 and s["above_threshold_fraction_of_brain"] == 32 / 1024
    assert "none: the slice is called normal" in flagged_row(s)[1] and "3.1 %" in flagged_row(s)[1]
    for v in (abnormal, abnormal.to_dict(), None):
        s = scores(r, None, 0.1, verdict=v)
        assert s["flagged_fraction_of_brain"] == s["above_threshold_fraction_of_brain"] == 32 / 1024
        assert flagged_row(s) == ("Flagged as anomalous (anomaly > 0.1)", "3.1 % of the brain")


def test_the_quiz_reveal_of_a_ct_case_makes_the_call():
    """The shipped CT model's verdict is used, so the quiz reveal of the healthy CT case says "looks normal" and shows
    no anomaly, and a CT stroke's (case13) says "looks abnormal" with its spots on the map."""
    from diffuse_core.studio.library import list_library
    from diffuse_core.studio.model_store import apply_recommended_defaults
    from diffuse_core.studio.settings import DEFAULTS
    from diffuse_core.ui import rapids

    if not is_installed(default_model_dir("ddpm", "ct")):
        pytest.skip("no shipped CT model")
    keys = {e.key.rsplit("/", 1)[1]: e.key for e in list_library() if e.key.startswith("teaching/default/")}
    saved = dict(DEFAULTS)
    try:
        apply_recommended_defaults()
        lc, d = rapids._view(keys["case21_ct_healthy"])
        assert lc.case.modality == "ct" and d.verdict is not None and not d.verdict["abnormal"]
        assert "Looks normal" in verdict_line(d.verdict, "ct") and not np.asarray(d.anomaly).any()
        lc, d = rapids._view(keys["case13_ct_stroke"])
        assert d.verdict is not None and d.verdict["abnormal"]
        assert "Looks abnormal" in verdict_line(d.verdict, "ct") and np.asarray(d.anomaly).any()
    finally:
        DEFAULTS.clear()
        DEFAULTS.update(saved)


def _ct_first_teaching_set(root):
    """A teaching set of the shipped healthy CT case, then a FLAIR glioma (copies of the default set's files)."""
    import shutil

    from diffuse_core.data import teaching

    src = teaching.PACKAGE_ROOT / "default"
    manifest = json.loads((src / "manifest.json").read_text())
    by_id = {c["id"]: c for c in manifest["cases"]}
    cases = [by_id["case21_ct_healthy"], by_id["case01_flair_glioma"]]
    (root / "ctfirst").mkdir(parents=True)
    for c in cases:
        for key in ("image", "mask", "preview"):
            shutil.copy(src / c[key], root / "ctfirst" / c[key])
    (root / "ctfirst" / "manifest.json").write_text(json.dumps({**manifest, "name": "ctfirst", "cases": cases}))
    return root


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="no Chromium at /usr/bin/chromium")
def test_explore_shows_the_ct_verdict_and_a_normal_ct_slice_has_no_red(tmp_path, monkeypatch):
    """In the browser: a CT case run in Explore on a CT model whose card carries a verdict reads "Looks normal",
    the results table has the verdict row and says nothing is flagged (tiny models; the CT card's verdict threshold
    set so that the call is normal)."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from browser import app_server, open_app
    from playwright.sync_api import sync_playwright
    from tiny_app import app_env, one_torch_thread, tiny_models

    from diffuse_core.models.checkpoint import update_card

    with one_torch_thread():
        assets = tiny_models(tmp_path / "assets", 64, card={"anomaly_threshold": 0.0})
        tiny_models(assets / "ct", 64, card={"anomaly_threshold": 0.0, "data": {"modalities": ["ct"]}})
        update_card(assets / "ct" / "ddpm", verdict={"percentile": 99.5, "threshold": 1e6, "false_abnormal_rate": 0.05},
                    by="calibrate")
        app_env(monkeypatch, tmp_path, assets, _ct_first_teaching_set(tmp_path / "teaching"))
        with app_server() as url, sync_playwright() as p:
            browser, page = open_app(p, url)
            try:
                page.locator("#df-gallery img").first.click()
                page.wait_for_timeout(1_000)
                for elem_id, value in (("df-steps", "3"), ("df-k", "100")):
                    box = page.locator(f"#{elem_id} input[type=number]")
                    box.fill(value)
                    box.press("Enter")
                page.locator("#df-run").click()
                page.wait_for_function("document.querySelector('#df-verdict') && "
                                       "document.querySelector('#df-verdict').innerText.includes('Looks normal')",
                                       timeout=90_000)
                text = page.inner_text("body")
                assert "No verdict for CT" not in text
                assert "none: the slice is called normal" in text and "normal (peak anomaly" in text
            finally:
                browser.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="no Chromium at /usr/bin/chromium")
def test_the_k_slider_shows_the_k_of_the_case_model_in_the_browser(tmp_path, monkeypatch):
    """In the browser: each model's card recommends its own K (MRI 400, CT 300 here); picking the CT case moves the
    slider to 300, the FLAIR case back to 400, and a K the user typed stays when the case changes. (The demo is built
    once per process: built afresh here, with these cards, and dropped after.)"""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from browser import app_server, open_app
    from playwright.sync_api import sync_playwright
    from tiny_app import app_env, one_torch_thread, tiny_models

    from diffuse_core.models.checkpoint import update_card
    from diffuse_core.studio.settings import DEFAULTS

    from diffuse_core.ui.launch import get_demo

    saved = dict(DEFAULTS)
    k_box = "#df-k input[type=number]"
    get_demo.cache_clear()                  # the page built from these cards, not one an earlier test built

    def pick(i, expected):
        page.locator("#df-gallery img").nth(i).click()
        page.wait_for_function(f"document.querySelector({k_box!r}).value === {expected!r}", timeout=30_000)

    try:
        with one_torch_thread():
            assets = tiny_models(tmp_path / "assets", 64, card={"anomaly_threshold": 0.0})
            tiny_models(assets / "ct", 64, card={"anomaly_threshold": 0.0, "data": {"modalities": ["ct"]}})
            update_card(assets / "ddpm", {"recommended_settings": {"k": 400, "steps": 25}}, by="calibrate")
            update_card(assets / "ct" / "ddpm", {"recommended_settings": {"k": 300, "steps": 25}}, by="calibrate")
            app_env(monkeypatch, tmp_path, assets, _ct_first_teaching_set(tmp_path / "teaching"))
            with app_server() as url, sync_playwright() as p:
                browser, page = open_app(p, url)
                try:
                    assert page.locator(k_box).input_value() == "400"
                    pick(0, "300")                                  # the CT case: the CT model's K
                    pick(1, "400")                                  # the FLAIR case: back to the MRI model's
                    box = page.locator(k_box)
                    box.fill("350")
                    box.press("Enter")
                    page.locator("#df-gallery img").nth(0).click()
                    page.wait_for_timeout(2_000)
                    assert page.locator(k_box).input_value() == "350"   # chosen by the user: kept
                finally:
                    browser.close()
    finally:
        DEFAULTS.clear()
        DEFAULTS.update(saved)
        get_demo.cache_clear()              # a later test builds its own
