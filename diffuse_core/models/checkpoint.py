"""Save and load ACAT's two models (autoencoder, classifier).

A saved model is a folder with ``model.safetensors`` (float32 weights) and ``config.json``:
``{"kind": "autoencoder" | "classifier", "config": {...architecture...}, "card": {...data, training, metrics...}}``.
Each file is written to a temporary name and then renamed over the old one, so that an interrupted save never
leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffuse_core.models.autoencoder import Autoencoder, AutoencoderConfig
from diffuse_core.models.classifier import Classifier, ClassifierConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
KINDS = {"autoencoder": (Autoencoder, AutoencoderConfig), "classifier": (Classifier, ClassifierConfig)}


def _kind_of(model) -> str:
    if isinstance(model, Autoencoder):
        return "autoencoder"
    if isinstance(model, Classifier):
        return "classifier"
    raise TypeError(f"can only save an Autoencoder or a Classifier, got {type(model).__name__}")


def _retrain_hint(kind: str | None) -> str:
    if kind in KINDS:
        return f"retrain it with `diffuse-studio train {kind}`"
    return "retrain it with `diffuse-studio train autoencoder` or `diffuse-studio train classifier`"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(model: Autoencoder | Classifier, folder: str | Path, card: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if needed), each atomically.

    ``card`` defaults to the card the model was loaded with (``model.card``), if any.
    """
    kind = _kind_of(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    _atomic_write_bytes(folder / WEIGHTS_NAME, lambda p: save_file(sd, str(p), metadata={"format": "pt", "kind": kind}))
    if card is None:
        card = getattr(model, "card", None) or {}
    meta = {"kind": kind, "config": model.config.to_dict(), "card": card}
    text = json.dumps(meta, indent=2, default=_json_default)
    _atomic_write_bytes(folder / CONFIG_NAME, lambda p: p.write_text(text))
    return folder


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_config(folder: str | Path, expected_kind: str | None = None) -> dict:
    """The parsed ``config.json`` of a saved model; clear errors where it is missing, broken or of another kind."""
    folder = Path(folder)
    hint = _retrain_hint(expected_kind)
    if not folder.is_dir():
        raise FileNotFoundError(f"no {expected_kind or 'model'} folder at {folder}: point at a folder holding "
                                f"{CONFIG_NAME} and {WEIGHTS_NAME}, or {hint}")
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {CONFIG_NAME}; {hint}")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_path} is not valid JSON ({err}); {hint}") from err
    if not isinstance(meta, dict) or "kind" not in meta or "config" not in meta:
        raise ValueError(f"{cfg_path} lacks the 'kind'/'config' entries of a saved ACAT model; {hint}")
    kind = meta["kind"]
    if kind not in KINDS:
        raise ValueError(f"{cfg_path} holds a model of kind {kind!r}, not an autoencoder or classifier; {hint}")
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(f"{folder} holds a {kind}, but a {expected_kind} was expected; {hint}")
    return meta


def load(folder: str | Path, expected_kind: str | None = None, device: torch.device | str = "cpu"):
    """Load a model saved by :func:`save` (in eval mode, on ``device``); ``model.card`` holds its card.

    Raises FileNotFoundError for a missing folder/file and ValueError for a corrupt or mismatched one, each naming
    the command that retrains the model.
    """
    folder = Path(folder)
    meta = read_config(folder, expected_kind)
    kind = meta["kind"]
    hint = _retrain_hint(kind)
    model_cls, config_cls = KINDS[kind]
    try:
        config = config_cls(**meta["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG_NAME} holds an invalid {kind} config ({err}); {hint}") from err
    w_path = folder / WEIGHTS_NAME
    if not w_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {WEIGHTS_NAME}; {hint}")
    model = model_cls(config)
    try:
        state = load_file(str(w_path))
        model.load_state_dict(state)
    except Exception as err:  # safetensors raises several types for truncated / foreign files
        raise ValueError(f"could not load {kind} weights from {w_path} ({type(err).__name__}: {err}); the file may "
                         f"be truncated or belong to another architecture; {hint}") from err
    model.card = meta.get("card", {}) or {}
    return model.eval().to(device)


def load_autoencoder(folder: str | Path, device: torch.device | str = "cpu") -> Autoencoder:
    return load(folder, "autoencoder", device)


def load_classifier(folder: str | Path, device: torch.device | str = "cpu") -> Classifier:
    return load(folder, "classifier", device)


def update_card(folder: str | Path, **entries) -> dict:
    """Merge ``entries`` into the card of the saved model in ``folder`` (atomic rewrite of config.json)."""
    folder = Path(folder)
    meta = read_config(folder)
    card = meta.get("card") or {}
    card.update(entries)
    meta["card"] = card
    text = json.dumps(meta, indent=2, default=_json_default)
    _atomic_write_bytes(folder / CONFIG_NAME, lambda p: p.write_text(text))
    return card
