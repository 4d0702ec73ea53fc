"""Where the shipped weights live: ``assets/{ddpm,autoencoder,classifier}`` beside the package.

``DIFFUSE_ASSETS`` overrides the folder (e.g. a Space that mounts weights elsewhere).
"""

from __future__ import annotations

import os
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
