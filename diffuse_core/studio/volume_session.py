"""A volume opened in the app's Volume tab (issue 34, item 2), without gradio: the upload read whole
(:func:`diffuse_core.volumes.read.read_volume`), its per-volume result store
(:class:`~diffuse_core.volumes.store.VolumeResults`) computed by one background thread in the order of the user's
position (the slice in view first, each slice kept once computed), and the results written for download as NIfTI
(+ a DICOM Segmentation where the input was a DICOM series) with :mod:`diffuse_core.volumes.write` and
:mod:`diffuse_core.volumes.seg`.

One volume per browser session (:data:`VOLUMES`, keyed by the session): opening another stops the first one's
thread and drops its results; at most :data:`MAX_OPEN` volumes are held at once (the oldest is dropped first), and a
closed tab drops its volume (:meth:`VolumeRegistry.close`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.studio.model_store import MODELS, ModelUnavailable, model_device
from diffuse_core.studio.uploads import short_paths, upload_paths, upload_source

__all__ = ["MAX_OPEN", "VOLUMES", "VolumeSession", "VolumeRegistry", "display_window", "engine_for", "open_volume",
           "reformat_allowed", "write_results"]

MAX_OPEN = int(os.environ.get("DIFFUSE_MAX_VOLUMES", 3))      # volumes held by the app at once (all sessions)
CPU_VOLUME_BATCH = 2          # slices per batch on a CPU: the slice in view shows after ~2 slices' time
MAX_REFORMAT_RATIO = 5.0      # coronal/sagittal views only where slices are at most this many pixels apart
MIN_REFORMAT_SLICES = 3
CT_BRAIN_WINDOW = (0.0, 80.0)  # HU shown black .. white for a CT volume (the brain window, centre 40, width 80)

_ENGINES: dict = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(modality: str, k: int | None = None, steps: int | None = None, model_dir=None):
    """The :class:`~diffuse_core.volumes.compute.VolumeEngine` of a case of ``modality`` ("mri" / "ct") at ``k`` and
    ``steps`` (None: the model card's), on the app's device; kept while the model folder's weights are unchanged.
    ``model_dir``: an MRI model adapted to a scanner (``diffuse-studio adapt``; its own ACAT pair with it) instead of
    the installed one; a CT volume always gets the CT model."""
    from diffuse_core.volumes.compute import load_engine

    if model_dir is not None and modality != "ct":
        folder = Path(model_dir)
    else:
        folder = MODELS.ddpm_dir(modality)
        info = MODELS.ddpm_info(modality)
        if not info["available"]:
            raise ModelUnavailable(info["reason"])
    acat = MODELS.acat_info(modality, folder)
    if not acat["available"]:
        raise ModelUnavailable(acat["reason"] + " (the Volume tab needs ACAT for every slice)")
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(folder.iterdir()) if f.is_file())
    key = (str(folder), modality, k, steps, str(model_device()), stamp)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES.clear()                          # one engine at a time: a new K or steps replaces the last
            _ENGINES[key] = load_engine(model_dir=folder, saliency_dir=os.environ.get("DIFFUSE_SALIENCY_DIR"),
                                        device=str(model_device()), k=k, steps=steps, modality=modality)
        return _ENGINES[key]


def display_window(volume, modality: str) -> tuple[float, float]:
    """(black, white) raw values for the volume's pictures: the brain window in HU for CT, else the 0.5th and
    99.5th percentiles of the voxels above the background."""
    if modality == "ct":
        return CT_BRAIN_WINDOW
    data = volume.slices[:, 0]
    sample = data[:: max(1, data.shape[0] // 32)].ravel()
    fg = sample[sample > float(sample.min())]
    if fg.size < 16:
        fg = sample
    lo, hi = (float(v) for v in np.percentile(fg, [0.5, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def reformat_allowed(volume) -> tuple[bool, str]:
    """Whether coronal and sagittal views can be drawn from the axial slices, and if not, why (one line)."""
    step = volume.slice_step
    if volume.num_slices < MIN_REFORMAT_SLICES:
        return False, f"only {volume.num_slices} slices: no coronal or sagittal view"
    if step is None or not np.isfinite(step) or step <= 0:
        return False, "the slice spacing is unknown: no coronal or sagittal view"
    pixel = min(volume.spacing)
    if step / pixel > MAX_REFORMAT_RATIO:
        return False, (f"slices {step:g} mm apart over {pixel:g} mm pixels ({step / pixel:.0f}x): coronal and "
                       f"sagittal views would be too coarse to read, so they are not shown")
    return True, ""


@dataclass
class VolumeSession:
    """One volume opened in the app: its :class:`~diffuse_core.volumes.read.Volume`, its result store, the files
    it came from and the background thread computing it."""

    volume: object
    store: object
    files: list[str]
    name: str
    modality: str
    window: tuple[float, float]
    batch_size: int
    _thread: threading.Thread | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _cf: dict = field(default_factory=dict, repr=False)
    _times: list = field(default_factory=list, repr=False)
    error: str | None = None
    stopped: bool = False
    scratch: Path | None = None

    # ---------------------------------------------------------------------------------------------- the worker
    def start(self) -> None:
        """Compute the pending slices in a background thread (nothing when it runs or all are done)."""
        if self.running or self.store.complete:
            return
        self.stopped, self.error = False, None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(self._cancel,), daemon=True,
                                        name=f"diffuse-volume-{self.name[:20]}")
        for key in [k for k, r in _WORKERS.items() if r() is None]:
            del _WORKERS[key]
        _WORKERS[id(self)] = weakref.ref(self)
        self._thread.start()

    def _work(self, cancel: threading.Event) -> None:
        try:
            last = time.perf_counter()
            for zs in self.store.compute(cancel=cancel):
                now = time.perf_counter()
                self._times.append((now - last) / max(1, len(zs)))
                last = now
        except Exception as err:                    # shown in the tab's progress line
            self.error = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)

    def stop(self, wait: bool = False) -> None:
        """Stop after the batch in flight (kept); :meth:`start` goes on from there."""
        self.stopped = True
        self._cancel.set()
        if wait and self._thread is not None:
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end (all done, stopped or failed); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def seconds_per_slice(self) -> float | None:
        """The median seconds a slice took so far (None before the first batch)."""
        return float(np.median(self._times)) if self._times else None

    # --------------------------------------------------------------------------------------------- the results
    def focus(self, z: int) -> int:
        """The slice in view (clamped to the volume): computed next."""
        z = int(min(max(int(z), 0), self.volume.num_slices - 1))
        self.store.focus(z)
        return z

    def raw(self, z: int) -> np.ndarray:
        """Slice ``z`` as read (H, W) float32."""
        return self.volume.slices[int(z), 0]

    def counterfactual(self, z: int) -> np.ndarray | None:
        """Slice ``z``'s counterfactual in the input's intensities (H, W), None while pending or without brain."""
        from diffuse_core.volumes.write import counterfactual_in_input_units

        z = int(z)
        if z not in self._cf:
            r = self.store.get(z)
            if r is None:
                return None
            self._cf[z] = counterfactual_in_input_units(self.raw(z), r.image, r.counterfactual, r.brain)
        return self._cf[z]

    def stacked(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole volume (Z, H, W) of ``what`` ("input", "counterfactual" or "anomaly"; pending slices: the
        input, or zeros) and which slices hold a result (Z,) bool."""
        done = np.array([self.store.get(z) is not None for z in range(self.volume.num_slices)])
        if what == "input":
            return self.volume.slices[:, 0], done
        out = (np.array(self.volume.slices[:, 0], np.float32) if what == "counterfactual"
               else np.zeros(self.volume.shape, np.float32))
        for z in np.flatnonzero(done):
            out[z] = self.counterfactual(z) if what == "counterfactual" else self.store.get(int(z)).anomaly
        return out, done


class VolumeRegistry:
    """The volumes open in the app, one per session key, at most :data:`MAX_OPEN` (oldest dropped first)."""

    def __init__(self, capacity: int = MAX_OPEN):
        self.capacity = max(1, int(capacity))
        self._lock = threading.Lock()
        self._open: OrderedDict[str, VolumeSession] = OrderedDict()

    def put(self, key, session: VolumeSession) -> None:
        with self._lock:
            old = self._open.pop(str(key), None)
            self._open[str(key)] = session
            dropped = [self._open.popitem(last=False)[1] for _ in range(max(0, len(self._open) - self.capacity))]
        for s in ([old] if old is not None else []) + dropped:
            _drop(s)

    def get(self, key) -> VolumeSession | None:
        with self._lock:
            s = self._open.get(str(key))
            if s is not None:
                self._open.move_to_end(str(key))
            return s

    def close(self, key) -> None:
        """Stop and forget the volume of ``key`` (its tab was closed)."""
        with self._lock:
            s = self._open.pop(str(key), None)
        if s is not None:
            _drop(s)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


# sessions whose worker thread was started: stopped and waited for when the process exits, so that no torch call is
# cut off by the interpreter's shutdown (which aborts the process: "terminate called without an active exception")
_WORKERS: dict[int, weakref.ref] = {}


@atexit.register
def _stop_workers(timeout: float = 120.0) -> None:
    live = [s for s in (r() for r in list(_WORKERS.values())) if s is not None]
    for s in live:
        s.stop()
    for s in live:
        s.wait(timeout)


def _drop(session: VolumeSession) -> None:
    session.stop()
    if session.scratch is not None:
        shutil.rmtree(session.scratch, ignore_errors=True)


VOLUMES = VolumeRegistry()


def _read_upload(files):
    """The upload as a :class:`~diffuse_core.volumes.read.Volume` and the files a one-slice view (Explore) reads it
    from: a NIfTI file, the files of a DICOM series, or a zip of them (extracted for Explore, which reads files)."""
    from diffuse_core.volumes.read import read_volume, volume_kind

    paths = upload_paths(files)
    if not paths:
        raise ValueError("no file uploaded: upload a NIfTI volume (.nii, .nii.gz), the files of one DICOM series, "
                         "or a .zip of them")
    try:
        src = Path(upload_source(files))
        if volume_kind(src) is None:
            raise ValueError(f"{src.name} is not a volume: the Volume tab reads a NIfTI volume (.nii, .nii.gz), the "
                             f"files of one DICOM series or a .zip of them; for one slice or a picture use Explore")
        volume = read_volume(src)
    except (ValueError, FileNotFoundError) as err:
        raise short_paths(err, files) from None
    scratch = None
    explore_files = paths
    if src.is_file() and src.suffix.lower() == ".zip":
        import zipfile

        scratch = Path(tempfile.mkdtemp(prefix="diffuse-volume-"))
        with zipfile.ZipFile(src) as zf:                # already checked by read_volume (member count, sizes)
            explore_files = []
            for i, m in enumerate(x for x in zf.infolist() if not x.is_dir()):
                target = scratch / f"{i:05d}.dcm"
                target.write_bytes(zf.read(m))
                explore_files.append(str(target))
    return volume, explore_files, scratch


def open_volume(key, files, *, k: int | None = None, steps: int | None = None, seed: int = 0,
                batch_size: int | None = None, start: bool = True, model_dir=None) -> VolumeSession:
    """Read the upload, make its result store and (``start``) start computing, the middle brain slice first; the
    session replaces ``key``'s previous volume. One-line ``ValueError`` for what cannot be read. ``model_dir``: an
    adapted MRI model (:func:`engine_for`)."""
    from diffuse_core.volumes.prepare import volume_modality_hint
    from diffuse_core.volumes.store import VolumeResults
    from diffuse_core.volumes.throughput import cuda_free_bytes, batch_size_for_memory

    volume, explore_files, scratch = _read_upload(files)
    modality = volume_modality_hint(volume)
    engine = engine_for(modality, k, steps, model_dir)
    if batch_size is None:
        free = cuda_free_bytes(engine.device)
        batch_size = CPU_VOLUME_BATCH if free is None else batch_size_for_memory(free, engine.size, engine.channels)
    store = VolumeResults(volume, engine, batch_size=int(batch_size), seed=int(seed))
    if not store.brain:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise ValueError(f"{Path(upload_paths(files)[0]).name}: no slice with brain in it (each slice's brain covers "
                         f"under 1 % of it)")
    paths = upload_paths(files)
    name = Path(paths[0]).name if len(paths) == 1 else f"DICOM series ({len(paths)} files)"
    session = VolumeSession(volume=volume, store=store, files=explore_files, name=name, modality=modality,
                            window=display_window(volume, modality), batch_size=int(batch_size), scratch=scratch)
    VOLUMES.put(key, session)
    if start:
        session.start()
    return session


def write_results(session: VolumeSession, out_dir) -> list[Path]:
    """The finished volume's results in the input's space, for download: counterfactual (input intensities),
    anomaly map and anomaly mask as NIfTI, plus the mask as a DICOM Segmentation referencing the series where the
    input was DICOM. Refused (one line) while slices are still pending: nothing half-done is offered as a result."""
    from diffuse_core import __version__
    from diffuse_core.volumes.write import write_nifti

    done, total = session.store.progress
    if done < total:
        raise ValueError(f"{total - done} of {total} brain slices are still being computed: the download is ready "
                         f"when all are done")
    vol = session.volume
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(session.name)
    cf, _ = session.stacked("counterfactual")
    anomaly, _ = session.stacked("anomaly")
    flagged = np.zeros(vol.shape, np.uint8)
    for z in session.store.brain:
        flagged[z] = session.store.get(z).flagged
    paths = [write_nifti(out / f"{stem}_counterfactual.nii.gz", vol.grid, cf),
             write_nifti(out / f"{stem}_anomaly.nii.gz", vol.grid, anomaly),
             write_nifti(out / f"{stem}_anomaly_mask.nii.gz", vol.grid, flagged, dtype=np.uint8)]
    if vol.kind == "dicom":
        from diffuse_core.volumes.seg import write_segmentation

        paths.append(write_segmentation(out / f"{stem}_anomaly_seg.dcm", vol.grid, flagged, version=__version__))
    return paths


def _stem(name: str) -> str:
    base = name.split("(")[0].strip() if name.startswith("DICOM series") else name
    for ext in (".nii.gz", ".nii", ".zip"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in base).strip("_")
    return (safe or "volume")[:60]
