"""Dif-fuse Studio, the web app: explore healthy counterfactuals of brain slices, quiz yourself, curate teaching sets.

Run ``python app.py`` (or ``diffuse-studio app``) and open http://127.0.0.1:7860. All gradio code lives here; the
engine (:mod:`diffuse_core`) computes, this file formats. Settings a user can change start at :data:`DEFAULTS`.

Environment variables
---------------------
``DIFFUSE_ASSETS``          folder holding ``ddpm/``, ``autoencoder/`` and ``classifier/`` (default: ``assets/``)
``DIFFUSE_MODEL_DIR``       the denoiser folder itself (overrides ``$DIFFUSE_ASSETS/ddpm``)
``DIFFUSE_SALIENCY_DIR``    folder holding ``autoencoder/`` and ``classifier/`` (overrides the assets)
``DIFFUSE_DEVICE``          ``auto`` (GPU when there is one), ``cpu`` or ``cuda``
``DIFFUSE_TEACHING_ROOT``   teaching sets shown in the gallery (default: ``teaching_sets/``)
``DIFFUSE_CURATED_ROOT``    where the Curate tab saves sets (default: the teaching root)
``DIFFUSE_MAX_UPLOAD_MB``   upload size limit in MB (default 50)
``DIFFUSE_CONCURRENCY``     how many model runs may go at once (default 2)
``DIFFUSE_APP_HOST`` / ``DIFFUSE_APP_PORT`` (or ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``) where to listen

On a Hugging Face Space with ZeroGPU the model work runs under ``spaces.GPU``; elsewhere that decorator is a no-op.
"""

# No ``from __future__ import annotations`` here: the CLI loads this file with importlib without registering it in
# sys.modules, and dataclasses with string annotations need the module registered.
import argparse
import functools
import hashlib
import html
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # importable as a module from the repo root without installing the package
    sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402

from diffuse_core.data import curation  # noqa: E402
from diffuse_core.io.export import heat_map, outline, to_uint8  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# settings: every default a user sees, in one place

DEFAULTS = {
    "k": 500,                 # noise level K in [1, T]; the paper's choice
    "percentile": 90.0,       # saliency percentile that becomes the mask (paper Fig. 5: 90 is best)
    "steps": 50,              # respaced sampling steps spanning [0, K]: fewer = faster, coarser
    "seed": 0,                # fixes every random draw of a run
    "window": "brain",        # CT window preset (CT inputs only)
    "variant": "paper",       # one network call per step (Algorithm 1)
    "mask_from": "acat",      # acat | gradcam | gradient | file | draw
    "opacity": 0.6,           # anomaly heat-map opacity over the input
    "display_size": 256,      # pixels a side of every picture shown
    "max_upload_mb": float(os.environ.get("DIFFUSE_MAX_UPLOAD_MB", 50)),
    "concurrency": int(os.environ.get("DIFFUSE_CONCURRENCY", 2)),   # model runs at once (queue)
    "max_queue": 64,          # waiting requests before new ones are turned away
    "max_batch": 12,          # cases per Curate batch
    "gpu_seconds": 120,       # ZeroGPU time asked for per run
    "healthy_flag_fraction": 0.01,   # healthy check passes when < 1 % of the brain is flagged anomalous
    "host": "127.0.0.1",
    "port": 7860,
}
K_RANGE = (1, 1000)
STEPS_RANGE = (1, 250)
CT_WINDOW_CHOICES = ["brain", "stroke", "subdural"]
MASK_SOURCES = [("ACAT saliency (paper)", "acat"), ("Grad-CAM", "gradcam"), ("Gradient", "gradient"),
                ("Mask file", "file"), ("Draw the mask", "draw")]
SALIENCY_METHODS = ("acat", "gradcam", "gradient")
CURRENT_CASE = "__current__"

USER_COLOR = (255, 70, 60)        # the trainee's drawing: red
MODEL_COLOR = (230, 60, 230)      # the model's binarised anomaly map: magenta
GT_COLOR = (60, 220, 60)          # ground truth: green (as diffuse_core.io.export)
MASK_COLOR = (0, 200, 255)        # Dif-fuse mask: cyan (as diffuse_core.io.export)

log = logging.getLogger("diffuse_studio.app")

# ZeroGPU: the GPU work runs under spaces.GPU where the package exists (a Hugging Face Space), else unchanged.
try:  # pragma: no cover - depends on the host
    import spaces

    GPU = spaces.GPU
except Exception:  # ImportError, or a spaces package that fails outside a Space
    def GPU(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)


# ---------------------------------------------------------------------------------------------------------------
# errors: the engine's ValueError text becomes a message in the app, never a stack trace


class ModelUnavailable(RuntimeError):
    """Weights are missing or unreadable; the message says what to do."""


def _as_gr_error(err: BaseException) -> gr.Error:
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, (ValueError, FileNotFoundError, ModelUnavailable)):
        msg = str(err.args[0] if isinstance(err, KeyError) and err.args else err) or type(err).__name__
        return gr.Error(msg[0].upper() + msg[1:], print_exception=False)
    log.exception("unexpected error in the app", exc_info=err)
    return gr.Error(f"Something went wrong ({type(err).__name__}: {err}). Try other settings or another case; if "
                    f"it persists, report it with this message.", print_exception=False)


def user_errors(fn):
    """Turn engine errors into gr.Error (for plain functions and generators alike)."""
    import inspect

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (GeneratorExit, KeyboardInterrupt):
                raise
            except Exception as err:
                raise _as_gr_error(err) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise _as_gr_error(err) from None
    return wrapper


# ---------------------------------------------------------------------------------------------------------------
# models: loaded lazily, cached per device, reloaded when the weights on disk change (they may still be training)


def _device():
    from diffuse_core.models.device import pick_device

    return pick_device(os.environ.get("DIFFUSE_DEVICE", "auto"))


class ModelStore:
    """The denoiser and the ACAT models, found through the environment variables of the module docstring."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache: dict = {}

    @staticmethod
    def ddpm_dir() -> Path:
        from diffuse_core.models.registry import default_model_dir

        override = os.environ.get("DIFFUSE_MODEL_DIR")
        return Path(override) if override else default_model_dir("ddpm")

    @staticmethod
    def saliency_dirs() -> tuple[Path, Path]:
        from diffuse_core.models.registry import default_model_dir

        if os.environ.get("DIFFUSE_SALIENCY_DIR"):
            base = Path(os.environ["DIFFUSE_SALIENCY_DIR"])
            return base / "autoencoder", base / "classifier"
        return default_model_dir("autoencoder"), default_model_dir("classifier")

    @staticmethod
    def _stamp(folder: Path) -> tuple | None:
        files = [folder / "config.json", folder / "model.safetensors"]
        if not all(f.is_file() for f in files):
            return None
        return tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)

    def ddpm_info(self) -> dict:
        """{"available", "path", "resolution", "channels", "steps_done", "reason"} without loading weights."""
        folder = self.ddpm_dir()
        info = {"available": False, "folder": str(folder), "resolution": 128, "channels": 1, "steps_done": None}
        if self._stamp(folder) is None:
            info["reason"] = (f"the healthy diffusion model is not installed (no config.json + model.safetensors in "
                              f"{folder}): train it with `diffuse-studio train ddpm`, or set DIFFUSE_ASSETS / "
                              f"DIFFUSE_MODEL_DIR to a folder holding it")
            return info
        try:
            meta = json.loads((folder / "config.json").read_text())
            info["resolution"] = int(meta["unet"]["resolution"])
            info["channels"] = int(meta["unet"].get("channels", 1))
            card = meta.get("card") or {}
            info["steps_done"] = (card.get("training") or {}).get("steps_done")
            mods = (card.get("data") or {}).get("modalities") or []
            info["modalities"] = [str(m).strip().lower() for m in (mods.split(",") if isinstance(mods, str) else mods)]
            info["recommended"] = card.get("recommended_settings") or {}
        except (ValueError, KeyError, TypeError) as err:
            info["reason"] = f"{folder / 'config.json'} is unreadable ({err}): retrain with `diffuse-studio train ddpm`"
            return info
        info["available"] = True
        return info

    def acat_info(self) -> dict:
        ae, clf = self.saliency_dirs()
        missing = [str(p) for p in (ae, clf) if self._stamp(p) is None]
        if missing:
            return {"available": False, "folders": [str(ae), str(clf)],
                    "reason": f"ACAT is unavailable: no trained weights in {' and '.join(missing)} (train them with "
                              f"`diffuse-studio train autoencoder` / `classifier`). Use a mask file or draw the "
                              f"mask instead."}
        return {"available": True, "folders": [str(ae), str(clf)]}

    def denoiser(self, device):
        folder = self.ddpm_dir()
        stamp = self._stamp(folder)
        if stamp is None:
            raise ModelUnavailable(self.ddpm_info()["reason"])
        key = ("ddpm", str(folder), str(device))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            from diffuse_core.models.denoiser import load_denoiser

            try:
                model = load_denoiser(folder, device=device)
            except (ValueError, FileNotFoundError) as err:
                raise ModelUnavailable(f"the healthy diffusion model could not be loaded: {err}") from None
            model.card = dict(model.card or {})
            model.card.setdefault("_version", _model_version(folder, model.card))
            self._cache[key] = (stamp, model)
            return model

    def saliency(self, device):
        """The ACAT models, or ModelUnavailable with the reason."""
        ae, clf = self.saliency_dirs()
        stamps = (self._stamp(ae), self._stamp(clf))
        if None in stamps:
            raise ModelUnavailable(self.acat_info()["reason"])
        key = ("acat", str(ae), str(clf), str(device))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamps:
                return hit[1]
            from diffuse_core.saliency.dispatch import load_saliency_models

            try:
                models = load_saliency_models(ae, clf, device)
            except (ValueError, FileNotFoundError) as err:
                raise ModelUnavailable(f"ACAT is unavailable: {err}. Use a mask file or draw the mask.") from None
            self._cache[key] = (stamps, models)
            return models


def _model_version(folder: Path, card: dict) -> str:
    """A short identifier of the denoiser: its card's version (or training steps) and a hash of the weights."""
    h = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    steps = ((card.get("training") or {}).get("steps_done"))
    name = card.get("version") or card.get("name") or "ddpm"
    return f"{name}{f'@{steps}steps' if steps is not None else ''}-sha256:{h.hexdigest()[:12]}"


MODELS = ModelStore()
MODALITY_NAMES = ("flair", "t1", "t1c", "t2", "ct")   # the modalities a model card can name (SynthBrain presets)


def apply_recommended_defaults(defaults: dict = DEFAULTS) -> dict:
    """K, percentile and steps from the installed model card's ``recommended_settings`` (chosen by
    ``diffuse-studio evaluate --write-cards`` or ``--sweeps-only --write-cards`` on validation data), where present
    and in range."""
    rec = MODELS.ddpm_info().get("recommended") or {}
    checks = {"k": lambda v: K_RANGE[0] <= v <= K_RANGE[1], "percentile": lambda v: 50 <= v <= 99,
              "steps": lambda v: STEPS_RANGE[0] <= v <= STEPS_RANGE[1]}
    for key, ok in checks.items():
        try:
            value = float(rec[key])
        except (KeyError, TypeError, ValueError):
            continue
        if ok(value):
            defaults[key] = value if key == "percentile" else int(value)
    return defaults


apply_recommended_defaults()


def model_grid() -> tuple[int, int]:
    """(resolution, channels) of the installed denoiser (128, 1 when none is installed yet)."""
    info = MODELS.ddpm_info()
    return info["resolution"], info["channels"]


def status_markdown() -> str:
    d, a = MODELS.ddpm_info(), MODELS.acat_info()
    parts = []
    if d["available"]:
        trained = f", {d['steps_done']} training steps" if d.get("steps_done") else ""
        parts.append(f"✓ Healthy diffusion model: {d['resolution']}×{d['resolution']}, {d['channels']} channel(s)"
                     f"{trained}.")
    else:
        parts.append(f"⚠ **No healthy diffusion model** — {d['reason']}. You can browse cases, but not run.")
    parts.append("✓ ACAT saliency models installed." if a["available"] else f"⚠ {a['reason']}")
    device = "GPU" if _device().type == "cuda" else "CPU"
    parts.append(f"Running on the {device}.")
    return " &nbsp;·&nbsp; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# the case library: teaching sets (diffuse_core.data.teaching) and curated sets (diffuse_core.data.curation)


@dataclass
class LibraryEntry:
    key: str                 # "teaching/<set>/<id>" or "curated/<set>/<id>"
    set_name: str
    case_id: str
    modality: str = ""
    lesion_type: str = ""
    healthy: bool = False
    has_truth: bool = False
    note: str = ""
    thumbnail: np.ndarray | None = None

    @property
    def caption(self) -> str:
        what = "healthy" if self.healthy else (self.lesion_type or "lesion")
        return f"{self.modality.upper() or '?'} · {what}"

    @property
    def long_caption(self) -> str:
        return f"{self.caption} ({self.set_name}/{self.case_id})"


@dataclass
class LoadedCase:
    """A case on the model's grid, ready to run, with what the UI says about it."""

    case: object             # workflow.CaseInput
    key: str                 # identifies the exact slice (for the quiz and the curation)
    title: str
    healthy: bool | None = None
    lesion_type: str = ""
    location: str = ""
    difficulty: str = ""
    note: str = ""
    notes: tuple = ()
    origin: dict = field(default_factory=dict)   # how to load it again (see reload_case)


def reload_case(origin: dict) -> LoadedCase:
    """Load a case again from its ``LoadedCase.origin``."""
    if origin.get("kind") == "upload":
        return load_upload_case(origin["files"], origin["slice"], origin["channel"], origin["window"], origin["gt"])
    return load_library_case(origin.get("key"))


def _teaching_module():
    try:
        from diffuse_core.data import teaching
    except ImportError:
        return None
    return teaching


def teaching_root() -> Path:
    mod = _teaching_module()
    if mod is not None and hasattr(mod, "default_root"):
        return Path(mod.default_root())
    return Path(os.environ.get("DIFFUSE_TEACHING_ROOT") or ROOT / "teaching_sets")


def _thumbnail(image_chw: np.ndarray, truth=None, size: int = 128) -> np.ndarray:
    rgb = grey_rgb(np.asarray(image_chw)[0], size)
    if truth is not None and np.asarray(truth).any():
        outline(rgb, _up_mask(truth, size), GT_COLOR, 1)
    return rgb


_LIBRARY_CACHE: dict = {}
_LIBRARY_LOCK = threading.Lock()


def _library_stamp() -> tuple:
    """Changes whenever a manifest under the teaching or curated root is added, removed or rewritten."""
    stamp = []
    for root in {teaching_root(), curation.default_root()}:
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
    entries = _read_library()
    with _LIBRARY_LOCK:
        _LIBRARY_CACHE.update(stamp=stamp, entries=entries)
    return list(entries)


def _read_library() -> list[LibraryEntry]:
    entries: list[LibraryEntry] = []
    mod, troot = _teaching_module(), teaching_root()
    if mod is not None:
        try:
            sets = list(mod.list_sets(troot))
        except Exception as err:  # a colleague's module or a damaged folder must not take the app down
            log.warning("cannot list teaching sets in %s: %s", troot, err)
            sets = []
        for name in sets:
            name = getattr(name, "name", name)
            if curation.is_curated_set(troot / str(name)):
                continue  # listed below
            try:
                cases = mod.list_cases(name)
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
                    note=str(getattr(c, "note", "") or ""), thumbnail=_thumbnail(c.image, truth)))
    croot = curation.default_root()
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
                key=f"curated/{name}/{e['id']}", set_name=name, case_id=e["id"], modality=e.get("modality", ""),
                lesion_type=e.get("lesion_type", "") or "curated", healthy=bool(e.get("healthy")),
                has_truth=bool(e.get("has_ground_truth")), note=e.get("note", ""),
                thumbnail=_thumbnail(arrays["image"], arrays.get("ground_truth"))))
    return entries


def _fit_to_grid(image: np.ndarray, truth, size: int, channels: int):
    """A library image (C, H, W) in [-1, 1] -> the model's grid and channel count."""
    from diffuse_core.io.preprocess import to_model_grid

    img = np.asarray(image, np.float32)
    img = img[None] if img.ndim == 2 else img
    if img.shape[0] != channels:
        if channels == 1:
            img = img[:1]
        else:
            raise ValueError(f"this case has {img.shape[0]} channel(s) but the model expects {channels}")
    geometry = None
    if img.shape[1:] != (size, size):
        img, geometry = to_model_grid(img, size=size, order=1, pad_value=-1.0)
        if truth is not None:
            truth = to_model_grid(np.asarray(truth, np.uint8), size=size, order=0, pad_value=0)[0]
    return np.clip(img, -1, 1).astype(np.float32), truth, geometry


def load_library_case(key: str) -> LoadedCase:
    """The gallery case ``key`` on the installed model's grid."""
    from diffuse_core.pipeline import brain_mask_from_image
    from diffuse_core.cases import CaseInput

    if not key or not isinstance(key, str):
        raise ValueError("no case selected: pick one in the gallery or upload a file")
    kind, _, rest = key.partition("/")
    set_name, _, case_id = rest.partition("/")
    size, channels = model_grid()
    if kind == "teaching":
        mod = _teaching_module()
        if mod is None:
            raise ValueError("teaching sets are not available in this installation")
        try:
            c = mod.load_case(set_name, case_id)
        except KeyError as err:
            raise ValueError(str(err.args[0] if err.args else err)) from None
        healthy = bool(getattr(c, "healthy", False))
        truth = None if healthy or getattr(c, "mask", None) is None else (np.asarray(c.mask) > 0).astype(np.uint8)
        truth = truth if truth is not None and truth.any() else None   # an empty lesion mask = no ground truth
        image, truth, geometry = _fit_to_grid(c.image, truth, size, channels)
        modality = str(getattr(c, "modality", "mri") or "mri").lower()
        meta = dict(lesion_type=str(getattr(c, "lesion_type", "") or ""),
                    location=str(getattr(c, "location", "") or ""),
                    difficulty=str(getattr(c, "difficulty", "") or ""), note=str(getattr(c, "note", "") or ""))
    elif kind == "curated":
        entry, arrays = curation.read_case(set_name, case_id, curation.default_root())
        healthy = bool(entry.get("healthy"))
        truth = arrays.get("ground_truth")
        truth = truth if truth is not None and np.asarray(truth).any() else None
        image, truth, geometry = _fit_to_grid(arrays["image"], truth, size, channels)
        modality = str(entry.get("modality") or "mri").lower()
        meta = dict(lesion_type=entry.get("lesion_type", ""), location=entry.get("location", ""),
                    difficulty=entry.get("difficulty", ""), note=entry.get("note", ""))
    else:
        raise ValueError(f"unknown case {key!r}: pick one in the gallery")
    brain = brain_mask_from_image(image)
    case = CaseInput(image=image, brain_mask=brain, ground_truth=truth, geometry=geometry, source=key, slice_index=0,
                     num_slices=1, modality="ct" if modality == "ct" else "mri", spacing=(1.0, 1.0),
                     channel_names=("image",))
    what = "healthy" if healthy else (meta["lesion_type"] or "lesion")
    return LoadedCase(case=case, key=key, title=f"{set_name} / {case_id} — {modality.upper()}, {what}",
                      healthy=healthy, origin={"kind": "library", "key": key}, **meta)


# ---------------------------------------------------------------------------------------------------------------
# uploads: PNG, JPEG, TIFF, DICOM (file or several files of a series), NIfTI, NumPy


def _paths(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [str(files)]
    out = []
    for f in files:
        out.append(str(getattr(f, "name", None) or getattr(f, "path", None) or f))
    return out


def upload_source(files) -> str:
    """One uploaded file -> its path; several (a DICOM series) -> a folder holding copies. Size-checked."""
    paths = _paths(files)
    if not paths:
        raise ValueError("no file uploaded: upload a PNG, JPEG, TIFF, DICOM or NIfTI slice or volume")
    limit = int(DEFAULTS["max_upload_mb"] * 2**20)
    total = sum(curation.check_upload_size(p, limit) for p in paths)
    if total > limit:
        raise ValueError(f"the uploaded files total {total / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit")
    if len(paths) == 1:
        return paths[0]
    digest = hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"diffuse-series-{digest}"
    if not folder.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".series-", dir=folder.parent))
        for i, p in enumerate(paths):
            shutil.copy(p, tmp / f"{i:04d}_{Path(p).name}")
        try:
            os.rename(tmp, folder)
        except OSError:  # another request made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def _is_ct(loaded) -> bool:
    from diffuse_core.io.preprocess import HU_AIR_THRESHOLD

    return (loaded.modality or "").upper() == "CT" or float(loaded.data.min()) < HU_AIR_THRESHOLD


def _probe(src):
    """Slice 0 of an upload, read for its slice count: the first slice of a volume is often empty (constant), which
    load_image refuses, so then it is read without the value checks."""
    from diffuse_core.io import loaders

    try:
        return loaders.load_image(src, slice_index=0)
    except ValueError:
        raw = getattr(loaders, "_load_raw", None)
        if raw is None:
            raise
        return raw(src, 0, loaders.DEFAULT_MAX_BYTES)   # raises the same clear error if the file is unreadable


def _short_paths(err: Exception, files) -> Exception:
    """The error with the server's temporary upload paths replaced by the file names the user knows."""
    msg = str(err)
    for p in sorted(_paths(files), key=len, reverse=True):
        msg = msg.replace(p, Path(p).name)
    msg = msg.replace(str(Path(tempfile.gettempdir()) / "diffuse-series-"), "series-")
    return type(err)(msg) if isinstance(err, (ValueError, FileNotFoundError)) else err


def inspect_upload(files) -> dict:
    """What the controls need to know about an upload: {"num_slices", "slice", "channels", "ct", "kind"}."""
    from diffuse_core.io.loaders import load_image

    try:
        src = upload_source(files)
        probe = _probe(src)
        n = int(probe.num_slices)
        middle = n // 2
        loaded = probe if middle == 0 else load_image(src, slice_index=middle)
    except (ValueError, FileNotFoundError) as err:
        raise _short_paths(err, files) from None
    return {"num_slices": n, "slice": middle, "channels": list(loaded.channel_names), "ct": _is_ct(loaded),
            "kind": loaded.kind, "shape": list(loaded.shape), "notes": list(loaded.notes)}


def load_upload_case(files, slice_index=None, channel=None, window=None, gt_file=None) -> LoadedCase:
    """The uploaded slice on the model's grid; ``channel`` picks which of several channels a 1-channel model sees;
    ``window`` is the CT preset (ignored for MRI); ``gt_file`` an optional lesion mask of the same slice grid."""
    try:
        return _load_upload_case(files, slice_index, channel, window, gt_file)
    except (ValueError, FileNotFoundError) as err:
        raise _short_paths(err, list(_paths(files)) + list(_paths(gt_file))) from None


def _load_upload_case(files, slice_index, channel, window, gt_file) -> LoadedCase:
    from diffuse_core.io.loaders import load_image
    from diffuse_core.cases import prepare_case

    src = upload_source(files)
    size, channels = model_grid()
    z = _int(slice_index, "slice index") if slice_index not in (None, "") else None
    if z is None:
        z = _probe(src).num_slices // 2
    loaded = load_image(src, slice_index=z)
    notes = []
    if loaded.data.shape[0] > 1 and channels == 1:
        names = list(loaded.channel_names)
        pick = names.index(channel) if channel in names else 0
        if channel not in (None, "") and channel not in names:
            raise ValueError(f"channel {channel!r} is not in this file (it has {', '.join(names)})")
        loaded.data = loaded.data[pick:pick + 1]
        loaded.channel_names = (names[pick],)
        notes.append(f"channel {names[pick]} used")
    ct = _is_ct(loaded)
    if window not in (None, "") and ct and window not in CT_WINDOW_CHOICES + ["stroke_narrow"]:
        raise ValueError(f"unknown CT window {window!r}: choose one of {', '.join(CT_WINDOW_CHOICES)}")
    gt_paths = _paths(gt_file)
    gt = gt_paths[0] if gt_paths else None
    if gt is not None:
        curation.check_upload_size(gt, int(DEFAULTS["max_upload_mb"] * 2**20))
    case = prepare_case(loaded, slice_index=loaded.slice_index, size=size, channels=channels, gt=gt,
                        window=(window or DEFAULTS["window"]) if ct else None)
    case.source = src
    name = Path(_paths(files)[0]).name if len(_paths(files)) == 1 else f"DICOM series ({len(_paths(files))} files)"
    where = f", slice {case.slice_index} of {case.num_slices}" if case.num_slices > 1 else ""
    key = f"upload:{src}:{case.slice_index}:{loaded.channel_names[0]}:{window if ct else ''}:{gt or ''}"
    origin = {"kind": "upload", "files": _paths(files), "slice": case.slice_index, "channel": loaded.channel_names[0],
              "window": window if ct else None, "gt": gt}
    return LoadedCase(case=case, key=key, title=f"{name}{where} — {case.modality.upper()}",
                      notes=tuple(notes) + tuple(case.notes), origin=origin)


def load_selected(source, gallery_key, files, slice_index, channel, window, gt_file) -> LoadedCase:
    if source == "upload":
        return load_upload_case(files, slice_index, channel, window, gt_file)
    return load_library_case(gallery_key)


# ---------------------------------------------------------------------------------------------------------------
# pictures


def _int(value, what: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    if not np.isfinite(f) or f != round(f):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(round(f))


def _up(rgb: np.ndarray, size: int, interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb.copy()
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def _up_mask(mask, size: int) -> np.ndarray:
    m = np.asarray(mask, np.uint8)
    if m.ndim == 3:
        m = m[0]
    return cv2.resize((m > 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def grey_rgb(image2d, size: int | None = None) -> np.ndarray:
    """[-1, 1] slice -> grey RGB uint8 at ``size`` (display size by default)."""
    size = size or DEFAULTS["display_size"]
    g = _up(to_uint8(np.clip(np.asarray(image2d, np.float32), -1, 1)), size)
    return np.repeat(g[..., None], 3, axis=2)


def with_outlines(rgb: np.ndarray, mask=None, truth=None, thickness: int = 1) -> np.ndarray:
    size = rgb.shape[0]
    if mask is not None and np.asarray(mask).any():
        outline(rgb, _up_mask(mask, size), MASK_COLOR, thickness)
    if truth is not None and np.asarray(truth).any():
        outline(rgb, _up_mask(truth, size), GT_COLOR, thickness)
    return rgb


def mask_picture(image2d, mask) -> np.ndarray:
    rgb = grey_rgb(image2d).astype(np.float32)
    m = _up_mask(mask, rgb.shape[0]).astype(bool)
    rgb[m] = rgb[m] * 0.45 + np.array(MASK_COLOR, np.float32) * 0.55
    out = rgb.astype(np.uint8)
    return with_outlines(out, mask)


def saliency_picture(saliency, brain) -> np.ndarray:
    return _up(heat_map(np.asarray(saliency, np.float32), brain_mask=brain), DEFAULTS["display_size"], cv2.INTER_LINEAR)


def overlay_picture(image2d, anomaly, opacity: float, mask=None, truth=None, vmax: float | None = None) -> np.ndarray:
    """The slice in grey with the anomaly heat map on top at ``opacity`` (0..1), mask cyan, ground truth green."""
    size = DEFAULTS["display_size"]
    a = np.asarray(anomaly, np.float32)
    top = max(float(vmax if vmax is not None else a.max()), 1e-3)
    grey = grey_rgb(image2d).astype(np.float32)
    heat = _up(heat_map(a, top), size, cv2.INTER_LINEAR).astype(np.float32)
    weight = float(np.clip(opacity, 0, 1)) * np.clip(_up(a, size, cv2.INTER_LINEAR) / top, 0, 1)[..., None]
    out = (grey * (1 - weight) + heat * weight).astype(np.uint8)
    return with_outlines(out, mask, truth)


def progress_html(done: int, total: int, label: str) -> str:
    pct = 100.0 * done / max(total, 1)
    return (f'<div class="df-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="df-progress-bar" style="width:{pct:.1f}%"></div></div>'
            f'<div class="df-progress-label">{html.escape(label)}</div>')


def change_chart(changes: list[dict]):
    """Plotly chart: mean |x_t - x_{t+1}| inside and outside the mask at every step of inversion and sampling."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if changes:
        x = list(range(1, len(changes) + 1))
        labels = [f"{c['phase']} {c['index'] + 1}/{c['total']} (t={c['timestep']})" for c in changes]
        fig.add_trace(go.Scatter(x=x, y=[c["inside"] for c in changes], mode="lines+markers", name="inside the mask",
                                 line={"color": "#00b4d8"}, marker={"size": 4}, text=labels,
                                 hovertemplate="%{text}<br>inside: %{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=x, y=[c["outside"] for c in changes], mode="lines+markers",
                                 name="outside the mask (brain)", line={"color": "#f77f00"}, marker={"size": 4},
                                 text=labels, hovertemplate="%{text}<br>outside: %{y:.4f}<extra></extra>"))
        n_inv = sum(1 for c in changes if c["phase"] == "invert")
        if n_inv:
            fig.add_vrect(x0=0.5, x1=n_inv + 0.5, fillcolor="#888", opacity=0.12, line_width=0,
                          annotation_text="inversion: image → noise", annotation_position="top left",
                          annotation_font_size=11)
            fig.add_annotation(x=n_inv + 0.5 + (len(changes) - n_inv) / 2, y=1.0, yref="paper", showarrow=False,
                               text="sampling: noise → healthy image", yanchor="top", font={"size": 11})
    fig.update_layout(height=320, margin={"l": 60, "r": 10, "t": 60, "b": 40}, template="plotly_white",
                      xaxis_title="step (inversion, then sampling)", yaxis_title="mean |change|",
                      title={"text": "How much each step changes the image", "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.3})
    return fig


# ---------------------------------------------------------------------------------------------------------------
# the run: mask, then Dif-fuse, streamed


def drawing_to_mask(editor_value, size: int) -> np.ndarray:
    """The strokes of a gr.ImageEditor value (any layer pixel with alpha > 0) -> (size, size) uint8 {0, 1}."""
    if editor_value is None:
        return np.zeros((size, size), np.uint8)
    layers = editor_value.get("layers") if isinstance(editor_value, dict) else None
    drawn = None
    for layer in layers or []:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[2] == 4:
            m = a[..., 3] > 0
        elif a.ndim == 3:
            m = a.max(axis=2) > 0
        else:
            m = a > 0
        drawn = m if drawn is None else (drawn | m) if drawn.shape == m.shape else drawn
    if drawn is None:
        return np.zeros((size, size), np.uint8)
    return (cv2.resize(drawn.astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)


def resolve_mask(lc: LoadedCase, mask_from: str, mask_file=None, drawing=None, percentile: float = 90.0):
    """What the mask comes from, checked before any GPU time is spent: ("saliency", method) or ("array", mask)."""
    if not 0.0 < float(percentile) < 100.0:
        raise ValueError(f"the saliency percentile must lie strictly between 0 and 100 (the paper uses 90), got "
                         f"{percentile}")
    mask_from = mask_from or DEFAULTS["mask_from"]
    case = lc.case
    if mask_from in SALIENCY_METHODS:
        if not MODELS.acat_info()["available"]:
            raise ModelUnavailable(MODELS.acat_info()["reason"])
        return ("saliency", mask_from)
    if mask_from == "file":
        paths = _paths(mask_file)
        if not paths:
            raise ValueError("mask source is 'Mask file' but no mask file was uploaded")
        curation.check_upload_size(paths[0], int(DEFAULTS["max_upload_mb"] * 2**20))
        from diffuse_core.cases import mask_for_case

        mask, saliency = mask_for_case(case, paths[0], percentile)
        return ("array", mask, saliency)
    if mask_from == "draw":
        mask = drawing_to_mask(drawing, case.image.shape[-1]) & case.brain_mask.astype(np.uint8)
        if not mask.any():
            raise ValueError("the drawn mask is empty (or outside the brain): paint the region to redraw in "
                             "'Draw the mask'")
        return ("array", mask, mask.astype(np.float32))
    raise ValueError(f"unknown mask source {mask_from!r}: choose one of {', '.join(v for _, v in MASK_SOURCES)}")


def check_settings(k, steps, seed) -> tuple[int, int, int]:
    from diffuse_core.core.schedule import validate_noise_level

    k, steps, seed = _int(k, "K"), _int(steps, "the number of steps"), _int(seed, "the seed")
    validate_noise_level(k, steps, K_RANGE[1])
    if steps > STEPS_RANGE[1]:
        raise ValueError(f"at most {STEPS_RANGE[1]} sampling steps, got {steps}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"the seed must be a non-negative whole number, got {seed}")
    return k, steps, seed


@GPU(duration=DEFAULTS["gpu_seconds"])
def dif_fuse_stream(image, brain, mask_spec, k: int, steps: int, seed: int, percentile: float):
    """The model work, on the GPU where there is one. Yields plain-numpy dicts (picklable for ZeroGPU):
    {"kind": "mask"}, then one {"kind": "step"} per sampler step, then {"kind": "result"}."""
    from diffuse_core.core.masks import mask_from_saliency
    from diffuse_core.pipeline import CounterfactualResult, iter_counterfactual
    from diffuse_core.saliency.dispatch import compute_saliency
    from diffuse_core.cases import anomaly_threshold_of

    device = _device()
    denoiser = MODELS.denoiser(device)
    if mask_spec[0] == "saliency":
        models = MODELS.saliency(device)
        saliency = compute_saliency(mask_spec[1], image, models, brain_mask=brain)
        saliency = np.asarray(saliency, np.float32) * brain
        mask = mask_from_saliency(saliency, brain, percentile)
    else:
        mask, saliency = mask_spec[1], mask_spec[2]
    mask = np.asarray(mask, np.uint8)
    yield {"kind": "mask", "mask": mask, "saliency": np.asarray(saliency, np.float32)}
    inside = mask.astype(bool)
    outside = brain.astype(bool) & ~inside
    prev = np.asarray(image, np.float32)
    for item in iter_counterfactual(denoiser, image, mask, brain_mask=brain, k=k, steps=steps, seed=seed,
                                    variant=DEFAULTS["variant"], saliency=saliency):
        if isinstance(item, CounterfactualResult):
            yield {"kind": "result", "result": item, "threshold": anomaly_threshold_of(denoiser),
                   "model_version": denoiser.card.get("_version", "unknown")}
            return
        x_t = item.x_t[0].detach().float().cpu().numpy()
        diff = np.abs(x_t - prev).mean(axis=0)
        prev = x_t
        yield {"kind": "step", "phase": item.phase, "index": item.index, "total": item.total,
               "timestep": int(item.timestep), "x_t": x_t[0], "x0": item.x0_pred[0, 0].detach().float().cpu().numpy(),
               "inside": float(diff[inside].mean()) if inside.any() else 0.0,
               "outside": float(diff[outside].mean()) if outside.any() else 0.0}


def run_case(lc: LoadedCase, mask_from="acat", mask_file=None, drawing=None, k=None, steps=None, seed=None,
             percentile=None):
    """Validate, then stream :func:`dif_fuse_stream` for a loaded case (same items, plus "changes" in the result)."""
    k = DEFAULTS["k"] if k is None else k
    steps = DEFAULTS["steps"] if steps is None else steps
    seed = DEFAULTS["seed"] if seed is None else seed
    percentile = DEFAULTS["percentile"] if percentile is None else float(percentile)
    k, steps, seed = check_settings(k, steps, seed)
    if not MODELS.ddpm_info()["available"]:
        raise ModelUnavailable(MODELS.ddpm_info()["reason"])
    spec = resolve_mask(lc, mask_from, mask_file, drawing, percentile)
    changes = []
    for item in dif_fuse_stream(lc.case.image, lc.case.brain_mask, spec, k, steps, seed, percentile):
        if item["kind"] == "step":
            changes.append({c: item[c] for c in ("phase", "index", "total", "timestep", "inside", "outside")})
        elif item["kind"] == "result":
            item["changes"] = changes
            item["settings"] = {"k": k, "steps": steps, "seed": seed, "percentile": percentile,
                                "mask_from": mask_from, "variant": DEFAULTS["variant"]}
        yield item


def scores(result, truth, threshold: float) -> dict:
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.core.metrics import dice, iou

    predicted = binarize(result.anomaly, threshold)
    brain = result.brain_mask.astype(bool)
    out = {"threshold": threshold, "anomaly_pixels": int(predicted.sum()),
           "flagged_fraction_of_brain": float(predicted[brain].mean()) if brain.any() else 0.0}
    if truth is not None:
        out["dice"] = dice(predicted, truth)
        out["iou"] = iou(predicted, truth)
    return out


def result_summary(lc: LoadedCase, item: dict) -> dict:
    r = item["result"]
    s = {**r.summary(), **scores(r, lc.case.ground_truth, item["threshold"]), "case": lc.title,
         "modality": lc.case.modality, "percentile": item["settings"]["percentile"],
         "mask_from": item["settings"]["mask_from"], "model_version": item["model_version"],
         "notes": list(lc.notes)}
    return s


def metrics_markdown(lc: LoadedCase, summary: dict) -> str:
    rows = [("Mean absolute change inside the brain", f"{summary['mean_abs_change_in_brain']:.4f} (of a 0–2 range)"),
            ("Mask (redrawn region)", f"{100 * summary['mask_fraction_of_brain']:.1f} % of the brain"),
            (f"Flagged as anomalous (anomaly > {summary['threshold']:.3g})",
             f"{100 * summary['flagged_fraction_of_brain']:.1f} % of the brain")]
    if "dice" in summary:
        rows.insert(0, ("Dice vs ground truth", f"**{summary['dice']:.3f}**"))
        rows.insert(1, ("IoU vs ground truth", f"{summary['iou']:.3f}"))
    rows.append(("Run", f"K={summary['k']}, {summary['steps']} steps, seed {summary['seed']}, "
                        f"{summary['network_calls']} network calls, {summary['seconds']:.1f} s on {summary['device']}"))
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    head = f"**{html.escape(lc.title)}**"
    if lc.healthy:
        ok = summary["flagged_fraction_of_brain"] < DEFAULTS["healthy_flag_fraction"]
        head += (" — a **healthy** case: the model should leave it nearly unchanged "
                 f"({'✓ it did' if ok else '⚠ it changed more than expected'}).")
    elif lc.case.ground_truth is None:
        head += " — no ground-truth lesion mask, so no Dice/IoU."
    trained_on = MODELS.ddpm_info().get("modalities") or []
    modality = str(summary.get("modality") or "").lower()
    if trained_on and modality in MODALITY_NAMES and modality not in trained_on:
        head += (f"\n\n⚠ **Out of domain:** the healthy model was trained on {', '.join(m.upper() for m in trained_on)} "
                 f"slices only, and this is {modality.upper()}: read the counterfactual with caution.")
    return f"{head}\n\n| Measure | Value |\n|---|---|\n{table}"


# ---------------------------------------------------------------------------------------------------------------
# UI callbacks (plain functions: the tests call them directly)

EXPLORE_OUTPUTS = ["live_noisy", "live_clean", "progress", "out_input", "out_saliency", "out_mask", "out_cf",
                   "out_overlay", "out_slider", "out_metrics", "out_chart", "out_summary", "run_state"]
API_OUTPUTS = ["frame", "status", "counterfactual", "overlay", "mask", "summary"]


def _skip_all(n: int) -> list:
    return [gr.skip() for _ in range(n)]


def preview_case(source, gallery_key, files, slice_index, channel, window, gt_file):
    """Case selected -> (preview picture, case description, quiz canvas, mask-drawing canvas)."""
    try:
        lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    except (ValueError, FileNotFoundError, ModelUnavailable) as err:
        gr.Warning(str(err))
        return None, f"⚠ {html.escape(str(err))}", None, None
    rgb = with_outlines(grey_rgb(lc.case.image[0]), truth=lc.case.ground_truth)
    canvas = {"background": grey_rgb(lc.case.image[0]), "layers": [], "composite": None}
    info = f"**{html.escape(lc.title)}**"
    if lc.case.ground_truth is not None:
        info += " · ground-truth lesion outlined in green"
    extra = [lc.note] + list(lc.notes) if lc.note else list(lc.notes)
    if extra:
        info += "\n\n" + "\n".join(f"- {html.escape(str(n))}" for n in extra if n)
    return rgb, info, canvas, canvas


@user_errors
def explore_run(source, gallery_key, files, slice_index, channel, window, gt_file, mask_from, mask_file, drawing,
                k, percentile, steps, seed, opacity, request: Optional[gr.Request] = None):
    """The Run button: streams (live noisy, live clean, progress, ...skips) per step, then every result.

    Ends early, with the "Stopped." message, once :func:`request_stop` flags this session."""
    n = len(EXPLORE_OUTPUTS)
    sid = _session_of(request)
    _take_stop(sid)   # a Stop pressed before this run started is not for it
    lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    yield [None, None, progress_html(0, 1, "Computing the saliency map and the mask…"), *_skip_all(n - 3)]
    mask = None
    for item in run_case(lc, mask_from, mask_file, drawing, k, steps, seed, percentile):
        if _take_stop(sid):
            yield [gr.skip(), gr.skip(), progress_html(0, 1, STOPPED_TEXT), *_skip_all(n - 3)]
            return
        if item["kind"] == "mask":
            mask = item["mask"]
            out = _skip_all(n)
            out[EXPLORE_OUTPUTS.index("out_saliency")] = saliency_picture(item["saliency"], lc.case.brain_mask)
            out[EXPLORE_OUTPUTS.index("out_mask")] = mask_picture(lc.case.image[0], mask)
            out[EXPLORE_OUTPUTS.index("out_input")] = with_outlines(grey_rgb(lc.case.image[0]), mask,
                                                                    lc.case.ground_truth)
            out[EXPLORE_OUTPUTS.index("progress")] = progress_html(0, 1, "Mask ready; inverting the image to noise…")
            yield out
        elif item["kind"] == "step":
            total = 2 * item["total"]
            done = item["index"] + 1 + (item["total"] if item["phase"] == "sample" else 0)
            what = "Inverting (DDIM) towards noise" if item["phase"] == "invert" else "Sampling back (Dif-fuse)"
            out = _skip_all(n)
            out[0] = with_outlines(grey_rgb(item["x_t"]), mask)
            out[1] = with_outlines(grey_rgb(item["x0"]), mask)
            out[2] = progress_html(done, total, f"{what}: step {item['index'] + 1}/{item['total']}, "
                                                f"t = {item['timestep']}")
            yield out
        else:
            yield explore_outputs(lc, item, opacity)


def explore_outputs(lc: LoadedCase, item: dict, opacity: float) -> list:
    r = item["result"]
    summary = result_summary(lc, item)
    truth = lc.case.ground_truth
    vmax = max(float(r.anomaly.max()), 1e-3)
    state = {"key": lc.key, "title": lc.title, "image": r.image, "counterfactual": r.counterfactual,
             "anomaly": r.anomaly, "mask": r.mask, "brain": r.brain_mask, "truth": truth,
             "saliency": r.saliency, "threshold": item["threshold"], "vmax": vmax, "summary": summary,
             "geometry": lc.case.geometry, "spacing": tuple(lc.case.spacing), "modality": lc.case.modality,
             "healthy": lc.healthy, "lesion_type": lc.lesion_type, "location": lc.location,
             "difficulty": lc.difficulty, "source": lc.case.source, "slice": lc.case.slice_index,
             "settings": item["settings"], "model_version": item["model_version"], "origin": lc.origin}
    before = with_outlines(grey_rgb(r.image[0]), truth=truth)
    after = with_outlines(grey_rgb(r.counterfactual[0]), truth=truth)
    values = {
        "live_noisy": gr.skip(), "live_clean": with_outlines(grey_rgb(r.counterfactual[0]), r.mask),
        "progress": progress_html(1, 1, f"Done in {r.seconds:.1f} s ({r.network_calls} network calls)."),
        "out_input": with_outlines(grey_rgb(r.image[0]), r.mask, truth),
        "out_saliency": saliency_picture(r.saliency if r.saliency is not None else r.mask, r.brain_mask),
        "out_mask": mask_picture(r.image[0], r.mask),
        "out_cf": with_outlines(grey_rgb(r.counterfactual[0]), r.mask),
        "out_overlay": overlay_picture(r.image[0], r.anomaly, opacity, r.mask, truth, vmax),
        "out_slider": (before, after), "out_metrics": metrics_markdown(lc, summary),
        "out_chart": change_chart(item["changes"]), "out_summary": summary, "run_state": state,
    }
    return [values[name] for name in EXPLORE_OUTPUTS]


def render_overlay(state, opacity):
    """Opacity slider moved: redraw the overlay from the last run (no model call)."""
    if not state:
        return gr.skip()
    return overlay_picture(state["image"][0], state["anomaly"], opacity, state["mask"], state["truth"], state["vmax"])


STOPPED_TEXT = "Stopped. Change the settings and press Run again."
# Sessions whose Stop was pressed during a run. Gradio's own cancel (a separate HTTP request) can land after the Stop
# handler has already written "Stopped.", letting one more step overwrite it; the run therefore also checks this set
# before every update and ends itself with the same message, so the page always ends on "Stopped.".
_STOP_REQUESTED: set[str] = set()
_STOP_LOCK = threading.Lock()


def _session_of(request) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def request_stop(request: Optional[gr.Request] = None):
    """The Stop button: flag this session's running Explore run to end, and say so."""
    sid = _session_of(request)
    if sid is not None:
        with _STOP_LOCK:
            _STOP_REQUESTED.add(sid)
    return progress_html(0, 1, STOPPED_TEXT)


def _take_stop(sid: str | None) -> bool:
    """Whether Stop was pressed for this session since the last call; the flag is consumed."""
    if sid is None:
        return False
    with _STOP_LOCK:
        pressed = sid in _STOP_REQUESTED
        _STOP_REQUESTED.discard(sid)
        return pressed


@user_errors
def healthy_check(choice, source, gallery_key, files, slice_index, channel, window, gt_file, k, percentile, steps,
                  seed, progress=gr.Progress()):
    """Run a healthy case: the model should leave it nearly unchanged. -> (before/after, markdown)."""
    if choice in (None, "", CURRENT_CASE):
        lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    else:
        lc = load_library_case(choice)
    if MODELS.acat_info()["available"]:
        mask_from, drawing, how = "acat", None, "the ACAT mask (top 10 % of the saliency)"
    else:  # without ACAT the harshest test: redraw the whole brain
        mask_from, how = "draw", "the whole brain (ACAT is unavailable)"
        drawing = {"layers": [np.dstack([np.zeros_like(lc.case.brain_mask)] * 3 + [lc.case.brain_mask * 255])]}
    result = None
    for item in run_case(lc, mask_from, None, drawing, k, steps, seed, percentile):
        if item["kind"] == "step":
            progress((item["index"] + 1 + (item["total"] if item["phase"] == "sample" else 0)) / (2 * item["total"]),
                     desc="inverting" if item["phase"] == "invert" else "sampling")
        elif item["kind"] == "result":
            result = item
    r = result["result"]
    s = scores(r, None, result["threshold"])
    change = r.summary()["mean_abs_change_in_brain"]
    ok = s["flagged_fraction_of_brain"] < DEFAULTS["healthy_flag_fraction"]
    verdict = ("✓ **Nearly unchanged**, as a model trained on healthy slices should leave a healthy slice." if ok else
               "⚠ **Changed more than expected** for a healthy slice: the model may be undertrained, or the slice "
               "is not healthy.")
    label = "healthy case" if lc.healthy else ("case not marked healthy" if lc.healthy is False else "uploaded case")
    md = (f"**{html.escape(lc.title)}** ({label}); redrawn region: {how}.\n\n"
          f"| Measure | Value |\n|---|---|\n"
          f"| Mean absolute change inside the brain | **{change:.4f}** (intensities span 0–2) |\n"
          f"| Brain flagged as anomalous (anomaly > {s['threshold']:.3g}) | "
          f"**{100 * s['flagged_fraction_of_brain']:.2f} %** |\n\n"
          f"{verdict}")
    return (grey_rgb(r.image[0]), grey_rgb(r.counterfactual[0])), md


@user_errors
def quiz_check(drawing, state, source, gallery_key, files, slice_index, channel, window, gt_file):
    """The trainee's drawing vs the ground truth and vs the model's anomaly map. -> (picture, markdown)."""
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.core.metrics import dice, iou

    lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    size = lc.case.image.shape[-1]
    drawn = drawing_to_mask(drawing, size)
    if not drawn.any():
        raise ValueError("draw where you think the lesion is first (use the brush on the slice)")
    truth = lc.case.ground_truth
    model = None
    if state and state.get("key") == lc.key:
        model = binarize(state["anomaly"], state["threshold"])
    rgb = grey_rgb(lc.case.image[0])
    d = DEFAULTS["display_size"]
    outline(rgb, _up_mask(drawn, d), USER_COLOR, 2)
    if truth is not None:
        outline(rgb, _up_mask(truth, d), GT_COLOR, 2)
    if model is not None:
        outline(rgb, _up_mask(model, d), MODEL_COLOR, 1)
    lines = ["| Your drawing vs | Dice | IoU |", "|---|---|---|"]
    if truth is not None:
        lines.append(f"| ground truth (green) | **{dice(drawn, truth):.3f}** | {iou(drawn, truth):.3f} |")
    if model is not None:
        lines.append(f"| model's anomaly map (magenta) | **{dice(drawn, model):.3f}** | {iou(drawn, model):.3f} |")
    notes = []
    if truth is None:
        notes.append("This case has no ground-truth lesion mask" + (" (it is healthy: any drawing is a false alarm)"
                                                                    if lc.healthy else "") + ".")
    if model is None:
        notes.append("Run the model on this case (Explore → Run) to compare with its anomaly map too.")
    elif truth is not None:
        notes.append(f"For reference, the model's own Dice vs the ground truth: **{dice(model, truth):.3f}**.")
    md = "\n".join(lines) if len(lines) > 2 else ""
    legend = "Outlines: **red** = your drawing, **green** = the expert's lesion, **magenta** = the model's anomaly map."
    return rgb, (md + "\n\n" + " ".join(notes)).strip() + "\n\n" + legend


# ---- curation -------------------------------------------------------------------------------------------------


def _review_thumbnail(res: dict) -> np.ndarray:
    """2 x 2 tile: input (green truth) | counterfactual / anomaly map | mask."""
    size = 128
    a = with_outlines(grey_rgb(res["image"][0], size), truth=res.get("truth"))
    b = grey_rgb(res["counterfactual"][0], size)
    c = _up(heat_map(res["anomaly"], res["vmax"]), size, cv2.INTER_LINEAR)
    m = _up_mask(res["mask"], size)
    d = a.copy()
    d[m.astype(bool)] = (0.45 * d[m.astype(bool)] + 0.55 * np.array(MASK_COLOR)).astype(np.uint8)
    gap = np.full((size, 2, 3), 255, np.uint8)
    top, bottom = np.concatenate([a, gap, b], axis=1), np.concatenate([c, gap, d], axis=1)
    return np.concatenate([top, np.full((2, top.shape[1], 3), 255, np.uint8), bottom], axis=0)


STATUS_ICON = {"pending": "○", "accepted": "✓", "rejected": "✗"}


def review_gallery(items: list) -> list:
    out = []
    for it in items:
        saved = f" · saved as {it.result['saved_as']}" if it.result.get("saved_as") else ""
        out.append((_review_thumbnail(it.result), f"{STATUS_ICON[it.status]} {it.label}{saved}"))
    return out


def _review_result(lc: LoadedCase, item: dict) -> dict:
    r = item["result"]
    return {"image": r.image, "counterfactual": r.counterfactual, "anomaly": r.anomaly, "mask": r.mask,
            "brain": r.brain_mask, "truth": lc.case.ground_truth, "vmax": max(float(r.anomaly.max()), 1e-3),
            "geometry": lc.case.geometry, "spacing": tuple(lc.case.spacing), "modality": lc.case.modality,
            "healthy": lc.healthy, "lesion_type": lc.lesion_type, "location": lc.location,
            "difficulty": lc.difficulty, "source": lc.case.source, "slice": lc.case.slice_index,
            "settings": item["settings"], "model_version": item["model_version"], "summary": result_summary(lc, item),
            "title": lc.title, "origin": lc.origin}


def _curate_mask_from(lc: LoadedCase) -> tuple[str, dict | None]:
    """ACAT when installed; otherwise the case's own lesion outline, dilated (an educator's mask)."""
    if MODELS.acat_info()["available"]:
        return "acat", None
    truth = lc.case.ground_truth
    if truth is None or not np.asarray(truth).any():
        raise ModelUnavailable(MODELS.acat_info()["reason"].replace("Use a mask file or draw the mask instead.",
                               "Curate needs ACAT for cases without a lesion mask."))
    m = cv2.dilate(np.asarray(truth, np.uint8), np.ones((5, 5), np.uint8)) & lc.case.brain_mask.astype(np.uint8)
    return "draw", {"layers": [m * 255]}


def _run_for_review(lc: LoadedCase, k, steps, seed, percentile) -> dict:
    mask_from, drawing = _curate_mask_from(lc)
    for item in run_case(lc, mask_from, None, drawing, k, steps, seed, percentile):
        if item["kind"] == "result":
            return _review_result(lc, item)
    raise RuntimeError("the sampler ended without a result")  # pragma: no cover


def _batch_sources(case_keys, files) -> list[tuple[str, str, object]]:
    """[(label, kind, ref)] for the chosen gallery cases and the uploaded files."""
    out = [(k.split("/", 1)[-1], "library", k) for k in (case_keys or [])]
    out += [(Path(p).name, "upload", p) for p in _paths(files)]
    if not out:
        raise ValueError("choose cases from the list or upload files to generate a batch")
    if len(out) > DEFAULTS["max_batch"]:
        raise ValueError(f"{len(out)} cases chosen: at most {DEFAULTS['max_batch']} per batch")
    return out


@user_errors
def curate_generate(case_keys, files, k, steps, percentile, seed, items):
    """Generate counterfactuals for a batch; streams (status, review gallery, items)."""
    sources = _batch_sources(case_keys, files)
    check_settings(k, steps, seed)
    items = list(items or [])
    failed = []
    for i, (label, kind, ref) in enumerate(sources):
        yield f"Generating {i + 1}/{len(sources)}: {html.escape(label)}…", review_gallery(items), items
        try:
            lc = load_library_case(ref) if kind == "library" else load_upload_case([ref])
            res = _run_for_review(lc, k, steps, seed, percentile)
        except (ValueError, FileNotFoundError, ModelUnavailable) as err:
            if isinstance(err, ModelUnavailable) and not MODELS.ddpm_info()["available"]:
                raise
            failed.append(f"{label}: {err}")
            continue
        items.append(curation.ReviewItem(key=lc.key, label=label, result=res))
    counts = curation.review_counts(items)
    msg = (f"Batch done: {len(sources) - len(failed)} generated. To review: {counts['pending']} pending, "
           f"{counts['accepted']} accepted, {counts['rejected']} rejected. Click a result to review it.")
    if failed:
        msg += "\n\nSkipped:\n" + "\n".join(f"- {html.escape(f)}" for f in failed)
    yield msg, review_gallery(items), items


def send_to_curate(state, items):
    """Explore's last result -> the review list."""
    if not state:
        raise gr.Error("Run the model on a case first, then send the result to Curate.", print_exception=False)
    items = list(items or [])
    res = {k: state[k] for k in ("image", "counterfactual", "anomaly", "mask", "brain", "truth", "vmax", "geometry",
                                 "spacing", "modality", "healthy", "lesion_type", "location", "difficulty", "source",
                                 "slice", "settings", "model_version", "summary", "title", "origin")}
    items.append(curation.ReviewItem(key=state["key"], label=state["title"].split(" — ")[0], result=res))
    gr.Info("Added to the Curate review list.")
    return review_gallery(items), items


def review_select(evt: gr.SelectData, items):
    """A review thumbnail clicked -> (index, before/after, details, note)."""
    i = evt.index if isinstance(evt.index, int) else evt.index[0]
    return (i, *review_details(items, i))


def review_details(items, i):
    if not items or i is None or not 0 <= i < len(items):
        return None, "Select a result above.", ""
    it = items[i]
    r = it.result
    s = r["summary"]
    dice = f", Dice {s['dice']:.3f}" if "dice" in s else ""
    md = (f"**{html.escape(it.label)}** — {STATUS_ICON[it.status]} {it.status} · run {it.runs} · K={s['k']}, "
          f"{s['steps']} steps, seed {s['seed']}, percentile {s['percentile']:g}{dice}, mean change in brain "
          f"{s['mean_abs_change_in_brain']:.4f}")
    return (with_outlines(grey_rgb(r["image"][0]), truth=r.get("truth")), grey_rgb(r["counterfactual"][0])), md, it.note


def review_decide(decision: str):
    def decide(items, i, note):
        if not items or i is None or not 0 <= i < len(items):
            raise gr.Error("Select a result in the review gallery first.", print_exception=False)
        items = list(items)
        items[i].decide(decision)
        items[i].note = note or ""
        counts = curation.review_counts(items)
        status = (f"{counts['accepted']} accepted, {counts['rejected']} rejected, {counts['pending']} pending.")
        return (review_gallery(items), items, *review_details(items, i)[:2], status)
    decide.__name__ = f"review_{decision}"
    return decide


@user_errors
def review_rerun(items, i, k, steps, percentile, seed):
    """Rerun the selected result with the current settings (it goes back to pending)."""
    if not items or i is None or not 0 <= i < len(items):
        raise ValueError("select a result in the review gallery first")
    items = list(items)
    it = items[i]
    lc = reload_case(it.result["origin"])
    it.result = _run_for_review(lc, k, steps, seed, percentile)
    it.status, it.runs = "pending", it.runs + 1
    return (review_gallery(items), items, *review_details(items, i)[:2], f"Reran {html.escape(it.label)}.")


@user_errors
def curate_save(items, set_name):
    """Save the accepted results into the named set. -> (status, zip file, sets dropdown, gallery, items)."""
    set_name = curation.sanitize_name(set_name or "", "set name")
    items = list(items or [])
    todo = [it for it in items if it.status == "accepted" and not it.result.get("saved_as")]
    if not todo:
        raise ValueError("no accepted, unsaved results: accept some in the review first")
    root = curation.default_root()
    saved = []
    for it in todo:
        r = it.result
        base_id = Path(it.label.split("/")[-1]).name.split(".")[0]      # "demo/case01" -> case01, "a.nii.gz" -> a
        case_id = curation.unique_case_id(set_name, base_id, root)
        case = curation.CuratedCase(
            case_id=case_id, image=r["image"], counterfactual=r["counterfactual"], anomaly=r["anomaly"],
            mask=r["mask"], settings=r["settings"], seed=r["settings"]["seed"], model_version=r["model_version"],
            note=it.note, geometry=r["geometry"], spacing=r["spacing"], ground_truth=r.get("truth"),
            brain_mask=r["brain"], modality=r["modality"], lesion_type=r.get("lesion_type") or "",
            location=r.get("location") or "", difficulty=r.get("difficulty") or "", healthy=bool(r.get("healthy")),
            source=str(r["source"]), slice_index=int(r["slice"]))
        try:
            curation.save_case(set_name, case, root)
        except curation.CaseExistsError:  # someone saved that id a moment ago: take the next free one
            case.case_id = curation.unique_case_id(set_name, base_id, root)
            curation.save_case(set_name, case, root)
        r["saved_as"] = f"{set_name}/{case.case_id}"
        saved.append(case.case_id)
    archive = curation.zip_set(set_name, root)
    n = len(curation.load_manifest(set_name, root)["cases"])
    msg = f"Saved {len(saved)} case(s) into **{html.escape(set_name)}** ({n} in the set): {', '.join(saved)}."
    return (msg, str(archive), gr.update(choices=curation.list_sets(root), value=set_name), review_gallery(items),
            items)


@user_errors
def curate_zip(set_name):
    if not set_name:
        raise ValueError("choose a saved set to download")
    return str(curation.zip_set(set_name, curation.default_root()))


# ---- API endpoints (gradio_client) ----------------------------------------------------------------------------


@user_errors
def api_counterfactual(file, case_key, k, steps, percentile, seed, slice_index, window, mask_file):
    """``/counterfactual``: a file (or a gallery case key) + settings -> streamed frames, then the counterfactual,
    the anomaly overlay, the mask and a JSON summary. The mask comes from ACAT, or from ``mask_file`` if given."""
    if _paths(file):
        z = None if slice_index in (None, "") or float(slice_index) < 0 else slice_index
        lc = load_upload_case(file, z, None, window or None, None)
    elif case_key:
        lc = load_library_case(case_key)
    else:
        raise ValueError("give a file or a case key (see /cases)")
    mask_from = "file" if _paths(mask_file) else "acat"
    mask = None
    for item in run_case(lc, mask_from, mask_file, None, k, steps, seed, percentile):
        if item["kind"] == "mask":
            mask = item["mask"]
        elif item["kind"] == "step":
            frame = np.concatenate([with_outlines(grey_rgb(item["x_t"]), mask),
                                    with_outlines(grey_rgb(item["x0"]), mask)], axis=1)
            yield frame, f"{item['phase']} {item['index'] + 1}/{item['total']} t={item['timestep']}", None, None, \
                None, None
        else:
            r = item["result"]
            summary = result_summary(lc, item)
            yield (None, "done", grey_rgb(r.counterfactual[0]),
                   overlay_picture(r.image[0], r.anomaly, DEFAULTS["opacity"], r.mask, lc.case.ground_truth),
                   mask_picture(r.image[0], r.mask), summary)


def api_cases() -> list[dict]:
    """``/cases``: the gallery's cases (key, caption, modality, lesion type, healthy, has ground truth)."""
    return [{"key": e.key, "caption": e.caption, "modality": e.modality, "lesion_type": e.lesion_type,
             "healthy": e.healthy, "has_ground_truth": bool(e.has_truth)} for e in list_library()]


def api_status() -> dict:
    """``/status``: which models are installed, the device and the defaults."""
    return {"ddpm": MODELS.ddpm_info(), "acat": MODELS.acat_info(), "device": str(_device()),
            "defaults": {k: DEFAULTS[k] for k in ("k", "percentile", "steps", "seed", "window")}}


# ---------------------------------------------------------------------------------------------------------------
# the page

CSS = """
.df-progress { width: 100%; height: 12px; background: var(--neutral-200, #e5e7eb); border-radius: 6px;
               overflow: hidden; }
.df-progress-bar { height: 100%; background: linear-gradient(90deg, #0ea5e9, #6366f1); transition: width .2s; }
.df-progress-label { font-size: 0.85em; margin-top: 4px; color: var(--body-text-color-subdued, #666); }
.df-status { font-size: 0.9em; }
.df-hint { font-size: 0.8em; color: var(--body-text-color-subdued, #666); }
#df-gallery .caption-label { font-size: 0.75em; }
footer { display: none !important; }
"""

NOTE_SALIENCY = """**The saliency map (ACAT).** A classifier tells healthy from diseased slices; an autoencoder lets us
nudge the slice, in small steps, until the classifier calls it healthy. The saliency map shows *where* the slice had to
change: bright = the region the classifier found suspicious. The brightest 10 % (the *percentile* control), smoothed,
becomes the **mask** (cyan outline)."""
NOTE_REDRAW = """**Why redraw inside and reconstruct outside.** The slice is first turned into noise step by step
(*inversion*). On the way back, a diffusion model that has only ever seen **healthy** brains redraws the inside of the
mask freely (a random DDPM step), while outside the mask it retraces the slice exactly (a deterministic DDIM step). The
two are fused at every step, so the counterfactual keeps this patient's anatomy and only the suspicious region becomes
healthy-looking. The **anomaly map** is the difference between the slice and its healthy counterfactual."""
NOTE_K = """**What K does.** K (1–1000) is how far towards pure noise the slice is taken before it is redrawn. Small K:
the counterfactual stays close to the input, and a large lesion may survive. Large K: more is forgotten and redrawn,
so lesions disappear but the anatomy may drift. The paper uses K = 500. **Steps** trade speed for quality: the path
from K back to 0 is walked in that many steps (one network call each way per step)."""
NOTE_CHART = """**The step chart.** How much each step changes the image, inside the mask (cyan) and outside it
(orange).
Inside, the sampler is free to redraw; outside it only retraces the slice, so its changes mirror the inversion."""


def _explore_controls(prefix: str):
    c = {}
    c["k"] = gr.Slider(*K_RANGE, value=DEFAULTS["k"], step=1, label="Noise level K", elem_id=f"{prefix}-k",
                       info="how far towards noise before redrawing (paper: 500)")
    c["percentile"] = gr.Slider(50, 99, value=DEFAULTS["percentile"], step=1, label="Saliency percentile",
                                elem_id=f"{prefix}-percentile",
                                info="the mask is the saliency above this percentile (paper: 90)")
    c["steps"] = gr.Slider(*STEPS_RANGE, value=DEFAULTS["steps"], step=1, label="Sampling steps",
                           elem_id=f"{prefix}-steps", info="fewer = faster, more = finer")
    c["seed"] = gr.Number(value=DEFAULTS["seed"], precision=0, label="Seed", minimum=0, elem_id=f"{prefix}-seed")
    return c


def build_demo(title: str = "Dif-fuse Studio") -> gr.Blocks:
    """The whole app as a gr.Blocks (not launched)."""
    d = DEFAULTS["display_size"]
    img_kw = dict(height=d, width=d, interactive=False, buttons=["download", "fullscreen"], format="png")
    # delete_cache: every 30 min, drop cached pictures older than 2 h (streamed frames would pile up on a host)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(1800, 7200)) as demo:
        gr.Markdown(f"# {title}\nHealthy counterfactuals of brain slices with **Dif-fuse**: a diffusion model "
                    "trained only on healthy brains redraws the suspicious region; the difference is the anomaly map.")
        status = gr.Markdown(status_markdown(), elem_classes="df-status")

        gallery_keys = gr.State([])
        selected_key = gr.State(None)
        run_state = gr.State(None)
        review_items = gr.State([])
        review_index = gr.State(None)

        with gr.Tabs():
            # ===================================================================================== Explore
            with gr.Tab("Explore", id="explore"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=340):
                        gr.Markdown("### 1 · Choose a case")
                        source = gr.Radio([("Teaching set", "gallery"), ("Upload", "upload")], value="gallery",
                                          label="Case from", elem_id="df-source")
                        with gr.Group(visible=True) as gallery_group:
                            gallery = gr.Gallery(label="Teaching cases (green = lesion outline)", columns=3,
                                                 height=300, allow_preview=False, object_fit="contain",
                                                 elem_id="df-gallery", interactive=False)
                            refresh = gr.Button("↻ Refresh the case list", size="sm")
                        with gr.Group(visible=False) as upload_group:
                            files = gr.File(label="Slice or volume", file_count="multiple", elem_id="df-upload")
                            gr.Markdown("PNG, JPEG, TIFF, NIfTI, or DICOM (one file, or all files of a series); "
                                        f"up to {DEFAULTS['max_upload_mb']:g} MB.", elem_classes="df-hint")
                            slice_slider = gr.Slider(0, 1, value=0, step=1, label="Axial slice", visible=False)
                            channel = gr.Dropdown([], label="Channel to use", visible=False, allow_custom_value=True)
                            window = gr.Dropdown(CT_WINDOW_CHOICES, value=DEFAULTS["window"],
                                                 label="CT window preset", visible=False)
                            gt_file = gr.File(label="Lesion mask (optional)", file_count="single")
                        case_info = gr.Markdown("Pick a case in the gallery or upload one.")
                        gr.Markdown("### 2 · Settings")
                        ctl = _explore_controls("df")
                        with gr.Row():
                            run_btn = gr.Button("▶ Run", variant="primary", elem_id="df-run")
                            stop_btn = gr.Button("■ Stop", variant="stop", elem_id="df-stop")
                        with gr.Accordion("Mask source", open=False, elem_id="df-mask-source"):
                            mask_from = gr.Radio(MASK_SOURCES, value=DEFAULTS["mask_from"], label="Mask from",
                                                 info="ACAT as in the paper, or your own region")
                            mask_file = gr.File(label="Mask file (binary mask or saliency map)", file_count="single",
                                                visible=False)
                            mask_draw = gr.ImageEditor(label="Paint the region to redraw", type="numpy",
                                                       elem_id="df-mask-draw", image_mode="RGBA", sources=[],
                                                       transforms=[], layers=False, visible=False,
                                                       brush=gr.Brush(colors=["#00c8ff"], color_mode="fixed",
                                                                      default_size=10),
                                                       canvas_size=(d, d), fixed_canvas=True, height=d + 90)
                    with gr.Column(scale=7):
                        gr.Markdown("### 3 · Watch it work")
                        with gr.Row():
                            preview = gr.Image(label="Selected slice", **img_kw)
                            live_noisy = gr.Image(label="Noisy image x_t", **{**img_kw, "format": "webp"})
                            live_clean = gr.Image(label="Predicted clean", **{**img_kw, "format": "webp"})
                        progress = gr.HTML(progress_html(0, 1, "Ready."))
                        gr.Markdown("### 4 · Results")
                        with gr.Row():
                            out_input = gr.Image(label="Input", **img_kw)
                            out_saliency = gr.Image(label="Saliency", **img_kw)
                            out_mask = gr.Image(label="Mask", **img_kw)
                        with gr.Row():
                            out_cf = gr.Image(label="Counterfactual", elem_id="df-counterfactual", **img_kw)
                            out_overlay = gr.Image(label="Anomaly map", **img_kw)
                            out_slider = gr.ImageSlider(label="Before / after", type="numpy", height=d,
                                                        interactive=False, max_height=d)
                        gr.Markdown("Outlines: <span style='color:#00c8ff'>**cyan**</span> = the mask (region "
                                    "redrawn), <span style='color:#3cdc3c'>**green**</span> = the expert's lesion "
                                    "outline. Heat maps: black = nothing, bright yellow = strongest.",
                                    elem_classes="df-legend")
                        opacity = gr.Slider(0, 1, value=DEFAULTS["opacity"], step=0.05, label="Anomaly map opacity",
                                            elem_id="df-opacity")
                        out_metrics = gr.Markdown()
                        out_chart = gr.Plot(show_label=False)
                        with gr.Row():
                            to_curate = gr.Button("Send this result to Curate", size="sm")
                        with gr.Accordion("Run summary (JSON)", open=False):
                            out_summary = gr.JSON()
                        with gr.Accordion("What am I looking at?", open=False):
                            gr.Markdown(NOTE_SALIENCY)
                            gr.Markdown(NOTE_REDRAW)
                            gr.Markdown(NOTE_K)
                            gr.Markdown(NOTE_CHART)

            # ===================================================================================== Quiz
            with gr.Tab("Quiz", id="quiz"):
                gr.Markdown("Draw where you think the lesion is on the case chosen in **Explore**, then check. You "
                            "are scored (Dice, 0–1) against the expert's outline and against the model's anomaly map "
                            "(run the model in Explore first).")
                with gr.Row():
                    quiz_editor = gr.ImageEditor(label="Paint the lesion", type="numpy", image_mode="RGBA",
                                                 elem_id="df-quiz",
                                                 sources=[], transforms=[], layers=False,
                                                 brush=gr.Brush(colors=["#ff463c"], color_mode="fixed",
                                                                default_size=10),
                                                 canvas_size=(d, d), fixed_canvas=True, height=d + 120)
                    with gr.Column():
                        quiz_btn = gr.Button("Check my drawing", variant="primary")
                        quiz_image = gr.Image(label="Your drawing vs the answers", **img_kw)
                        quiz_md = gr.Markdown()

            # ===================================================================================== Healthy check
            with gr.Tab("Healthy check", id="healthy"):
                gr.Markdown("A model trained on healthy brains should leave a **healthy** slice nearly unchanged. "
                            "Run one and read the number: the mean absolute change inside the brain. The run uses "
                            "the settings of **Explore** (K, steps, percentile, seed).")
                with gr.Row():
                    with gr.Column(scale=1):
                        healthy_choice = gr.Dropdown([("The case selected in Explore", CURRENT_CASE)],
                                                     value=CURRENT_CASE, label="Healthy case")
                        healthy_btn = gr.Button("Run the healthy check", variant="primary")
                        healthy_md = gr.Markdown()
                    with gr.Column(scale=1):
                        healthy_slider = gr.ImageSlider(label="Before / after", type="numpy", height=d,
                                                        interactive=False, max_height=d)

            # ===================================================================================== Curate
            with gr.Tab("Curate", id="curate"):
                gr.Markdown("For educators: generate counterfactuals for a batch, review each (accept, reject, rerun "
                            "with other settings), then save the accepted ones into a named teaching set "
                            "(PNG + NIfTI at the input's size, with a manifest) and download it as a zip.")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=320):
                        batch_cases = gr.Dropdown([], multiselect=True, label="Cases from the teaching sets",
                                                  elem_id="df-batch-cases", info="type to filter; pick several")
                        batch_files = gr.File(label="…or upload slices", file_count="multiple")
                        cctl = _explore_controls("df-curate")
                        gen_btn = gr.Button("Generate counterfactuals", variant="primary", elem_id="df-generate")
                        curate_status = gr.Markdown()
                    with gr.Column(scale=7):
                        review = gr.Gallery(label="Review: input, counterfactual / anomaly, mask", columns=3,
                                            height=360,
                                            elem_id="df-review",
                                            allow_preview=False, object_fit="contain", interactive=False)
                        with gr.Row():
                            review_slider = gr.ImageSlider(label="Selected: before / after", type="numpy",
                                                           height=d, interactive=False, max_height=d)
                            with gr.Column():
                                review_md = gr.Markdown("Select a result above.")
                                review_note = gr.Textbox(label="Note for this case (saved in the manifest)",
                                                         lines=2, max_length=500)
                                with gr.Row():
                                    accept_btn = gr.Button("✓ Accept", size="sm")
                                    reject_btn = gr.Button("✗ Reject", size="sm")
                                    rerun_btn = gr.Button("↻ Rerun with the settings", size="sm")
                                review_status = gr.Markdown()
                        with gr.Row():
                            set_name = gr.Textbox(label="Teaching set name", placeholder="e.g. Gliomas week 3",
                                                  max_length=curation.MAX_NAME_LENGTH,
                                                  info="letters, digits, space, _ and -")
                            save_btn = gr.Button("Save accepted cases", variant="primary")
                        with gr.Row():
                            saved_sets = gr.Dropdown(curation.list_sets(), label="Saved sets", allow_custom_value=False)
                            zip_btn = gr.Button("Download the set as a zip")
                        set_zip = gr.File(label="Set archive", interactive=False)

            with gr.Tab("About", id="about"):
                gr.Markdown(NOTE_SALIENCY + "\n\n" + NOTE_REDRAW + "\n\n" + NOTE_K + "\n\n" + NOTE_CHART + "\n\n"
                            "Method: Fontanella et al., *Diffusion models for counterfactual generation and anomaly "
                            "detection in brain images* (Dif-fuse). For teaching and research, not for diagnosis.")

        # hidden components of the programmatic API
        with gr.Column(visible=False):
            api_file = gr.File(label="file")
            api_case = gr.Textbox(value="", label="case_key")
            api_k = gr.Number(value=DEFAULTS["k"], label="k", precision=0)
            api_steps = gr.Number(value=DEFAULTS["steps"], label="steps", precision=0)
            api_pct = gr.Number(value=DEFAULTS["percentile"], label="percentile")
            api_seed = gr.Number(value=DEFAULTS["seed"], label="seed", precision=0)
            api_slice = gr.Number(value=-1, label="slice_index", precision=0)
            api_window = gr.Textbox(value="", label="window")
            api_mask = gr.File(label="mask_file")
            api_frame = gr.Image(label="frame", format="png")
            api_status_txt = gr.Textbox(label="status")
            api_cf = gr.Image(label="counterfactual", format="png")
            api_overlay = gr.Image(label="overlay", format="png")
            api_maskimg = gr.Image(label="mask", format="png")
            api_summary = gr.JSON(label="summary")
            api_cases_json = gr.JSON(label="cases")
            api_status_json = gr.JSON(label="status")
            api_btn = gr.Button("api")
            api_cases_btn = gr.Button("cases")
            api_status_btn = gr.Button("status")

        # ------------------------------------------------------------------------------------------- wiring
        light = dict(concurrency_limit=None, api_visibility="undocumented")
        heavy = dict(concurrency_id="model", concurrency_limit="default")
        case_inputs = [source, selected_key, files, slice_slider, channel, window, gt_file]

        def refresh_library():
            entries = list_library()
            items = [(e.thumbnail, e.caption) for e in entries]
            keys = [e.key for e in entries]
            healthy = [(e.long_caption, e.key) for e in entries if e.healthy]
            choices = [(e.long_caption, e.key) for e in entries]
            mask_default = DEFAULTS["mask_from"] if MODELS.acat_info()["available"] else "draw"
            info = ("Pick a case in the gallery or upload one." if entries else
                    f"No teaching sets found in {teaching_root()}: build the default one with "
                    f"`python teaching_sets/build_default.py`, or upload a file.")
            return (items, keys, info, gr.update(choices=[("The case selected in Explore", CURRENT_CASE)] + healthy,
                                           value=healthy[0][1] if healthy else CURRENT_CASE),
                    gr.update(choices=choices), status_markdown(), gr.update(value=mask_default),
                    gr.update(choices=curation.list_sets()))

        lib_outputs = [gallery, gallery_keys, case_info, healthy_choice, batch_cases, status, mask_from, saved_sets]
        demo.load(refresh_library, None, lib_outputs, **light)
        refresh.click(refresh_library, None, lib_outputs, **light)

        def on_source(src):
            return gr.update(visible=src == "gallery"), gr.update(visible=src == "upload")

        source.change(on_source, source, [gallery_group, upload_group], **light)

        def on_mask_from(choice):
            return gr.update(visible=choice == "file"), gr.update(visible=choice == "draw")

        mask_from.change(on_mask_from, mask_from, [mask_file, mask_draw], **light)

        def on_gallery_select(evt: gr.SelectData, keys):
            i = evt.index if isinstance(evt.index, int) else evt.index[0]
            return (keys[i] if keys and 0 <= i < len(keys) else None), "gallery"

        preview_outputs = [preview, case_info, quiz_editor, mask_draw]
        gallery.select(on_gallery_select, gallery_keys, [selected_key, source], **light).then(
            preview_case, case_inputs, preview_outputs, **light)

        def on_upload(fs):
            if not _paths(fs):
                return gr.update(visible=False), gr.update(visible=False), gr.update(visible=False), gr.skip()
            try:
                info = inspect_upload(fs)
            except (ValueError, FileNotFoundError) as err:   # preview_case, next, shows the message
                log.info("upload refused: %s", err)
                return gr.update(visible=False), gr.update(visible=False), gr.update(visible=False), "upload"
            n = info["num_slices"]
            _, model_channels = model_grid()
            return (gr.update(visible=n > 1, minimum=0, maximum=max(n - 1, 1), value=info["slice"]),
                    gr.update(visible=len(info["channels"]) > 1 and model_channels == 1, choices=info["channels"],
                              value=info["channels"][0]),
                    gr.update(visible=info["ct"]), "upload")

        files.upload(on_upload, files, [slice_slider, channel, window, source], **light).then(
            preview_case, case_inputs, preview_outputs, **light)
        for comp in (slice_slider, channel, window, gt_file):
            comp.change(preview_case, case_inputs, preview_outputs, trigger_mode="always_last", **light)

        explore_inputs = case_inputs + [mask_from, mask_file, mask_draw, ctl["k"], ctl["percentile"], ctl["steps"],
                                        ctl["seed"], opacity]
        explore_outs = [live_noisy, live_clean, progress, out_input, out_saliency, out_mask, out_cf, out_overlay,
                        out_slider, out_metrics, out_chart, out_summary, run_state]
        run_event = run_btn.click(explore_run, explore_inputs, explore_outs, api_name="explore",
                                  show_progress="hidden", **heavy)
        stop_btn.click(request_stop, None, progress, cancels=[run_event], **light)
        opacity.change(render_overlay, [run_state, opacity], out_overlay, trigger_mode="always_last", **light)
        to_curate.click(send_to_curate, [run_state, review_items], [review, review_items], **light)

        quiz_btn.click(quiz_check, [quiz_editor, run_state] + case_inputs, [quiz_image, quiz_md],
                       api_visibility="undocumented")
        healthy_btn.click(healthy_check, [healthy_choice] + case_inputs + [ctl["k"], ctl["percentile"], ctl["steps"],
                                                                            ctl["seed"]],
                          [healthy_slider, healthy_md], api_name="healthy_check", **heavy)

        gen_btn.click(curate_generate, [batch_cases, batch_files, cctl["k"], cctl["steps"], cctl["percentile"],
                                        cctl["seed"], review_items], [curate_status, review, review_items],
                      api_visibility="undocumented", **heavy)
        review.select(review_select, review_items, [review_index, review_slider, review_md, review_note], **light)
        decide_outs = [review, review_items, review_slider, review_md, review_status]
        accept_btn.click(review_decide("accepted"), [review_items, review_index, review_note], decide_outs, **light)
        reject_btn.click(review_decide("rejected"), [review_items, review_index, review_note], decide_outs, **light)
        rerun_btn.click(review_rerun, [review_items, review_index, cctl["k"], cctl["steps"], cctl["percentile"],
                                       cctl["seed"]], decide_outs, api_visibility="undocumented", **heavy)
        save_btn.click(curate_save, [review_items, set_name], [review_status, set_zip, saved_sets, review,
                                                               review_items], api_visibility="undocumented")
        zip_btn.click(curate_zip, saved_sets, set_zip, api_visibility="undocumented")

        api_btn.click(api_counterfactual, [api_file, api_case, api_k, api_steps, api_pct, api_seed, api_slice,
                                           api_window, api_mask],
                      [api_frame, api_status_txt, api_cf, api_overlay, api_maskimg, api_summary],
                      api_name="counterfactual", **heavy)
        api_cases_btn.click(api_cases, None, api_cases_json, api_name="cases", concurrency_limit=None)
        api_status_btn.click(api_status, None, api_status_json, api_name="status", concurrency_limit=None)
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=DEFAULTS["concurrency"], max_size=DEFAULTS["max_queue"])


def launch(host: str | None = None, port: int | None = None, share: bool = False, **kwargs):
    """Start the server (blocking unless ``prevent_thread_lock=True``); returns what gr.Blocks.launch returns."""
    host = host or os.environ.get("DIFFUSE_APP_HOST") or os.environ.get("GRADIO_SERVER_NAME") or DEFAULTS["host"]
    port = int(port or os.environ.get("DIFFUSE_APP_PORT") or os.environ.get("GRADIO_SERVER_PORT") or DEFAULTS["port"])
    return demo.launch(server_name=host, server_port=port, share=share, show_error=True, css=CSS,
                       theme=gr.themes.Soft(primary_hue="sky"), max_file_size=f"{int(DEFAULTS['max_upload_mb'])}mb",
                       footer_links=["api"], **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffuse-studio app", description="Start the Dif-fuse Studio web app.")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a temporary public gradio.live link")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    launch(args.host, args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
