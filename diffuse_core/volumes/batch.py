"""``diffuse-studio batch DIR``: every study of an archive through a volume run, on this machine or on a Dask cluster.

:func:`iter_batch` finds the studies (:func:`~diffuse_core.volumes.manifest.find_studies`), keeps the manifest
(:class:`~diffuse_core.volumes.manifest.Manifest`), runs each pending study with :func:`run_study` (the models are
loaded once per process, for the study's modality) and at the end writes ``summary.csv``, ``summary.md`` and
``gallery.html`` (:mod:`.summary`), also when interrupted (the rows then say which studies are pending). It yields
:class:`BatchProgress` events and returns the summary rows.

Without ``client`` the studies run one after another in this process (each volume already batches its slices through
the network). With a ``distributed.Client`` each study is one task: ``Client("tcp://scheduler:8786")`` for an
existing cluster, or a ``LocalCluster`` (the tests use two in-process workers). Results come back as plain rows; the
files are written by the workers into the output folder, which must therefore be shared storage (the same path on
every worker). A failed study (a bad file) is marked ``failed`` with its one-line reason and the batch goes on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from diffuse_core.volumes.manifest import Manifest, find_studies
from diffuse_core.volumes.summary import write_gallery, write_summary_table

__all__ = ["BatchProgress", "engine_for", "iter_batch", "run_batch_folder", "run_study"]

_ENGINES: dict[str, object] = {}
_ENGINES_LOCK = threading.Lock()


@dataclass
class BatchProgress:
    """``done`` of ``total`` studies finished (done or failed); ``study`` the one just finished, ``status`` its
    status; for a study running in this process, ``slices`` = (done, total) of its slices."""

    done: int
    total: int
    study: str | None = None
    status: str | None = None
    slices: tuple[int, int] | None = None


def engine_for(options: dict, modality: str):
    """The :class:`~diffuse_core.volumes.compute.VolumeEngine` of ``options`` (:func:`~diffuse_core.volumes.compute.
    load_engine`'s keywords) for ``modality``, loaded once per process."""
    from diffuse_core.volumes.compute import load_engine

    key = json.dumps([options, modality], sort_keys=True, default=str)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = load_engine(**options, modality=modality)
        return _ENGINES[key]


def _row(summary: dict) -> dict:
    return {"slices": summary["num_slices"], "slices_processed": summary["slices_processed"],
            "anomaly_volume_ml": summary["anomaly_volume_ml"], "top_slices": summary["top_slices"][:3],
            "seconds": (summary.get("seconds") or {}).get("total")}


def run_study(source: str, out_folder: str, options: dict, slices: str = "all", seed: int = 0,
              batch_size: int | None = None, progress=None) -> dict:
    """One study's volume run (on whichever process runs it): ``{"status": "done", "row": ...}`` or
    ``{"status": "failed", "error": one line}``. ``progress(done, total)`` sees its slices."""
    from diffuse_core.volumes.run import iter_volume_run

    try:
        it = iter_volume_run(source, out_folder, lambda modality: engine_for(options, modality), slices=slices,
                             seed=seed, batch_size=batch_size)
        while True:
            try:
                event = next(it)
            except StopIteration as stop:
                return {"status": "done", "row": _row(stop.value)}
            if progress is not None and event.phase == "slices":
                progress(event.done, event.total)
    except (ValueError, OSError) as err:
        return {"status": "failed", "error": str(err).splitlines()[0] if str(err) else type(err).__name__}
    except Exception as err:           # one odd study must not end a night's batch: recorded, and the batch goes on
        return {"status": "failed", "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def iter_batch(root, out_dir, options: dict, *, slices: str = "all", seed: int = 0, batch_size: int | None = None,
               client=None) -> Iterator[BatchProgress]:
    """Run every pending study of ``root`` into ``out_dir`` (see the module docstring)."""
    out = Path(out_dir)
    studies = find_studies(root, out)
    if not studies:
        raise ValueError(f"no studies found in {root}: expected NIfTI volumes, DICOM series (folders or zips) or "
                         f"BraTS case folders")
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out, studies, {"options": options, "slices": slices, "seed": seed, "batch_size": batch_size})
    todo = manifest.pending()
    total = len(studies)
    finished = total - len(todo)
    yield BatchProgress(finished, total)
    try:
        if client is None:
            for sid in todo:
                e = manifest.entry(sid)
                events: list[tuple[int, int]] = []
                got = run_study(e["source"], str(out / e["folder"]), options, slices, seed, batch_size,
                                progress=lambda d, t: events.append((d, t)))
                finished += 1
                _record(manifest, sid, got)
                yield BatchProgress(finished, total, sid, got["status"], events[-1] if events else None)
        else:
            from distributed import as_completed

            futures = {client.submit(run_study, manifest.entry(sid)["source"],
                                     str((out / manifest.entry(sid)["folder"]).resolve()), options, slices, seed,
                                     batch_size, pure=False): sid for sid in todo}
            try:
                for fut in as_completed(list(futures)):
                    sid = futures[fut]
                    got = fut.result()
                    finished += 1
                    _record(manifest, sid, got)
                    yield BatchProgress(finished, total, sid, got["status"])
            finally:
                client.cancel([f for f in futures if not f.done()])
    finally:
        rows = manifest.rows()
        write_summary_table(out, rows)
        write_gallery(out, rows)
    return rows


def _record(manifest: Manifest, sid: str, got: dict) -> None:
    if got["status"] == "done":
        manifest.mark_done(sid, got["row"])
    else:
        manifest.mark_failed(sid, got["error"])


def run_batch_folder(root, out_dir, options: dict, **kwargs) -> list[dict]:
    """:func:`iter_batch` run to the end; the summary rows."""
    from diffuse_core.volumes.run import run_to_end

    return run_to_end(iter_batch(root, out_dir, options, **kwargs))
