"""Volume runs and archives (issue 34, items 1-3): resumable after a kill with the same bytes as a run that never
stopped, nothing half-written looking complete, the scroller's store computing in the user's order, the batch
manifest and summary; and the real models on a few slices of a volume and of a DICOM series.

Most tests drive the run with :class:`ArithmeticEngine`, a deterministic stand-in for the network (its "counterfactual"
is the slice dimmed where it is bright, seeded noise added) so that the bookkeeping is tested in seconds; the tests
marked with the real models run the shipped ones with few steps."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from diffuse_core.core.anomaly import binarize
from diffuse_core.volumes.compute import SliceResult, VolumeEngine
from diffuse_core.volumes.run import PARTIAL, SUMMARY, iter_volume_run, run_volume
from volume_data import BRATS, write_nifti, write_series


class Killed(Exception):
    pass


class ArithmeticEngine(VolumeEngine):
    """A stand-in for the models with the engine's interface; ``fail_on`` (a call number) raises :class:`Killed`."""

    def __init__(self, fail_on: int | None = None, outside: set[int] = frozenset()):
        super().__init__(models=None, run_settings=None, mask_from="none", device="cpu",
                         settings={"k": 1, "steps": 1, "threshold": 0.2, "kind": "arithmetic"}, mri_reference=None)
        self.calls: list[list[int]] = []
        self.fail_on = fail_on
        self.outside = set(outside)       # slices it reports outside the levels the model learned

    size = 64
    channels = 1

    def run_slices(self, cases, seed, callback=None):
        self.calls.append([c.slice_index for c in cases])
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise Killed("killed")
        rng = np.random.default_rng(seed)
        out = []
        for case in cases:
            img = case.image
            cf = np.where(img > 0.5, img - 0.6, img) + rng.normal(0, 0.01, img.shape).astype(np.float32)
            cf = np.clip(np.where(case.brain_mask[None] > 0, cf, img), -1, 1).astype(np.float32)
            ano = np.abs(img - cf)[0] * case.brain_mask
            full = case.full_resolution(SimpleNamespace(counterfactual=cf, anomaly=ano, mask=(ano > 0.3).astype(np.uint8),
                                                        saliency=None))
            out.append(SliceResult(z=case.slice_index, counterfactual=full.counterfactual[0], image=full.image[0],
                                   anomaly=full.anomaly, redrawn=full.mask, brain=full.brain,
                                   flagged=binarize(full.anomaly, 0.2), peak=float(full.anomaly.max()),
                                   outside=("this slice lies below the levels the healthy model learned"
                                            if case.slice_index in self.outside else None)))
        return out


def _arrays(folder):
    return {name: np.asarray(nib.load(folder / name).dataobj) for name in
            ("counterfactual.nii.gz", "anomaly.nii.gz", "anomaly_mask.nii.gz", "redrawn.nii.gz")}


def test_a_killed_run_resumes_to_the_bytes_of_an_uninterrupted_one_and_never_looks_complete_before(tmp_path):
    src = write_nifti(tmp_path / "v.nii.gz")
    whole = run_volume(src, tmp_path / "whole", ArithmeticEngine(), batch_size=2, seed=3)
    assert whole["slices_processed"] == 6 and whole["slices_skipped_no_brain"] == 2

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_volume(src, out, ArithmeticEngine(fail_on=3), batch_size=2, seed=3)
    assert not (out / SUMMARY).exists(), "a killed run left volume.json: its outputs look complete"
    assert not (out / "anomaly.nii.gz").exists()
    assert len(list((out / PARTIAL).glob("batch_*.npz"))) == 2

    again = ArithmeticEngine()
    summary = run_volume(src, out, again, batch_size=2, seed=3)
    assert again.calls == [[5, 6]], "finished batches were computed again"
    assert summary["resumed_slices"] == 4 and not (out / PARTIAL).exists()
    a, b = _arrays(tmp_path / "whole"), _arrays(out)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    # a run whose outputs are complete is not redone
    third = ArithmeticEngine()
    assert run_volume(src, out, third, batch_size=2, seed=3)["anomaly_volume_ml"] == summary["anomaly_volume_ml"]
    assert third.calls == []
    # another seed is another run: the old batches are not mixed in
    fourth = ArithmeticEngine()
    run_volume(src, out, fourth, batch_size=2, seed=4)
    assert len(fourth.calls) == 3


def test_the_outputs_lie_on_the_input_grid_and_unprocessed_slices_keep_the_input(tmp_path):
    src = write_nifti(tmp_path / "v.nii.gz")
    summary = run_volume(src, tmp_path / "o", ArithmeticEngine(), slices="2-3", batch_size=4)
    assert summary["slices_processed"] == 2
    ref = nib.load(src)
    for name in ("counterfactual.nii.gz", "anomaly.nii.gz", "anomaly_mask.nii.gz", "redrawn.nii.gz"):
        img = nib.load(tmp_path / "o" / name)
        assert img.shape == ref.shape and np.allclose(img.affine, ref.affine), name
    cf = np.asarray(nib.load(tmp_path / "o" / "counterfactual.nii.gz").dataobj)
    data = np.asarray(ref.dataobj).astype(np.float32)
    assert np.array_equal(cf[:, :, [0, 1, 4, 5, 6, 7]], data[:, :, [0, 1, 4, 5, 6, 7]])
    assert not np.array_equal(cf[:, :, 2], data[:, :, 2])          # the blob was dimmed
    rows = (tmp_path / "o" / "slices.csv").read_text().splitlines()
    assert rows[0] == "z,processed,flagged_px,flagged_mm2,peak,outside_levels" and len(rows) == 9
    assert summary["anomaly_volume_ml"] > 0 and set(summary["top_slices"]) <= {2, 3}


def test_a_cancelled_run_stops_between_batches_and_keeps_them(tmp_path):
    from diffuse_core.volumes.run import VolumeRunCancelled

    src = write_nifti(tmp_path / "v.nii.gz")
    cancel = threading.Event()
    engine = ArithmeticEngine()
    it = iter_volume_run(src, tmp_path / "o", engine, batch_size=2, cancel=cancel)
    with pytest.raises(VolumeRunCancelled, match="cancelled after 2 of 6 slices"):
        for event in it:
            if event.phase == "slices" and event.done == 2:
                cancel.set()
    assert engine.calls == [[1, 2]] and not (tmp_path / "o" / SUMMARY).exists()


def test_the_store_computes_the_slice_in_view_first_and_keeps_each(tmp_path):
    from diffuse_core.volumes.read import read_volume
    from diffuse_core.volumes.store import VolumeResults

    vol = read_volume(write_nifti(tmp_path / "v.nii.gz"))
    engine = ArithmeticEngine()
    store = VolumeResults(vol, engine, batch_size=2, seed=3)
    assert store.brain == [1, 2, 3, 4, 5, 6] and store.progress == (0, 6)
    store.focus(6)
    work = store.compute()
    assert next(work) == [5, 6] and store.get(6) is not None and store.get(1) is None
    store.focus(1)
    assert next(work) == [1, 2]
    assert list(work) == [[3, 4]] and store.complete
    assert engine.calls == [[5, 6], [1, 2], [3, 4]]                # each batch once
    scores = store.scores()
    assert scores[0] is None and scores[7] is None and all(s is not None for s in scores[1:7])
    assert store.worst(1)[0] == int(np.nanargmax([s if s is not None else np.nan for s in scores]))
    # the same slice as the CLI's volume run with the same seed and batch size
    run_volume(vol.source, tmp_path / "o", ArithmeticEngine(), batch_size=2, seed=3)
    anomaly = np.asarray(nib.load(tmp_path / "o" / "anomaly.nii.gz").dataobj)
    assert np.allclose(vol.grid.to_input(np.stack([store.get(z).anomaly if store.get(z) else np.zeros(vol.shape[1:])
                                                   for z in range(8)]).astype(np.float32)), anomaly)


def test_batch_manifest_resumes_after_a_kill_and_reports_every_study(tmp_path, monkeypatch):
    from diffuse_core.volumes import batch

    archive = tmp_path / "archive"
    write_nifti(archive / "a.nii.gz" if (archive.mkdir() or True) else None)
    write_series(archive / "patient2" / "series1")
    (archive / "broken.nii.gz").write_bytes(b"not a nifti at all" * 30)
    engines = []

    def fake_engine_for(options, modality):
        engines.append(ArithmeticEngine(fail_on=options.get("fail_on")))
        return engines[-1]

    monkeypatch.setattr(batch, "engine_for", fake_engine_for)
    out = tmp_path / "out"
    with pytest.raises(Killed):                # not a study's error: a kill of the whole batch (KeyboardInterrupt)
        monkeypatch.setattr(batch, "run_study", _killing(batch.run_study, after=1))
        batch.run_batch_folder(archive, out, {}, batch_size=4)
    monkeypatch.undo()
    monkeypatch.setattr(batch, "engine_for", fake_engine_for)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["status"] for e in manifest["studies"].values()].count("done") == 1
    assert "pending" in (out / "summary.md").read_text()
    rows = batch.run_batch_folder(archive, out, {}, batch_size=4)
    by = {r["study"]: r for r in rows}
    assert set(by) == {"a", "broken", "patient2__series1"}
    assert by["a"]["status"] == by["patient2__series1"]["status"] == "done"
    assert by["broken"]["status"] == "failed" and "NIfTI" in by["broken"]["error"]
    assert (out / "studies" / "patient2__series1" / "anomaly_seg.dcm").is_file()
    table = (out / "summary.csv").read_text().splitlines()
    assert table[0].startswith("study,status,slices,slices_processed,anomaly_volume_ml,top_slices") and len(table) == 4
    assert 'src="studies/a/worst_slice.png"' in (out / "gallery.html").read_text()


def _killing(run_study, after: int):
    calls = []

    def wrapped(*args, **kwargs):
        if len(calls) == after:
            raise Killed("killed")
        calls.append(1)
        return run_study(*args, **kwargs)
    return wrapped


# ------------------------------------------------------------------------------------------------- the real models
@pytest.fixture(scope="module")
def engine():
    from diffuse_core.volumes.compute import load_engine

    return load_engine(device="cpu", k=40, steps=2, mask_from="gradcam")


def test_the_real_models_on_two_slices_of_a_dicom_series_write_nifti_and_seg(tmp_path, engine):
    import highdicom as hd

    write_series(tmp_path / "s")
    summary = run_volume(tmp_path / "s", tmp_path / "o", engine, slices="3-4", batch_size=2)
    assert summary["slices_processed"] == 2 and summary["kind"] == "dicom"
    seg = hd.seg.segread(tmp_path / "o" / "anomaly_seg.dcm")
    assert seg.NumberOfFrames == 8
    cf = nib.load(tmp_path / "o" / "counterfactual.nii.gz")
    assert cf.shape == (40, 48, 8) and np.isfinite(np.asarray(cf.dataobj)).all()


@pytest.mark.skipif(not BRATS.is_dir(), reason="the BraTS cases (../shared/real_cases/brats2015) are not here")
def test_a_batched_slice_equals_the_one_slice_path_where_no_noise_reaches(tmp_path, engine):
    """A slice run in a batch of two from the volume and alone from the one-slice reader: the same mask, and the same
    counterfactual wherever the walk is deterministic. With the two-chain walk the region outside m comes from a
    DDIM chain of its own (no noise, so no batch dependence); away from m's border (the full-size blend and the cubic
    upsampling reach a few pixels out) the two agree to float precision, at any number of threads."""
    import dataclasses

    import cv2

    from diffuse_core.cases import prepare_case
    from diffuse_core.volumes.read import read_volume
    from diffuse_core.volumes.prepare import slice_case

    two_chain = dataclasses.replace(engine, run_settings=dataclasses.replace(engine.run_settings, variant="two-chain"))
    case_dir = sorted(BRATS.iterdir())[0]
    vol = read_volume(case_dir)
    z = 80
    stacked = two_chain.run_slices([slice_case(vol, z, size=engine.size, mri_reference=engine.mri_reference),
                                    slice_case(vol, z + 1, size=engine.size, mri_reference=engine.mri_reference)],
                                   seed=0)
    single = two_chain.run_slices([prepare_case(case_dir, z, mri_reference=engine.mri_reference)], seed=0)
    a, b = stacked[0], single[0]
    assert np.array_equal(a.redrawn, b.redrawn) and a.redrawn.any()
    far = cv2.dilate(a.redrawn, np.ones((25, 25), np.uint8)) == 0
    outside = (a.brain > 0) & far
    assert outside.sum() > 1000
    assert np.abs(a.counterfactual - b.counterfactual)[outside].max() < 1e-4
    # Inside m the walk is random: another seed redraws it and leaves the far outside alone. (Batched or alone, the
    # first slice draws the same noise, a prefix of the batch's, so a and b need not differ there.)
    reseeded = two_chain.run_slices([prepare_case(case_dir, z, mri_reference=engine.mri_reference)], seed=1)[0]
    assert np.abs(reseeded.counterfactual - b.counterfactual)[outside].max() < 1e-4
    inside = a.redrawn > 0
    assert np.abs(reseeded.counterfactual - b.counterfactual)[inside].max() > 1e-3


def test_slices_outside_the_learned_levels_are_marked_and_ranked_after_the_others(tmp_path):
    """A slice the level check places outside the levels the model learned (its map may mark normal anatomy): marked
    in slices.csv and volume.json, never the worst slice or a top slice while others are flagged, and last in the
    scroller's "most abnormal" order."""
    import csv

    from diffuse_core.volumes.read import read_volume
    from diffuse_core.volumes.store import VolumeResults

    src = write_nifti(tmp_path / "v.nii.gz")
    plain = run_volume(src, tmp_path / "plain", ArithmeticEngine(), batch_size=2)
    worst_plain = plain["top_slices"][0]
    summary = run_volume(src, tmp_path / "o", ArithmeticEngine(outside={worst_plain}), batch_size=2)
    with open(tmp_path / "o" / "slices.csv") as f:
        marked = [int(r["z"]) for r in csv.DictReader(f) if r["outside_levels"] == "True"]
    assert marked == [worst_plain] and summary["outside_levels"] == [worst_plain]
    assert worst_plain not in summary["top_slices"] and summary["top_slices"]
    store = VolumeResults(read_volume(src), ArithmeticEngine(outside={worst_plain}), batch_size=2)
    for _ in store.compute():
        pass
    assert store.outside()[worst_plain] and sum(store.outside()) == 1
    assert store.worst(len(store.brain))[-1] == worst_plain and store.worst(1) != [worst_plain]
