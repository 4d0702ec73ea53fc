"""Adapting the healthy model to an educator's own normal slices, from the app (issue 31, item 5).

The engine is :func:`diffuse_core.evaluation.adapt.adapt` (also ``diffuse-studio adapt``); this module gives the app
what it needs around it, without gradio:

- :func:`adapt_sources`: the sets an adaptation can start from (curated sets and shipped teaching sets, by their
  normal MRI slices);
- :func:`start_adapt`: one adaptation at a time, in a background thread, with its stage, progress and a cancel
  (:class:`AdaptJob`); the new model goes to ``<data dir>/models/<name>`` with its card (data, held-out slices,
  steps, time, false flags before and after), and a cancelled or failed one leaves no finished-looking folder.
  ``kind="verdict"`` trains nothing: it calibrates the normal/abnormal verdict on the set's normal slices
  (:func:`diffuse_core.evaluation.scanner_verdict.calibrate_on_scans`, also ``diffuse-studio calibrate-verdict``),
  the quick fix when real normal slices of a scanner are called abnormal;
- :func:`adapted_models` / :func:`adapted_model_dir`: the finished adapted models, which Explore offers beside the
  installed one (by name; a name never becomes a path outside that folder).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffuse_core.data import curation, teaching
from diffuse_core.studio.library import teaching_root
from diffuse_core.studio.model_store import model_device

MODELS_FOLDER = "models"          # under the app's data folder (curation.data_dir)
MINUTES_RANGE = (0.0, 240.0)      # the DDPM fine-tune's budget a user may set (0, the default: the classifier alone)
KINDS = ("fine-tune", "verdict")  # fine-tune the DDPM (adapt), or calibrate the verdict only (calibrate-verdict)
MAX_BATCH = 8                     # fine-tuning batch (fewer on a set with fewer training slices)
N_MEASURE = 24                    # held-out slices measured before and after (fewer where fewer are held out)


def adapted_root() -> Path:
    """Where the app writes adapted models: ``<data dir>/models`` (``$DIFFUSE_DATA_DIR``; never the shipped
    assets)."""
    return curation.data_dir() / MODELS_FOLDER


@dataclass(frozen=True)
class AdaptedModel:
    """A finished adapted model: its folder name, folder and its card's ``adaptation`` record."""

    name: str
    folder: Path
    record: dict

    @property
    def label(self) -> str:
        r = self.record
        if "false_abnormal_rate_held_out" in r:             # diffuse-studio calibrate-verdict's record
            return (f"Verdict calibrated: {self.name} (threshold {r['threshold']:.2f} from "
                    f"{(r.get('chosen_on') or {}).get('normal_slices', '?')} of your normal slices; held-out normal "
                    f"slices called abnormal {100 * r['false_abnormal_rate_held_out']:.0f} %)")
        b, a = (r.get("false_flags_before") or {}).get("mean"), (r.get("false_flags_after") or {}).get("mean")
        flags = f"; normal brain flagged {100 * b:.1f} % -> {100 * a:.1f} %" if None not in (b, a) else ""
        return f"Adapted: {self.name} ({r.get('trained_on', '?')} normal slices{flags})"


def adapted_models() -> list[AdaptedModel]:
    """The finished adapted models under :func:`adapted_root` (a folder with weights and ``adaptation.json``, or
    ``verdict_calibration.json`` from ``diffuse-studio calibrate-verdict``), newest first."""
    from diffuse_core.evaluation.scanner_verdict import RECORD_FILE

    root = adapted_root()
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        rec = folder / "adaptation.json"
        if not rec.is_file():
            rec = folder / RECORD_FILE
        if folder.is_dir() and (folder / "model.safetensors").is_file() and rec.is_file():
            try:
                found.append(AdaptedModel(folder.name, folder, json.loads(rec.read_text())))
            except (OSError, ValueError):
                continue
    return sorted(found, key=lambda m: m.folder.stat().st_mtime, reverse=True)


def adapted_model_dir(name: str | None) -> Path | None:
    """The folder of the adapted model ``name`` (None or "": the installed model, None); ValueError for a name that
    is not a finished adapted model."""
    if not name:
        return None
    found = {m.name: m.folder for m in adapted_models()}
    if name not in found:
        raise ValueError(f"no adapted model {name!r} (it may have been removed): choose another model")
    return found[name]


# ---------------------------------------------------------------------------------------------------- sources


def normal_slices(value: str) -> list[tuple[str, Path]]:
    """(case id, image file) of the normal MRI cases of the set ``<kind>/<set>`` (CT cases are left out: the
    adapted model is the MRI one)."""
    kind, name = str(value or "").partition("/")[::2]
    if kind == "teaching":
        cases = teaching.list_cases(name, teaching_root())
        return [(c.id, c.image_path) for c in cases if c.healthy and "ct" not in c.channels]
    if kind == "curated":
        folder = curation.set_path(name)
        manifest = curation.load_manifest(name)
        return [(str(e["id"]), folder / e["image"]) for e in manifest["cases"]
                if e.get("healthy") and str(e.get("modality", "")).lower() != "ct" and e.get("image")]
    raise ValueError(f"unknown set {value!r}: choose a teaching or curated set")


def adapt_sources() -> list[tuple[str, str]]:
    """(label, value ``<kind>/<set>``) of every set with normal MRI slices: the curated sets first (an educator's
    own), then the shipped teaching sets."""
    out = []
    for kind, names in (("curated", curation.list_sets()), ("teaching", _teaching_sets())):
        for name in names:
            try:
                n = len(normal_slices(f"{kind}/{name}"))
            except (OSError, ValueError, KeyError):
                continue
            if n:
                out.append((f"{name} ({n} normal slice{'s' if n != 1 else ''}, {kind})", f"{kind}/{name}"))
    return out


def _teaching_sets() -> list[str]:
    try:
        return [s for s in teaching.list_sets(teaching_root()) if not curation.is_curated_set(teaching_root() / s)]
    except (OSError, ValueError):
        return []


# ------------------------------------------------------------------------------------------------------- jobs


@dataclass
class AdaptJob:
    """One adaptation: where it writes, how far it is, and how it ended (``record`` or ``error``)."""

    name: str
    source: str
    out: Path
    minutes: float
    n_slices: int
    kind: str = "fine-tune"
    stage: str = "starting"
    fraction: float = 0.0
    started: float = field(default_factory=time.monotonic)
    record: dict | None = None
    error: str | None = None
    cancelled: bool = False
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the adaptation to stop at its next progress report (each training step)."""
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


_LOCK = threading.Lock()
_CURRENT: list[AdaptJob] = []        # the adaptation of this process, the last one (one at a time)


def current_job() -> AdaptJob | None:
    """The running or last adaptation of this app, None before the first."""
    with _LOCK:
        return _CURRENT[0] if _CURRENT else None


def check_minutes(minutes) -> float:
    """The budget in minutes as a float in :data:`MINUTES_RANGE` (ValueError saying what)."""
    try:
        m = float(minutes)
    except (TypeError, ValueError):
        m = float("nan")
    if not MINUTES_RANGE[0] <= m <= MINUTES_RANGE[1]:
        raise ValueError(f"the time budget must be between {MINUTES_RANGE[0]:g} (the classifier alone) and "
                         f"{MINUTES_RANGE[1]:g} minutes, got {minutes!r}")
    return m


def start_adapt(source: str, minutes=0.0, base_dir=None, n_measure: int = N_MEASURE, seed: int = 0,
                kind: str = "fine-tune") -> AdaptJob:
    """Start adapting the installed MRI model (or ``base_dir``) to the normal slices of ``source`` (``<kind>/<set>``)
    in a background thread: ``kind`` "fine-tune" adapts the classifier, then fine-tunes the DDPM for ``minutes``
    (0: none); "verdict" calibrates the verdict only (``minutes`` unused). Returns the job at once. ValueError (nothing started) for an unknown kind, a bad budget, an
    unknown set, too few normal slices, or while another adaptation runs."""
    from diffuse_core.evaluation.adapt import split_groups
    from diffuse_core.evaluation.scanner_verdict import DEFAULT_HOLDOUT, MIN_NORMAL_SLICES

    if kind not in KINDS:
        raise ValueError(f"unknown adaptation {kind!r}: choose one of {', '.join(KINDS)}")
    minutes = check_minutes(minutes) if kind == "fine-tune" else 0.0
    slices = normal_slices(source)
    if len(slices) < 2:
        raise ValueError(f"{source.split('/', 1)[-1]} has {len(slices)} normal MRI slice(s): adapting needs at least "
                         f"2 (one to train on, one held out to measure), better 100 or more")
    held, _ = split_groups([cid for cid, _ in slices])
    if kind == "verdict":
        held, _ = split_groups([cid for cid, _ in slices], DEFAULT_HOLDOUT, seed)
        if int((~held).sum()) < MIN_NORMAL_SLICES:
            raise ValueError(f"{source.split('/', 1)[-1]} has {len(slices)} normal MRI slice(s): calibrating the "
                             f"verdict needs at least {MIN_NORMAL_SLICES} to choose the threshold on besides the "
                             f"held-out third (better 30 or more, from several cases)")
    n_train = int((~held).sum())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = curation.slug(f"{source.split('/', 1)[-1]}-{'verdict-' if kind == 'verdict' else ''}{stamp}")
    job = AdaptJob(name=name, source=source, out=adapted_root() / name, minutes=minutes, n_slices=len(slices),
                   kind=kind)
    with _LOCK:
        if _CURRENT and _CURRENT[0].running:
            raise ValueError(f"an adaptation is already running ({_CURRENT[0].name}): wait for it or cancel it")
        _CURRENT[:] = [job]
    threading.Thread(target=_run, args=(job, slices, base_dir, min(MAX_BATCH, n_train), int(n_measure), seed),
                     name=f"adapt-{name}", daemon=True).start()
    return job


def _run(job: AdaptJob, slices, base_dir, batch_size: int, n_measure: int, seed: int) -> None:
    from diffuse_core.evaluation.adapt import AdaptCancelled, adapt
    from diffuse_core.evaluation.scanner_verdict import DEFAULT_HOLDOUT, calibrate_on_scans

    def progress(stage: str, fraction: float) -> bool:
        job.stage, job.fraction = stage, float(fraction)
        return job.cancel_event.is_set()

    data = Path(tempfile.mkdtemp(prefix="adapt-data-"))
    try:
        with open(data / "index.csv", "w", newline="") as f:     # the set's normal slices, by their own files
            w = csv.writer(f)
            w.writerow(["image", "healthy", "case"])
            w.writerows([[str(path), 1, cid] for cid, path in slices])
        job.out.parent.mkdir(parents=True, exist_ok=True)
        if job.kind == "verdict":
            job.record = calibrate_on_scans(data, job.out, base_dir, holdout=DEFAULT_HOLDOUT, seed=seed,
                                            device=model_device(), on_progress=progress)
        else:
            job.record = adapt(data, job.out, base_dir, minutes=job.minutes, n_measure=n_measure,
                               batch_size=batch_size, seed=seed, device=model_device(), on_progress=progress)
        job.stage, job.fraction = "done", 1.0
    except AdaptCancelled:
        job.cancelled = True
        job.error = "stopped: no model was written"
    except Exception as err:                      # shown to the user; the thread must not die silently
        job.error = str(err) or type(err).__name__
    finally:
        shutil.rmtree(data, ignore_errors=True)
        if job.record is None and job.out.is_dir():     # a stopped or failed run leaves nothing that looks finished
            shutil.rmtree(job.out, ignore_errors=True)
        job.done.set()
