"""Explore's upload box and failed runs (issue 34, "Bad input"): a second upload replaces the first unless it adds
files of the same DICOM series (it used to be added to the first, and the run failed on a "series" of two unrelated
files), and a run that fails empties the results it would have replaced instead of leaving them on screen. The
browser side: tests/test_app_browser_volume.py."""

import os

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gr = pytest.importorskip("gradio")

from diffuse_core.studio.uploads import replacing_upload  # noqa: E402
from diffuse_core.ui import explore  # noqa: E402

from tiny_app import one_torch_thread, tiny_models  # noqa: E402
from volume_data import write_series  # noqa: E402

R = 32


@pytest.fixture()
def studio(tmp_path, monkeypatch):
    tiny_models(tmp_path / "assets", R, card={"anomaly_threshold": 0.05})
    with one_torch_thread():
        monkeypatch.setenv("DIFFUSE_ASSETS", str(tmp_path / "assets"))
        monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")
        yield tmp_path


def test_a_second_upload_replaces_the_first_unless_it_adds_files_of_the_same_series(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    assert replacing_upload([str(a)], [str(a), str(b)]) == [str(b)]
    assert replacing_upload([], [str(a), str(b)]) == [str(a), str(b)]       # one upload of two files: as given
    series = [str(p) for p in write_series(tmp_path / "s1")]
    assert replacing_upload(series[:4], series) == series                  # a series added in two goes
    other = [str(p) for p in write_series(tmp_path / "s2")]
    assert replacing_upload(series, series + other) == other               # another series replaces it
    assert replacing_upload([str(a)], [str(a)] + series) == series


def test_a_failed_explore_run_empties_the_results_it_replaced(studio, tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[:40, :40]
    img = np.where(np.hypot(yy - 20, xx - 20) < 16, 120, 0).astype(np.uint8)
    good = tmp_path / "slice.png"
    Image.fromarray(img).save(good)
    args = dict(source="upload", gallery_key=None, slice_index=0, channel=None, window=None, gt_file=None,
                mask_from="acat", mask_file=None, drawing=None, k=100, percentile=90, steps=3, seed=0, opacity=0.6)
    frames = list(explore.explore_run(files=[str(good)], **args))
    last = frames[-1]
    assert last[explore.EXPLORE_OUTPUTS.index("out_cf")] is not None
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    seen = []
    with pytest.raises(gr.Error):
        for frame in explore.explore_run(files=[str(bad)], **args):
            seen.append(frame)
    cleared = seen[-1]
    for name in ("out_input", "out_cf", "out_overlay", "out_slider", "run_state", "out_summary"):
        assert cleared[explore.EXPLORE_OUTPUTS.index(name)] is None, name
    assert "Run failed" in cleared[explore.EXPLORE_OUTPUTS.index("progress")]
