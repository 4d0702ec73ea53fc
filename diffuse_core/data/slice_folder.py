"""Real training data for ``diffuse-studio train --data DIR``: a folder of slices or of BraTS-layout cases.

Three layouts are recognised, in this order:

1. an ``index.csv`` with columns ``image`` and ``healthy`` (and optionally ``mask``), as written by
   ``diffuse-studio synth``: one slice per row, labels from the ``healthy`` column;
2. sub-folders that are BraTS-layout cases (FLAIR [+ T1, T1c, T2] NIfTI and a label file): every axial slice with
   enough brain, diseased where the label is > 0 (whole tumour), healthy otherwise;
3. any other folder: every image file in it (NIfTI, DICOM, PNG/JPEG/TIFF, .npy) is one *healthy* slice. Such a folder
   can train the DDPM, not the classifier, which needs both classes.

Slices are normalised (percentiles inside the brain for MRI, a window for CT) and put on the model's grid.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
MIN_BRAIN_FRACTION = 0.08  # skip near-empty slices at the top and bottom of volumes (cf. paper Sec. IV-A)


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and any(name.endswith(s) for s in IMAGE_SUFFIXES)


def load_slice_folder(folder, size: int = 128, modalities: tuple[str, ...] = ("flair",), healthy_only: bool = True,
                      max_slices: int | None = None, mri_reference: dict | None = None) -> dict:
    """Arrays for training: ``images`` (N, C, size, size) float32 in [-1, 1], ``labels`` (N,) 1 = diseased,
    ``masks`` (N, size, size) uint8 lesion masks, ``groups`` (N,) the case (BraTS layout) or file each slice comes
    from, ``source``. ``healthy_only`` keeps label-0 slices only. ``mri_reference``: MRI prepared as a model's card
    says (:func:`diffuse_core.run.card.mri_reference_for`; None: the brain's 1st-99th percentiles stretched)."""
    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.image import load_image, load_mask
    from diffuse_core.io.preprocess import prepare_slice, to_model_grid

    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"--data {folder}: not a folder")
    images, labels, masks, groups = [], [], [], []

    def add(image, label, mask, group):
        if healthy_only and label:
            return
        images.append(image.astype(np.float32))
        labels.append(int(label))
        masks.append(mask.astype(np.uint8))
        groups.append(str(group))

    index = root / "index.csv"
    case_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and any("flair" in f.name.lower()
                                                                         for f in d.iterdir() if f.is_file())]
    if index.is_file():
        with open(index, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "image" not in rows[0] or "healthy" not in rows[0]:
            raise ValueError(f"{index} needs columns 'image' and 'healthy'")
        for row in rows:
            loaded = load_image(root / row["image"])
            prep = prepare_slice(loaded, size=size, mri_reference=mri_reference)
            if prep.image.shape[0] != len(modalities):
                raise ValueError(f"{row['image']} has {prep.image.shape[0]} channels, expected {len(modalities)}")
            m = np.zeros((size, size), np.uint8)
            if row.get("mask"):
                m = to_model_grid(load_mask(root / row["mask"], like=loaded), size=size, order=0)[0]
            healthy = str(row["healthy"]).strip().lower() in ("1", "true", "yes")
            add(prep.image, not healthy, m, row.get("case") or row["image"])
    elif case_dirs:
        for d in case_dirs:
            case = load_brats_case(d, modalities=tuple(modalities))
            for z in range(case.num_slices):
                raw, label, brain = case.slice(z)
                if brain.mean() < MIN_BRAIN_FRACTION:
                    continue
                prep = prepare_slice(raw, size=size, modality="mri", brain_mask=brain, mri_reference=mri_reference)
                lab = to_model_grid(label, size=size, order=0)[0] if label is not None else np.zeros((size, size))
                add(prep.image, bool(lab.any()), (lab > 0).astype(np.uint8), d.name)
    else:
        files = sorted(p for p in root.iterdir() if _is_image(p))
        if not files:
            raise ValueError(f"--data {folder}: no index.csv, no BraTS case folders and no image files found")
        for p in files:
            prep = prepare_slice(load_image(p), size=size, mri_reference=mri_reference)
            add(prep.image[: len(modalities)], False, np.zeros((size, size), np.uint8), p.name)
    if max_slices is not None:
        images, labels, masks, groups = (images[:max_slices], labels[:max_slices], masks[:max_slices],
                                         groups[:max_slices])
    if not images:
        raise ValueError(f"--data {folder}: no usable slices" + (" (no healthy ones)" if healthy_only else ""))
    return {"images": np.stack(images), "labels": np.asarray(labels, np.int64), "masks": np.stack(masks),
            "groups": np.asarray(groups), "source": str(root)}
