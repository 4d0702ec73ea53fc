"""The files of one curated case: what :mod:`diffuse_core.data.curation` writes into a case folder, at what size and
in which orientation.

::

    <case id>/original.png        original.nii.gz          (the input slice, normalised to [-1, 1])
              counterfactual.png  counterfactual.nii.gz    (the healthy counterfactual, [-1, 1])
              anomaly.png         anomaly.nii.gz           (heat map / |x0 - x0_hat| in [0, 2])
              mask.png            mask.nii.gz              (the Dif-fuse mask m, {0, 1})
              ground_truth.png    ground_truth.nii.gz      (the lesion mask; all zero when unknown)
              preview.png                                  (input | counterfactual | anomaly)
              model_grid.npz                               (the same arrays on the model's grid)

PNG and NIfTI files are at the input's size (the model-grid results mapped back with
:func:`diffuse_core.io.preprocess.from_model_grid` and the case's geometry). NIfTI files carry the pixel spacing in mm
and follow the loaders' radiological convention (``load_image`` shows them exactly as the PNGs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CASE_FILES = ("original", "counterfactual", "anomaly", "mask", "ground_truth")
# every file name a case folder can hold: a folder holding only these is one of ours (diffuse_core.data.curation)
CASE_FILE_NAMES = frozenset([f"{r}.png" for r in CASE_FILES] + [f"{r}.nii.gz" for r in CASE_FILES]
                            + ["preview.png", "model_grid.npz"])


@dataclass
class CuratedCase:
    """One reviewed result. Model-grid arrays: images (C, R, R) in [-1, 1]; maps (R, R)."""

    case_id: str
    image: np.ndarray
    counterfactual: np.ndarray
    anomaly: np.ndarray                     # |x0 - x0_hat| cleaned, [0, 2]
    mask: np.ndarray                        # Dif-fuse mask m, {0, 1}
    settings: dict                          # k, steps, percentile, mask_from, variant, window, ...
    seed: int = 0
    model_version: str = "unknown"
    note: str = ""
    geometry: object | None = None          # preprocess.Geometry of the input; None = model grid is the input
    spacing: tuple[float, float] = (1.0, 1.0)
    ground_truth: np.ndarray | None = None
    brain_mask: np.ndarray | None = None
    modality: str = "mri"
    lesion_type: str = ""
    location: str = ""
    difficulty: str = ""
    healthy: bool = False
    source: str = ""
    slice_index: int = 0
    extras: dict = field(default_factory=dict)
    full: object | None = None              # io.full_resolution.FullResolution: the files at the input's size
    full_ground_truth: np.ndarray | None = None   # (H0, W0) ground truth on that grid


def write_png(path: Path, array: np.ndarray) -> None:
    """(H, W) grey or (H, W, 3) RGB uint8 -> a PNG file."""
    import cv2

    a = np.ascontiguousarray(array)
    if not cv2.imwrite(str(path), cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a):
        raise OSError(f"could not write {path}")


def write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, float]) -> None:
    """(H, W) or (C, H, W) display-oriented array -> a canonical (RAS+) NIfTI slice, (X, Y) or (X, Y, 1, C), that
    :func:`diffuse_core.io.image.load_image` displays exactly as given (radiological: anterior at the top, the
    patient's right on the left; :func:`diffuse_core.io.orientation.display_nifti`). Spacing (row, col) in mm."""
    from diffuse_core.io.orientation import display_nifti, nifti_gz_bytes

    img = display_nifti(array, spacing)
    if path.name.endswith(".gz"):
        path.write_bytes(nifti_gz_bytes(img))
    else:
        img.to_filename(str(path))


def write_case_files(folder: Path, case: CuratedCase) -> dict[str, str]:
    """Every file of ``case`` into ``folder``, each flushed to disk; returns {role: file name}."""
    from diffuse_core.io.export import heat_map, to_uint8
    from diffuse_core.io.preprocess import from_model_grid

    def back(a, order=1):
        return from_model_grid(a, case.geometry, order=order) if case.geometry is not None else np.asarray(a)

    if case.full is not None:   # the run at the input's size: its own pixels, the redrawing blended in
        f = case.full
        image, counterfactual = np.asarray(f.image, np.float32), np.asarray(f.counterfactual, np.float32)
        anomaly, mask = np.asarray(f.anomaly, np.float32), np.asarray(f.mask, np.uint8)
        truth = case.full_ground_truth
    else:
        image = back(np.asarray(case.image, np.float32)).astype(np.float32)
        counterfactual = back(np.asarray(case.counterfactual, np.float32)).astype(np.float32)
        anomaly = np.clip(back(np.asarray(case.anomaly, np.float32)), 0, None).astype(np.float32)
        mask = back(np.asarray(case.mask, np.uint8), order=0).astype(np.uint8)
        truth = None if case.ground_truth is None else back(np.asarray(case.ground_truth, np.uint8), order=0)
    vmax = max(float(np.asarray(case.anomaly).max()), 1e-3)
    files: dict[str, str] = {}
    gt = (np.asarray(truth) > 0).astype(np.uint8) if truth is not None else np.zeros_like(mask)
    views = {"original": to_uint8(image[0]), "counterfactual": to_uint8(counterfactual[0]),
             "anomaly": heat_map(anomaly, vmax), "mask": (mask > 0).astype(np.uint8) * 255, "ground_truth": gt * 255}
    volumes = {"original": image, "counterfactual": counterfactual, "anomaly": anomaly, "mask": mask,
               "ground_truth": gt}
    for role, view in views.items():
        write_png(folder / f"{role}.png", view)
        write_nifti(folder / f"{role}.nii.gz", volumes[role], case.spacing)
        files[f"{role}_png"], files[f"{role}_nifti"] = f"{role}.png", f"{role}.nii.gz"
    grey = [np.repeat(views[k][..., None], 3, axis=2) for k in ("original", "counterfactual")]
    write_png(folder / "preview.png", np.concatenate(grey + [views["anomaly"]], axis=1))
    files["preview"] = "preview.png"
    grid = {"image": np.asarray(case.image, np.float32), "counterfactual": np.asarray(case.counterfactual, np.float32),
            "anomaly": np.asarray(case.anomaly, np.float32), "mask": np.asarray(case.mask, np.uint8)}
    if case.ground_truth is not None:
        grid["ground_truth"] = np.asarray(case.ground_truth, np.uint8)
    if case.brain_mask is not None:
        grid["brain_mask"] = np.asarray(case.brain_mask, np.uint8)
    np.savez_compressed(folder / "model_grid.npz", **grid)
    files["model_grid"] = "model_grid.npz"
    for name in set(files.values()):        # on disk before the folder is published (a power cut loses no pixels)
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return files
