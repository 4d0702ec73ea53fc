"""The app's "Adapt the healthy model" panel in a real browser (headless Chromium through Playwright), as an educator
uses it (issue 31, item 5): pick a set of normal slices, give a budget, start, watch the progress bar, and either see
the new model's card and use the model in Explore, or cancel and see that nothing was written. Tiny untrained models
(tests/test_adapt_app.py) keep it short; each test is still over 20 s on a shared 2-core machine, hence ``slow``."""

from contextlib import contextmanager

import pytest

from browser import BROWSER_MARKS, app_server, open_app, wait_text
from test_adapt_app import adapt_env

pytestmark = BROWSER_MARKS


@pytest.fixture()
def server(tmp_path, monkeypatch):
    with adapt_env(tmp_path, monkeypatch), app_server() as url:
        yield url


@contextmanager
def _adapting(server: str, minutes):
    """The Curate tab's adapt panel open, the teaching set chosen, the budget typed and Start pressed: yields the page,
    closes the browser after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = open_app(p, server)
        try:
            page.get_by_role("tab", name="Curate").click()
            page.locator("#df-adapt").click()                                     # open the accordion
            page.locator("#df-adapt-source input").click()
            page.locator("ul[role=listbox] li", has_text="5 normal slices").first.click()
            box = page.locator("#df-adapt-minutes input[type=number]")
            box.fill(str(minutes))
            box.press("Tab")
            page.locator("#df-adapt-start").click()
            yield page
        finally:
            browser.close()


def _progress(page) -> str:
    return page.inner_text("#df-adapt-progress")


def test_adapt_finishes_shows_its_card_and_explore_runs_the_adapted_model(server, tmp_path):
    with _adapting(server, 0.02) as page:
        wait_text(page, "df-adapt-progress", "Adapting on 5", 30_000)
        wait_text(page, "df-adapt-result", "Adapted model", 240_000)
        card = page.inner_text("#df-adapt-result")
        assert "Done in" in _progress(page)
        assert "4 trained on, 1 held out" in card and "before" in card and "after" in card, card
        page.locator("#df-adapt").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "adapt_done.png"), full_page=True)
        models = list((tmp_path / "data" / "models").iterdir())
        assert len(models) == 1 and (models[0] / "model.safetensors").is_file()

        page.get_by_role("tab", name="Explore").click()                           # the model is offered there
        page.locator("#df-gallery img").first.click()
        page.locator("#df-model input").click()
        page.locator("ul[role=listbox] li", has_text="Adapted:").first.click()
        page.keyboard.press("Escape")
        page.locator("#df-run").click()
        page.wait_for_function("document.body.innerText.includes('Model: adapted')", timeout=120_000)
        assert models[0].name in page.inner_text("body")

        page.get_by_role("tab", name="Volume").click()                            # and in the Volume tab's settings
        page.locator("#df-vol-settings").click()
        page.locator("#df-vol-model input").click()
        assert page.locator("ul[role=listbox] li", has_text="Adapted:").count() == 1


def test_cancel_stops_the_adaptation_and_writes_no_model(server, tmp_path):
    with _adapting(server, 5) as page:
        wait_text(page, "df-adapt-progress", "fine-tuning", 120_000)
        page.locator("#df-adapt-cancel").click()
        wait_text(page, "df-adapt-progress", "Stopped", 60_000)
        assert "no model was written" in _progress(page)
        root = tmp_path / "data" / "models"
        assert not root.exists() or not any(root.iterdir())
        page.get_by_role("tab", name="Explore").click()
        page.locator("#df-model input").click()
        assert page.locator("ul[role=listbox] li", has_text="Adapted:").count() == 0


def test_the_verdict_is_calibrated_on_an_educators_normal_slices_and_offered_in_explore(server, tmp_path):
    """The other task of the panel: no training, the verdict's threshold chosen on a curated set's normal slices, its
    card in words, and the calibrated model offered in Explore."""
    from playwright.sync_api import sync_playwright

    from test_adapt_app import curated_normals

    curated_normals(8, "ward-normals")
    with sync_playwright() as p:
        browser, page = open_app(p, server)
        try:
            page.get_by_role("tab", name="Curate").click()
            page.locator("#df-adapt").click()
            page.locator("#df-adapt-source input").click()
            page.locator("ul[role=listbox] li", has_text="ward-normals (8 normal slices").first.click()
            page.locator("#df-adapt-kind").get_by_text("Calibrate the verdict").click()
            page.locator("#df-adapt-start").click()
            wait_text(page, "df-adapt-progress", "Calibrating the verdict on 8", 30_000)
            wait_text(page, "df-adapt-result", "Verdict calibrated", 240_000)
            card = page.inner_text("#df-adapt-result")
            assert "chosen on 5 normal slices" in card and "held-out case(s)" in card, card
            page.locator("#df-adapt").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "verdict_done.png"), full_page=True)
            models = list((tmp_path / "data" / "models").iterdir())
            assert len(models) == 1 and (models[0] / "verdict_calibration.json").is_file()
            assert not (models[0] / "adaptation.json").exists()
            page.get_by_role("tab", name="Explore").click()
            page.locator("#df-model input").click()
            assert page.locator("ul[role=listbox] li", has_text="Verdict calibrated:").count() == 1
        finally:
            browser.close()
