"""The app's "Adapt the healthy model" panel in a real browser (headless Chromium through Playwright), as an educator
uses it (issue 31, item 5): pick a set of normal slices, give a budget, start, watch the progress bar, and either see
the new model's card and use the model in Explore, or cancel and see that nothing was written. Tiny untrained models
(tests/test_adapt_app.py) keep it short; each test is still over 20 s on a shared 2-core machine, hence ``slow``."""

import os
import socket
from pathlib import Path

import pytest

from test_adapt_app import ROOT, tiny_assets

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); the test never downloads one"),
]


@pytest.fixture()
def server(tmp_path, monkeypatch):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("DIFFUSE_ASSETS", str(tiny_assets(tmp_path / "assets")))
    monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(ROOT / "teaching_sets"))
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(tmp_path / "curated"))
    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")
    from diffuse_core.ui.launch import get_demo, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        get_demo().close()
        torch.set_num_threads(threads)


def _open_panel(p, server: str, minutes):
    """(browser, page): the Curate tab's adapt panel open, the teaching set chosen, the budget typed."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server)
    page.wait_for_selector("#df-gallery img", timeout=30_000)
    page.get_by_role("tab", name="Curate").click()
    page.locator("#df-adapt").click()                                         # open the accordion
    page.locator("#df-adapt-source input").click()
    page.locator("ul[role=listbox] li", has_text="5 normal slices").first.click()
    box = page.locator("#df-adapt-minutes input[type=number]")
    box.fill(str(minutes))
    box.press("Tab")
    return browser, page


def _progress(page) -> str:
    return page.inner_text("#df-adapt-progress")


def test_adapt_finishes_shows_its_card_and_explore_runs_the_adapted_model(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_panel(p, server, 0.02)
        try:
            page.locator("#df-adapt-start").click()
            page.wait_for_function("document.querySelector('#df-adapt-progress').innerText.includes('Adapting on 5')",
                                   timeout=30_000)
            page.wait_for_function("document.querySelector('#df-adapt-result').innerText.includes('Adapted model')",
                                   timeout=240_000)
            card = page.inner_text("#df-adapt-result")
            assert "Done in" in _progress(page)
            assert "4 trained on, 1 held out" in card and "before" in card and "after" in card, card
            page.locator("#df-adapt").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "adapt_done.png"), full_page=True)
            models = list((tmp_path / "data" / "models").iterdir())
            assert len(models) == 1 and (models[0] / "model.safetensors").is_file()

            page.get_by_role("tab", name="Explore").click()                       # the model is offered there
            page.locator("#df-gallery img").first.click()
            page.locator("#df-model input").click()
            page.locator("ul[role=listbox] li", has_text="Adapted:").first.click()
            page.keyboard.press("Escape")
            page.locator("#df-run").click()
            page.wait_for_function("document.body.innerText.includes('Model: adapted')", timeout=120_000)
            assert models[0].name in page.inner_text("body")
        finally:
            browser.close()


def test_cancel_stops_the_adaptation_and_writes_no_model(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_panel(p, server, 5)
        try:
            page.locator("#df-adapt-start").click()
            page.wait_for_function("document.querySelector('#df-adapt-progress').innerText.includes('fine-tuning')",
                                   timeout=120_000)
            page.locator("#df-adapt-cancel").click()
            page.wait_for_function("document.querySelector('#df-adapt-progress').innerText.includes('Stopped')",
                                   timeout=60_000)
            assert "no model was written" in _progress(page)
            root = tmp_path / "data" / "models"
            assert not root.exists() or not any(root.iterdir())
            page.get_by_role("tab", name="Explore").click()
            page.locator("#df-model input").click()
            assert page.locator("ul[role=listbox] li", has_text="Adapted:").count() == 0
        finally:
            browser.close()
