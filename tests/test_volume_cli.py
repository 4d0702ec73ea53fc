"""``diffuse-studio run --slices`` and ``diffuse-studio batch`` as a user runs them (issue 34), and ``batch`` on a Dask
LocalCluster of two workers."""

from __future__ import annotations

import json
import time

import pytest

from diffuse_core.cli import main
from test_volume_run import ArithmeticEngine
from volume_data import write_nifti, write_series

FAST = ["--mask-from", "gradcam", "--k", "40", "--steps", "2", "--device", "cpu"]


def test_run_slices_on_a_dicom_series_writes_volumes_and_a_seg(tmp_path, capsys):
    write_series(tmp_path / "series")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "series"), "--slices", "3-4", "--batch-size", "2", *FAST, "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out}: 2 of 8 slices (0 without brain skipped)") and "batches of 2" in line
    assert {p.name for p in out.iterdir()} == {"counterfactual.nii.gz", "anomaly.nii.gz", "anomaly_mask.nii.gz",
                                               "redrawn.nii.gz", "anomaly_seg.dcm", "slices.csv", "worst_slice.png",
                                               "volume.json"}
    summary = json.loads((out / "volume.json").read_text())
    assert summary["settings"]["k"] == 40 and summary["fingerprint"]["slices"] == [3, 4]


def test_run_without_slices_on_a_volume_says_how_to_run_all_of_it(tmp_path, capsys):
    write_series(tmp_path / "series")
    assert main(["run", str(tmp_path / "series"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pass a slice index (--slice Z, 0..7), or --slices all for the whole volume")
    assert main(["run", str(tmp_path / "series"), "--batch-size", "4", "--out", str(tmp_path / "o")]) == 2
    assert "--batch-size applies to volume runs" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "series"), "--slices", "2-99", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == \
        "diffuse-studio run: error: --slices '2-99': the volume has 8 slices (0..7)"


def test_a_volume_run_as_one_slice_keeps_its_output_and_adds_a_hint(tmp_path, capsys):
    path = write_nifti(tmp_path / "v.nii.gz")
    assert main(["run", str(path), "--slice", "4", *FAST, "--out", str(tmp_path / "o")]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'o'}: 4 network calls in ")
    assert "hint: " in cap.err and "holds 8 slices and this ran slice 4 only; --slices all" in cap.err
    assert (tmp_path / "o" / "result.json").is_file() and not (tmp_path / "o" / "volume.json").exists()


def test_batch_on_a_local_dask_cluster_of_two_workers(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster, get_worker

    from diffuse_core.volumes import batch

    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("a", "b", "c"):
        write_nifti(archive / f"{name}.nii.gz")
    write_series(archive / "d")
    workers = []

    class SlowEngine(ArithmeticEngine):
        def run_slices(self, cases, seed, callback=None):
            workers.append(get_worker().address)
            time.sleep(0.3)                               # long enough for both workers to take a study
            return super().run_slices(cases, seed, callback)

    monkeypatch.setattr(batch, "engine_for", lambda options, modality: SlowEngine())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows = batch.run_batch_folder(archive, tmp_path / "out", {}, slices="2-3", batch_size=2, client=client)
    assert [r["status"] for r in rows] == ["done"] * 4 and [r["slices_processed"] for r in rows] == [2] * 4
    assert len(set(workers)) == 2, workers
    assert (tmp_path / "out" / "studies" / "d" / "anomaly_seg.dcm").is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(e["status"] == "done" for e in manifest["studies"].values())
    # a rerun finds everything done and runs nothing
    workers.clear()
    rows = batch.run_batch_folder(archive, tmp_path / "out", {}, slices="2-3", batch_size=2)
    assert workers == [] and len(rows) == 4


@pytest.mark.slow
def test_batch_cli_with_the_real_models_on_two_local_worker_processes(tmp_path, capsys):
    archive = tmp_path / "archive"
    archive.mkdir()
    write_nifti(archive / "a.nii.gz")
    write_series(archive / "b")
    assert main(["batch", str(archive), "--out", str(tmp_path / "out"), "--slices", "3-4", "--scheduler", "local:2",
                 *FAST]) == 0
    assert "2 of 2 studies done, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "out" / "summary.md").read_text().count("| done |") == 2
