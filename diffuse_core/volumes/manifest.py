"""An archive's studies and the manifest of what was done to them (``diffuse-studio batch``).

:func:`find_studies` walks a folder for studies: NIfTI volumes, zipped DICOM series, DICOM series folders and BraTS-
layout case folders (a folder that is none of these is searched, up to :data:`MAX_DEPTH` levels). Each study gets an
id from its path under the folder and its own output folder ``OUT/studies/<id>``.

:class:`Manifest` (``OUT/manifest.json``) records per study its source, status (``pending``, ``done``, ``failed``)
and, when done, its summary row; it is rewritten atomically after every change. A study is marked ``done`` only after
its run wrote ``volume.json`` (:mod:`.run`: the last file, written once the others are complete), so a batch killed at
any moment and started again redoes exactly the studies that were not finished, resuming their finished slice batches
from their ``.partial/`` folders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from diffuse_core.volumes.read import volume_kind
from diffuse_core.volumes.write import atomic_write_json

__all__ = ["MANIFEST", "MAX_DEPTH", "Manifest", "Study", "find_studies"]

MANIFEST = "manifest.json"
MAX_DEPTH = 4


@dataclass(frozen=True)
class Study:
    id: str
    source: str
    kind: str


def _study_id(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix() if path != root else path.name
    for ext in (".nii.gz", ".nii", ".zip"):
        if rel.lower().endswith(ext):
            rel = rel[: -len(ext)]
    return re.sub(r"[^A-Za-z0-9._-]+", "__", rel.replace("/", "__")) or "study"


def find_studies(root, out_dir=None) -> list[Study]:
    """The studies under ``root`` in path order (``out_dir``, if inside it, is not searched)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: batch takes a folder of studies (NIfTI files, DICOM series "
                         f"folders or zips, BraTS case folders)")
    skip = Path(out_dir).resolve() if out_dir is not None else None
    found: list[Study] = []

    def walk(folder: Path, depth: int) -> None:
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or (skip is not None and p.resolve() == skip):
                continue
            name = p.name.lower()
            if p.is_file():         # named as a volume: a study, even unreadable (its run then says why it failed)
                kind = "nifti" if name.endswith((".nii", ".nii.gz")) else "dicom" if name.endswith(".zip") else None
            else:
                kind = volume_kind(p)
            if kind is not None:
                found.append(Study(_study_id(p, root), str(p), kind))
            elif p.is_dir() and depth < MAX_DEPTH:
                walk(p, depth + 1)

    kind = volume_kind(root)
    if kind in ("brats", "dicom"):
        return [Study(_study_id(root, root), str(root), kind)]
    walk(root, 1)
    ids = [s.id for s in found]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{root}: studies whose names collide ({', '.join(dup)}): rename one of each")
    return found


class Manifest:
    """The manifest of one batch output folder (see the module docstring)."""

    def __init__(self, out_dir, studies: list[Study], settings: dict):
        self.path = Path(out_dir) / MANIFEST
        old = self._read()
        same = old is not None and old.get("settings") == json.loads(json.dumps(settings))
        previous = old.get("studies", {}) if same else {}
        self.data = {"settings": settings, "studies": {}}
        for s in studies:
            entry = previous.get(s.id)
            if entry is None or entry.get("source") != s.source:
                entry = {"source": s.source, "kind": s.kind, "folder": f"studies/{s.id}", "status": "pending"}
            if entry["status"] != "done":
                entry["status"], entry["error"] = "pending", None
            self.data["studies"][s.id] = entry
        self.save()

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def entry(self, study_id: str) -> dict:
        return self.data["studies"][study_id]

    def pending(self) -> list[str]:
        """Studies to run: not done, or done but their ``volume.json`` is gone."""
        out = []
        for sid, e in self.data["studies"].items():
            if e["status"] != "done" or not (self.path.parent / e["folder"] / "volume.json").is_file():
                out.append(sid)
        return out

    def mark_done(self, study_id: str, row: dict) -> None:
        e = self.entry(study_id)
        if not (self.path.parent / e["folder"] / "volume.json").is_file():
            raise RuntimeError(f"{study_id}: marked done without its volume.json")   # pragma: no cover
        e.update(status="done", error=None, row=row)
        self.save()

    def mark_failed(self, study_id: str, error: str) -> None:
        self.entry(study_id).update(status="failed", error=error, row=None)
        self.save()

    def rows(self) -> list[dict]:
        """One summary row per study (:data:`diffuse_core.volumes.summary.SUMMARY_COLUMNS`), in study order."""
        rows = []
        for sid, e in self.data["studies"].items():
            row = dict(e.get("row") or {})
            row.update(study=sid, status=e["status"], folder=e["folder"], error=e.get("error"))
            rows.append(row)
        return rows
