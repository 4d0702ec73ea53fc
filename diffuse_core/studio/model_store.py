"""The installed models: found through the environment, loaded lazily, cached per device, and reloaded when the
weights on disk change (a model may still be training).

:data:`MODELS` is the app's one store. ``ddpm_info`` / ``acat_info`` read the folders and model cards without loading
any weights, so the page can say what is missing and what to do before anyone presses Run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from diffuse_core.studio.settings import DEFAULTS, K_RANGE, PERCENTILE_RANGE

MODALITY_NAMES = ("flair", "t1", "t1c", "t2", "ct")   # the modalities a model card can name (SynthBrain presets)
WEIGHT_FILES = ("config.json", "model.safetensors")   # what a model folder must hold to count as installed


class ModelUnavailable(RuntimeError):
    """Weights are missing or unreadable; the message says what to do."""


def model_device():
    """The device the app runs the models on: ``$DIFFUSE_DEVICE`` (``auto``: the GPU when there is one)."""
    from diffuse_core.models.device import pick_device

    return pick_device(os.environ.get("DIFFUSE_DEVICE", "auto"))


def _stamp(folder: Path) -> tuple | None:
    """(mtime, size) of the weight files and of the card beside them, None when a weight file is missing: a changed
    stamp means reload (a recalibrated card too)."""
    files = [folder / name for name in WEIGHT_FILES]
    if not all(f.is_file() for f in files):
        return None
    card = folder / "model_card.json"
    return tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files + [card])


def model_version(folder: Path, card: dict) -> str:
    """A short identifier of the denoiser: its card's version (or training steps) and a hash of the weights."""
    h = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    steps = ((card.get("training") or {}).get("steps_done"))
    name = card.get("version") or card.get("name") or "ddpm"
    return f"{name}{f'@{steps}steps' if steps is not None else ''}-sha256:{h.hexdigest()[:12]}"


class ModelStore:
    """The denoiser and the ACAT models, found through the environment variables of :mod:`diffuse_core.studio`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache: dict = {}

    @staticmethod
    def ddpm_dir(modality: str | None = None) -> Path:
        """``$DIFFUSE_MODEL_DIR``, else the installed denoiser for a case of ``modality`` (the CT model for "ct"
        where one is installed, else the MRI one)."""
        from diffuse_core.models.registry import model_dir_for

        override = os.environ.get("DIFFUSE_MODEL_DIR")
        return Path(override) if override else model_dir_for("ddpm", modality)

    @classmethod
    def saliency_dirs(cls, modality: str | None = None, model_dir=None) -> tuple[Path, Path]:
        """``$DIFFUSE_SALIENCY_DIR``'s pair, else the pair the denoiser folder carries (an adapted model's), else the
        installed one (:func:`diffuse_core.run.models.saliency_model_dirs`)."""
        from diffuse_core.run.models import saliency_model_dirs

        return saliency_model_dirs(os.environ.get("DIFFUSE_SALIENCY_DIR"), modality,
                                   model_dir or cls.ddpm_dir(modality))

    def ddpm_info(self, modality: str | None = None) -> dict:
        """{"available", "folder", "resolution", "channels", "steps_done", "modalities", "recommended"} or, when
        unavailable, "reason" saying what to do; reads the card, never the weights. ``modality``: the case's (the
        CT model for "ct" where installed)."""
        folder = self.ddpm_dir(modality)
        info = {"available": False, "folder": str(folder), "resolution": 128, "channels": 1, "steps_done": None}
        if _stamp(folder) is None:
            info["reason"] = (f"the healthy diffusion model is not installed (no config.json + model.safetensors in "
                              f"{folder}): train it with `diffuse-studio train ddpm`, or set DIFFUSE_ASSETS / "
                              f"DIFFUSE_MODEL_DIR to a folder holding it")
            return info
        from diffuse_core.models.card import read_card

        try:
            meta = json.loads((folder / "config.json").read_text())
            info["resolution"] = int(meta["unet"]["resolution"])
            info["channels"] = int(meta["unet"].get("channels", 1))
            card = read_card(folder)                       # an older folder's card migrated
            info["steps_done"] = (card.get("training") or {}).get("steps_done")
            mods = (card.get("data") or {}).get("modalities") or []
            info["modalities"] = [str(m).strip().lower() for m in (mods.split(",") if isinstance(mods, str) else mods)]
            info["recommended"] = card.get("recommended_settings") or {}
            info["card"] = card
        except (ValueError, KeyError, TypeError) as err:
            info["reason"] = f"{folder / 'config.json'} is unreadable ({err}): retrain with `diffuse-studio train ddpm`"
            return info
        info["available"] = True
        return info

    def acat_info(self, modality: str | None = None, model_dir=None) -> dict:
        """{"available", "folders"} and, when unavailable, "reason"."""
        ae, clf = self.saliency_dirs(modality, model_dir)
        missing = [str(p) for p in (ae, clf) if _stamp(p) is None]
        if missing:
            return {"available": False, "folders": [str(ae), str(clf)],
                    "reason": f"ACAT is unavailable: no trained weights in {' and '.join(missing)} (train them with "
                              f"`diffuse-studio train autoencoder` / `classifier`). Use a mask file or draw the "
                              f"mask instead."}
        return {"available": True, "folders": [str(ae), str(clf)]}

    def require_ddpm(self) -> None:
        """ModelUnavailable with the reason when the denoiser is not installed."""
        info = self.ddpm_info()
        if not info["available"]:
            raise ModelUnavailable(info["reason"])

    def require_acat(self) -> None:
        """ModelUnavailable with the reason when the ACAT models are not installed."""
        info = self.acat_info()
        if not info["available"]:
            raise ModelUnavailable(info["reason"])

    def grid(self) -> tuple[int, int]:
        """(resolution, channels) of the installed denoiser (128, 1 when none is installed yet)."""
        info = self.ddpm_info()
        return info["resolution"], info["channels"]

    def mri_reference(self) -> dict | None:
        """How an uploaded MRI is prepared for the installed MRI denoiser (its card's preparation, as ``run``
        prepares it: :func:`diffuse_core.run.card.mri_reference_for` with "auto")."""
        from diffuse_core.run.card import mri_reference_for

        return mri_reference_for(self.ddpm_info().get("card") or {}, "auto")

    def out_of_domain(self, modality: str) -> list[str]:
        """The modalities the denoiser a case of ``modality`` runs through was trained on, when ``modality`` is a
        known one outside them, else []."""
        trained_on = self.ddpm_info("ct" if str(modality or "").lower() == "ct" else None).get("modalities") or []
        modality = str(modality or "").lower()
        return list(trained_on) if trained_on and modality in MODALITY_NAMES and modality not in trained_on else []

    def denoiser(self, device, modality: str | None = None, model_dir=None):
        """The denoiser for a case of ``modality`` on ``device`` (cached until its weights change), its card holding
        ``_version``; ``model_dir``: another denoiser folder (a model adapted in the app), instead of the installed
        one."""
        from diffuse_core.run.models import load_default_models

        folder = Path(model_dir) if model_dir else self.ddpm_dir(modality)
        stamp = _stamp(folder)
        if stamp is None:
            raise ModelUnavailable(f"no model in {folder} (config.json + model.safetensors): choose another model"
                                   if model_dir else self.ddpm_info(modality)["reason"])
        key = ("ddpm", str(folder), str(device))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            try:
                model = load_default_models(folder, device=device, need_saliency=False)[0]
            except (ValueError, FileNotFoundError) as err:
                raise ModelUnavailable(f"the healthy diffusion model could not be loaded: {err}") from None
            model.card = dict(model.card or {})
            model.card.setdefault("_version", model_version(folder, model.card))
            self._cache[key] = (stamp, model)
            return model

    def run_models(self, device, modality: str | None = None, need_saliency: bool = True, model_dir=None):
        """The :class:`~diffuse_core.run.models.RunModels` of a case of ``modality`` (cached, as
        :meth:`denoiser` and :meth:`saliency`), with the note a CT case run through the MRI model carries;
        ``model_dir``: the denoiser folder to use instead of the installed one (a model adapted in the app)."""
        from diffuse_core.run.models import RunModels, denoiser_dir

        notes = () if os.environ.get("DIFFUSE_MODEL_DIR") else denoiser_dir(modality)[1]
        denoiser = self.denoiser(device, modality, model_dir)
        return RunModels(denoiser=denoiser,
                         saliency=self.saliency(device, modality, model_dir) if need_saliency else None,
                         folder=str(model_dir or self.ddpm_dir(modality)), notes=notes,
                         level=self.level(device, denoiser.card))

    def level(self, device, denoiser_card: dict | None):
        """The slice-level estimator for runs of a denoiser with this card (cached until its weights change), or
        None (:func:`diffuse_core.run.models.level_estimator_for`)."""
        from diffuse_core.run.level_check import level_folder, usable_with
        from diffuse_core.run.models import level_estimator_for

        folder = level_folder(denoiser_card)
        stamp = _stamp(folder)
        if stamp is None:
            return None
        key = ("level", str(folder), str(device))
        with self._lock:
            hit = self._cache.get(key)
            if hit is None or hit[0] != stamp:
                hit = (stamp, level_estimator_for(denoiser_card, device, check=False))
                self._cache[key] = hit
        estimator = hit[1]
        return estimator if estimator is not None and usable_with(estimator.card, denoiser_card) else None

    def saliency(self, device, modality: str | None = None, model_dir=None):
        """The ACAT models for a case of ``modality`` on ``device`` (the pair ``model_dir``, an adapted denoiser's
        folder, carries where it has one; cached until their weights change), or ModelUnavailable with the reason."""
        from diffuse_core.saliency.dispatch import load_saliency_models

        ae, clf = self.saliency_dirs(modality, model_dir)
        stamps = (_stamp(ae), _stamp(clf))
        if None in stamps:
            raise ModelUnavailable(self.acat_info(modality, model_dir)["reason"])
        key = ("acat", str(ae), str(clf), str(device))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamps:
                return hit[1]
            try:
                models = load_saliency_models(ae, clf, device)
            except (ValueError, FileNotFoundError) as err:
                raise ModelUnavailable(f"ACAT is unavailable: {err}. Use a mask file or draw the mask.") from None
            self._cache[key] = (stamps, models)
            return models


MODELS = ModelStore()


def k_for_modality(k: int, modality: str | None) -> int:
    """The noise level a case of ``modality`` runs at: ``k`` as given, except the app's default K (the MRI model's
    card's), which a CT case replaces by its own model's recommended K (each card's K was chosen for its model)."""
    if str(modality or "").lower() != "ct" or int(k) != int(DEFAULTS["k"]):
        return int(k)
    rec = MODELS.ddpm_info("ct").get("recommended") or {}
    try:
        own = int(rec["k"])
    except (KeyError, TypeError, ValueError):
        return int(k)
    return own if K_RANGE[0] <= own <= K_RANGE[1] else int(k)


def k_shown_for(k, modality) -> int | None:
    """The K a slider holding ``k`` shows for a case of ``modality`` (None: keep ``k``): while it holds one model's
    default it moves to the default of the case's model, so it shows the K a run uses (:func:`k_for_modality`'s
    rule); a K the user chose stays."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        return None
    mri, ct = int(DEFAULTS["k"]), k_for_modality(DEFAULTS["k"], "ct")
    is_ct = str(modality or "").lower() == "ct"
    if ct != mri and k == (mri if is_ct else ct):
        return ct if is_ct else mri
    return None


def apply_recommended_defaults(defaults: dict = DEFAULTS) -> dict:
    """K, percentile, steps and solver from the installed model card's ``recommended_settings`` (chosen by
    ``diffuse-studio evaluate --write-cards`` or ``python -m diffuse_core.evaluation.calibrate --write-card`` on
    validation data), where present and in range (:func:`diffuse_core.run.settings.default_settings`, as ``run``
    reads them); ``defaults`` is updated in place and returned. A percentile outside the sliders' range keeps the
    app's."""
    from diffuse_core.run.settings import default_settings

    chosen = default_settings(MODELS.ddpm_info().get("card") or {})
    rec = MODELS.ddpm_info().get("recommended") or {}
    for key in ("k", "steps", "solver", "percentile"):
        if key not in rec or str(chosen[key]) != str(type(chosen[key])(rec[key])):
            continue                                  # absent or out of range: the app's stays
        if key != "percentile" or PERCENTILE_RANGE[0] <= chosen[key] <= PERCENTILE_RANGE[1]:
            defaults[key] = chosen[key]
    return defaults
