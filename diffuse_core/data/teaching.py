"""Teaching sets: curated folders of slices (diseased and healthy) with a manifest of teaching notes.

A set is a folder ``<root>/<name>/`` holding ``manifest.json`` and, per case, ``{id}_image.nii.gz``,
``{id}_mask.nii.gz`` and ``{id}.png``. The manifest::

    {"name": ..., "description": ...,
     "cases": [{"id", "modality", "lesion_type", "location", "difficulty", "note", "seed", "healthy",
                "image", "mask", "preview", ...}, ...]}

``image``/``mask``/``preview`` are paths relative to the set folder. A case's pixel spacing is read from its image's
NIfTI header (:attr:`TeachingCase.spacing`, ``(row, col)`` mm; SynthBrain cases at 128 pixels are 1.72 mm). The
default root is the ``teaching_sets`` folder next to the package (:data:`PACKAGE_ROOT`), or
``$DIFFUSE_TEACHING_ROOT`` when set. Set names and case ids are restricted to ``[A-Za-z0-9_-]`` so that no name can
reach outside the root.

This module only reads: the shipped sets are read-only to the app. The Curate tab saves educators' sets into a data
folder of their own (:func:`diffuse_core.data.curation.default_root`), never here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.io.orientation import read_display_slice

__all__ = ["PACKAGE_ROOT", "TeachingCase", "default_root", "list_sets", "load_manifest", "list_cases", "load_case",
           "DIFFICULTIES", "REQUIRED_CASE_FIELDS"]

DIFFICULTIES = ("easy", "moderate", "subtle")
REQUIRED_CASE_FIELDS = ("id", "modality", "lesion_type", "location", "difficulty", "note", "seed", "healthy",
                        "image", "mask", "preview")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
ENV_ROOT = "DIFFUSE_TEACHING_ROOT"
PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "teaching_sets"   # the project's shipped sets (committed)


def default_root() -> Path:
    """``$DIFFUSE_TEACHING_ROOT`` if set, else the ``teaching_sets`` folder next to the package."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env)
    return PACKAGE_ROOT


def _check_name(name, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid {what} {name!r}: use only letters, digits, '_' and '-' (1-100 characters)")
    return name


def _root(root) -> Path:
    return Path(root) if root is not None else default_root()


def _set_dir(name: str, root) -> Path:
    _check_name(name, "teaching set name")
    base = _root(root)
    folder = base / name
    if not (folder / "manifest.json").is_file():
        have = list_sets(base)
        raise FileNotFoundError(f"no teaching set {name!r} under {base} (no {folder / 'manifest.json'}); "
                                f"available: {', '.join(have) if have else 'none'}")
    return folder


@dataclass
class TeachingCase:
    """One case of a teaching set. ``image`` (C, H, W) float32 in [-1, 1], ``mask`` (H, W) uint8 and ``spacing``
    (``(row, col)`` mm, from the image's NIfTI header) load lazily."""

    id: str
    modality: str
    lesion_type: str
    location: str
    difficulty: str
    note: str
    seed: int
    healthy: bool
    image_path: Path
    mask_path: Path
    preview_path: Path
    set_name: str = ""
    lesion_size: str = ""
    extra: dict = field(default_factory=dict)
    _image: np.ndarray | None = field(default=None, repr=False, compare=False)
    _mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    _spacing: tuple[float, float] | None = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            a, self._spacing = _read_slice(self.image_path)
            a = np.asarray(a, dtype=np.float32)
            self._image = a[None] if a.ndim == 2 else a
        return self._image

    @property
    def spacing(self) -> tuple[float, float]:
        """``(row, col)`` pixel spacing in mm, as stored in the image's NIfTI header."""
        if self._spacing is None:
            self.image  # noqa: B018 - reads the header with the pixels
        return self._spacing

    @property
    def mask(self) -> np.ndarray:
        if self._mask is None:
            m = np.asarray(_read_slice(self.mask_path)[0])
            if m.ndim == 3:
                m = m.max(axis=0)
            self._mask = (m > 0).astype(np.uint8)
        return self._mask

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.modality.split("+"))


def _read_slice(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A single-slice NIfTI in display orientation, (H, W) or (C, H, W), and its ``(row, col)`` spacing in mm."""
    import nibabel as nib

    try:
        return read_display_slice(nib.load(str(path)))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def list_sets(root=None) -> list[str]:
    """Names of the teaching sets under ``root`` (folders with a ``manifest.json``), sorted."""
    base = _root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and _NAME_RE.fullmatch(p.name) and (p / "manifest.json").is_file())


def load_manifest(name: str, root=None) -> dict:
    """The parsed ``manifest.json`` of set ``name`` (checked: required fields, unique ids, paths inside the set)."""
    folder = _set_dir(name, root)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise ValueError(f"{path} must be an object with a 'cases' list")
    seen = set()
    for i, case in enumerate(manifest["cases"]):
        if not isinstance(case, dict):
            raise ValueError(f"{path}: case #{i} is not an object")
        missing = [k for k in REQUIRED_CASE_FIELDS if k not in case]
        if missing:
            raise ValueError(f"{path}: case #{i} ({case.get('id', '?')}) lacks {', '.join(missing)}")
        cid = _check_name(case["id"], f"case id in {path}")
        if cid in seen:
            raise ValueError(f"{path}: case id {cid!r} appears twice")
        seen.add(cid)
        if case["difficulty"] not in DIFFICULTIES:
            raise ValueError(f"{path}: case {cid!r} difficulty {case['difficulty']!r} is not one of "
                             f"{', '.join(DIFFICULTIES)}")
        for key in ("image", "mask", "preview"):
            _inside(folder, case[key], f"{path}: case {cid!r} {key}")
    return manifest


def _inside(folder: Path, rel, what: str) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise ValueError(f"{what} must be a relative path inside the set folder, got {rel!r}")
    p = (folder / rel).resolve()
    if not p.is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {rel!r} points outside the set folder")
    return p


_KNOWN = set(REQUIRED_CASE_FIELDS) | {"lesion_size"}


def _case(name: str, folder: Path, c: dict) -> TeachingCase:
    return TeachingCase(id=c["id"], modality=str(c["modality"]), lesion_type=str(c["lesion_type"]),
                        location=str(c["location"]), difficulty=str(c["difficulty"]), note=str(c["note"]),
                        seed=int(c["seed"]), healthy=bool(c["healthy"]),
                        image_path=_inside(folder, c["image"], "image"), mask_path=_inside(folder, c["mask"], "mask"),
                        preview_path=_inside(folder, c["preview"], "preview"), set_name=name,
                        lesion_size=str(c.get("lesion_size", "")),
                        extra={k: v for k, v in c.items() if k not in _KNOWN})


def list_cases(name: str, root=None) -> list[TeachingCase]:
    """All cases of set ``name``, in manifest order (images load on first access)."""
    manifest = load_manifest(name, root)
    folder = _set_dir(name, root)
    return [_case(name, folder, c) for c in manifest["cases"]]


def case_of_image_file(path) -> TeachingCase | None:
    """The teaching case whose image file ``path`` is, else None: a set's ``manifest.json`` beside it lists it, or its
    bytes are those of a case's image in the sets of :func:`default_root` and :data:`PACKAGE_ROOT` (a copy, e.g. the
    app's temporary copy of an upload). Its slices are stored already normalised (CT windowed, MRI scaled to
    [-1, 1]), so whoever runs the file itself (``diffuse-studio run``, an upload in the app) needs the manifest's
    modality rather than a guess from the values."""
    try:
        p = Path(path)
        folder = p.parent
        target = p.resolve()
        if (folder / "manifest.json").is_file():
            for case in list_cases(folder.name, folder.parent):
                if case.image_path == target:
                    return case
        return _case_with_bytes_of(p)
    except (OSError, ValueError, TypeError):
        return None            # not a readable teaching set: the file is read as any other


def _case_with_bytes_of(path: Path) -> TeachingCase | None:
    """A case of the known sets whose image file has the same bytes as ``path`` (sizes first, then contents)."""
    size = path.stat().st_size
    data = None
    for root in dict.fromkeys((default_root().resolve(), PACKAGE_ROOT.resolve())):
        if not root.is_dir():
            continue
        for name in list_sets(root):
            try:
                cases = list_cases(name, root)
            except (OSError, ValueError, KeyError):
                continue        # a broken set does not stop the search
            for case in cases:
                other = case.image_path
                if other.is_file() and other.stat().st_size == size:
                    data = path.read_bytes() if data is None else data
                    if other.read_bytes() == data:
                        return case
    return None


def load_case(name: str, case_id: str, root=None) -> TeachingCase:
    """Case ``case_id`` of set ``name`` with its image and mask loaded; KeyError if the set has no such case."""
    _check_name(case_id, "case id")
    for case in list_cases(name, root):
        if case.id == case_id:
            for p in (case.image_path, case.mask_path):
                if not p.is_file():
                    raise FileNotFoundError(f"teaching set {name!r} case {case_id!r}: missing file {p}")
            case.image, case.mask  # noqa: B018 - load now
            return case
    ids = [c.id for c in list_cases(name, root)]
    raise KeyError(f"teaching set {name!r} has no case {case_id!r}; cases: {', '.join(ids)}")
