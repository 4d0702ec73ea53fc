"""Which slices of a :class:`~diffuse_core.volumes.read.Volume` a run processes, and each one on the model's grid.

:func:`parse_slices` reads ``--slices`` ("all", "A-B", "Z"); :func:`brain_slices` keeps the slices with brain in them
(a BraTS case's brain mask, else :func:`diffuse_core.io.preprocess.estimate_brain_mask` covering at least
:data:`MIN_BRAIN_FRACTION` of the slice); :func:`slice_case` prepares slice ``z`` exactly as a one-slice run of the
same file prepares it (:func:`diffuse_core.cases.prepare_case`), so both give the same
:class:`~diffuse_core.cases.CaseInput`.
"""

from __future__ import annotations

import re

import numpy as np

from diffuse_core.cases import CaseInput, prepare_case
from diffuse_core.io.loaded import LoadedImage
from diffuse_core.volumes.read import Volume

__all__ = ["MIN_BRAIN_FRACTION", "brain_slices", "parse_slices", "slice_case", "volume_modality_hint"]

MIN_BRAIN_FRACTION = 0.01       # a slice whose brain covers less than this share of its pixels is skipped


def parse_slices(text: str | None, num_slices: int) -> list[int]:
    """``"all"`` -> every slice; ``"A-B"`` -> A..B inclusive; ``"Z"`` -> [Z]; one-line ValueError otherwise."""
    spec = (text or "all").strip().lower()
    if spec == "all":
        return list(range(num_slices))
    m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", spec)
    if not m:
        raise ValueError(f"--slices {text!r}: expected all, a range A-B (e.g. 40-90) or one slice index")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if a > b:
        raise ValueError(f"--slices {text!r}: the range runs backwards; write {b}-{a}")
    if b >= num_slices:
        raise ValueError(f"--slices {text!r}: the volume has {num_slices} slices (0..{num_slices - 1})")
    return list(range(a, b + 1))


def volume_modality_hint(volume: Volume) -> str:
    """"ct" for a CT series or a volume holding Hounsfield-like air (values below -500), else "mri"."""
    if (volume.modality or "").upper() == "CT":
        return "ct"
    if (volume.modality or "").upper() in ("MR", "MRI"):
        return "mri"
    return "ct" if float(volume.slices.min()) < -500.0 else "mri"


def brain_slices(volume: Volume, candidates: list[int] | None = None,
                 min_fraction: float = MIN_BRAIN_FRACTION) -> list[int]:
    """The slices among ``candidates`` (default all) holding brain (see the module docstring), ascending."""
    from diffuse_core.io.preprocess import estimate_brain_mask

    zs = list(range(volume.num_slices)) if candidates is None else list(candidates)
    hint = volume_modality_hint(volume)
    keep = []
    for z in zs:
        if volume.brain is not None:
            share = float(volume.brain[z].mean())
        else:
            plane = volume.slices[z, 0]
            share = 0.0 if float(plane.min()) == float(plane.max()) else \
                float(estimate_brain_mask(plane, modality_hint=hint).mean())
        if share >= min_fraction:
            keep.append(int(z))
    return keep


def slice_case(volume: Volume, z: int, *, size: int = 128, channels: int = 1, window=None,
               mri_reference: dict | None = None) -> CaseInput:
    """Slice ``z`` of ``volume`` on the model's grid, as :func:`~diffuse_core.cases.prepare_case` prepares it."""
    if volume.kind == "brats":
        return _brats_case(volume, z, size, mri_reference)
    loaded = LoadedImage(data=np.array(volume.slices[z], np.float32), kind=volume.kind, spacing=volume.spacing,
                         modality=volume.modality, num_slices=volume.num_slices, slice_index=int(z),
                         channel_names=volume.channel_names, source=volume.source,
                         affine=volume.canonical_affine(), slice_axis=2)
    return prepare_case(loaded, int(z), size=size, channels=channels, window=window, mri_reference=mri_reference)


def _brats_case(volume: Volume, z: int, size: int, mri_reference: dict | None) -> CaseInput:
    """The BraTS branch of :func:`~diffuse_core.cases.prepare_case` for one slice of a case already in memory."""
    from diffuse_core.io.orientation import affine_of_slice
    from diffuse_core.io.preprocess import prepare_slice, to_model_grid

    raw, brain = volume.slices[z], volume.brain[z]
    prepared = prepare_slice(raw, size=size, modality="mri", brain_mask=brain, mri_reference=mri_reference)
    full_truth = None if volume.truth is None else volume.truth[z]
    truth = None if full_truth is None else (to_model_grid(full_truth, size=size, order=0)[0] > 0).astype(np.uint8)
    return CaseInput(image=prepared.image, brain_mask=prepared.brain_mask, ground_truth=truth,
                     geometry=prepared.geometry, source=volume.source, slice_index=int(z),
                     num_slices=volume.num_slices, modality="mri", spacing=volume.spacing,
                     channel_names=volume.channel_names, notes=(), affine=affine_of_slice(volume.canonical_affine(), z),
                     original_image=prepared.original_image, original_brain=prepared.original_brain_mask,
                     original_truth=full_truth)
