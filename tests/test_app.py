"""The Gradio app, driven the way a user and a script drive it: every control, every input type, errors as messages,
and the programmatic API over HTTP with gradio_client. Tiny untrained models in temporary folders keep it fast.

The callbacks are called where they live: the tabs in :mod:`diffuse_core.ui`, the services in
:mod:`diffuse_core.studio`; ``app.py`` is only the Space's entry point."""

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

gr = pytest.importorskip("gradio")
from PIL import Image  # noqa: E402

from diffuse_core.data import curation  # noqa: E402
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser  # noqa: E402
from diffuse_core.studio import library, model_store, session, settings, uploads  # noqa: E402
from diffuse_core.ui import curate, explore, healthy, launch, layout, outline_practice, pictures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

R = 32
TINY = DenoiserConfig(channels=1, resolution=R, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)
FAST = dict(k=100, percentile=90, steps=3, seed=0)


# ---------------------------------------------------------------------------------------------------------- fixtures


def _brain(h, w, lesion=True, value=110, lesion_value=250):
    yy, xx = np.mgrid[:h, :w]
    img = np.where(np.hypot((yy - h / 2) / (0.42 * h), (xx - w / 2) / (0.42 * w)) < 1, value, 0).astype(np.float32)
    truth = np.zeros((h, w), np.uint8)
    if lesion:
        r0, c0 = int(0.3 * h), int(0.3 * w)
        img[r0:r0 + h // 6, c0:c0 + w // 6] = lesion_value
        truth[r0:r0 + h // 6, c0:c0 + w // 6] = 1
    return img, truth


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the CPU is shared); the previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Assets with a tiny DDPM and tiny ACAT models, an assets folder with the DDPM only, a teaching set."""
    from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder
    from diffuse_core.models.classifier import ClassifierConfig, new_classifier
    from diffuse_core.models.checkpoint import save

    base = tmp_path_factory.mktemp("app")
    full, ddpm_only, empty = base / "assets_full", base / "assets_ddpm", base / "assets_empty"
    empty.mkdir()
    for folder in (full, ddpm_only):
        save_denoiser(new_denoiser(TINY, seed=0), folder / "ddpm",
                      card={"anomaly_threshold": 0.1, "data": {"modalities": "flair"}})  # older cards: a string
    save(new_autoencoder(AutoencoderConfig(resolution=R, widths=(8, 16), latent_channels=4)), full / "autoencoder")
    save(new_classifier(ClassifierConfig(resolution=R, widths=(8, 16))), full / "classifier")

    teach = base / "teaching"
    (teach / "demo").mkdir(parents=True)
    cases = []
    for cid, lesion in (("glioma1", True), ("healthy1", False)):
        img, truth = _brain(40, 40, lesion)
        norm = np.where(img > 0, img / 125.0 - 1.0, -1.0).astype(np.float32)
        curation._nifti(teach / "demo" / f"{cid}_image.nii.gz", norm, (1.0, 1.0))
        curation._nifti(teach / "demo" / f"{cid}_mask.nii.gz", truth, (1.0, 1.0))
        Image.fromarray(((norm + 1) * 127.5).astype(np.uint8)).save(teach / "demo" / f"{cid}.png")
        cases.append({"id": cid, "modality": "flair", "lesion_type": "glioma" if lesion else "none",
                      "location": "frontal", "difficulty": "easy", "note": "test case", "seed": 1,
                      "healthy": not lesion, "image": f"{cid}_image.nii.gz", "mask": f"{cid}_mask.nii.gz",
                      "preview": f"{cid}.png"})
    (teach / "demo" / "manifest.json").write_text(json.dumps({"name": "demo", "cases": cases}))

    files = base / "files"
    files.mkdir()
    img, truth = _brain(48, 40)
    Image.fromarray(img.astype(np.uint8)).save(files / "slice.png")
    Image.fromarray(truth * 255).save(files / "truth.png")
    mask = np.zeros_like(truth)
    mask[10:26, 8:24] = 255
    Image.fromarray(mask).save(files / "mask.png")
    Image.fromarray(img.astype(np.uint8)).save(files / "slice.jpg", quality=95)
    Image.fromarray(img.astype(np.uint8)).save(files / "slice.tif")
    (files / "notes.txt").write_text("not an image")
    return {"full": full, "ddpm_only": ddpm_only, "empty": empty, "teaching": teach, "files": files,
            "curated": base / "curated"}


@pytest.fixture()
def studio(env, monkeypatch):
    """The app's environment: the tiny models, the test teaching set, a curated root, the CPU."""
    monkeypatch.setenv("DIFFUSE_ASSETS", str(env["full"]))
    monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(env["teaching"]))
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(env["curated"]))
    monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")
    return env


def run_explore(source="gallery", key=None, files=None, slice_index=0, channel=None, window=None, gt=None,
                mask_from="acat", mask_file=None, drawing=None, opacity=0.6, **overrides):
    s = {**FAST, **overrides}
    return list(explore.explore_run(source, key, files, slice_index, channel, window, gt, mask_from, mask_file,
                                    drawing, s["k"], s["percentile"], s["steps"], s["seed"], opacity))


def out(frame, name):
    return frame[explore.EXPLORE_OUTPUTS.index(name)]


def is_skip(v):
    return isinstance(v, dict) and v.get("__type__") == "update" and len(v) == 1


def box(h, w, r0, r1, c0, c1):
    layer = np.zeros((h, w, 4), np.uint8)
    layer[r0:r1, c0:c1] = (255, 0, 0, 255)
    return {"background": None, "layers": [layer], "composite": None}


# ---------------------------------------------------------------------------------------------------------- tests


def test_defaults_live_in_one_dict(studio):
    import app

    defaults = settings.DEFAULTS
    assert defaults["k"] == 500 and defaults["percentile"] == 90 and defaults["steps"] == 50
    assert isinstance(app.demo, gr.Blocks) and callable(app.main) and callable(app.launch)
    assert app.demo is launch.get_demo()                                  # one demo per process


def test_recommended_settings_from_the_model_card_become_the_defaults(studio, env, tmp_path, monkeypatch):
    import shutil

    from diffuse_core.evaluation.cards import update_card

    assets = tmp_path / "assets"
    shutil.copytree(env["full"], assets)
    update_card(assets / "ddpm", {"recommended_settings": {"k": 250, "percentile": 85.0, "steps": 2000}}, by="evaluate")
    monkeypatch.setenv("DIFFUSE_ASSETS", str(assets))
    d = model_store.apply_recommended_defaults({"k": 500, "percentile": 90.0, "steps": 50})
    assert d == {"k": 250, "percentile": 85.0, "steps": 50}   # 2000 steps is out of range: the default stays


def test_app_file_loads_by_path_the_way_a_space_runs_it(studio):
    """A Space runs app.py as a file: it loads with importlib, without being registered in sys.modules."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diffuse_studio_app_test", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.demo, gr.Blocks) and callable(module.launch)


def test_cli_app_command_launches_the_ui_module(monkeypatch):
    """`diffuse-studio app --host H --port P` imports diffuse_core.ui.launch (not app.py) and launches with them."""
    from diffuse_core import cli

    calls = []
    monkeypatch.setattr(launch, "launch", lambda **kwargs: calls.append(kwargs))
    assert cli.main(["app", "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert calls == [{"host": "0.0.0.0", "port": 8123, "share": False}]


def test_gallery_lists_teaching_cases_with_modality_and_lesion_captions(studio):
    entries = library.list_library()
    assert [e.key for e in entries] == ["teaching/demo/glioma1", "teaching/demo/healthy1"]
    assert "FLAIR" in entries[0].caption and "glioma" in entries[0].caption and "healthy" in entries[1].caption
    thumbnail = pictures.thumbnail(entries[0].image, entries[0].truth)
    assert thumbnail.dtype == np.uint8 and thumbnail.shape[2] == 3
    picture, info, quiz_canvas, mask_canvas = explore.preview_case("gallery", "teaching/demo/glioma1", None, 0, None,
                                                               None, None)
    assert picture.shape == (256, 256, 3) and "glioma" in info and quiz_canvas["background"].shape == (256, 256, 3)


def test_gallery_case_streams_every_step_then_all_results(studio):
    frames = run_explore(key="teaching/demo/glioma1")
    steps = [f for f in frames if not is_skip(out(f, "live_noisy")) and out(f, "live_noisy") is not None
             and out(f, "run_state") is not None and is_skip(out(f, "run_state"))]
    assert len(steps) == 2 * FAST["steps"]                          # inversion + sampling, one frame each
    assert all(out(f, "live_clean").shape == (256, 256, 3) for f in steps)
    assert "step 3/3" in out(steps[-1], "progress")
    final = frames[-1]
    for name in ("out_input", "out_saliency", "out_mask", "out_cf", "out_overlay"):
        assert out(final, name).shape == (256, 256, 3), name
    before, after = out(final, "out_slider")
    assert before.shape == after.shape == (256, 256, 3)
    summary = out(final, "out_summary")
    assert summary["mask_from"] == "acat" and summary["k"] == 100 and summary["steps"] == 3
    assert 0 <= summary["dice"] <= 1 and 0 <= summary["iou"] <= 1 and summary["threshold"] == 0.1
    assert "Dice vs ground truth" in out(final, "out_metrics")
    chart = out(final, "out_chart")
    assert [t.name for t in chart.data] == ["inside the mask", "outside the mask (brain)"]
    assert len(chart.data[0].y) == 2 * FAST["steps"] and all(v >= 0 for v in chart.data[0].y)


def test_stop_ends_the_run_with_the_stopped_message_even_if_gradios_cancel_is_late(studio):
    class Request:                       # what gradio passes: only the session hash matters here
        session_hash = "trainee-1"

    other = type("Other", (), {"session_hash": "trainee-2"})()
    s = dict(FAST, steps=6)
    run = explore.explore_run("gallery", "teaching/demo/glioma1", None, 0, None, None, None, "acat", None, None,
                          s["k"], s["percentile"], s["steps"], s["seed"], 0.6, Request())
    frames = [next(run), next(run), next(run)]                   # "computing the mask", mask ready, first step
    explore.request_stop(other)                                      # another user's Stop leaves this run alone
    frames.append(next(run))
    assert "Stopped" not in out(frames[-1], "progress")
    assert "Stopped" in explore.request_stop(Request())
    rest = list(run)
    assert len(rest) == 1 and "Stopped." in out(rest[0], "progress")   # ended itself, before the result
    assert all(is_skip(out(f, "run_state")) for f in frames[1:] + rest)
    final = run_explore(key="teaching/demo/glioma1")[-1]        # the flag does not stick to later runs
    assert out(final, "run_state") is not None and not is_skip(out(final, "run_state"))
    assert session.LIVE_RUNS.running_now() == 0


def test_opacity_slider_redraws_the_overlay_without_a_run(studio):
    state = out(run_explore(key="teaching/demo/glioma1", mask_from="gradcam")[-1], "run_state")
    clear, opaque = explore.render_overlay(state, 0.0), explore.render_overlay(state, 1.0)
    assert clear.shape == opaque.shape == (256, 256, 3)
    assert np.abs(clear.astype(int) - opaque.astype(int)).sum() > 0 or state["anomaly"].max() == 0
    assert is_skip(explore.render_overlay(None, 0.5))


def test_png_upload_with_mask_file_ground_truth_and_settings(studio, env):
    f = env["files"]
    frames = run_explore("upload", files=[str(f / "slice.png")], gt=str(f / "truth.png"), mask_from="file",
                     mask_file=str(f / "mask.png"), k=50, steps=2, seed=7, percentile=80)
    s = out(frames[-1], "out_summary")
    assert (s["k"], s["steps"], s["seed"], s["percentile"], s["mask_from"]) == (50, 2, 7, 80.0, "file")
    assert "dice" in s and s["network_calls"] == 4
    state = out(frames[-1], "run_state")
    assert state["geometry"].original_shape == (48, 40)


@pytest.mark.parametrize("name", ["slice.jpg", "slice.tif"])
def test_jpeg_and_tiff_uploads_with_a_drawn_mask(studio, env, name):
    frames = run_explore("upload", files=[str(env["files"] / name)], mask_from="draw",
                     drawing=box(256, 256, 60, 140, 60, 140))
    s = out(frames[-1], "out_summary")
    assert s["mask_from"] == "draw" and 0 < s["mask_fraction_of_brain"] < 1 and "dice" not in s


def test_nifti_volume_upload_offers_a_slice_slider(studio, tmp_path):
    import nibabel as nib

    vol = np.zeros((40, 40, 5), np.float32)
    for z in range(5):
        img, _ = _brain(40, 40, lesion=z == 4)
        vol[:, :, z] = img.T * (1 + 0.1 * z)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    info = uploads.inspect_upload([str(path)])
    assert info["num_slices"] == 5 and info["slice"] == 2 and info["ct"] is False
    a = uploads.load_upload_case([str(path)], 0)
    b = uploads.load_upload_case([str(path)], 4)
    assert a.case.slice_index == 0 and b.case.slice_index == 4 and "slice 4 of 5" in b.title
    assert not np.allclose(a.case.image, b.case.image)
    frames = run_explore("upload", files=[str(path)], slice_index=4, mask_from="gradient")
    assert out(frames[-1], "run_state")["slice"] == 4
    with pytest.raises(gr.Error, match="out of range"):
        run_explore("upload", files=[str(path)], slice_index=9, mask_from="gradient")


def test_multichannel_nifti_lets_the_trainee_pick_the_channel(studio, tmp_path):
    import nibabel as nib

    img, _ = _brain(40, 40)
    vol = np.stack([img.T[:, :, None], (img.T * 0 + (img.T > 0) * 50)[:, :, None]], axis=-1)   # (X, Y, 1, 2)
    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), str(path))
    info = uploads.inspect_upload([str(path)])
    assert info["channels"] == ["ch0", "ch1"]
    first, second = uploads.load_upload_case([str(path)], 0, "ch0"), uploads.load_upload_case([str(path)], 0, "ch1")
    assert not np.allclose(first.case.image, second.case.image)
    with pytest.raises(ValueError, match="not in this file"):
        uploads.load_upload_case([str(path)], 0, "t2")


def _ct_dicom(path, hu, z=0.0, instance=1):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.4", "CT"
    ds.InstanceNumber, ds.ImagePositionPatient = instance, [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.PixelData = np.ascontiguousarray((hu + 1024).astype(np.uint16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _head_hu(n=48):
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2, xx - n / 2)
    hu = np.full((n, n), -1000.0)
    hu[r < 0.45 * n] = 1000.0                       # skull
    hu[r < 0.38 * n] = 35.0                         # brain
    hu[(r < 0.38 * n) & (yy < n / 2) & (xx < n / 2)] = 70.0   # a bleed
    return hu


def test_ct_dicom_upload_uses_the_window_preset(studio, tmp_path):
    path = tmp_path / "ct.dcm"
    _ct_dicom(path, _head_hu())
    info = uploads.inspect_upload([str(path)])
    assert info["ct"] is True and info["num_slices"] == 1
    brain = uploads.load_upload_case([str(path)], 0, None, "brain")
    subdural = uploads.load_upload_case([str(path)], 0, None, "subdural")
    assert brain.case.modality == "ct" and not np.allclose(brain.case.image, subdural.case.image)
    frames = run_explore("upload", files=[str(path)], window="stroke", mask_from="acat")
    assert out(frames[-1], "out_summary")["modality"] == "ct"
    assert "trained on FLAIR slices only" in str(out(frames[-1], "out_metrics"))   # a FLAIR model on CT says so
    assert "Out of domain" not in str(out(run_explore(key="teaching/demo/glioma1")[-1], "out_metrics"))
    with pytest.raises(gr.Error, match="Unknown CT window"):
        run_explore("upload", files=[str(path)], window="bone")


def test_a_teaching_set_file_uploaded_is_read_as_in_the_gallery(studio, tmp_path):
    """A shipped teaching CT slice is stored windowed already (no Hounsfield values): uploaded (the app works on a
    temporary copy) it is still recognised by its bytes and read as CT, as the gallery reads it."""
    import shutil

    from diffuse_core.data.teaching import PACKAGE_ROOT

    path = tmp_path / "case13_ct_stroke_image.nii.gz"
    shutil.copy(PACKAGE_ROOT / "default" / path.name, path)
    loaded = uploads.load_upload_case([str(path)], 0)
    assert loaded.case.modality == "ct" and loaded.title.endswith("— CT")
    assert any("teaching-set case default/case13_ct_stroke" in n for n in loaded.notes)


def test_dicom_series_as_several_files_becomes_a_volume(studio, tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.dcm"
        _ct_dicom(p, _head_hu(), z=float(i), instance=i + 1)
        paths.append(str(p))
    info = uploads.inspect_upload(paths)
    assert info["num_slices"] == 3 and info["ct"] is True
    assert uploads.load_upload_case(paths, 2).case.slice_index == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(source="upload", files=None), "No file uploaded"),
    (dict(source="gallery", key=None), "No case selected"),
    (dict(source="gallery", key="teaching/demo/nope"), "no case"),
    (dict(source="gallery", key="teaching/demo/glioma1", k=0), "K must lie"),
    (dict(source="gallery", key="teaching/demo/glioma1", k=2000), "K must lie"),
    (dict(source="gallery", key="teaching/demo/glioma1", steps=0), "steps"),
    (dict(source="gallery", key="teaching/demo/glioma1", percentile=100), "percentile"),
    (dict(source="gallery", key="teaching/demo/glioma1", seed=1.5), "seed"),
    (dict(source="gallery", key="teaching/demo/glioma1", mask_from="draw"), "drawn mask is empty"),
    (dict(source="gallery", key="teaching/demo/glioma1", mask_from="file"), "no mask file"),
    (dict(source="gallery", key="teaching/demo/glioma1", mask_from="magic"), "Unknown mask source"),
])
def test_bad_settings_become_a_clear_message(studio, kwargs, message):
    with pytest.raises(gr.Error, match=message):
        run_explore(**kwargs)


def test_bad_files_become_a_clear_message(studio, env, monkeypatch):
    with pytest.raises(gr.Error, match="not an image"):
        run_explore("upload", files=[str(env["files"] / "notes.txt")], mask_from="gradient")
    monkeypatch.setitem(settings.DEFAULTS, "max_upload_mb", 1e-5)
    with pytest.raises(gr.Error, match="upload limit"):
        run_explore("upload", files=[str(env["files"] / "slice.png")], mask_from="gradient")
    picture, info, _, _ = explore.preview_case("upload", None, [str(env["files"] / "slice.png")], 0, None, None, None)
    assert picture is None and "upload limit" in info


def test_missing_weights_say_what_to_do(studio, env, monkeypatch):
    monkeypatch.setenv("DIFFUSE_ASSETS", str(env["empty"]))
    assert "No healthy diffusion model" in layout.status_markdown()
    with pytest.raises(gr.Error, match="not installed.*diffuse-studio train ddpm"):
        run_explore(key="teaching/demo/glioma1", mask_from="draw", drawing=box(256, 256, 60, 140, 60, 140))
    monkeypatch.setenv("DIFFUSE_ASSETS", str(env["ddpm_only"]))
    assert "ACAT is unavailable" in layout.status_markdown()
    with pytest.raises(gr.Error, match="ACAT is unavailable"):
        run_explore(key="teaching/demo/glioma1", mask_from="acat")
    frames = run_explore(key="teaching/demo/glioma1", mask_from="draw", drawing=box(256, 256, 60, 140, 60, 140))
    assert out(frames[-1], "out_summary")["mask_from"] == "draw"
    *_, (_, md) = healthy.healthy_check("teaching/demo/healthy1", "gallery", None, None, 0, None, None, None, 100, 90, 2,
                                        0)
    assert "whole brain (ACAT is unavailable)" in md


def test_healthy_check_shows_the_mean_change_inside_the_brain(studio):
    *progress, (pair, md) = healthy.healthy_check("teaching/demo/healthy1", "gallery", None, None, 0, None, None, None,
                                                  FAST["k"], FAST["percentile"], FAST["steps"], FAST["seed"])
    assert len(progress) == 2 * FAST["steps"] and "step 1/" in progress[0][1]    # a line per sampler step first
    assert pair[0].shape == pair[1].shape == (256, 256, 3)
    assert "Mean absolute change inside the brain" in md and "healthy case" in md
    *_, (_, md2) = healthy.healthy_check(healthy.CURRENT_CASE, "gallery", "teaching/demo/glioma1", None, 0, None, None,
                                         None, FAST["k"], FAST["percentile"], FAST["steps"], FAST["seed"])
    assert "not marked healthy" in md2


def test_quiz_scores_the_drawing_against_truth_and_model(studio):
    key = "teaching/demo/glioma1"
    lc = library.load_library_case(key)
    rows, cols = np.nonzero(lc.case.ground_truth)
    s = 256 / R
    drawing = box(256, 256, int(rows.min() * s), int((rows.max() + 1) * s), int(cols.min() * s),
                  int((cols.max() + 1) * s))
    picture, md = outline_practice.quiz_check(drawing, None, "gallery", key, None, 0, None, None, None)
    assert picture.shape == (256, 256, 3) and "ground truth" in md and "Run the model" in md
    dice = float(md.split("**")[1])
    assert dice > 0.8
    state = out(run_explore(key=key)[-1], "run_state")
    _, md = outline_practice.quiz_check(drawing, state, "gallery", key, None, 0, None, None, None)
    assert "model's anomaly map" in md
    with pytest.raises(gr.Error, match="Draw where"):
        outline_practice.quiz_check(None, state, "gallery", key, None, 0, None, None, None)


def test_curate_batch_review_save_and_zip(studio, env):
    gen = list(curate.curate_generate(["teaching/demo/glioma1", "teaching/demo/healthy1"],
                                   [str(env["files"] / "slice.png")], FAST["k"], FAST["steps"], FAST["percentile"],
                                   FAST["seed"], []))
    status, gallery, items = gen[-1]
    assert "3 generated" in status and len(items) == len(gallery) == 3
    decide_accept, decide_reject = curate.review_decide("accepted"), curate.review_decide("rejected")
    gallery, items, _, _, counts = decide_accept(items, 0, "classic glioma")
    gallery, items, _, _, counts = decide_reject(items, 1, "")
    assert "1 accepted, 1 rejected, 1 pending" in counts
    gallery, items, pair, md, _ = curate.review_rerun(items, 2, 60, 2, 85, 3)
    assert items[2].runs == 2 and items[2].status == "pending" and "K=60" in md
    gallery, items, _, _, _ = decide_accept(items, 2, "uploaded")
    with pytest.raises(gr.Error, match="contains"):
        curate.curate_save(items, "../escape")
    msg, archive, sets, gallery, items = curate.curate_save(items, "Week 1")
    assert "Saved 2 case(s)" in msg and sets["value"] == "Week 1"
    manifest = curation.load_manifest("Week 1", env["curated"])
    assert [e["note"] for e in manifest["cases"]] == ["classic glioma", "uploaded"]
    assert manifest["cases"][1]["settings"]["k"] == 60 and manifest["cases"][0]["model_version"].startswith("ddpm")
    from PIL import Image as PILImage
    assert PILImage.open(env["curated"] / "Week 1" / manifest["cases"][1]["files"]["original_png"]).size == (40, 48)
    with zipfile.ZipFile(archive) as z:
        assert "Week 1/manifest.json" in z.namelist() and len(z.namelist()) > 10
    with pytest.raises(gr.Error, match="No accepted, unsaved"):
        curate.curate_save(items, "Week 1")                                    # nothing saved twice
    assert Path(curate.curate_zip("Week 1")).is_file()
    keys = [e.key for e in library.list_library()]                             # saved cases join the gallery
    assert "curated/Week 1/glioma1" in keys
    lc = library.load_library_case("curated/Week 1/glioma1")
    assert lc.case.ground_truth is not None and lc.note == "classic glioma"


def test_send_to_curate_adds_the_explore_result(studio):
    state = out(run_explore(key="teaching/demo/glioma1", mask_from="gradcam")[-1], "run_state")
    gallery, items = curate.send_to_curate(state, [])
    assert len(items) == 1 and items[0].status == "pending" and "○" in gallery[0][1]
    with pytest.raises(gr.Error, match="Run the model"):
        curate.send_to_curate(None, [])


# ---------------------------------------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gradio_client_streams_frames_and_returns_the_results(studio, env):
    from gradio_client import Client, handle_file

    port = _free_port()
    launch.launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert [p["parameter_name"] for p in endpoints["/counterfactual"]["parameters"]] == [
            "file", "case_key", "k", "steps", "percentile", "seed", "slice_index", "window", "mask_file"]
        assert [r["label"] for r in endpoints["/counterfactual"]["returns"]] == [
            "frame", "status", "counterfactual", "overlay", "mask", "summary"]
        assert not endpoints["/status"]["parameters"] and not endpoints["/cases"]["parameters"]
        status = client.predict(api_name="/status")
        assert status["ddpm"]["available"] and status["defaults"]["k"] == 500
        cases = client.predict(api_name="/cases")
        assert [c["key"] for c in cases][:2] == ["teaching/demo/glioma1", "teaching/demo/healthy1"]
        job = client.submit(handle_file(str(env["files"] / "slice.png")), "", 100, 3, 90, 0, -1, "",
                            handle_file(str(env["files"] / "mask.png")), api_name="/counterfactual")
        final = job.result(timeout=120)
        outputs = job.outputs()
        frames = [o for o in outputs if o[0] is not None]
        assert len(frames) == 6 and all(Path(o[0]).is_file() for o in frames)       # 3 inversion + 3 sampling
        cf, overlay, mask, summary = final[2:]
        assert Path(cf).is_file() and Path(overlay).is_file() and Path(mask).is_file()
        assert summary["k"] == 100 and summary["steps"] == 3 and summary["mask_from"] == "file"
        by_key = client.predict(None, "teaching/demo/glioma1", 100, 2, 90, 0, -1, "", None, api_name="/counterfactual")
        assert by_key[5]["mask_from"] == "acat" and "dice" in by_key[5]
        with pytest.raises(Exception, match="K must lie"):
            client.predict(None, "teaching/demo/glioma1", 0, 2, 90, 0, -1, "", None, api_name="/counterfactual")
    finally:
        launch.get_demo().close()


def test_no_patient_identifier_leaves_through_a_saved_teaching_set(studio, tmp_path):
    """A DICOM whose file name and header carry a name, an ID, a birth date and an institution, uploaded and saved
    through the whole Curate flow: none of them (nor the server path of the upload) is in any saved file or the zip."""
    import zipfile

    from pydicom import dcmread

    from diffuse_core.studio.review import save_accepted
    from diffuse_core.ui.curate import curate_generate

    path = tmp_path / "DOE^JANE_123456_19620314.dcm"
    _ct_dicom(path, _head_hu())
    ds = dcmread(path)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "123456", "19620314"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.save_as(str(path), enforce_file_format=True)
    *_, (msg, _, items) = list(curate_generate([], [str(path)], 100, 2, 90.0, 0, []))
    assert len(items) == 1, msg
    items[0].status = "accepted"
    set_name, saved, archive, _ = save_accepted(items, "phi-check")
    secrets = ["DOE", "JANE", "123456", "19620314", "Elsewhere", str(tmp_path), path.name]
    folder = curation.default_root() / set_name
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for text in secrets:
                assert text.encode() not in data, (text, f)
                assert text not in f.name, (text, f)
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            assert not any(text in name for text in secrets), name
            data = z.read(name)
            if name.endswith(".gz"):
                import gzip
                data = gzip.decompress(data)
            for text in secrets:
                assert text.encode() not in data, (text, name)
    assert saved and saved[0].startswith("upload-ct")
    # the DICOM export: de-identified series that a viewer opens, the same pixels as the NIfTI files
    from diffuse_core.io.orientation import read_display_slice
    from diffuse_core.ui.curate import curate_dicom_zip

    import nibabel as nib

    dicom_zip = curate_dicom_zip(set_name)
    with zipfile.ZipFile(dicom_zip) as z:
        names = z.namelist()
        assert sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".dcm")) == [
            "01_original.dcm", "02_counterfactual.dcm", "03_anomaly.dcm"]
        for name in names:
            assert not any(text in name for text in secrets), name
            data = z.read(name)
            for text in secrets:
                assert text.encode() not in data, (text, name)
        import io

        studies = set()
        for name in (n for n in names if n.endswith(".dcm")):
            ds = dcmread(io.BytesIO(z.read(name)))
            studies.add(ds.StudyInstanceUID)
            assert ds.PatientIdentityRemoved == "YES" and "dicognito" in ds.DeidentificationMethod
            assert str(ds.PatientName).startswith("Teaching^upload-ct") and "InstitutionName" not in ds
            role = name.rsplit("_", 1)[1][:-4]
            nifti, _ = read_display_slice(nib.load(str(folder / saved[0] / f"{role}.nii.gz")))
            assert ds.pixel_array.shape == nifti.shape[-2:]
            low = float(ds.RescaleIntercept)
            assert np.abs(ds.pixel_array * float(ds.RescaleSlope) + low - nifti.reshape(ds.pixel_array.shape)).max() \
                < 1e-3
        assert len(studies) == 1


def test_a_percentile_only_rerun_reuses_the_inversion_and_says_so(studio):
    """Teaching v2, item 3: moving the percentile does not change the inversion; the rerun makes half the calls."""
    from diffuse_core.studio.runs import INVERSION_CACHE

    INVERSION_CACHE._items.clear()
    key = library.list_library()[0].key
    first = out(run_explore(key=key, percentile=90.0)[-1], "out_summary")
    last = run_explore(key=key, percentile=80.0)[-1]
    second = out(last, "out_summary")
    assert not first["inversion_reused"] and second["inversion_reused"]
    assert second["network_calls"] * 2 == first["network_calls"]
    assert "inversion was reused" in out(last, "progress")


def test_the_percentile_slider_previews_the_runs_mask_before_any_run(studio):
    """Teaching v2, item 3: moving the percentile shows the mask at once (the saliency map is computed once per
    slice and kept), and it is the mask the run then uses; the run reuses the kept map. The percentile is the
    paper's region ("acat-paper"); "acat" redraws the region the model card's rule fits to the lesion."""
    from diffuse_core.studio.saliency_cache import SALIENCY_CACHE, mask_preview

    SALIENCY_CACHE._items.clear()
    key = library.list_library()[0].key
    rgb, line = explore.preview_mask("gallery", key, None, 0, None, None, None, "acat-paper", 80)
    assert rgb.ndim == 3 and "80th percentile" in line and len(SALIENCY_CACHE) == 1
    hits = SALIENCY_CACHE.hits
    rgb95, line95 = explore.preview_mask("gallery", key, None, 0, None, None, None, "acat-paper", 95)
    assert SALIENCY_CACHE.hits == hits + 1 and not np.array_equal(rgb, rgb95)
    lc = library.load_library_case(key)
    m80, _ = mask_preview(lc, "acat", 80, "percentile")
    m95, _ = mask_preview(lc, "acat", 95, "percentile")
    assert m95.sum() < m80.sum() and not (m95 & ~m80.astype(bool)).any()         # nested
    state = out(run_explore(key=key, percentile=80.0, mask_from="acat-paper")[-1], "run_state")
    assert np.array_equal(state["mask"], m80)
    assert SALIENCY_CACHE.hits >= hits + 4                                         # the run took the kept map
    # the card's rule: the percentile slider does not move it, and the run redraws the region it previews
    from diffuse_core.models.checkpoint import update_card

    ddpm = studio["full"] / "ddpm"
    update_card(ddpm, mask_rule={"kind": "weighted", "level": 0.2, "max_share": 0.5}, by="calibrate")
    try:
        card_a, line_a = explore.preview_mask("gallery", key, None, 0, None, None, None, "acat", 80)
        card_b, _ = explore.preview_mask("gallery", key, None, 0, None, None, None, "acat", 95)
        assert np.array_equal(card_a, card_b) and "by the model" in line_a
        m_card, _ = mask_preview(lc, "acat", 80)
        state = out(run_explore(key=key, percentile=95.0)[-1], "run_state")
        assert np.array_equal(state["mask"], m_card)
    finally:
        update_card(ddpm, mask_rule=None, by="calibrate")
    skipped = explore.preview_mask("gallery", key, None, 0, None, None, None, "draw", 80)
    assert all(is_skip(v) for v in skipped)                                        # a drawn mask: nothing to preview


def test_window_level_and_zoom_apply_to_every_result_panel(studio):
    """Teaching v2, item 4: one window/level and one zoom for all panels, redrawn without a model call; a click
    centres the zoom where it fell."""
    from types import SimpleNamespace

    from diffuse_core.studio.display import view, view_box, windowed

    key = library.list_library()[0].key
    frames = run_explore(key=key)
    state = out(frames[-1], "run_state")
    plain = explore.render_view(state, 0.6, 0.0, 2.0, 1.0, None)
    names = explore.RESULT_PANELS
    assert np.array_equal(plain[names.index("out_input")], out(frames[-1], "out_input"))
    narrow = explore.render_view(state, 0.6, 0.0, 0.6, 1.0, None)
    for name in ("out_input", "out_cf", "out_overlay"):
        assert not np.array_equal(plain[names.index(name)], narrow[names.index(name)])   # every panel follows
    d = state["display"]
    brain = d.brain.astype(bool)
    wide, tight = view(d, 0.0, 2.0), view(d, float(np.median(d.image[0][brain])), 0.6)
    for a, b in ((wide.image, tight.image), (wide.counterfactual, tight.counterfactual)):
        assert b[0][brain].std() > a[0][brain].std()                    # more contrast in the brain, both images
    assert np.array_equal(windowed(d.image, 0.0, 2.0), np.clip(d.image, -1, 1))
    zoomed = view(d, 0.0, 2.0, 2.0, (0.0, 0.0))
    side = d.image.shape[-1]
    assert np.array_equal(zoomed.image, d.image[..., :side // 2, :side // 2])          # the top-left quarter
    assert zoomed.vmax == d.vmax and zoomed.anomaly.shape == (side // 2, side // 2)
    assert view_box(side, 4.0, (1.0, 1.0)) == (side - side // 4, side - side // 4, side // 4)  # kept inside
    panels = explore.render_view(state, 0.6, 0.0, 2.0, 2.0, (0.0, 0.0))
    assert all(p is not None for p in panels[:5])
    # a click in the middle of a 2x view of the top-left quarter centres the zoom at (1/4, 1/4) of the slice
    shown = panels[names.index("out_input")].shape[0]
    focus, zoom = explore.set_focus(state, 2.0, (0.0, 0.0), SimpleNamespace(index=[shown / 2, shown / 2]))
    assert zoom == 2.0 and np.allclose(focus, (0.25, 0.25), atol=0.02)
    assert explore.window_preset("As loaded") == (0.0, 2.0)
    assert all(is_skip(v) for v in explore.render_view(None, 0.6, 0.0, 2.0, 1.0, None))


def test_the_k_slider_follows_the_model_of_the_case_picked(monkeypatch):
    """The K slider shows the K a run will use: at the MRI model's default, picking a CT case moves it to the CT
    model's own (k_for_modality's rule), picking an MRI case again moves it back; a K the user chose stays. On the
    shipped models and teaching set (the CT card chose K 500, the FLAIR card 700)."""
    from diffuse_core.studio.library import list_library
    from diffuse_core.ui import explore_tab

    for name in ("DIFFUSE_ASSETS", "DIFFUSE_TEACHING_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(settings.DEFAULTS, "k", 700)          # as the shipped FLAIR card sets it when the app starts
    ct_k = model_store.k_for_modality(700, "ct")
    assert ct_k != 700                                          # the shipped CT card chose its own K
    ct = next(e.key for e in list_library() if e.modality.lower() == "ct")
    mri = next(e.key for e in list_library() if e.modality.lower() != "ct")
    assert explore_tab.k_for_gallery_case(ct, 700) == ct_k
    assert explore_tab.k_for_gallery_case(mri, ct_k) == 700
    assert is_skip(explore_tab.k_for_gallery_case(mri, 700)) and is_skip(explore_tab.k_for_gallery_case(ct, ct_k))
    assert is_skip(explore_tab.k_for_gallery_case(ct, 650))   # chosen by the user: kept (and run as chosen)
    assert model_store.k_for_modality(650, "ct") == 650
    assert is_skip(explore_tab.k_for_gallery_case("teaching/none/none", 700))
    assert explore_tab.k_for_case(700, "ct") == ct_k and explore_tab.k_for_case(ct_k, "mri") == 700
