"""What every reader returns: :class:`LoadedImage`, one 2-D slice of raw values, and the checks all readers share.

The readers (:mod:`~diffuse_core.io.nifti`, :mod:`~diffuse_core.io.dicom`, :mod:`~diffuse_core.io.raster`,
:mod:`~diffuse_core.io.numpy_file`) build a :class:`LoadedImage`; :func:`diffuse_core.io.image.load_image` picks the
reader from the file's content and runs :func:`check_values` on what it returns. Every failure here is a
``ValueError`` whose message says what went wrong and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffuse_core.io.orientation import affine_of_slice

__all__ = [
    "DEFAULT_MAX_BYTES",
    "GREY_TOLERANCE",
    "MAX_DECODED_BYTES",
    "MAX_HEADER_BYTES",
    "MIDDLE",
    "MAX_SLICE_PIXELS",
    "MAX_VOLUME_VOXELS",
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "LoadedImage",
    "OutOfMemoryError",
    "TooLargeError",
    "check_decoded_bytes",
    "check_pixels",
    "check_size",
    "check_values",
    "colour_to_grey",
    "describe_source",
    "pick_slice",
    "to_float32",
]

DEFAULT_MAX_BYTES = 512 * 2**20
MIN_SIDE = 16                 # smallest accepted slice side in pixels
# Decompression-bomb guards, checked from each format's HEADER before any pixel is decoded (the CLI and the app
# read through the same loaders). A brain slice is at most a few thousand pixels a side (CT 512, MRI <= 1024,
# a scanned film ~ 4000); a volume at most ~1000 such slices.
MAX_SLICE_PIXELS = 4096 * 4096          # pixels in one 2-D slice (16.8 MP)
MAX_VOLUME_VOXELS = 512 * 512 * 1024    # voxels in a whole volume or stack, channels included (268 M)
# Compressed files are bounded by what they DECLARE they inflate to, before inflating (issue 35): a deflated DICOM,
# a NIfTI .gz (its header's dims x bytes per voxel), a DICOM series (all its files together). As much as an
# uncompressed file may hold on disk.
MAX_DECODED_BYTES = DEFAULT_MAX_BYTES
MAX_HEADER_BYTES = 64 * 2**20           # a DICOM's data elements other than the image (private, overlay, ...)
MIDDLE = "middle"                       # slice_index asking a reader for a volume's middle slice (one read)
SUPPORTED_FORMATS = ("NIfTI (.nii, .nii.gz)", "DICOM (file or series folder)", "PNG", "JPEG", "TIFF",
                     "NumPy (.npy)")
GREY_TOLERANCE = 2.0 / 255.0  # RGB channels this close (fraction of full scale) count as grey


@dataclass
class LoadedImage:
    """One 2-D slice of raw values, as read from a file or array."""

    data: np.ndarray                 # (C, H, W) float32 raw values (HU for CT DICOM after rescale)
    kind: str                        # "nifti" | "dicom" | "png" | "jpeg" | "tiff" | "numpy"
    spacing: tuple[float, float]     # pixel spacing in mm (row, col); (1.0, 1.0) when unknown
    modality: str | None             # "CT" / "MR" (DICOM Modality), None when unknown
    num_slices: int                  # slices along the axial axis of the source (1 for 2-D images)
    slice_index: int                 # the axial slice taken (0 for 2-D)
    channel_names: tuple[str, ...]
    source: str                      # file path or "<array>"
    affine: np.ndarray | None = None  # 4x4 of the source NIfTI after canonical reorientation, else None
    notes: tuple[str, ...] = ()      # what the loader did that a user may want to know (colour -> grey, ...)
    slice_axis: int = 2              # canonical axis the slice was cut across (2 = axial; NIfTI only)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the slice."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    def slice_affine(self) -> np.ndarray | None:
        """4x4 canonical RAS affine (mm) of the slice as returned, for writing it back with
        :func:`diffuse_core.io.orientation.display_nifti`; None when the source had no affine (not NIfTI)."""
        if self.affine is None:
            return None
        return affine_of_slice(self.affine, self.slice_index, axis=self.slice_axis)


# --------------------------------------------------------------------------------------------------------------
# errors, validation, slice picking


def describe_source(source: str) -> str:
    """How an error message names a source: the path, or "the array"."""
    return "the array" if source == "<array>" else f"{source}"


def pick_slice(n: int, slice_index: int | None, source: str) -> int:
    """Validate ``slice_index`` against a volume with ``n`` axial slices; 2-D sources (n == 1) accept None/0."""
    if isinstance(slice_index, str) and slice_index == MIDDLE:
        return n // 2
    if slice_index is None:
        if n == 1:
            return 0
        raise ValueError(f"{describe_source(source)} is a 3-D volume with {n} axial slices: pass a slice index "
                         f"(--slice Z, 0..{n - 1})")
    if isinstance(slice_index, (bool, np.bool_)):
        raise ValueError(f"slice index must be an integer, got {slice_index!r}")
    if isinstance(slice_index, (int, np.integer)):
        z = int(slice_index)
    elif isinstance(slice_index, (float, np.floating)) and float(slice_index).is_integer():
        z = int(slice_index)
    else:
        raise ValueError(f"slice index must be an integer, got {slice_index!r}")
    if not 0 <= z < n:
        if n == 1:
            raise ValueError(f"slice index {z} is out of range: {describe_source(source)} is a 2-D image (only "
                             f"slice 0); leave the slice index out")
        raise ValueError(f"slice index {z} is out of range: {describe_source(source)} has {n} axial slices "
                         f"(0..{n - 1})")
    return z


def check_values(data: np.ndarray, source: str, *, allow_constant: bool = False, hint: str = "") -> None:
    """Shape, size, finiteness and non-constancy of a (C, H, W) slice."""
    if data.ndim != 3:
        raise ValueError(f"{describe_source(source)}: expected one 2-D slice, got shape {data.shape}")
    h, w = data.shape[1:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{describe_source(source)} is too small ({h}x{w} pixels): each side needs at least "
                         f"{MIN_SIDE} pixels")
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum() - n_nan)
        parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else ""]
        raise ValueError(f"{describe_source(source)} holds {' and '.join(p for p in parts if p)} value(s) out of "
                         f"{data.size}: fix or mask them (e.g. replace with the background value) and retry")
    if not allow_constant:
        lo, hi = float(data.min()), float(data.max())
        if lo == hi:
            raise ValueError(f"image is constant (value {lo}): nothing to analyse ({describe_source(source)}{hint})")


def to_float32(arr: np.ndarray, source: str) -> np.ndarray:
    """Numbers (bool, int, float) as float32; ValueError for objects, strings, complex values."""
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{describe_source(source)} holds {arr.dtype} values: expected numbers (integers, floats "
                         f"or booleans)")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, which check_values reports
        return np.asarray(arr, dtype=np.float32)


class OutOfMemoryError(ValueError):
    """Decoding a file ran out of memory (the machine's, or a cap on the process that decodes it)."""


class TooLargeError(ValueError):
    """A file declares more pixels than :data:`MAX_SLICE_PIXELS` / :data:`MAX_VOLUME_VOXELS` allow."""


def check_pixels(source: str, height: int, width: int, slices: int = 1, channels: int = 1) -> None:
    """Refuse a slice over :data:`MAX_SLICE_PIXELS` or a volume over :data:`MAX_VOLUME_VOXELS` (sizes as declared
    by a file's header, before decoding): one line naming the file, its size and what to do."""
    height, width, slices, channels = (max(0, int(v)) for v in (height, width, slices, channels))
    pixels = height * width
    if pixels > MAX_SLICE_PIXELS:
        raise TooLargeError(f"{describe_source(source)} is {height} x {width} pixels ({pixels / 1e6:.0f} MP): the "
                            f"limit is {MAX_SLICE_PIXELS / 1e6:.1f} MP per slice; crop or downsample it first")
    voxels = pixels * slices * channels
    if voxels > MAX_VOLUME_VOXELS:
        extra = f" x {channels} channels" if channels > 1 else ""
        raise TooLargeError(f"{describe_source(source)} holds {height} x {width} x {slices}{extra} voxels "
                            f"({voxels / 1e6:.0f} M): the limit is {MAX_VOLUME_VOXELS / 1e6:.0f} M voxels per "
                            f"volume; crop it or keep fewer slices first")


def check_decoded_bytes(source: str, nbytes: int, what: str, limit: int | None = None, fix: str = "") -> None:
    """Refuse a file whose header declares more than ``limit`` (default :data:`MAX_DECODED_BYTES`) bytes of
    ``what`` once inflated or decoded, before inflating any of it: one line with the size, the limit and what to
    do (``fix``, else crop or export fewer slices)."""
    limit = MAX_DECODED_BYTES if limit is None else int(limit)
    if nbytes > limit:
        fix = fix or "crop the image or export fewer slices, uncompressed or in smaller files, and retry"
        raise TooLargeError(f"{describe_source(source)} declares {_mib(nbytes)} of {what} once decompressed: the "
                            f"limit is {_mib(limit)}; {fix}")


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def check_size(path: Path, max_bytes: int) -> int:
    """The file's size in bytes; ValueError when it is empty or over ``max_bytes``."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the file was not written completely; export it again")
    if size > max_bytes:
        raise ValueError(f"{path} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit: crop or "
                         f"export a smaller file (one series / a few slices), or raise max_bytes")
    return size


def colour_to_grey(arr: np.ndarray, full_scale: float) -> tuple[np.ndarray, str | None]:
    """(H, W, 2|3|4) -> (H, W) grey float32 and a note when colour was converted; alpha is dropped (transparent
    pixels -> 0). Channels within :data:`GREY_TOLERANCE` of ``full_scale`` average; true colour becomes ITU-R BT.601
    luminance 0.299 R + 0.587 G + 0.114 B."""
    alpha = None
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        arr = arr[..., :3]
    elif arr.shape[-1] == 2:  # grey + alpha
        alpha = arr[..., 1]
        arr = arr[..., :1]
    note = None
    if arr.shape[-1] == 1:
        grey = arr[..., 0]
    else:
        spread = float(np.max(arr.max(axis=-1) - arr.min(axis=-1))) if arr.size else 0.0
        if spread <= GREY_TOLERANCE * full_scale:
            grey = arr.mean(axis=-1)
        else:
            grey = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
            note = "true-colour image converted to grey luminance (0.299 R + 0.587 G + 0.114 B)"
    grey = grey.astype(np.float32)
    if alpha is not None:
        grey = np.where(alpha > 0, grey, np.float32(0))
    return grey, note
