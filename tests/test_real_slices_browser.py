"""Issue 36's "done when", in the browser with the shipped models, on real BraTS FLAIR slices (read from
../shared, never copied into the project; skipped where absent): a trainee uploads a tumour and reads "abnormal" with
the overlay; uploads a normal slice at a level the healthy model learned and reads "looks normal" with nothing
flagged; uploads a normal slice from below those levels and reads that no call is made, and why."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from browser import BROWSER_MARKS, app_server, open_app, upload_in_explore  # noqa: E402

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"
pytestmark = BROWSER_MARKS + [pytest.mark.skipif(not (BRATS.is_dir() and any(BRATS.glob("brats_*"))),
                                                 reason="real BraTS cases not available")]

SLICES = {   # case, axial index, what the app should say
    "tumour": ("brats_2013_pat0001_1", 73, "Looks abnormal"),
    "normal": ("brats_2013_pat0001_1", 107, "Looks normal"),
    "low_normal": ("brats_2013_pat0003_1", 35, "No normal / abnormal call for this slice"),
}


def _slice_file(tmp_path: Path, case: str, z: int) -> Path:
    """One FLAIR slice of a BraTS case as a 2-D NIfTI in ``tmp_path`` (the upload a trainee would make)."""
    import nibabel as nib

    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.orientation import display_nifti

    raw, _, _ = load_brats_case(BRATS / case, modalities=("flair",)).slice(z)     # display-oriented
    path = tmp_path / f"{case}_z{z}.nii.gz"
    nib.save(display_nifti(np.asarray(raw, np.float32).squeeze()), str(path))    # shown back exactly as given
    return path


@pytest.fixture(scope="module")
def server():
    with app_server() as url:
        yield url


@pytest.mark.parametrize("kind", list(SLICES))
def test_a_real_slice_reads_as_the_app_should(server, tmp_path, kind):
    from playwright.sync_api import sync_playwright

    case, z, expected = SLICES[kind]
    upload = _slice_file(tmp_path, case, z)
    with sync_playwright() as p:
        browser, page = open_app(p, server)
        try:
            upload_in_explore(page, upload)
            page.wait_for_function("!document.querySelector('#df-run').disabled", timeout=60_000)
            page.wait_for_timeout(1_500)
            page.locator("#df-run").click()
            page.wait_for_function("document.querySelector('#df-verdict') && "
                                   "document.querySelector('#df-verdict').innerText.trim().length > 0",
                                   timeout=240_000)
            verdict = page.inner_text("#df-verdict")
            text = page.inner_text("body")
        finally:
            browser.close()
    assert expected in verdict, verdict
    if kind == "normal":                                              # nothing flagged (the table says so)
        assert "none: the slice is called normal" in text or "0.0 % of the brain" in text, text[-1500:]
    if kind == "low_normal":
        assert "below the levels the healthy model learned" in verdict and "Looks abnormal" not in verdict
