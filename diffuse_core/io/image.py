"""Image files -> raw 2-D slices (C, H, W) float32, with the facts the rest of the engine needs.

:func:`load_image` reads NIfTI, DICOM (file, multi-frame file or series folder), PNG, JPEG, TIFF and NumPy
(``.npy`` or an in-memory array) and returns a :class:`~diffuse_core.io.loaded.LoadedImage` holding ONE axial slice
of raw values (Hounsfield units for CT DICOM, after Rescale Slope/Intercept). Intensity normalisation and resizing
live in :mod:`diffuse_core.io.preprocess`. :func:`load_mask` reads ground-truth / mask files the same way and
binarises them; BraTS-layout case folders are :mod:`diffuse_core.io.brats`.

The format is decided from the file's content (:func:`diffuse_core.io.sniff.sniff`, magic bytes), not only its
extension, and handed to one reader per format: :mod:`~diffuse_core.io.nifti`, :mod:`~diffuse_core.io.dicom`,
:mod:`~diffuse_core.io.raster` (PNG / JPEG / TIFF) and :mod:`~diffuse_core.io.numpy_file`. Every failure is a
``ValueError`` (``FileNotFoundError`` for a missing path) whose message says what went wrong and what to do; errors
raised by nibabel, pydicom, Pillow or tifffile are wrapped, never leaked as raw tracebacks.

Orientation (:mod:`diffuse_core.io.orientation`): every reader returns the slice in the radiological display
convention, anterior at the top and the patient's right on the image's left. NIfTI is reoriented to canonical RAS+
and shown as ``display[r, c] = canonical[X - 1 - c, Y - 1 - r, z]`` (``z = 0`` most inferior); axial DICOM is
already radiological as stored, and a series is sorted along the slice normal; pictures and arrays are taken as
displayed. Spacing is ``(row, col)`` in mm, ``(1.0, 1.0)`` when the format has none; a NIfTI slice also keeps its
canonical affine (:meth:`LoadedImage.slice_affine`), so exports land where the input was.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffuse_core.io.dicom import load_dicom_file, load_dicom_folder
from diffuse_core.io.loaded import (DEFAULT_MAX_BYTES, MIN_SIDE, SUPPORTED_FORMATS, LoadedImage, OutOfMemoryError,
                                    check_size, check_values)
from diffuse_core.io.nifti import load_nifti
from diffuse_core.io.numpy_file import array_to_image, load_npy
from diffuse_core.io.raster import load_picture
from diffuse_core.io.sniff import sniff

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "LoadedImage",
    "load_image",
    "load_mask",
    "load_raw",
]


def load_raw(path_or_array, slice_index: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedImage:
    """Read one slice like :func:`load_image` but without its value checks (a constant, NaN or tiny slice is
    returned as is): for probing a volume's slice count, whose first slice is often empty."""
    if isinstance(path_or_array, LoadedImage):
        return path_or_array
    if isinstance(path_or_array, np.ndarray) or (not isinstance(path_or_array, (str, os.PathLike))
                                                 and hasattr(path_or_array, "__array__")):
        arr = np.asarray(path_or_array)
        if arr.nbytes > max_bytes:
            raise ValueError(f"the array is {arr.nbytes / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB "
                             f"limit: pass one slice or raise max_bytes")
        return array_to_image(arr, slice_index, "<array>")
    if not isinstance(path_or_array, (str, os.PathLike)):
        raise ValueError(f"expected a file path or a NumPy array, got {type(path_or_array).__name__}")
    path = Path(path_or_array).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    try:
        return _read_path(path, slice_index, max_bytes)
    except MemoryError:
        raise OutOfMemoryError(f"{path} needs more memory to decode than this process may use: pass one slice, or a "
                               f"cropped or uncompressed file") from None


def _read_path(path: Path, slice_index, max_bytes: int) -> LoadedImage:
    """The reader of ``path``'s format (a folder: a DICOM series)."""
    if path.is_dir():
        return load_dicom_folder(path, slice_index, max_bytes)
    check_size(path, max_bytes)
    kind = sniff(path)
    if kind == "nifti":
        return load_nifti(path, slice_index, max_bytes)
    if kind == "dicom":
        return load_dicom_file(path, slice_index, max_bytes)
    if kind == "numpy":
        return load_npy(path, slice_index)
    return load_picture(path, kind, slice_index, max_bytes)


def load_image(path_or_array, slice_index: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedImage:
    """Read one 2-D slice of raw values from a file, a DICOM series folder or an array.

    ``slice_index`` picks the axial slice of a volume (0 = most inferior for NIfTI/DICOM; the last axis for NumPy
    volumes; the page of a multi-page TIFF) and must be left out (or 0) for 2-D images. Files larger than
    ``max_bytes`` are refused before they are read. Raises ``FileNotFoundError`` for a missing path and
    ``ValueError`` with a message saying what to do for anything unreadable, NaN/inf values, a constant image,
    wrong dimensions or a slice smaller than 16 pixels a side. See the module docstring for orientations.
    """
    loaded = load_raw(path_or_array, slice_index, max_bytes)
    hint = (f", slice {loaded.slice_index} of {loaded.num_slices}: pick a slice through the brain"
            if loaded.num_slices > 1 else "")
    check_values(loaded.data, loaded.source, hint=hint)
    return loaded


def load_mask(path_or_array, slice_index: int | None = None, like: LoadedImage | None = None,
              max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read a ground-truth / mask slice as (H, W) uint8 {0, 1}: any channel > 0 -> 1.

    JPEG masks are binarised at half their maximum instead (lossy compression leaves small non-zero values around
    the edges). With ``like`` (the image the mask belongs to), a volume mask defaults to ``like.slice_index`` and
    the mask must have the image's size, else ``ValueError``. An empty mask is allowed.
    """
    if like is not None and slice_index is None:
        probe = None
        try:
            probe = load_raw(path_or_array, None, max_bytes)
        except ValueError as exc:
            if "pass a slice index" not in str(exc):
                raise
        if probe is None:
            loaded = load_raw(path_or_array, like.slice_index, max_bytes)
            if loaded.num_slices != like.num_slices:
                raise ValueError(f"the mask has {loaded.num_slices} slices but the image has {like.num_slices}: "
                                 f"pass the mask's slice index explicitly")
        else:
            loaded = probe
    else:
        loaded = load_raw(path_or_array, slice_index, max_bytes)
    check_values(loaded.data, loaded.source, allow_constant=True)
    data = loaded.data
    if loaded.kind == "jpeg":
        top = float(data.max())
        mask = (data > top / 2).any(axis=0) if top > 0 else np.zeros(data.shape[1:], bool)
    else:
        mask = (data > 0).any(axis=0)
    mask = mask.astype(np.uint8)
    if like is not None and mask.shape != like.shape:
        raise ValueError(f"the mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
                         f"{like.shape[0]}x{like.shape[1]}: they must have the same size (same slice grid)")
    return mask
