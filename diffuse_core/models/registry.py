"""Where the shipped weights live: ``assets/{ddpm,autoencoder,classifier,level}`` beside the package (the MRI/FLAIR
models) and ``assets/ct/{ddpm,autoencoder,classifier}`` (the CT models, where installed).

``DIFFUSE_ASSETS`` overrides the folder (e.g. a Space that mounts weights elsewhere). :func:`installed_models` lists
what is there, with the modality each model was trained on; :func:`model_dir_for` picks the folder for a case's
modality (CT models for CT where they are installed, else the MRI ones).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_KINDS = ("ddpm", "autoencoder", "classifier", "level")   # level: models.level, the slice-level estimator
MODALITY_SUBFOLDERS = {"mri": "", "ct": "ct"}     # a case's modality -> its models' folder under the assets


def assets_root() -> Path:
    env = os.environ.get("DIFFUSE_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets"


def default_model_dir(kind: str, modality: str = "mri") -> Path:
    """The folder of the shipped model of ``kind`` (one of :data:`MODEL_KINDS`) for ``modality`` ("mri" or "ct")."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {', '.join(MODEL_KINDS)}")
    if modality not in MODALITY_SUBFOLDERS:
        raise ValueError(f"unknown modality {modality!r}: choose one of {', '.join(MODALITY_SUBFOLDERS)}")
    sub = MODALITY_SUBFOLDERS[modality]
    return assets_root() / sub / kind if sub else assets_root() / kind


def is_installed(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model (``config.json`` and ``model.safetensors``)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def model_dir_for(kind: str, modality: str | None) -> Path:
    """The folder to use for a case of ``modality``: the CT model of ``kind`` for CT where it is installed, else the
    MRI one (which a CT case then runs out of domain; callers say so)."""
    if modality == "ct" and is_installed(default_model_dir(kind, "ct")):
        return default_model_dir(kind, "ct")
    return default_model_dir(kind)


@dataclass(frozen=True)
class InstalledModel:
    """A trained model found on disk: its ``kind`` (one of :data:`MODEL_KINDS`), its folder and the modalities it was
    trained on, from its card (``("flair",)``; empty where the card does not say, e.g. a run on a folder of slices)."""

    kind: str
    folder: Path
    modalities: tuple[str, ...]

    @property
    def modality(self) -> str | None:
        """The modalities joined by "+" ("flair", "flair+t1"), None where unknown."""
        return "+".join(self.modalities) or None


def installed_models(root: str | Path | None = None) -> list[InstalledModel]:
    """The models installed under ``root`` (default :func:`assets_root`): each ``root/<kind>`` (MRI) and
    ``root/ct/<kind>`` folder holding a readable ``config.json`` of that kind and ``model.safetensors``, in
    :data:`MODEL_KINDS` order, the MRI models first. Folders that are
    missing or broken are left out (loading one says why)."""
    from diffuse_core.models.checkpoint import WEIGHTS_NAME, read_config

    root = Path(root) if root is not None else assets_root()
    found = []
    for kind, folder in [(k, root / sub / k if sub else root / k) for sub in MODALITY_SUBFOLDERS.values()
                         for k in MODEL_KINDS]:
        try:
            meta = read_config(folder, kind)
        except (FileNotFoundError, ValueError):
            continue
        if not (folder / WEIGHTS_NAME).is_file():
            continue
        data = (meta.get("card") or {}).get("data") or {}
        found.append(InstalledModel(kind, folder, tuple(str(m) for m in data.get("modalities") or ())))
    return found
