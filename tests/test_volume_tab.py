"""The Volume tab's callbacks without a browser (issue 34, item 2): upload a volume, scroll, the slice in view
computed first, the curve and the worst-slice jump, downloads in the input's space (NIfTI, + DICOM SEG for a series),
the hand-over to Explore, refusals that clear the tab. Tiny untrained models: this checks the tab's plumbing, not
the model."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gr = pytest.importorskip("gradio")

from diffuse_core.studio import volume_session  # noqa: E402
from diffuse_core.ui import volume  # noqa: E402

from tiny_app import one_torch_thread, tiny_models  # noqa: E402
from volume_data import write_series  # noqa: E402

R = 32
FAST = dict(k=100, steps=3, seed=0)


def synth_volume(path: Path, n: int = 6, size: int = 64, step: float = 2.0) -> Path:
    """A small NIfTI volume of SynthBrain slices (one slice per seed), background 0, a few slices empty."""
    import nibabel as nib

    from diffuse_core.data.synthbrain import generate_slice

    zs = []
    for z in range(n):
        if z in (0, n - 1):
            zs.append(np.zeros((size, size), np.float32))
            continue
        s = generate_slice(seed=10 + z, size=size, lesion_type="glioma" if z % 2 else None,
                           healthy=False if z % 2 else True)
        zs.append(((s.image[0] + 1.0) * 100.0).astype(np.float32))
    data = np.stack(zs, axis=-1)                                      # (x, y, z)
    sp = 180.0 / size
    nib.save(nib.Nifti1Image(data, np.diag([sp, sp, step, 1.0])), str(path))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("voltab")
    tiny_models(base / "assets", R, card={"anomaly_threshold": 0.05})
    return base


@pytest.fixture()
def studio(assets, monkeypatch, tmp_path):
    with one_torch_thread():
        monkeypatch.setenv("DIFFUSE_ASSETS", str(assets / "assets"))
        monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")
        monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(tmp_path / "no_sets"))
        yield assets
        volume_session.VOLUMES.close("local")


def opened(files, **kw):
    s = {**FAST, **kw}
    return volume.open_upload(files, s["k"], s["steps"], s["seed"], 0.6, "input")


def view_of(out, name):
    return out[3 + volume.VIEW_OUTPUTS.index(name)]


def session():
    return volume_session.VOLUMES.get("local")


def test_upload_scroll_curve_worst_download_and_explore(studio, tmp_path, monkeypatch):
    from diffuse_core.volumes.compute import VolumeEngine

    order = []
    run_slices = VolumeEngine.run_slices
    monkeypatch.setattr(VolumeEngine, "run_slices",
                        lambda self, cases, seed, callback=None: (order.append([c.slice_index for c in cases]),
                                                                  run_slices(self, cases, seed, callback))[1])
    path = synth_volume(tmp_path / "brain.nii.gz")
    out = opened([str(path)])
    slider = out[0]
    assert slider["visible"] and slider["maximum"] == 5 and slider["value"] in range(1, 5)
    s = session()
    assert s.store.brain == [1, 2, 3, 4] and s.batch_size == volume_session.CPU_VOLUME_BATCH
    first = s.store.brain[0]
    shown = volume.show_slice(first, 0.6, "input", None, None)          # the user scrolls down at once
    assert "Slice 1" in shown[volume.VIEW_OUTPUTS.index("slice_info")]
    assert s.wait(timeout=300), "the volume did not finish computing"
    assert s.error is None
    batch_of_first = next(i for i, zs in enumerate(order) if first in zs)
    assert batch_of_first <= 1, order           # the batch in flight at most, then the slice in view
    assert sorted(z for zs in order for z in zs) == [1, 2, 3, 4]         # each slice computed once

    pending = view_of(out, "counterfactual")
    after = volume.show_slice(first, 0.6, "counterfactual", None, None)
    names = volume.VIEW_OUTPUTS
    inp, cf, over = (after[names.index(n)] for n in ("input", "counterfactual", "overlay"))
    assert inp.shape == cf.shape == over.shape and inp.shape[2] == 3
    assert cf.mean() > 0 and not np.array_equal(cf, pending)             # a result, not the dimmed placeholder
    assert after[names.index("coronal")] is not None and after[names.index("sagittal")] is not None
    assert "All 4 brain slices computed" in after[names.index("progress")]
    fig = after[names.index("curve")]
    assert sorted(fig.data[0].x) == [1, 2, 3, 4]                         # every brain slice scored
    no_brain = volume.show_slice(0, 0.6, "input", None, None)
    assert "no brain" in no_brain[names.index("slice_info")]

    worst = s.store.worst(1)[0]
    assert volume.jump_to_worst(first if first != worst else worst + 1)["value"] in s.store.brain
    assert volume.curve_clicked("3:1712345")["value"] == 3

    files = volume.download()["value"]
    import nibabel as nib

    src = nib.load(str(path))
    names_out = sorted(Path(f).name for f in files)
    assert names_out == ["brain_anomaly.nii.gz", "brain_anomaly_mask.nii.gz", "brain_counterfactual.nii.gz"]
    for f in files:
        img = nib.load(f)
        assert img.shape == src.shape and np.allclose(img.affine, src.affine)
    cf_vol = nib.load(next(f for f in files if f.endswith("counterfactual.nii.gz"))).get_fdata()
    assert np.array_equal(cf_vol[..., 0], src.get_fdata()[..., 0])       # a slice not run stays the input

    tabs, source, ex_files, ex_slider, _, ex_window, held = volume.to_explore(3)
    assert tabs.selected == "explore" and source == "upload" and ex_files == [str(path)]
    assert ex_slider["maximum"] >= 3 and "value" not in ex_slider                      # the range first,
    assert volume.slice_to_explore(3) == 3                                             # then the slice
    assert ex_window["visible"] is False and held == ex_files
    assert volume.k_to_explore(volume.DEFAULTS["k"]) == {"__type__": "update"}        # an MRI volume: K as it is


def test_a_dicom_series_downloads_a_segmentation_too(studio, tmp_path):
    files = write_series(tmp_path / "series")
    opened([str(f) for f in files])
    s = session()
    assert s.wait(timeout=300) and s.error is None
    paths = volume.download()["value"]
    seg = next(p for p in paths if p.endswith("_anomaly_seg.dcm"))
    import pydicom

    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG"
    assert ds.StudyInstanceUID == pydicom.dcmread(files[0]).StudyInstanceUID


def test_download_is_refused_while_slices_compute(studio, tmp_path):
    path = synth_volume(tmp_path / "v.nii.gz")
    volume.open_upload([str(path)], 100, 3, 0, 0.6, "input")
    s = session()
    s.stop(wait=True)
    if not s.store.complete:
        with pytest.raises(gr.Error, match="still being computed"):
            volume.download()
    assert "Paused" in volume.progress_line(s) or s.store.complete


def test_a_refused_volume_clears_the_tab_and_says_why(studio, tmp_path):
    import nibabel as nib

    good = synth_volume(tmp_path / "v.nii.gz")
    opened([str(good)])
    assert session() is not None
    four_d = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 4, 3), np.float32), np.eye(4)), str(four_d))
    out = opened([str(four_d)])
    assert out[0]["visible"] is False and session() is None               # the previous volume is gone
    info = view_of(out, "slice_info")
    assert "4-D" in info and str(tmp_path) not in info
    assert all(view_of(out, n) is None for n in ("input", "counterfactual", "overlay", "curve"))
    png = tmp_path / "slice.png"
    from PIL import Image

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(png)
    assert "not a volume" in view_of(opened([str(png)]), "slice_info")


def test_the_curve_marks_slices_outside_the_learned_levels_and_never_calls_them_most_abnormal():
    from diffuse_core.ui.volume_pictures import score_curve

    scores = [None, 900.0, 300.0, 200.0, None]
    fig = score_curve(scores, [1, 2, 3, 4], 2, [1, 2], 3, [False, True, False, False, False])
    traces = {t.name: t for t in fig.data}
    assert list(traces["outside the levels the model learned"].x) == [1]
    assert list(traces["most abnormal"].x) == [2]                 # slice 1 is outside: not marked most abnormal
    plain = {t.name: t for t in score_curve(scores, [1, 2, 3, 4], 2, [1, 2], 3).data}
    assert "outside the levels the model learned" not in plain and list(plain["most abnormal"].x) == [1, 2]


def test_a_volume_runs_with_the_adapted_model_chosen_and_its_own_acat_pair(studio, tmp_path, monkeypatch):
    """The tab's "Healthy model" choice: an adapted model (a folder under the app's data folder, its ACAT pair beside
    it) is the one the volume's engine loads; the installed one otherwise; a name that is gone says so in one line."""
    import json
    import shutil

    from diffuse_core.studio import adapt_jobs

    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path / "data"))
    adapted = adapt_jobs.adapted_root() / "my_scanner"
    shutil.copytree(studio / "assets" / "ddpm", adapted)
    import torch

    from diffuse_core.models.checkpoint import save
    from diffuse_core.models.classifier import ClassifierConfig, new_classifier

    shutil.copytree(studio / "assets" / "autoencoder", adapted / "saliency" / "autoencoder")
    own = new_classifier(ClassifierConfig(resolution=R, widths=(8, 16)), seed=7)      # not the installed weights
    save(own, adapted / "saliency" / "classifier")
    card = json.loads((adapted / "model_card.json").read_text())
    (adapted / "model_card.json").write_text(json.dumps({**card, "anomaly_threshold": 0.33}))
    (adapted / "adaptation.json").write_text(json.dumps({"trained_on": 3}))
    path = synth_volume(tmp_path / "vol.nii.gz")
    s = FAST
    volume.open_upload([str(path)], s["k"], s["steps"], s["seed"], 0.6, "input", "my_scanner")
    engine = session().store.engine
    assert engine.settings["threshold"] == 0.33                     # the adapted card's, not the installed 0.05
    first = lambda model: next(model.parameters()).detach().cpu()            # noqa: E731
    assert torch.equal(first(engine.models.saliency.classifier), first(own))   # the adapted model's own ACAT pair
    volume_session.VOLUMES.close("local")
    volume.open_upload([str(path)], s["k"], s["steps"], s["seed"], 0.6, "input", "")
    assert session().store.engine.settings["threshold"] == 0.05
    out = volume.open_upload([str(path)], s["k"], s["steps"], s["seed"], 0.6, "input", "gone")
    assert "No adapted model &#x27;gone&#x27;" in view_of(out, "slice_info") and session() is None
