"""The one on-disk format of a trained model, and the ACAT models' save/load on top of it.

A saved model is a folder holding

- ``model.safetensors``: the weights, float32, contiguous, with ``{"format": "pt", "kind": KIND}`` as metadata;
- ``config.json``: ``{"kind": KIND, <architecture entries>}``, what the loaders build the network from. The
  architecture entries are ``"config"`` for the autoencoder and the classifier, ``"unet"`` and ``"schedule"`` for the
  DDPM (:data:`ARCHITECTURE_KEY`; the DDPM's names predate the others and the shipped weights carry them);
- ``model_card.json``: the model card, its only copy (:mod:`diffuse_core.models.card`: its schema, who writes each
  field, the migration of older cards, which :func:`read_config` applies on every read, handing it back as
  ``meta["card"]``). Folders written before 2026-12-07 kept the card inside ``config.json`` (``"card"``): read as
  they are, and rewritten in this layout at their next write.

Every file is written to a temporary name and renamed over the old one, so an interrupted save never leaves a
half-written file under the real name. The denoiser's save/load (:mod:`diffuse_core.models.denoiser`) and the trainer
(:mod:`diffuse_core.train.trainer`) use the same functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffuse_core.models.autoencoder import Autoencoder, AutoencoderConfig
from diffuse_core.models.card import SCHEMA, check_fields, fields_of, migrate, provenance
from diffuse_core.models.classifier import Classifier, ClassifierConfig
from diffuse_core.models.level import LevelEstimator

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "model_card.json"       # the card, beside the weights (inside config.json in older folders)
KINDS = {"autoencoder": (Autoencoder, AutoencoderConfig), "classifier": (Classifier, ClassifierConfig),
         "level": (LevelEstimator, ClassifierConfig)}
ARCHITECTURE_KEY = {"ddpm": "unet", "autoencoder": "config", "classifier": "config", "level": "config"}


# --------------------------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file over ``path`` (usual permissions, no half files)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors and torch.save may create 0600 files
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def json_default(obj):
    """JSON for what cards hold besides plain types: numpy scalars and arrays, tensors, paths, tuples."""
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to a model's config or card")


def atomic_write_json(path: str | Path, obj) -> Path:
    text = json.dumps(obj, indent=2, default=json_default) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


# ----------------------------------------------------------------------------------------------- the format
def retrain_hint(kind: str | None) -> str:
    if kind in ARCHITECTURE_KEY:
        return f"retrain it with `diffuse-studio train {kind}`"
    return "retrain it with `diffuse-studio train ddpm|autoencoder|classifier`"


def write_model(folder: str | Path, kind: str, state_dict: dict, architecture: dict, card: dict | None,
                by: str | None = "train", command: str | None = None, device=None) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``model_card.json`` into ``folder`` (created), each atomically.

    ``architecture`` is what ``config.json`` holds beside ``kind`` and ``card`` (e.g. ``{"config": {...}}``); every
    field of ``card`` must be one writer ``by`` writes (:func:`diffuse_core.models.card.check_fields`) and is
    stamped with its provenance (command line, commit, hardware of ``device``, date) in ``written_by``. ``by``
    None: the card of a model read from a folder, saved again as it is (no check, no new stamp).
    """
    if kind not in ARCHITECTURE_KEY:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {', '.join(ARCHITECTURE_KEY)}")
    card = dict(card or {})
    if by is not None:
        stamp = provenance(by, command, device=device)
        card["written_by"] = {**(card.get("written_by") or {}), **{f: stamp for f in check_fields(by, card)}}
    card["schema"] = SCHEMA
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(sd, str(p), metadata={"format": "pt", "kind": kind}))
    _write_config(folder, {"kind": kind, **architecture, "card": card})
    return folder


def _write_config(folder: Path, meta: dict) -> None:
    """``meta`` as read by :func:`read_config`: its card to ``model_card.json``, the rest to ``config.json`` (the card
    first: an interrupted write leaves an older folder's card in ``config.json``, which then still wins)."""
    meta = dict(meta)
    card = meta.pop("card", None) or {}
    atomic_write_json(folder / CARD_NAME, card)
    atomic_write_json(folder / CONFIG_NAME, meta)


def read_config(folder: str | Path, expected_kind: str | None = None) -> dict:
    """The parsed ``config.json`` of a saved model; clear errors where it is missing, broken or of another kind."""
    folder = Path(folder)
    hint = retrain_hint(expected_kind)
    if not folder.is_dir():
        what = f"model folder ({expected_kind})" if expected_kind else "model folder"
        raise FileNotFoundError(f"no {what} at {folder}: point at a folder holding {CONFIG_NAME} and {WEIGHTS_NAME} "
                                f"(--model DIR for the DDPM), or {hint}")
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {CONFIG_NAME}; {hint}")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_path} is not valid JSON ({err}); {hint}") from err
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in ARCHITECTURE_KEY:
        raise ValueError(f"{cfg_path} holds no model of a known kind (got {kind!r}, expected one of "
                         f"{', '.join(ARCHITECTURE_KEY)}); {hint}")
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(f"{folder} holds a {kind}, but a {expected_kind} was expected; {hint}")
    if ARCHITECTURE_KEY[kind] not in meta:
        raise ValueError(f"{cfg_path} lacks the {ARCHITECTURE_KEY[kind]!r} entry of a saved {kind}; {hint}")
    card = meta.get("card")                               # a folder written before 2026-12-07
    if not card and (folder / CARD_NAME).is_file():       # the card beside the weights
        try:
            card = json.loads((folder / CARD_NAME).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            card = None
    meta["card"] = migrate(card if isinstance(card, dict) else {}, kind)
    return meta


def read_weights(folder: str | Path, kind: str) -> dict[str, torch.Tensor]:
    """The state dict in ``folder/model.safetensors``, with a clear error where it is missing or unreadable."""
    w_path = Path(folder) / WEIGHTS_NAME
    if not w_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {WEIGHTS_NAME}; {retrain_hint(kind)}")
    try:
        return load_file(str(w_path))
    except Exception as err:  # safetensors raises several types for truncated / foreign files
        raise ValueError(f"could not read {kind} weights from {w_path} ({type(err).__name__}: {err}); the file may "
                         f"be truncated; {retrain_hint(kind)}") from err


def load_weights_into(module: torch.nn.Module, state: dict, folder: str | Path, kind: str) -> None:
    """``module.load_state_dict(state)`` with an error that names the folder and the fix."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the {kind} weights in {Path(folder) / WEIGHTS_NAME} do not fit its architecture ({err}); "
                         f"{retrain_hint(kind)}") from err


def update_card(folder: str | Path, updates: dict | None = None, *, by: str, command: str | None = None,
                device=None, hardware=None, **entries) -> dict:
    """Merge ``updates`` (and keyword ``entries``) into the card of the saved model in ``folder``, as writer ``by``
    (:data:`diffuse_core.models.card.WRITERS`: a field it is not registered for raises ValueError). Each field
    written gets its provenance in ``written_by``: ``command`` (default: this process's command line), commit,
    ``hardware`` (default: a summary of ``device``) and date. An older card is migrated first. Returns the new card."""
    folder = Path(folder)
    updates = {**(updates or {}), **entries}
    fields = check_fields(by, updates)
    meta = read_config(folder)
    card = dict(meta["card"])
    card.update(updates)
    stamp = provenance(by, command, hardware, device)
    kept = set(fields_of(card))
    card["written_by"] = {f: v for f, v in {**(card.get("written_by") or {}), **{f: stamp for f in fields}}.items()
                          if f in kept}
    meta["card"] = card
    _write_config(folder, meta)
    return card


def migrate_folder(folder: str | Path) -> dict:
    """Rewrite an older model folder in card schema 2 (:func:`diffuse_core.models.card.migrate`; one copy of the card,
    in ``config.json``); the weights are not touched. Returns the card."""
    meta = read_config(folder)
    _write_config(Path(folder), meta)
    return meta["card"]


def weights_digest(folder: str | Path) -> str | None:
    """SHA-256 of a model folder's ``model.safetensors`` (None if absent): ties measured numbers to the weights."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def steps_done(card: dict) -> tuple[int, float]:
    """(optimiser steps, wall seconds) a card (as :func:`read_config` gives it) records under ``training``."""
    training = card.get("training") or {}
    return int(training.get("steps_done") or 0), float(training.get("wall_seconds") or 0.0)


# -------------------------------------------------------------------------------------- autoencoder, classifier
def _kind_of(model) -> str:
    if isinstance(model, Autoencoder):
        return "autoencoder"
    if isinstance(model, LevelEstimator):          # before Classifier: it is one, with one output
        return "level"
    if isinstance(model, Classifier):
        return "classifier"
    raise TypeError(f"can only save an Autoencoder, a Classifier or a LevelEstimator, got {type(model).__name__}")


def save(model: Autoencoder | Classifier, folder: str | Path, card: dict | None = None, by: str | None = None) -> Path:
    """Save an autoencoder or classifier into ``folder`` (:func:`write_model`).

    ``card`` defaults to the card the model was loaded with (``model.card``), if any. ``by``: the writer of the card's
    fields, checked and stamped (:func:`write_model`); None (the Python API, tests) writes the card as given.
    """
    if card is None:
        card = getattr(model, "card", None) or {}
    return write_model(folder, _kind_of(model), model.state_dict(), {"config": model.config.to_dict()}, card, by)


def load(folder: str | Path, expected_kind: str | None = None, device: torch.device | str = "cpu"):
    """Load a model saved by :func:`save` (in eval mode, on ``device``); ``model.card`` holds its card.

    Raises FileNotFoundError for a missing folder/file and ValueError for a corrupt or mismatched one, each naming
    the command that retrains the model.
    """
    folder = Path(folder)
    meta = read_config(folder, expected_kind)
    kind = meta["kind"]
    if kind not in KINDS:
        raise ValueError(f"{folder} holds a {kind}, not an autoencoder, classifier or level estimator; "
                         f"{retrain_hint(expected_kind)}")
    model_cls, config_cls = KINDS[kind]
    try:
        config = config_cls(**meta["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG_NAME} holds an invalid {kind} config ({err}); "
                         f"{retrain_hint(kind)}") from err
    model = model_cls(config)
    load_weights_into(model, read_weights(folder, kind), folder, kind)
    model.card = meta.get("card", {}) or {}
    return model.eval().to(device)


def load_autoencoder(folder: str | Path, device: torch.device | str = "cpu") -> Autoencoder:
    return load(folder, "autoencoder", device)


def load_classifier(folder: str | Path, device: torch.device | str = "cpu") -> Classifier:
    return load(folder, "classifier", device)


def load_level_estimator(folder: str | Path, device: torch.device | str = "cpu") -> LevelEstimator:
    return load(folder, "level", device)
