"""Curated teaching sets: reviewed Dif-fuse results saved as files an educator can hand out, safely.

A set is a folder ``<root>/<set name>/`` holding ``manifest.json`` and one folder per case::

    <root>/<set>/manifest.json
    <root>/<set>/<case id>/original.png        original.nii.gz          (the input slice, normalised to [-1, 1])
                           counterfactual.png  counterfactual.nii.gz    (the healthy counterfactual, [-1, 1])
                           anomaly.png         anomaly.nii.gz           (heat map / |x0 - x0_hat| in [0, 2])
                           mask.png            mask.nii.gz              (the Dif-fuse mask m, {0, 1})
                           ground_truth.png    ground_truth.nii.gz      (the lesion mask; all zero when unknown)
                           preview.png                                  (input | counterfactual | anomaly)
                           model_grid.npz                               (the same arrays on the model's grid)

PNG and NIfTI files are at the input's size (the model-grid results mapped back with
:func:`diffuse_core.io.preprocess.from_model_grid` and the case's geometry). NIfTI files carry the pixel spacing in mm
and follow the loaders' radiological convention (``load_image`` shows them exactly as the PNGs). Each manifest entry
also has the fields of :mod:`diffuse_core.data.teaching` (``image``, ``mask``, ``preview``, ``difficulty``, ...), so a
curated set whose name has no spaces is also a valid teaching set.

Saving never leaves a half-written or corrupted set, whatever happens (a crash, a full disk, a second educator saving
into the same set at the same moment):

1. every file of a case is written into a hidden temporary folder ``<set>/.tmp-*`` on the same filesystem;
2. under an exclusive ``fcntl`` lock on ``<set>/.lock`` the case folder is renamed into place (atomic) and the
   manifest is rewritten through a temporary file and ``os.replace`` (atomic); two savers take turns;
3. an existing case is never overwritten (:class:`CaseExistsError`) and no existing file is ever deleted: the only
   things removed are this module's own temporary folders.

Readers ignore hidden entries, so a crash between steps leaves at worst an ignored ``.tmp-*`` folder. Set and case
names are restricted to letters, digits, space, ``_`` and ``-`` (:func:`sanitize_name`), so no name can escape the
root folder. The engine never imports gradio; the app formats what this module returns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.io.export import json_default

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
MANIFEST_FORMAT = "diffuse-studio-curated-set/1"
MAX_NAME_LENGTH = 64                      # characters of a set or case name
MAX_UPLOAD_BYTES = 50 * 2**20             # uploads larger than this are refused (the app also tells gradio)
NAME_PATTERN = re.compile(r"[A-Za-z0-9 _-]+")
CASE_FILES = ("original", "counterfactual", "anomaly", "mask", "ground_truth")
DIFFICULTIES = ("easy", "moderate", "subtle")   # as diffuse_core.data.teaching


class CaseExistsError(ValueError):
    """A case of that id is already in the set: nothing was written (choose another id)."""


# --------------------------------------------------------------------------------------------------------------
# names, roots, limits


def sanitize_name(name, what: str = "set name", max_length: int = MAX_NAME_LENGTH) -> str:
    """The name stripped of surrounding spaces, or ``ValueError`` unless it is 1..``max_length`` characters of
    letters, digits, space, ``_`` and ``-`` (so ``../x``, ``a/b``, ``.hidden`` and ``""`` are all refused)."""
    if not isinstance(name, str):
        raise ValueError(f"the {what} must be text, got {type(name).__name__}")
    clean = name.strip()
    if not clean:
        raise ValueError(f"the {what} is empty: type a name (letters, digits, space, _ and -)")
    if len(clean) > max_length:
        raise ValueError(f"the {what} is {len(clean)} characters long: use at most {max_length}")
    if not NAME_PATTERN.fullmatch(clean):
        bad = sorted({c for c in clean if not NAME_PATTERN.fullmatch(c)})
        raise ValueError(f"the {what} {clean!r} contains {' '.join(repr(c) for c in bad)}: use only letters, "
                         f"digits, space, _ and - (no dots or slashes)")
    return clean


def slug(text: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A valid name made from any text (other characters become ``-``); ``case`` when nothing is left."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-_ ")
    return (s[:max_length].strip("-_ ") or "case")


def default_root() -> Path:
    """Where curated sets are saved: ``$DIFFUSE_CURATED_ROOT``, else ``$DIFFUSE_TEACHING_ROOT``, else the project's
    ``teaching_sets/`` folder."""
    for env in ("DIFFUSE_CURATED_ROOT", "DIFFUSE_TEACHING_ROOT"):
        if os.environ.get(env):
            return Path(os.environ[env])
    return Path(__file__).resolve().parents[2] / "teaching_sets"


def check_upload_size(path, limit_bytes: int = MAX_UPLOAD_BYTES) -> int:
    """The file's size in bytes, or ``ValueError`` when it is over ``limit_bytes`` (or missing)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"the uploaded file {p.name} is gone: upload it again")
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    if size > limit_bytes:
        raise ValueError(f"{p.name} is {size / 2**20:.1f} MB, over the {limit_bytes / 2**20:.0f} MB upload limit: "
                         f"upload a single slice or a cropped volume")
    return size


# --------------------------------------------------------------------------------------------------------------
# the case to save


@dataclass
class CuratedCase:
    """One reviewed result. Model-grid arrays: images (C, R, R) in [-1, 1]; maps (R, R)."""

    case_id: str
    image: np.ndarray
    counterfactual: np.ndarray
    anomaly: np.ndarray                     # |x0 - x0_hat| cleaned, [0, 2]
    mask: np.ndarray                        # Dif-fuse mask m, {0, 1}
    settings: dict                          # k, steps, percentile, mask_from, variant, window, ...
    seed: int = 0
    model_version: str = "unknown"
    note: str = ""
    geometry: object | None = None          # preprocess.Geometry of the input; None = model grid is the input
    spacing: tuple[float, float] = (1.0, 1.0)
    ground_truth: np.ndarray | None = None
    brain_mask: np.ndarray | None = None
    modality: str = "mri"
    lesion_type: str = ""
    location: str = ""
    difficulty: str = ""
    healthy: bool = False
    source: str = ""
    slice_index: int = 0
    extras: dict = field(default_factory=dict)


def _png(path: Path, array: np.ndarray) -> None:
    import cv2

    a = np.ascontiguousarray(array)
    if not cv2.imwrite(str(path), cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a):
        raise OSError(f"could not write {path}")


def _nifti(path: Path, array: np.ndarray, spacing: tuple[float, float]) -> None:
    """(H, W) or (C, H, W) display-oriented array -> a canonical (RAS+) NIfTI slice, (X, Y) or (X, Y, 1, C), that
    :func:`diffuse_core.io.image.load_image` displays exactly as given (radiological: anterior at the top, the
    patient's right on the left; :func:`diffuse_core.io.orientation.display_nifti`). Spacing (row, col) in mm."""
    from diffuse_core.io.orientation import display_nifti, nifti_gz_bytes

    img = display_nifti(array, spacing)
    if path.name.endswith(".gz"):
        path.write_bytes(nifti_gz_bytes(img))
    else:
        img.to_filename(str(path))


def _write_case_files(folder: Path, case: CuratedCase) -> dict[str, str]:
    """Every file of ``case`` into ``folder``; returns {role: file name}."""
    from diffuse_core.io.export import heat_map, to_uint8
    from diffuse_core.io.preprocess import from_model_grid

    def back(a, order=1):
        return from_model_grid(a, case.geometry, order=order) if case.geometry is not None else np.asarray(a)

    image = back(np.asarray(case.image, np.float32)).astype(np.float32)
    counterfactual = back(np.asarray(case.counterfactual, np.float32)).astype(np.float32)
    anomaly = np.clip(back(np.asarray(case.anomaly, np.float32)), 0, None).astype(np.float32)
    mask = back(np.asarray(case.mask, np.uint8), order=0).astype(np.uint8)
    vmax = max(float(np.asarray(case.anomaly).max()), 1e-3)
    files: dict[str, str] = {}
    if case.ground_truth is not None:
        gt = (back(np.asarray(case.ground_truth, np.uint8), order=0) > 0).astype(np.uint8)
    else:
        gt = np.zeros_like(mask)
    views = {"original": to_uint8(image[0]), "counterfactual": to_uint8(counterfactual[0]),
             "anomaly": heat_map(anomaly, vmax), "mask": (mask > 0).astype(np.uint8) * 255, "ground_truth": gt * 255}
    volumes = {"original": image, "counterfactual": counterfactual, "anomaly": anomaly, "mask": mask,
               "ground_truth": gt}
    for role, view in views.items():
        _png(folder / f"{role}.png", view)
        _nifti(folder / f"{role}.nii.gz", volumes[role], case.spacing)
        files[f"{role}_png"], files[f"{role}_nifti"] = f"{role}.png", f"{role}.nii.gz"
    grey = [np.repeat(views[k][..., None], 3, axis=2) for k in ("original", "counterfactual")]
    _png(folder / "preview.png", np.concatenate(grey + [views["anomaly"]], axis=1))
    files["preview"] = "preview.png"
    grid = {"image": np.asarray(case.image, np.float32), "counterfactual": np.asarray(case.counterfactual, np.float32),
            "anomaly": np.asarray(case.anomaly, np.float32), "mask": np.asarray(case.mask, np.uint8)}
    if case.ground_truth is not None:
        grid["ground_truth"] = np.asarray(case.ground_truth, np.uint8)
    if case.brain_mask is not None:
        grid["brain_mask"] = np.asarray(case.brain_mask, np.uint8)
    np.savez_compressed(folder / "model_grid.npz", **grid)
    files["model_grid"] = "model_grid.npz"
    return files


# --------------------------------------------------------------------------------------------------------------
# manifest


@contextlib.contextmanager
def _locked(set_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<set>/.lock`` (fcntl.flock: other processes AND other threads wait)."""
    fd = os.open(set_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_manifest(set_dir: Path) -> dict | None:
    path = set_dir / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the set was damaged outside this tool; fix or move "
                         f"the file, or save into another set") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise ValueError(f"{path} is not a curated-set manifest (no 'cases' list): save into another set name")
    return manifest


def _write_manifest(set_dir: Path, manifest: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=set_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=2, default=json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, set_dir / MANIFEST_NAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _set_dir(set_name: str, root) -> Path:
    return Path(root if root is not None else default_root()) / sanitize_name(set_name)


def load_manifest(set_name: str, root=None) -> dict:
    """The manifest of a curated set (``{"name", "format", "created", "updated", "cases": [...]}``)."""
    set_dir = _set_dir(set_name, root)
    manifest = _read_manifest(set_dir)
    if manifest is None:
        raise FileNotFoundError(f"no curated set {set_name!r} in {set_dir.parent}")
    return manifest


def is_curated_set(folder) -> bool:
    """True where ``folder`` holds a manifest written by this module."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def list_sets(root=None) -> list[str]:
    """Names of the curated sets under ``root`` (folders holding a manifest of this module), sorted."""
    base = Path(root if root is not None else default_root())
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and NAME_PATTERN.fullmatch(p.name)
                  and is_curated_set(p))


def unique_case_id(set_name: str, base: str, root=None) -> str:
    """``base`` (made valid) or ``base-2``, ``base-3``, ... whichever is not yet in the set."""
    base = slug(base, MAX_NAME_LENGTH - 4)
    set_dir = _set_dir(set_name, root)
    try:
        taken = {e.get("id") for e in (_read_manifest(set_dir) or {"cases": []})["cases"]}
    except ValueError:
        taken = set()
    taken |= {p.name for p in set_dir.iterdir()} if set_dir.is_dir() else set()
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def save_case(set_name: str, case: CuratedCase, root=None) -> dict:
    """Add ``case`` to the set ``set_name`` (created if needed) atomically; returns its manifest entry.

    Raises :class:`CaseExistsError` (nothing written) when the set already holds ``case.case_id``, and
    ``ValueError`` for a bad name or a manifest this module did not write. See the module docstring.
    """
    set_name = sanitize_name(set_name, "set name")
    case_id = sanitize_name(case.case_id, "case id")
    set_dir = _set_dir(set_name, root)
    set_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{slug(case_id, 20)}-", dir=set_dir))
    try:
        files = _write_case_files(tmp, case)          # the slow part, outside the lock
        h0, w0 = (case.geometry.original_shape if case.geometry is not None else np.shape(case.image)[-2:])
        entry = {
            "id": case_id, "modality": case.modality, "lesion_type": case.lesion_type, "location": case.location,
            "difficulty": case.difficulty, "note": case.note, "seed": int(case.seed), "healthy": bool(case.healthy),
            "settings": dict(case.settings), "model_version": case.model_version, "date": _now(),
            "source": case.source, "slice": int(case.slice_index), "shape": [int(h0), int(w0)],
            "spacing_mm": [float(s) for s in case.spacing], "has_ground_truth": case.ground_truth is not None,
            "files": {k: f"{case_id}/{v}" for k, v in files.items()},
            # the fields diffuse_core.data.teaching reads
            "image": f"{case_id}/original.nii.gz", "mask": f"{case_id}/ground_truth.nii.gz",
            "preview": f"{case_id}/preview.png", **case.extras,
        }
        if entry["difficulty"] not in DIFFICULTIES:
            entry["difficulty"] = "moderate"
        with _locked(set_dir):
            manifest = _read_manifest(set_dir)
            if manifest is None:
                manifest = {"name": set_name, "format": MANIFEST_FORMAT, "created": _now(), "cases": []}
            final = set_dir / case_id
            if any(e.get("id") == case_id for e in manifest["cases"]) or final.exists():
                raise CaseExistsError(f"set {set_name!r} already holds a case {case_id!r}: nothing was saved; "
                                      f"choose another case id")
            os.rename(tmp, final)
            try:
                manifest["cases"].append(entry)
                manifest["updated"] = entry["date"]
                _write_manifest(set_dir, manifest)
            except BaseException:
                os.rename(final, tmp)   # our own folder goes back to the temporary name and is removed below
                raise
        return entry
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_case(set_name: str, case_id: str, root=None) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest entry, model-grid arrays {image, counterfactual, anomaly, mask[, ground_truth, brain_mask]})."""
    set_dir = _set_dir(set_name, root)
    case_id = sanitize_name(case_id, "case id")
    manifest = load_manifest(set_name, root)
    entry = next((e for e in manifest["cases"] if e.get("id") == case_id), None)
    if entry is None:
        raise ValueError(f"set {set_name!r} has no case {case_id!r}")
    with np.load(set_dir / case_id / "model_grid.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return entry, arrays


def zip_set(set_name: str, root=None, out_dir=None) -> Path:
    """``<set name>.zip`` of the set's manifest and case files (hidden temporary entries left out), written to
    ``out_dir`` (default: a new temporary folder) through a temporary name."""
    set_dir = _set_dir(set_name, root)
    with _locked(set_dir) if set_dir.is_dir() else contextlib.nullcontext():
        manifest = load_manifest(set_name, root)
        out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="diffuse-set-"))
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{set_dir.name.replace(' ', '_')}.zip"
        fd, tmp = tempfile.mkstemp(prefix=".zip-", suffix=".tmp", dir=out)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(f"{set_dir.name}/{MANIFEST_NAME}", json.dumps(manifest, indent=2))
                for entry in manifest["cases"]:
                    folder = set_dir / entry["id"]
                    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                        if f.is_file() and not f.name.startswith("."):
                            z.write(f, f"{set_dir.name}/{entry['id']}/{f.name}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


# --------------------------------------------------------------------------------------------------------------
# the review of a batch


REVIEW_STATES = ("pending", "accepted", "rejected")


@dataclass
class ReviewItem:
    """One case of a batch under review: its key (where it came from), its latest result and the decision."""

    key: str
    label: str
    status: str = "pending"
    note: str = ""
    result: dict = field(default_factory=dict)     # whatever the app needs to show and save it
    runs: int = 1

    def decide(self, status: str) -> None:
        if status not in REVIEW_STATES:
            raise ValueError(f"unknown review decision {status!r}: choose one of {', '.join(REVIEW_STATES)}")
        self.status = status


def review_counts(items: list[ReviewItem]) -> dict[str, int]:
    """{"pending": n, "accepted": n, "rejected": n}."""
    return {s: sum(1 for i in items if i.status == s) for s in REVIEW_STATES}
