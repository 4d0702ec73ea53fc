"""A file (or an array) to one slice ready for the model: :class:`CaseInput`.

:func:`prepare_case` reads any supported file (NIfTI, DICOM, images, a BraTS case folder, a teaching-set case) and
puts one slice on the model's grid, with its brain mask, ground truth and the way back to the input's grid;
:func:`case_from_normalized` does the same for an array already in [-1, 1]. What runs on it is
:mod:`diffuse_core.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffuse_core.io.full_resolution import FullResolution

@dataclass
class CaseInput:
    """One slice ready for the model. ``image`` (C, R, R) in [-1, 1] (background -1); masks (R, R) uint8."""

    image: np.ndarray
    brain_mask: np.ndarray
    ground_truth: np.ndarray | None
    geometry: object | None          # preprocess.Geometry: the way back to the input's grid
    source: str
    slice_index: int
    num_slices: int
    modality: str                    # "mri" | "ct"
    spacing: tuple[float, float]     # (row, col) pixel spacing of the input slice in mm
    channel_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    affine: np.ndarray | None = None  # 4x4 canonical RAS affine (mm) of the input slice (NIfTI / BraTS), else None
    original_image: np.ndarray | None = None   # (C, H0, W0) the slice at the input's size, normalised as ``image``
    original_brain: np.ndarray | None = None   # (H0, W0) uint8
    original_truth: np.ndarray | None = None   # (H0, W0) uint8 ground truth at the input's size
    last_full: tuple | None = field(default=None, repr=False, compare=False)   # (result, its FullResolution)

    def full_resolution(self, result) -> FullResolution:
        """``result`` (a pipeline result on the model grid) at the input's size (:mod:`diffuse_core.io.full_resolution`).
        The last result's is kept: the summary, the record and the panels of one run all ask for it."""
        from diffuse_core.io.full_resolution import to_input_grid

        if self.last_full is not None and self.last_full[0] is result:
            return self.last_full[1]
        if self.original_image is None or self.geometry is None:
            full = to_input_grid(self.image, self.brain_mask, None, result.counterfactual, result.anomaly,
                                 result.mask, result.saliency)
        else:
            full = to_input_grid(self.original_image, self.original_brain, self.geometry, result.counterfactual,
                                 result.anomaly, result.mask, result.saliency)
        self.last_full = (result, full)
        return full

    @property
    def truth_at_input_size(self) -> np.ndarray | None:
        """The ground truth on the grid :meth:`full_resolution` returns."""
        return self.original_truth if self.original_image is not None and self.geometry is not None \
            else self.ground_truth


def _teaching_case_of(source):
    """The teaching case (:func:`diffuse_core.data.teaching.case_of_image_file`) ``source`` (a path, or an image
    loaded from one) is the image file of, else None."""
    from diffuse_core.data.teaching import case_of_image_file

    path = source if isinstance(source, (str, Path)) else getattr(source, "source", None)
    if not isinstance(path, (str, Path)) or not str(path).lower().endswith((".nii", ".nii.gz")):
        return None
    return case_of_image_file(path)


def is_brats_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    names = [p.name.lower() for p in path.iterdir() if p.is_file()]
    return any(".nii" in n for n in names) and any(("flair" in n) for n in names)


def prepare_case(source, slice_index: int | None = None, size: int = 128, channels: int = 1, gt=None,
                 window: str | None = None, modality: str | None = None, mri_reference: dict | None = None
                 ) -> CaseInput:
    """Load ``source`` (path or array) and put one slice on the model's ``size`` x ``size`` grid.

    A BraTS-layout case folder gives FLAIR (1 channel) or FLAIR/T1/T1c/T2 (4 channels) with its whole-tumour label
    as ground truth; without ``slice_index`` the slice with the largest tumour is taken. ``gt`` is an optional
    ground-truth mask file or array on the input's grid. ``mri_reference`` (:func:`intensity_reference_of` a model):
    MRI intensities matched to the model's training data instead of stretched between the 1st and 99th percentiles.
    """
    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.image import load_image, load_mask
    from diffuse_core.io.preprocess import prepare_slice, to_model_grid

    notes: list[str] = []
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is not None and is_brats_folder(path):
        mods = ("flair",) if channels == 1 else ("flair", "t1", "t1c", "t2")
        case = load_brats_case(path, modalities=mods)
        if slice_index is None:
            tumour = case.tumour_slices()
            if tumour:
                areas = [int(case.label_slice(z).sum()) for z in tumour]
                slice_index = tumour[int(np.argmax(areas))]
                notes.append(f"slice {slice_index} chosen: the largest tumour cross-section")
            else:
                slice_index = case.num_slices // 2
        raw, label, brain = case.slice(slice_index)
        prepared = prepare_slice(raw, size=size, modality="mri", brain_mask=brain, mri_reference=mri_reference)
        full_truth = label if gt is None else load_mask(gt, slice_index=slice_index)
        truth = to_model_grid(full_truth, size=size, order=0)[0] if full_truth is not None else None
        return CaseInput(prepared.image, prepared.brain_mask, None if truth is None else (truth > 0).astype(np.uint8),
                         prepared.geometry, str(path), int(slice_index), case.num_slices, "mri", case.spacing,
                         tuple(mods), tuple(notes), case.slice_affine(slice_index), prepared.original_image,
                         prepared.original_brain_mask,
                         None if full_truth is None else (np.asarray(full_truth) > 0).astype(np.uint8))

    teaching_case = _teaching_case_of(source)
    if teaching_case is not None:              # read as the app reads it: normalised already, the manifest's modality
        full_truth = None
        if gt is not None:
            like = source if hasattr(source, "data") else load_image(source)
            full_truth = (np.asarray(load_mask(gt, slice_index=0, like=like)) > 0).astype(np.uint8)
        case = case_from_normalized(teaching_case.image, full_truth, size=size, channels=channels,
                                    source=str(getattr(source, "source", source)),
                                    modality=teaching_case.modality.lower(), spacing=teaching_case.spacing)
        case.notes = tuple(notes) + (f"teaching-set case {teaching_case.set_name}/{teaching_case.id} "
                                     f"({teaching_case.modality.upper()}, from its manifest): its stored intensities "
                                     "are used as they are, as in the app",)
        if window is not None:
            case.notes += (f"window {window!r} not applied: the set stores this case with its display window "
                           "already applied",)
        if modality is not None and modality.lower() != teaching_case.modality.lower():
            case.notes += (f"modality {modality!r} not used: the set's manifest says "
                           f"{teaching_case.modality.upper()}",)
        return case
    loaded = load_image(source, slice_index=slice_index)
    if loaded.data.shape[0] != channels:
        if channels == 1:
            notes.append(f"the input has {loaded.data.shape[0]} channels: the first ({loaded.channel_names[0]}) is used")
            loaded.data = loaded.data[:1]
            loaded.channel_names = loaded.channel_names[:1]
        else:
            raise ValueError(f"the model expects {channels} channels (FLAIR, T1, T1c, T2), the input has "
                             f"{loaded.data.shape[0]}")
    prepared = prepare_slice(loaded, size=size, modality=modality, window=window, mri_reference=mri_reference)
    truth = full_truth = None
    if gt is not None:
        full_truth = (np.asarray(load_mask(gt, slice_index=loaded.slice_index, like=loaded)) > 0).astype(np.uint8)
        truth = (to_model_grid(full_truth, size=size, order=0)[0] > 0).astype(np.uint8)
    return CaseInput(prepared.image, prepared.brain_mask, truth, prepared.geometry, loaded.source,
                     loaded.slice_index, loaded.num_slices, prepared.modality, loaded.spacing,
                     tuple(loaded.channel_names), tuple(notes), loaded.slice_affine(), prepared.original_image,
                     prepared.original_brain_mask, full_truth)


def case_from_normalized(image, ground_truth=None, size: int = 128, channels: int = 1, source: str = "<array>",
                         modality: str = "mri", spacing=(1.0, 1.0)) -> CaseInput:
    """A slice that is already normalised (a teaching or curated case: (C, H, W) or (H, W) in [-1, 1], background
    -1) on the model's ``size`` x ``size`` grid, intensities unchanged. ``ground_truth`` (H, W) is binarised (> 0)
    and resampled alike (an empty one becomes None); the brain mask is
    :func:`diffuse_core.core.brain.brain_mask_from_image` of the result. A multi-channel slice gives its first channel
    to a 1-channel model. ``spacing`` is the slice's (row, col) pixel size in mm as stored."""
    from diffuse_core.core.brain import brain_mask_from_image
    from diffuse_core.io.orientation import check_spacing
    from diffuse_core.io.preprocess import to_model_grid

    img = np.asarray(image, np.float32)
    img = img[None] if img.ndim == 2 else img
    if img.shape[0] != channels:
        if channels != 1:
            raise ValueError(f"this case has {img.shape[0]} channel(s) but the model expects {channels}")
        img = img[:1]
    truth = None if ground_truth is None else (np.asarray(ground_truth) > 0).astype(np.uint8)
    truth = truth if truth is not None and truth.any() else None
    geometry = None
    if img.shape[1:] != (size, size):
        img, geometry = to_model_grid(img, size=size, order=1, pad_value=-1.0)
        if truth is not None:
            truth = to_model_grid(truth, size=size, order=0, pad_value=0)[0]
    img = np.clip(img, -1, 1).astype(np.float32)
    return CaseInput(image=img, brain_mask=brain_mask_from_image(img), ground_truth=truth, geometry=geometry,
                     source=str(source), slice_index=0, num_slices=1, modality="ct" if modality == "ct" else "mri",
                     spacing=check_spacing(spacing), channel_names=("image",))
