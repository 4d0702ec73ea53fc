"""One curated set folder on disk: its locks, its atomically rewritten manifest, the scratch folders savers write
into, and the removal of what a killed saver left behind. :mod:`diffuse_core.data.curation` builds sets on these.

::

    <set>/manifest.json          the cases, rewritten through <set>/.manifest-XXXX.tmp and os.replace (atomic)
    <set>/.lock                  fcntl lock held while the manifest changes (savers take turns); marks the folder ours
    <set>/.tmp-<case>-XXXX/      a saver's scratch folder (every file of the case, before the rename into place)
    <set>/.tmp-<case>-XXXX.lock  held by that saver until its scratch folder is gone: the kernel frees it when the
                                 saver dies, so a scratch folder whose lock is free belongs to nobody
    <set>/<case id>/             a case, listed in the manifest
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from diffuse_core.data.curated_case import CASE_FILE_NAMES
from diffuse_core.io.export import json_default

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
SCRATCH_PREFIX = ".tmp-"
MANIFEST_TMP = (".manifest-", ".tmp")


@contextlib.contextmanager
def set_lock(set_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<set>/.lock`` (fcntl.flock: other processes AND other threads wait)."""
    fd = os.open(set_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def scratch_folder(set_dir: Path, label: str) -> Iterator[Path]:
    """A new scratch folder ``<set>/.tmp-<label>-XXXX`` whose lock file ``<folder>.lock`` this process holds until
    the folder is gone. The lock file exists, locked, before the folder does, and is removed after it."""
    while True:
        fd, lock_path = tempfile.mkstemp(prefix=f"{SCRATCH_PREFIX}{label}-", suffix=".lock", dir=set_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:                        # recovery may have taken and removed the file between mkstemp and flock
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    folder = Path(lock_path.removesuffix(".lock"))
    try:
        folder.mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make the renames inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(set_dir: Path) -> dict | None:
    """The set's manifest, None when it has none, ``ValueError`` when it is damaged."""
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


def write_manifest(set_dir: Path, manifest: dict) -> None:
    """Replace the manifest atomically and durably (call under :func:`set_lock`)."""
    fd, tmp = tempfile.mkstemp(prefix=MANIFEST_TMP[0], suffix=MANIFEST_TMP[1], dir=set_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=2, default=json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, set_dir / MANIFEST_NAME)
        fsync_dir(set_dir)                      # the case folder's rename and the manifest's are on disk
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------------------------
# recovery


@dataclass
class Recovery:
    """What a recovery did: the debris it removed, and what it left alone (folders this project did not write, sets
    whose manifest cannot be read)."""

    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def _is_orphan_case(folder: Path) -> bool:
    """A complete case folder of ours: only the files a save writes, with its last ones."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    names = {p.name for p in entries if p.is_file() and not p.is_symlink()}
    return len(names) == len(entries) and names <= CASE_FILE_NAMES and {"model_grid.npz", "preview.png"} <= names


def _remove_dead_scratch(set_dir: Path, report: Recovery) -> None:
    """Scratch folders and their lock files whose saver is gone (its lock is free, or it never had one)."""
    folders = {Path(str(p).removesuffix(".lock")) for p in set_dir.glob(f"{SCRATCH_PREFIX}*")}
    for folder in sorted(folders):
        lock = folder.with_name(folder.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None            # a live saver's lock file exists before its folder and goes after it: dead
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)     # a live saver
                continue
        try:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=fd is None)    # (two recoveries may meet at a lockless one)
                report.removed.append(folder)
            if fd is not None:
                os.unlink(lock)
                report.removed.append(lock)
        finally:
            if fd is not None:
                os.close(fd)


def recover_set(set_dir: Path, report: Recovery) -> None:
    """Remove what killed saves left in one set folder (see :func:`diffuse_core.data.curation.recover`)."""
    if not (set_dir / LOCK_NAME).is_file():
        return                   # not a folder a save ever wrote into: nothing in it is ours to remove
    _remove_dead_scratch(set_dir, report)
    with set_lock(set_dir):      # no saver is between its rename and its manifest now
        for tmp in set_dir.glob(f"{MANIFEST_TMP[0]}*{MANIFEST_TMP[1]}"):
            tmp.unlink()
            report.removed.append(tmp)
        try:
            manifest = read_manifest(set_dir) or {"cases": []}
        except ValueError:
            report.kept.append(set_dir)
            return
        listed = {e.get("id") for e in manifest["cases"] if isinstance(e, dict)}
        for child in sorted(set_dir.iterdir()):
            if child.name.startswith(".") or child.name in listed or not child.is_dir() or child.is_symlink():
                continue
            if _is_orphan_case(child):
                # out of sight first (atomic), then deleted: a kill during the deletion leaves a scratch folder
                # without a lock, which the next recovery removes, never a half-deleted case folder
                trash = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}orphan-", dir=set_dir)
                os.rename(child, trash)
                shutil.rmtree(trash, ignore_errors=True)
                report.removed.append(child)
            else:
                report.kept.append(child)
