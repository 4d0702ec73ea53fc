"""The case library: every case of the shipped teaching sets (:mod:`diffuse_core.data.teaching`, read-only) and of
the sets saved by the Curate tab (:mod:`diffuse_core.data.curation`, in their own data folder), listed for the
gallery and loaded onto the model's grid.

A case is named by its key: ``teaching/<set>/<id>`` (a shipped set, under :func:`teaching_root`),
``curated/<set>/<id>`` (a curated set, under :func:`curated_root`) or ``legacy/<set>/<id>`` (a curated set that an
older version saved among the teaching sets: listed read-only, never moved or changed). :func:`load_library_case`
turns a key into a :class:`LoadedCase`, the form every run of the app starts from.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.cases import CaseInput, case_from_normalized
from diffuse_core.data import curation, teaching
from diffuse_core.studio.model_store import MODELS

log = logging.getLogger(__name__)


@dataclass
class LibraryEntry:
    """One gallery case: what the gallery shows of it, and its slice ((C, H, W) in [-1, 1]) for the thumbnail."""

    key: str                 # "teaching/<set>/<id>", "curated/<set>/<id>" or "legacy/<set>/<id>"
    set_name: str
    case_id: str
    modality: str = ""
    lesion_type: str = ""
    healthy: bool = False
    has_truth: bool = False
    note: str = ""
    difficulty: str = ""
    image: np.ndarray | None = None
    truth: np.ndarray | None = None
    location: str = ""

    @property
    def caption(self) -> str:
        """Modality and lesion (the HTTP API's ``/cases`` caption; the gallery shows :attr:`gallery_caption`)."""
        what = "healthy" if self.healthy else (self.lesion_type or "lesion")
        return f"{self.modality.upper() or '?'} · {what}"

    @property
    def gallery_caption(self) -> str:
        """What tells one gallery case from another: modality and lesion, difficulty, then where (from the set's
        manifest: ``lesion_type``, ``difficulty``, ``location``), e.g. "FLAIR glioma · easy" / "R parietal"."""
        what = "normal" if self.healthy else (self.lesion_type or "lesion")
        first = f"{self.modality.upper() or '?'} {what}" + (f" · {self.difficulty}" if self.difficulty else "")
        where = short_location(self.location)
        return f"{first}\n{where}" if where else first

    @property
    def long_caption(self) -> str:
        return f"{self.caption} ({self.set_name}/{self.case_id})"


_WORDS = ((r"\bwhite matter\b", "WM"), (r"\bcortex and\s*", ""), (r"\s*\bsubcortical region\b", ""),
          (r"^right\b", "R"), (r"^left\b", "L"), (r"^bilateral\b", "bilat."), (r"\s+and\s+", " + "))


def short_location(location: str) -> str:
    """A manifest's location in a few words for a caption: "right parietal cortex and white matter" -> "R parietal
    WM", "left occipital subcortical region (PCA territory)" -> "L occipital, PCA", "axial level of the basal
    ganglia and third ventricle" -> "basal ganglia level"."""
    loc = " ".join(str(location or "").split())
    if not loc:
        return ""
    territory = re.search(r"\((\w+)(?: branch)? territory\)", loc)
    loc = re.sub(r"\s*\(.*?\)", "", loc)
    level = re.match(r"axial level of (?:the )?(.*)", loc)
    if level:
        first = re.sub(r"^bodies of the ", "", level.group(1).split(" and ")[0])
        return f"{first} level"
    for pattern, short in _WORDS:
        loc = re.sub(pattern, short, loc)
    return loc + (f", {territory.group(1)}" if territory else "")


@dataclass
class LoadedCase:
    """A case on the model's grid, ready to run, with what the UI says about it."""

    case: CaseInput
    key: str                 # identifies the exact slice (for the quiz and the curation)
    title: str
    healthy: bool | None = None
    lesion_type: str = ""
    location: str = ""
    difficulty: str = ""
    note: str = ""
    notes: tuple = ()
    origin: dict = field(default_factory=dict)   # how to load it again (diffuse_core.studio.selection.reload_case)
    modality_label: str = ""  # the modality as its set names it ("flair"), where case.modality is "mri" or "ct"


def teaching_root() -> Path:
    """Where the shipped teaching sets live (``$DIFFUSE_TEACHING_ROOT``, else ``teaching_sets/``); read-only."""
    return Path(teaching.default_root())


def curated_root() -> Path | None:
    """Where the Curate tab's sets live (:func:`diffuse_core.data.curation.default_root`), opened: cleaned of killed
    saves' debris once per process (the first save creates it). None (logged) when it is configured among the
    shipped sets or cannot be read."""
    try:
        return curation.open_root(create=False)
    except (ValueError, OSError) as err:
        log.warning("curated sets unavailable: %s", err)
        return None


_LIBRARY_CACHE: dict = {}
_LIBRARY_LOCK = threading.Lock()


def _library_stamp() -> tuple:
    """Changes whenever a manifest under the teaching or curated root is added, removed or rewritten."""
    stamp = []
    for root in {teaching_root(), curation.default_root()}:     # (reads only: nothing is created here)
        if root.is_dir():
            for m in sorted(root.glob("*/manifest.json")):
                try:
                    stamp.append((str(m), m.stat().st_mtime_ns))
                except OSError:
                    pass
    return tuple(stamp)


def list_library() -> list[LibraryEntry]:
    """Every case of every teaching set and curated set (cached until a manifest changes; a set that fails to read
    is skipped and logged)."""
    stamp = _library_stamp()
    with _LIBRARY_LOCK:
        if _LIBRARY_CACHE.get("stamp") == stamp:
            return list(_LIBRARY_CACHE["entries"])
    croot = curated_root()
    entries = (_read_teaching_sets() + (_read_curated_sets(croot, "curated") if croot is not None else [])
               + _read_curated_sets(teaching_root(), "legacy"))
    with _LIBRARY_LOCK:
        _LIBRARY_CACHE.update(stamp=stamp, entries=entries)
    return list(entries)


def _read_teaching_sets() -> list[LibraryEntry]:
    entries: list[LibraryEntry] = []
    troot = teaching_root()
    try:
        sets = list(teaching.list_sets(troot))
    except Exception as err:  # a damaged folder must not take the app down
        log.warning("cannot list teaching sets in %s: %s", troot, err)
        sets = []
    for name in sets:
        name = getattr(name, "name", name)
        if curation.is_curated_set(troot / str(name)):
            continue  # an older version's curated set: listed read-only as "legacy"
        try:
            cases = teaching.list_cases(name)
        except Exception as err:
            log.warning("cannot read teaching set %s: %s", name, err)
            continue
        for c in cases:
            truth = getattr(c, "mask", None)
            entries.append(LibraryEntry(
                key=f"teaching/{name}/{c.id}", set_name=str(name), case_id=str(c.id),
                modality=str(getattr(c, "modality", "") or ""),
                lesion_type=str(getattr(c, "lesion_type", "") or ""),
                healthy=bool(getattr(c, "healthy", False)), has_truth=truth is not None and np.asarray(truth).any(),
                note=str(getattr(c, "note", "") or ""), difficulty=str(getattr(c, "difficulty", "") or ""),
                image=np.asarray(c.image), truth=truth, location=str(getattr(c, "location", "") or "")))
    return entries


def _read_curated_sets(croot: Path, kind: str) -> list[LibraryEntry]:
    """The cases of the curated sets under ``croot`` with keys ``<kind>/<set>/<id>`` (reads only)."""
    entries: list[LibraryEntry] = []
    for name in curation.list_sets(croot):
        try:
            manifest = curation.load_manifest(name, croot)
        except (ValueError, OSError) as err:
            log.warning("cannot read curated set %s: %s", name, err)
            continue
        for e in manifest["cases"]:
            try:
                _, arrays = curation.read_case(name, e["id"], croot)
            except (ValueError, OSError, KeyError) as err:
                log.warning("cannot read curated case %s/%s: %s", name, e.get("id"), err)
                continue
            entries.append(LibraryEntry(
                key=f"{kind}/{name}/{e['id']}", set_name=name, case_id=e["id"], modality=e.get("modality", ""),
                lesion_type=e.get("lesion_type", "") or "curated", healthy=bool(e.get("healthy")),
                has_truth=bool(e.get("has_ground_truth")), note=e.get("note", ""),
                difficulty=str(e.get("difficulty", "") or ""), location=str(e.get("location", "") or ""),
                image=arrays["image"], truth=arrays.get("ground_truth")))
    return entries


def _on_model_scale(image, modality: str):
    """A stored MRI slice (background -1) on the tissue scale where the installed MRI model's card asks for it (the
    preparation of its training slices and of every upload); CT and other cards: as stored."""
    ref = MODELS.mri_reference() if modality != "ct" else None
    if not ref or ref.get("method") != "tissue":
        return image
    from diffuse_core.core.intensity import tissue_scale

    img = np.asarray(image, np.float32)
    brain = (img[0] if img.ndim == 3 else img) > -1.0 + 1e-3
    if brain.sum() < 16:
        return image
    return tissue_scale(img, brain, ref)[0]


def load_library_case(key: str) -> LoadedCase:
    """The gallery case ``key`` on the installed model's grid."""
    if not key or not isinstance(key, str):
        raise ValueError("no case selected: pick one in the gallery or upload a file")
    kind, _, rest = key.partition("/")
    set_name, _, case_id = rest.partition("/")
    size, channels = MODELS.grid()
    if kind == "teaching":
        try:
            c = teaching.load_case(set_name, case_id)
        except KeyError as err:
            raise ValueError(str(err.args[0] if err.args else err)) from None
        healthy = bool(getattr(c, "healthy", False))
        truth = None if healthy or getattr(c, "mask", None) is None else c.mask
        image, spacing = c.image, c.spacing
        modality = str(getattr(c, "modality", "mri") or "mri").lower()
        meta = dict(lesion_type=str(getattr(c, "lesion_type", "") or ""),
                    location=str(getattr(c, "location", "") or ""),
                    difficulty=str(getattr(c, "difficulty", "") or ""), note=str(getattr(c, "note", "") or ""))
    elif kind in ("curated", "legacy"):
        root = curation.default_root() if kind == "curated" else teaching_root()
        entry, arrays = curation.read_case(set_name, case_id, root)
        healthy = bool(entry.get("healthy"))
        truth, image = arrays.get("ground_truth"), arrays["image"]
        spacing = tuple(entry.get("spacing_mm") or (1.0, 1.0))
        modality = str(entry.get("modality") or "mri").lower()
        meta = dict(lesion_type=entry.get("lesion_type", ""), location=entry.get("location", ""),
                    difficulty=entry.get("difficulty", ""), note=entry.get("note", ""))
    else:
        raise ValueError(f"unknown case {key!r}: pick one in the gallery")
    image = _on_model_scale(image, modality)
    case = case_from_normalized(image, truth, size=size, channels=channels, source=key, modality=modality,
                                spacing=spacing)
    what = "healthy" if healthy else (meta["lesion_type"] or "lesion")
    return LoadedCase(case=case, key=key, title=f"{set_name} / {case_id} — {modality.upper()}, {what}",
                      healthy=healthy, origin={"kind": "library", "key": key}, modality_label=modality, **meta)
