"""The Volume tab in a real browser (headless Chromium through Playwright; issue 34, item 2): upload a small
synthetic NIfTI volume (SynthBrain slices), watch the slices compute, move the slider and see the three panels
change together, jump with the "most abnormal" button and with a click on the curve, hand the slice to Explore; and
Explore's upload box, where a second file replaces the first. Tiny untrained models: this checks the page, not the
model. Screenshots go to the test's temporary folder."""

from pathlib import Path

import numpy as np
import pytest

from browser import BROWSER_MARKS, app_server, open_app, wait_text
from tiny_app import app_env, one_torch_thread, tiny_models

R = 32

pytestmark = BROWSER_MARKS


def synth_volume(path: Path, n: int = 7, size: int = 96) -> Path:
    """A NIfTI volume of SynthBrain slices (one per seed; gliomas on odd slices), empty first and last slices."""
    import nibabel as nib

    from diffuse_core.data.synthbrain import generate_slice

    zs = [np.zeros((size, size), np.float32)]
    for z in range(1, n - 1):
        s = generate_slice(seed=20 + z, size=size, lesion_type="glioma" if z % 2 else None,
                           healthy=False if z % 2 else True)
        zs.append(((s.image[0] + 1.0) * 100.0).astype(np.float32))
    zs.append(np.zeros((size, size), np.float32))
    sp = 180.0 / size
    nib.save(nib.Nifti1Image(np.stack(zs, axis=-1), np.diag([sp, sp, 3.0, 1.0])), str(path))
    return path


@pytest.fixture()
def server(tmp_path, monkeypatch):
    with one_torch_thread():
        app_env(monkeypatch, tmp_path, tiny_models(tmp_path / "assets", R, card={"anomaly_threshold": 0.05}))
        with app_server() as url:
            yield url


def _src(page, elem_id: str) -> str:
    return page.evaluate(f"() => {{ const i = document.querySelector('#{elem_id} img'); return i ? i.src : ''; }}")


def _info(page) -> str:
    return page.inner_text("#df-vol-info")


def _wait_slice(page, z: int) -> None:
    page.wait_for_function(f"document.querySelector('#df-vol-info').innerText.includes('Slice {z} of')",
                           timeout=30_000)
    page.wait_for_timeout(600)


def test_scroll_a_volume_jump_to_the_worst_slice_and_open_it_in_explore(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from diffuse_core.studio.volume_session import VOLUMES

    vol = synth_volume(tmp_path / "synth_flair.nii.gz")
    with sync_playwright() as p:
        browser, page = open_app(p, server, ready=None)
        try:
            page.get_by_role("tab", name="Volume").click()
            page.locator("#df-vol-settings").click()                              # tiny K and steps
            page.wait_for_selector("#df-vol-k input[type=number]", state="visible", timeout=10_000)
            page.wait_for_timeout(500)
            for slider, value in (("#df-vol-k", "100"), ("#df-vol-steps", "3")):
                box = page.locator(f"{slider} input[type=number]")
                box.fill(value)
                box.press("Enter")
                page.wait_for_function(f"document.querySelector('{slider} input[type=range]').value === '{value}'",
                                       timeout=10_000)
            page.locator("#df-vol-upload input[type=file]").set_input_files(str(vol))
            page.wait_for_selector("#df-vol-slice", state="visible", timeout=60_000)
            page.wait_for_selector("#df-vol-input img", timeout=30_000)
            wait_text(page, "df-vol-progress", "All 5 brain", 180_000)
            (session,) = [VOLUMES.get(k) for k in list(VOLUMES._open)]
            assert session.store.complete
            assert (session.store.engine.settings["k"], session.store.engine.settings["steps"]) == (100, 3)
            page.wait_for_timeout(1_500)
            z0 = int(page.locator("#df-vol-slice input[type=number]").input_value())
            before = {e: _src(page, e) for e in ("df-vol-input", "df-vol-counterfactual", "df-vol-overlay")}
            page.screenshot(path=str(tmp_path / "volume_tab.png"), full_page=True)

            z1 = 1 if z0 != 1 else 2                                              # move the slider
            box = page.locator("#df-vol-slice input[type=number]")
            box.fill(str(z1))
            box.press("Enter")
            _wait_slice(page, z1)
            after = {e: _src(page, e) for e in before}
            assert all(after[e] and after[e] != before[e] for e in before), "a panel did not follow the slider"
            assert "computing" not in _info(page)

            worst = session.store.worst(1)[0]
            page.locator("#df-vol-worst").click()                                 # the most abnormal slice
            _wait_slice(page, worst)
            assert page.locator("#df-vol-slice input[type=number]").input_value() == str(worst)

            target = next(z for z in session.store.brain if z != worst)           # a click on the curve
            points = page.locator("#df-vol-curve .scatterlayer .trace").first.locator(".points path")
            points.nth(session.store.brain.index(target)).click(force=True)
            _wait_slice(page, target)
            assert page.locator("#df-vol-slice input[type=number]").input_value() == str(target)
            page.screenshot(path=str(tmp_path / "volume_tab_clicked.png"), full_page=True)

            page.locator("#df-vol-to-explore").click()                            # one click to Explore
            page.wait_for_function(f"document.body.innerText.includes('synth_flair.nii.gz, slice {target} of 7')",
                                   timeout=90_000)                        # Explore's preview of that slice
            assert page.locator("#df-run").is_visible() and page.locator("#df-upload").is_visible()
            assert page.locator("#df-source input[value=upload]").is_checked()
        finally:
            browser.close()
    assert (tmp_path / "volume_tab.png").stat().st_size > 20_000


def test_a_second_upload_in_explore_replaces_the_first(server, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    yy, xx = np.mgrid[:48, :48]
    for name, value in (("first_slice.png", 120), ("second_slice.png", 160)):
        Image.fromarray(np.where(np.hypot(yy - 24, xx - 24) < 18, value, 0).astype(np.uint8)).save(tmp_path / name)
    with sync_playwright() as p:
        browser, page = open_app(p, server, ready="#df-source")
        try:
            page.locator("#df-source label:has-text('Upload')").click()
            page.locator("#df-upload input[type=file]").set_input_files(str(tmp_path / "first_slice.png"))
            page.wait_for_function("document.body.innerText.includes('first_slice.png')", timeout=30_000)
            page.wait_for_timeout(1_500)
            page.locator("#df-upload input[type=file]").set_input_files(str(tmp_path / "second_slice.png"))
            page.wait_for_function("document.querySelector('#df-upload').innerText.includes('second_slice.png') && "
                                   "!document.querySelector('#df-upload').innerText.includes('first_slice.png')",
                                   timeout=30_000)
            page.wait_for_timeout(1_500)
            assert "first_slice.png" not in page.inner_text("#df-upload")
            assert "series-" not in page.inner_text("body")
        finally:
            browser.close()
