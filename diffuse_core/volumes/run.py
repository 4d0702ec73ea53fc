"""A volume run: every brain slice of a scan (or a ``--slices`` range) in batches, resumable, written in the input's
space. What ``diffuse-studio run FILE --slices all`` and each study of ``diffuse-studio batch`` do.

:func:`iter_volume_run` yields :class:`VolumeProgress` events and returns the summary (``volume.json``). The slices
to process are cut into fixed batches (``batch_size`` consecutive slices, in order) and each batch's noise is seeded
with ``seed + its first slice index``, so a slice's result depends only on the input, the settings, the seed and the
batch size: a run killed and started again (it reuses what ``.partial/`` holds) gives the same bytes as one that
never stopped. Each finished batch is kept in ``OUT/.partial/batch_<z>.npz`` (written under a temporary name, then
renamed); ``.partial/run.json`` holds the run's fingerprint (the input's size and time stamps, the slices, the
settings), and batches of another fingerprint are thrown away. Cancel: set ``cancel`` (a ``threading.Event``); the
run stops after the batch in flight with :class:`VolumeRunCancelled`, keeping what is done.

Outputs in ``OUT`` (display slices laid back on the input's grid, :mod:`.grid`):

* ``counterfactual.nii.gz`` float32, the healthy counterfactual in the input's intensities
  (:func:`~diffuse_core.volumes.write.counterfactual_in_input_units`; unprocessed slices are the input itself);
* ``anomaly.nii.gz`` float32, the anomaly map (|x0 - x0_hat| on the model's [-1, 1] scale, as the card's threshold);
* ``anomaly_mask.nii.gz`` uint8, the anomaly map above the threshold; ``redrawn.nii.gz`` uint8, the Dif-fuse mask m;
* ``anomaly_seg.dcm`` (DICOM inputs): the anomaly mask as a DICOM Segmentation referencing the series (:mod:`.seg`);
* ``slices.csv`` (one row per slice: processed, flagged area, peak), ``worst_slice.png`` (overlay of the slice with
  the largest flagged area) and, last, ``volume.json``, the summary: its presence marks the outputs complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffuse_core.volumes.compute import SliceResult, VolumeEngine
from diffuse_core.volumes.prepare import brain_slices, parse_slices, slice_case, volume_modality_hint
from diffuse_core.volumes.read import Volume, read_volume
from diffuse_core.volumes.write import atomic_write_bytes, atomic_write_json, counterfactual_in_input_units, write_nifti

__all__ = ["PARTIAL", "SUMMARY", "VolumeProgress", "VolumeRunCancelled", "input_fingerprint", "iter_volume_run",
           "read_summary", "run_volume", "batches_of"]

PARTIAL = ".partial"
SUMMARY = "volume.json"
OUTPUTS = ("counterfactual.nii.gz", "anomaly.nii.gz", "anomaly_mask.nii.gz", "redrawn.nii.gz", "anomaly_seg.dcm",
           "slices.csv", "worst_slice.png")


class VolumeRunCancelled(Exception):
    """The run was cancelled; finished batches are kept in ``.partial/`` for the next run."""


@dataclass
class VolumeProgress:
    """``phase`` "read" | "slices" | "write"; ``done`` of ``total`` units of that phase."""

    phase: str
    done: int
    total: int
    detail: str = ""


def input_fingerprint(path: Path) -> str:
    """A digest of the input's files' names, sizes and modification times (a folder: its files, not recursive)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def batches_of(zs: list[int], batch_size: int) -> list[list[int]]:
    """``zs`` cut into consecutive batches of ``batch_size``."""
    return [zs[i:i + batch_size] for i in range(0, len(zs), batch_size)]


def read_summary(out_dir) -> dict | None:
    """The ``volume.json`` of a finished run in ``out_dir``, else None."""
    try:
        return json.loads((Path(out_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _batch_file(partial: Path, zs: list[int]) -> Path:
    return partial / f"batch_{zs[0]:05d}_{len(zs):03d}.npz"


def _save_batch(path: Path, volume: Volume, results: list[SliceResult]) -> None:
    from io import BytesIO

    arrays = {}
    for r in results:
        raw = volume.slices[r.z, 0]
        arrays[f"cf_{r.z}"] = counterfactual_in_input_units(raw, r.image, r.counterfactual, r.brain)
        arrays[f"anomaly_{r.z}"] = r.anomaly.astype(np.float32)
        arrays[f"flagged_{r.z}"] = r.flagged.astype(np.uint8)
        arrays[f"redrawn_{r.z}"] = r.redrawn.astype(np.uint8)
        arrays[f"peak_{r.z}"] = np.float32(r.peak)
        arrays[f"outside_{r.z}"] = np.uint8(r.outside is not None)
    buf = BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _assemble(volume: Volume, done: dict[int, Path], key: str, dtype) -> np.ndarray:
    """One output volume (Z, H, W) from the batch files; slices not processed: the input (cf) or zeros."""
    out = np.array(volume.slices[:, 0], dtype=dtype) if key == "cf" else np.zeros(volume.shape, dtype)
    for path in sorted(set(done.values())):
        with np.load(path) as z:
            for name in z.files:
                if name.startswith(key + "_"):
                    out[int(name.split("_")[1])] = z[name]
    return out


def _outside(done: dict[int, Path]) -> set[int]:
    """The slices the batch files mark as outside the levels the model learned (none in files from before the mark)."""
    out = set()
    for path in sorted(set(done.values())):
        with np.load(path) as z:
            out |= {int(name.split("_")[1]) for name in z.files if name.startswith("outside_") and int(z[name])}
    return out


def iter_volume_run(source, out_dir, engine, *, slices: str | None = "all", seed: int = 0,
                    batch_size: int | None = None, cancel: threading.Event | None = None,
                    max_bytes: int | None = None, window=None) -> Iterator[VolumeProgress]:
    """Run ``engine`` over the brain slices of ``source`` into ``out_dir`` (see the module docstring); returns the
    summary dict (the generator's return value). ``engine``: a :class:`~diffuse_core.volumes.compute.VolumeEngine`,
    or a function of the volume's modality ("mri" / "ct") returning one. ``batch_size`` None: 8 on a CPU, from the
    free memory on a GPU (:func:`~diffuse_core.volumes.throughput.auto_batch_size`). ``window``: a CT window."""
    from diffuse_core.io.loaded import DEFAULT_MAX_BYTES

    from diffuse_core.volumes.throughput import auto_batch_size

    source, out = Path(source), Path(out_dir)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    yield VolumeProgress("read", 0, 1, str(source))
    start = time.perf_counter()
    volume = read_volume(source, DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
    if not isinstance(engine, VolumeEngine):
        engine = engine(volume_modality_hint(volume))
    if batch_size is None:
        batch_size = auto_batch_size(engine.device, engine.size, engine.channels, engine.settings.get("precision", ""))
    asked = parse_slices(slices, volume.num_slices)
    todo = brain_slices(volume, asked)
    if not todo:
        raise ValueError(f"{source}: no slice with brain in {'it' if slices in (None, 'all') else f'slices {slices}'}"
                         f" (each slice's brain covers under 1 % of it)")
    fingerprint = {"input": str(source.resolve()), "files": input_fingerprint(source), "slices": todo,
                   "settings": engine.settings, "seed": int(seed), "batch_size": int(batch_size)}
    finished = read_summary(out)
    if finished is not None and finished.get("fingerprint") == fingerprint:
        yield VolumeProgress("slices", len(todo), len(todo), "already complete")
        return finished
    partial = out / PARTIAL
    stale = (out / SUMMARY)
    if stale.exists():
        stale.unlink()                          # older outputs no longer claim to be complete
    known = None
    try:
        known = json.loads((partial / "run.json").read_text())
    except (OSError, ValueError):
        pass
    if known != json.loads(json.dumps(fingerprint)):
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(partial / "run.json", fingerprint)
    batches = batches_of(todo, batch_size)
    done: dict[int, Path] = {}
    resumed = 0
    for zs in batches:
        if _batch_file(partial, zs).is_file():
            done.update({z: _batch_file(partial, zs) for z in zs})
            resumed += len(zs)
    yield VolumeProgress("slices", len(done), len(todo), f"{resumed} resumed" if resumed else "")
    size, channels = engine.size, engine.channels
    for zs in batches:
        if zs[0] in done:
            continue
        if cancel is not None and cancel.is_set():
            raise VolumeRunCancelled(f"cancelled after {len(done)} of {len(todo)} slices; run again to resume")
        cases = [slice_case(volume, z, size=size, channels=channels, window=window, mri_reference=engine.mri_reference)
                 for z in zs]
        results = engine.run_slices(cases, seed=int(seed) + zs[0])
        _save_batch(_batch_file(partial, zs), volume, results)
        done.update({z: _batch_file(partial, zs) for z in zs})
        yield VolumeProgress("slices", len(done), len(todo))
    computed = time.perf_counter() - start
    summary = yield from _write_outputs(volume, out, done, todo, engine, fingerprint)
    summary["seconds"] = {"slices": round(computed, 2), "total": round(time.perf_counter() - start, 2)}
    summary["resumed_slices"] = resumed
    summary["slices_asked"] = len(asked)
    summary["slices_skipped_no_brain"] = len(asked) - len(todo)
    atomic_write_json(out / SUMMARY, summary)           # last: the outputs are complete
    shutil.rmtree(partial, ignore_errors=True)
    return summary


def _write_outputs(volume: Volume, out: Path, done: dict[int, Path], todo: list[int], engine: VolumeEngine,
                   fingerprint: dict) -> Iterator[VolumeProgress]:
    from diffuse_core.volumes.summary import slice_rows, write_slices_csv, write_worst_png

    steps = 5 if volume.kind == "dicom" else 4
    yield VolumeProgress("write", 0, steps)
    write_nifti(out / "counterfactual.nii.gz", volume.grid, _assemble(volume, done, "cf", np.float32))
    yield VolumeProgress("write", 1, steps)
    anomaly = _assemble(volume, done, "anomaly", np.float32)
    write_nifti(out / "anomaly.nii.gz", volume.grid, anomaly)
    yield VolumeProgress("write", 2, steps)
    flagged = _assemble(volume, done, "flagged", np.uint8)
    write_nifti(out / "anomaly_mask.nii.gz", volume.grid, flagged, dtype=np.uint8)
    write_nifti(out / "redrawn.nii.gz", volume.grid, _assemble(volume, done, "redrawn", np.uint8), dtype=np.uint8)
    yield VolumeProgress("write", 3, steps)
    outputs = ["counterfactual.nii.gz", "anomaly.nii.gz", "anomaly_mask.nii.gz", "redrawn.nii.gz"]
    if volume.kind == "dicom":
        from diffuse_core import __version__
        from diffuse_core.volumes.seg import write_segmentation

        write_segmentation(out / "anomaly_seg.dcm", volume.grid, flagged, version=__version__)
        outputs.append("anomaly_seg.dcm")
        yield VolumeProgress("write", 4, steps)
    rows = slice_rows(volume, flagged, anomaly, set(todo), _outside(done))
    del anomaly
    write_slices_csv(out / "slices.csv", rows)
    worst = max(rows, key=lambda r: (not r["outside_levels"], r["flagged_mm2"], r["peak"]))
    write_worst_png(out / "worst_slice.png", volume, done, worst["z"])
    outputs += ["slices.csv", "worst_slice.png"]
    voxel_ml = volume.spacing[0] * volume.spacing[1] * (volume.slice_step or 1.0) / 1000.0
    top = sorted((r for r in rows if r["processed"] and not r["outside_levels"]),
                 key=lambda r: (-r["flagged_mm2"], -r["peak"]))[:5]
    summary = {"input": str(volume.source), "kind": volume.kind, "num_slices": volume.num_slices,
               "shape_zhw": list(volume.shape), "spacing_mm": list(volume.spacing), "slice_step_mm": volume.slice_step,
               "modality": volume_modality_hint(volume), "slices_processed": len(todo),
               "anomaly_volume_ml": round(float(flagged.sum()) * voxel_ml, 3),
               "top_slices": [r["z"] for r in top if r["flagged_mm2"] > 0],
               "outside_levels": [r["z"] for r in rows if r["outside_levels"]],
               "settings": engine.settings, "seed": fingerprint["seed"], "batch_size": fingerprint["batch_size"],
               "outputs": outputs, "fingerprint": fingerprint}
    yield VolumeProgress("write", steps, steps)
    return summary


def run_to_end(events: Iterator):
    """Run a generator of progress events to its end; what it returns."""
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value


def run_volume(source, out_dir, engine: VolumeEngine, **kwargs) -> dict:
    """:func:`iter_volume_run` run to the end; the summary."""
    return run_to_end(iter_volume_run(source, out_dir, engine, **kwargs))
