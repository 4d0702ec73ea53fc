"""Where the shipped weights live: ``assets/{ddpm,autoencoder,classifier}`` beside the package.

``DIFFUSE_ASSETS`` overrides the folder (e.g. a Space that mounts weights elsewhere). :func:`installed_models` lists
what is there, with the modality each model was trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_KINDS = ("ddpm", "autoencoder", "classifier")


def assets_root() -> Path:
    env = os.environ.get("DIFFUSE_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets"


def default_model_dir(kind: str) -> Path:
    """The folder of the shipped model of ``kind`` (one of :data:`MODEL_KINDS`)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {', '.join(MODEL_KINDS)}")
    return assets_root() / kind


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
    """The models installed under ``root`` (default :func:`assets_root`): each ``root/<kind>`` folder holding a
    readable ``config.json`` of that kind and ``model.safetensors``, in :data:`MODEL_KINDS` order. Folders that are
    missing or broken are left out (loading one says why)."""
    from diffuse_core.models.checkpoint import WEIGHTS_NAME, read_config

    root = Path(root) if root is not None else assets_root()
    found = []
    for kind in MODEL_KINDS:
        folder = root / kind
        try:
            meta = read_config(folder, kind)
        except (FileNotFoundError, ValueError):
            continue
        if not (folder / WEIGHTS_NAME).is_file():
            continue
        data = (meta.get("card") or {}).get("data") or {}
        found.append(InstalledModel(kind, folder, tuple(str(m) for m in data.get("modalities") or ())))
    return found
