"""Curated teaching sets: reviewed Dif-fuse results saved as files an educator can hand out, safely.

Where sets live
---------------
Curated sets live in a writable data folder of their own (:func:`default_root`), never among the shipped teaching
sets: ``$DIFFUSE_CURATED_ROOT`` if set, else ``<data dir>/curated`` with the data dir (:func:`data_dir`)
``$DIFFUSE_DATA_DIR``, else a Hugging Face Space's persistent storage ``/data/diffuse-studio`` (on a Space, when
``/data`` is writable), else ``$XDG_DATA_HOME/diffuse-studio`` (``~/.local/share/diffuse-studio``). The shipped teaching
root (:func:`diffuse_core.data.teaching.default_root`, ``teaching_sets/``) is read-only to this module: a root or set
folder inside it is refused, and so is a set name (any case) of a set there. Sets saved there by older versions
stay where they are, untouched; the app lists them read-only (:mod:`diffuse_core.studio.library`); move such a folder
into the curated root to keep adding to it.

A set is a folder ``<root>/<set name>/`` holding ``manifest.json``, ``.lock`` and one folder per case, with the files
of :mod:`diffuse_core.data.curated_case` (the folder's locks, manifest and scratch folders:
:mod:`diffuse_core.data.set_folder`). Each manifest entry also has the fields of :mod:`diffuse_core.data.teaching`
(``image``, ``mask``, ``preview``, ``difficulty``, ...), so a curated set whose name has no spaces is also a valid
teaching set.

Saving
------
Saving never leaves a half-written or corrupted set, whatever happens (a crash, ``kill -9``, a full disk, a second
educator saving into the same set at the same moment):

1. every file of a case is written (and flushed) into a hidden scratch folder ``<set>/.tmp-*`` on the same
   filesystem, while the saver holds an ``fcntl`` lock on ``<set>/.tmp-*.lock`` (released by the kernel when the
   saver dies, so a scratch folder whose lock is free belongs to nobody);
2. under an exclusive lock on ``<set>/.lock`` the case folder is renamed into place (atomic) and the manifest is
   rewritten through a temporary ``.manifest-*.tmp`` and ``os.replace`` (atomic); two savers take turns;
3. an existing case is never overwritten (:class:`CaseExistsError`) and no existing file is ever deleted.

Recovery
--------
A killed save can leave a scratch folder, a temporary manifest or a case folder renamed into place but not yet in the
manifest. :func:`recover` removes exactly these (see there) and nothing of a complete set; :func:`open_root` runs it the
first time a process opens a root (the app's library, every save). Readers ignore hidden entries meanwhile.

Set and case names are restricted to letters, digits, space, ``_`` and ``-`` (:func:`sanitize_name`), so no name can
escape the root folder. The engine never imports gradio; the app formats what this module returns.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.data import teaching
from diffuse_core.data.curated_case import CASE_FILES, CuratedCase, write_case_files
from diffuse_core.data.curated_case import write_nifti as _nifti  # noqa: F401 - tests build NIfTI fixtures with it
from diffuse_core.data.set_folder import (
    LOCK_NAME,
    MANIFEST_NAME,
    Recovery,
    read_manifest,
    recover_set,
    scratch_folder,
    set_lock,
    write_manifest,
)

__all__ = ["CASE_FILES", "CaseExistsError", "CuratedCase", "Recovery", "ReviewItem", "check_upload_size", "data_dir",
           "default_root", "is_curated_set", "list_sets", "load_manifest", "open_root", "read_case", "recover",
           "review_counts", "sanitize_name", "save_case", "set_path", "slug", "unique_case_id", "zip_set",
           "download_folder"]

MANIFEST_FORMAT = "diffuse-studio-curated-set/1"
MAX_NAME_LENGTH = 64                      # characters of a set or case name
MAX_UPLOAD_BYTES = 50 * 2**20             # uploads larger than this are refused (the app also tells gradio)
NAME_PATTERN = re.compile(r"[A-Za-z0-9 _-]+")
DIFFICULTIES = teaching.DIFFICULTIES
ENV_CURATED_ROOT = "DIFFUSE_CURATED_ROOT"       # the curated root itself
ENV_DATA_DIR = "DIFFUSE_DATA_DIR"               # the app's writable data folder; curated sets in <it>/curated
SPACE_STORAGE = Path("/data")                   # a Hugging Face Space's persistent storage, when enabled
APP_FOLDER = "diffuse-studio"
DOWNLOAD_TTL_S = 15 * 60                  # seconds an archive made for a download is kept (the app copies it at once)


class CaseExistsError(ValueError):
    """A case of that id is already in the set: nothing was written (choose another id)."""


# --------------------------------------------------------------------------------------------------------------
# names


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


# --------------------------------------------------------------------------------------------------------------
# roots: a writable folder of our own, never the shipped teaching sets


def data_dir() -> Path:
    """The app's writable data folder: ``$DIFFUSE_DATA_DIR``; else, on a Hugging Face Space (``$SPACE_ID`` set) with
    persistent storage, ``/data/diffuse-studio``; else ``$XDG_DATA_HOME/diffuse-studio`` (default
    ``~/.local/share/diffuse-studio``)."""
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    if os.environ.get("SPACE_ID") and SPACE_STORAGE.is_dir() and os.access(SPACE_STORAGE, os.W_OK):
        return SPACE_STORAGE / APP_FOLDER
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / APP_FOLDER


def default_root() -> Path:
    """Where curated sets are saved: ``$DIFFUSE_CURATED_ROOT``, else ``<data_dir()>/curated``."""
    if os.environ.get(ENV_CURATED_ROOT):
        return Path(os.environ[ENV_CURATED_ROOT]).expanduser()
    return data_dir() / "curated"


def _shipped_roots() -> list[Path]:
    """The teaching root the app shows and the project's own ``teaching_sets/`` (both read-only here), resolved."""
    return list({Path(teaching.default_root()).resolve(), teaching.PACKAGE_ROOT.resolve()})


def _overlaps(path: Path, roots: list[Path]) -> Path | None:
    p = path.resolve()
    return next((r for r in roots if p == r or p.is_relative_to(r) or r.is_relative_to(p)), None)


def _refuse_shipped_root(base: Path) -> None:
    p = base.resolve()
    shipped = next((r for r in _shipped_roots() if p == r or p.is_relative_to(r)), None)
    if shipped is not None:
        raise ValueError(f"curated sets cannot be saved in {base}: it is inside the shipped teaching sets "
                         f"({shipped}), which are read-only; set ${ENV_DATA_DIR} to a writable folder of its own")


def _refuse_shipped_name(set_name: str, base: Path) -> None:
    """``ValueError`` when ``set_name`` is (in any case) the name of a set in the teaching root, or its folder would
    overlap a shipped root."""
    troot = Path(teaching.default_root())
    taken = {p.name.lower(): p for p in (troot.iterdir() if troot.is_dir() else [])
             if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()}
    other = taken.get(set_name.lower())
    if other is not None and is_curated_set(other):
        raise ValueError(f"{set_name!r} is an older curated set kept read-only among the shipped teaching sets "
                         f"({other}): choose another set name, or move that folder into {base} to add to it")
    if other is not None:
        raise ValueError(f"{set_name!r} is the name of a shipped teaching set, which is read-only: choose another "
                         f"set name")
    shipped = _overlaps(base / set_name, _shipped_roots())
    if shipped is not None:
        raise ValueError(f"the set folder {base / set_name} would overlap the shipped teaching sets ({shipped}): "
                         f"choose another set name or set ${ENV_DATA_DIR}")


_OPENED: set[Path] = set()
_OPENED_LOCK = threading.Lock()


def open_root(root=None, create: bool = True) -> Path:
    """The curated root (``root``, default :func:`default_root`), refused when it lies among the shipped teaching
    sets, created when ``create``, and cleaned by :func:`recover` the first time this process opens it."""
    base = Path(root) if root is not None else default_root()
    _refuse_shipped_root(base)
    if create:
        base.mkdir(parents=True, exist_ok=True)
    if not base.is_dir():
        return base
    key = base.resolve()
    with _OPENED_LOCK:
        first = key not in _OPENED
        _OPENED.add(key)
    if first:
        recover(base)
        prune_downloads()
    return base


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
# the sets


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def set_path(set_name: str, root=None) -> Path:
    """The folder of the curated set ``set_name`` under ``root`` (default :func:`default_root`); the name checked."""
    return Path(root if root is not None else default_root()) / sanitize_name(set_name)


def load_manifest(set_name: str, root=None) -> dict:
    """The manifest of a curated set (``{"name", "format", "created", "updated", "cases": [...]}``)."""
    set_dir = set_path(set_name, root)
    manifest = read_manifest(set_dir)
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
    """Names of the curated sets under ``root`` (folders holding a manifest of this module), sorted. Reads only."""
    base = Path(root if root is not None else default_root())
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and NAME_PATTERN.fullmatch(p.name)
                  and is_curated_set(p))


def unique_case_id(set_name: str, base: str, root=None) -> str:
    """``base`` (made valid) or ``base-2``, ``base-3``, ... whichever is not yet in the set."""
    base = slug(base, MAX_NAME_LENGTH - 4)
    set_dir = set_path(set_name, root)
    try:
        taken = {e.get("id") for e in (read_manifest(set_dir) or {"cases": []})["cases"]}
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
    ``ValueError`` for a bad name, a name or root among the shipped teaching sets, or a manifest this module did not
    write. See the module docstring.
    """
    set_name = sanitize_name(set_name, "set name")
    case_id = sanitize_name(case.case_id, "case id")
    base = open_root(root)
    _refuse_shipped_name(set_name, base)
    set_dir = base / set_name
    set_dir.mkdir(exist_ok=True)
    os.close(os.open(set_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644))   # marks the folder as one of ours
    with scratch_folder(set_dir, slug(case_id, 20)) as tmp:
        files = write_case_files(tmp, case)          # the slow part, outside the set's lock
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
        with set_lock(set_dir):
            manifest = read_manifest(set_dir)
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
                write_manifest(set_dir, manifest)
            except BaseException:
                os.rename(final, tmp)   # our own folder goes back to the scratch name and is removed
                raise
    return entry


def read_case(set_name: str, case_id: str, root=None) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest entry, model-grid arrays {image, counterfactual, anomaly, mask[, ground_truth, brain_mask]})."""
    set_dir = set_path(set_name, root)
    case_id = sanitize_name(case_id, "case id")
    manifest = load_manifest(set_name, root)
    entry = next((e for e in manifest["cases"] if e.get("id") == case_id), None)
    if entry is None:
        raise ValueError(f"set {set_name!r} has no case {case_id!r}")
    with np.load(set_dir / case_id / "model_grid.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return entry, arrays


# --------------------------------------------------------------------------------------------------------------
# recovery after a killed save


def recover(root=None) -> Recovery:
    """Clean the debris of killed saves under the curated ``root`` (default :func:`default_root`); returns what was
    removed and kept.

    In each set folder a save wrote into (one holding ``.lock``; no other folder is looked into): scratch folders
    ``.tmp-*`` and their ``.tmp-*.lock`` files whose saver is gone (a live saver holds its lock, so it is never
    disturbed); under the set's lock, temporary manifests ``.manifest-*.tmp`` and orphan case folders (a complete
    case folder of ours, renamed into place, whose id the manifest does not list: the save died before it was
    reported). A complete set is never modified: no manifest is rewritten, no case the manifest lists is touched,
    and a folder holding anything this module does not write (an educator's own files) or a set with an unreadable
    manifest is left as it is (listed in ``kept``). Refuses a shipped root.
    """
    base = Path(root) if root is not None else default_root()
    _refuse_shipped_root(base)
    report = Recovery()
    if not base.is_dir():
        return report
    for set_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()
                          and not p.name.startswith(".") and NAME_PATTERN.fullmatch(p.name)):
        recover_set(set_dir, report)
    return report


# --------------------------------------------------------------------------------------------------------------
# zip archives


_MADE_DOWNLOADS: list[Path] = []


def downloads_dir() -> Path:
    """Where :func:`zip_set` puts archives made for a download: ``<system temp>/diffuse-set-downloads-<uid>`` (the
    app hands them to gradio, which copies them into its own cache at once and may serve only from the temp
    folder). Each archive is removed :data:`DOWNLOAD_TTL_S` after it was made, or when the process exits."""
    return Path(tempfile.gettempdir()) / f"diffuse-set-downloads-{os.getuid()}"


def _older_versions_zip_folders() -> list[Path]:
    """``<system temp>/diffuse-set-XXXXXXXX/<set>.zip`` folders that older versions left after every download."""
    out = []
    for p in Path(tempfile.gettempdir()).glob("diffuse-set-*"):
        with contextlib.suppress(OSError):
            if (p != downloads_dir() and p.is_dir() and not p.is_symlink() and p.stat().st_uid == os.getuid()
                    and all(f.is_file() and f.suffix == ".zip" for f in p.iterdir())):
                out.append(p)
    return out


def prune_downloads(max_age_s: float | None = None) -> list[Path]:
    """Remove the archives of :func:`downloads_dir` (and older versions' ``diffuse-set-*`` zip folders) older than
    ``max_age_s`` seconds (default :data:`DOWNLOAD_TTL_S`); returns their folders."""
    base, removed = downloads_dir(), []
    cutoff = time.time() - (DOWNLOAD_TTL_S if max_age_s is None else max_age_s)
    for p in (list(base.iterdir()) if base.is_dir() else []) + _older_versions_zip_folders():
        with contextlib.suppress(OSError):
            if p.lstat().st_mtime < cutoff:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p)
    return removed


@atexit.register
def _remove_made_downloads() -> None:
    for p in _MADE_DOWNLOADS:
        shutil.rmtree(p, ignore_errors=True)
    with contextlib.suppress(OSError):
        downloads_dir().rmdir()                 # when no other process has archives there


def download_folder() -> Path:
    """A new folder for one download's archive, removed with the others after :data:`DOWNLOAD_TTL_S`."""
    base = downloads_dir()
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700, parents=True)
    if base.is_symlink() or not base.is_dir() or base.stat().st_uid != os.getuid():
        raise OSError(f"{base} is not a folder of this user: remove it, or point $TMPDIR elsewhere")
    prune_downloads()
    folder = Path(tempfile.mkdtemp(dir=base))
    _MADE_DOWNLOADS[:] = [p for p in _MADE_DOWNLOADS if p.exists()] + [folder]
    return folder


def zip_set(set_name: str, root=None, out_dir=None) -> Path:
    """``<set name>.zip`` of the set's manifest and case files (hidden entries left out), written through a
    temporary name into ``out_dir`` (the caller's), or by default into a new folder of :func:`downloads_dir` that
    is removed :data:`DOWNLOAD_TTL_S` seconds later (no folder is left behind per download)."""
    set_dir = set_path(set_name, root)
    with set_lock(set_dir) if (set_dir / LOCK_NAME).is_file() else contextlib.nullcontext():
        manifest = load_manifest(set_name, root)
        out = Path(out_dir) if out_dir is not None else download_folder()
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
