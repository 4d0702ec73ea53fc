"""Writing a volume run's files so that nothing half-written ever looks complete.

Every file is written under a temporary name in its folder and renamed into place (:func:`atomic_write_bytes`,
:func:`write_nifti`); a run's ``volume.json`` is written last and is the one mark that its outputs are complete
(:mod:`.run`). Results are laid on the input's own grid (:mod:`.grid`). :func:`counterfactual_in_input_units`
carries a counterfactual from the model's [-1, 1] scale back to the input's intensities, so that it sits over the
original in a viewer with the same window.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_json", "counterfactual_in_input_units", "write_nifti"]

MIN_FIT_PIXELS = 50


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """``data`` into ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def atomic_write_json(path: Path, obj) -> Path:
    from diffuse_core.io.export import json_default

    return atomic_write_bytes(path, json.dumps(obj, indent=2, default=json_default).encode())


def write_nifti(path: Path, grid, display: np.ndarray, dtype=np.float32) -> Path:
    """Display slices ``(Z, H, W)`` on ``grid`` (:class:`~diffuse_core.volumes.grid.NiftiGrid` or
    :class:`~diffuse_core.volumes.grid.DicomGrid`) as ``path`` (.nii.gz), atomically."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:-len('.nii.gz')]}.tmp.nii.gz")
    nib.save(grid.image(display, dtype=dtype), str(tmp))
    os.replace(tmp, path)
    return path


def counterfactual_in_input_units(raw: np.ndarray, image: np.ndarray, counterfactual: np.ndarray,
                                  brain: np.ndarray) -> np.ndarray:
    """The counterfactual in the input's intensities: ``raw`` plus the model's change (``counterfactual - image``,
    both on the [-1, 1] scale) times the raw units per normalised unit, fitted over the brain's unclipped pixels
    (the preparation is linear there). Where the model changed nothing the input's own value comes back exactly."""
    raw = np.asarray(raw, np.float32)
    inside = (np.asarray(brain) > 0) & (np.abs(image) < 0.98)
    scale = None
    if int(inside.sum()) >= MIN_FIT_PIXELS:
        x, y = raw[inside].astype(np.float64), image[inside].astype(np.float64)
        var = float(((x - x.mean()) ** 2).mean())
        if var > 0:
            a = float(((x - x.mean()) * (y - y.mean())).mean()) / var
            scale = 1.0 / a if a > 0 else None
    if scale is None:
        vals = raw[np.asarray(brain) > 0]
        scale = float(np.percentile(vals, 99) - np.percentile(vals, 1)) / 2.0 if vals.size else 1.0
    return (raw + (np.asarray(counterfactual, np.float32) - np.asarray(image, np.float32)) * np.float32(scale)
            ).astype(np.float32)
