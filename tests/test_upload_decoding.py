"""The app's uploads are decoded once, in a worker process that a cancel kills and a memory cap bounds
(:mod:`diffuse_core.studio.decoding`, issue 35): real files, real workers."""

from __future__ import annotations

import io
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import deflated_dicom, gzip_nifti_bomb, rle_dicom, rle_frame, _dicom_dataset, _ct  # noqa: E402
from input_cost import decode_workers  # noqa: E402

from diffuse_core.io.loaded import MIDDLE  # noqa: E402
from diffuse_core.studio import decoding  # noqa: E402
from diffuse_core.studio.guard import RunCancelled, RunGuard  # noqa: E402


def _wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture()
def heavy(tmp_path) -> Path:
    """A legal but slow upload: 0.5 MB of .nii.gz inflating to 512 MiB (512 x 512 x 1024 int16, the limits)."""
    path = tmp_path / "heavy.nii.gz"
    path.write_bytes(gzip_nifti_bomb((512, 512, 1024), np.int16))
    return path


@pytest.fixture()
def app_model(tmp_path_factory, monkeypatch):
    """A tiny DDPM as the app's model (load_upload_case puts slices on its grid)."""
    from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser

    assets = tmp_path_factory.mktemp("assets")
    save_denoiser(new_denoiser(DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32),
                                              attention_levels=(False, True), norm_num_groups=8,
                                              attention_head_dim=8), seed=0), assets / "ddpm",
                  card={"anomaly_threshold": 0.1})
    monkeypatch.setenv("DIFFUSE_ASSETS", str(assets))
    monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")
    return assets


def test_an_upload_is_decoded_once_for_its_probe_its_preview_and_its_run(tmp_path, app_model, monkeypatch):
    import nibabel as nib

    from diffuse_core.studio.uploads import inspect_upload, load_upload_case

    yy, xx = np.mgrid[:40, :48]
    brain = np.where(np.hypot(yy - 20, xx - 24) < 16, 100.0, 0.0).astype(np.float32)
    vol = np.stack([brain * (1 + 0.1 * z) for z in range(5)], axis=-1)
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    real, calls = decoding.load_in_worker, []

    def counted(src, slice_index, guard=None):
        calls.append(slice_index)
        return real(src, slice_index, guard)

    monkeypatch.setattr(decoding, "load_in_worker", counted)
    info = inspect_upload([str(path)])                          # the upload arrives: slice count and middle slice
    assert info["num_slices"] == 5 and info["slice"] == 2
    preview = load_upload_case([str(path)], None)               # the preview, before the slider has a value
    run = load_upload_case([str(path)], 2)                      # the run, at the slider's value
    assert calls == [MIDDLE], calls                             # one decode for all three
    assert preview.case.slice_index == run.case.slice_index == 2
    np.testing.assert_array_equal(preview.case.image, run.case.image)
    load_upload_case([str(path)], 3)                            # another slice: decoded once more
    load_upload_case([str(path)], 3)
    assert calls == [MIDDLE, 3]
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed: decoded again
    load_upload_case([str(path)], 3)
    assert calls == [MIDDLE, 3, 3]


def test_a_refusal_is_kept_too_and_names_the_uploaded_file(tmp_path, monkeypatch):
    from diffuse_core.studio.uploads import inspect_upload

    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflated_dicom(_dicom_dataset(_ct()), private_bytes=2**31))
    real, calls = decoding.load_in_worker, []
    monkeypatch.setattr(decoding, "load_in_worker", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(3):
        with pytest.raises(ValueError, match=r"2048 MiB in data element \(0009,1000\).*limit is 64 MiB") as err:
            inspect_upload([str(path)])
        assert str(tmp_path) not in str(err.value) and "\n" not in str(err.value)
    assert len(calls) == 1


def test_a_cancel_kills_the_decode_worker_at_once(heavy):
    guard = RunGuard(limit_s=60)
    cancelled_at = {}

    def cancel_when_decoding():
        if _wait_for(lambda: bool(decode_workers()), 10):
            time.sleep(0.3)
            cancelled_at["workers"] = decode_workers()
            cancelled_at["t"] = time.monotonic()
            guard.cancel()

    canceller = threading.Thread(target=cancel_when_decoding)
    canceller.start()
    with pytest.raises(RunCancelled):
        decoding.load_in_worker(str(heavy), MIDDLE, guard)
    returned = time.monotonic()
    canceller.join()
    assert cancelled_at.get("workers"), "no decode worker was seen"
    assert returned - cancelled_at["t"] < 1.0
    assert decode_workers() == []
    assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
               for pid in cancelled_at["workers"])


def test_a_decode_past_its_time_limit_is_refused_and_its_worker_ended(heavy, monkeypatch):
    monkeypatch.setattr(decoding, "LOAD_SECONDS", 0.3)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"decoding heavy.nii.gz took longer than 0.3 s, the limit per upload"):
        decoding.load_in_worker(str(heavy), MIDDLE)
    assert time.monotonic() - start < 2.0 and decode_workers() == []


def test_the_decode_worker_runs_under_a_memory_cap(tmp_path, monkeypatch):
    path = tmp_path / "big_frames.dcm"
    path.write_bytes(rle_dicom(rle_frame(4096), 2))             # one frame: 16 MP, 64 MiB as float32
    loaded = decoding.load_in_worker(str(path), 1)
    assert loaded.shape == (4096, 4096) and loaded.num_slices == 2
    monkeypatch.setattr(decoding, "LOAD_MEMORY_BYTES", 48 * 2**20)
    with pytest.raises(ValueError, match=r"big_frames.dcm needs more than 0.046875 GiB of memory to decode"):
        decoding.load_in_worker(str(path), 1)
    assert decode_workers() == []


def test_a_worker_answer_holds_nothing_but_an_image():
    evil = pickle.dumps(("ok", os.system))
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        decoding._AnswerUnpickler(io.BytesIO(evil)).load()
