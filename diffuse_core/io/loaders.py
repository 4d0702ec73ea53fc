"""Image files -> raw 2-D slices (C, H, W) float32, with the facts the rest of the engine needs.

:func:`load_image` reads NIfTI, DICOM (file, multi-frame file or series folder), PNG, JPEG, TIFF and NumPy
(``.npy`` or an in-memory array) and returns a :class:`LoadedImage` holding ONE axial slice of raw values (Hounsfield
units for CT DICOM, after Rescale Slope/Intercept). Intensity normalisation and resizing live in
:mod:`diffuse_core.io.preprocess`. :func:`load_mask` reads ground-truth / mask files the same way and binarises them;
:func:`load_brats_case` reads a BraTS-layout case folder (one NIfTI per modality, a label file, optionally a brain
mask).

The format is decided from the file's content (magic bytes), not only its extension, and every failure is a
``ValueError`` (``FileNotFoundError`` for a missing path) whose message says what went wrong and what to do; errors
raised by nibabel, pydicom, Pillow or tifffile are wrapped, never leaked as raw tracebacks.

Orientation conventions
-----------------------
* **NIfTI**: the volume is reoriented to the closest canonical orientation (RAS+: voxel axes increase towards the
  patient's Right, Anterior and Superior; ``nibabel.as_closest_canonical``) and the axial slice ``[:, :, z]`` is
  taken, so ``z = 0`` is the most inferior slice. The slice is then transposed and flipped so that the 2-D array
  displays in the **radiological convention**: row 0 is the most anterior row (anterior at the top) and column 0 the
  patient's rightmost column (the patient's right appears on the image's left, as if looking up from the feet).
  In formula: ``display[r, c] = canonical[X - 1 - c, Y - 1 - r, z]``. Spacing is reported as (row, col) = (y, x).
* **DICOM**: pixel data is kept as stored (rows x columns as the scanner wrote them). Axial acquisitions with the
  usual Image Orientation (1, 0, 0, 0, 1, 0) are then already radiological (anterior top, patient's right on the
  left), matching the NIfTI convention above. A series folder is sorted along the slice normal (Image Position
  Patient projected on Image Orientation's normal; else Image Position z; else Instance Number), so ``z = 0`` is the
  most inferior slice for axial series, as for NIfTI.
* **PNG / JPEG / TIFF / NumPy**: the pixel grid is taken as already in display orientation (JPEG EXIF rotation is
  applied).

NumPy shapes
------------
``(H, W)`` is one slice. ``(C, H, W)`` with ``C <= 4`` is one slice with C channels. Any other 3-D shape is a
volume ``(H, W, Z)`` whose LAST axis is the slice axis (pass ``slice_index``). ``(C, H, W, Z)`` with ``C <= 4`` is a
multi-channel volume. Note that an ``(H, W, 3)`` RGB array therefore reads as a 3-slice volume: pass
``np.moveaxis(rgb, -1, 0)`` for channels first.

Colour images
-------------
A brain slice is grey: RGB(A) pictures whose channels agree (within 2/255 of full scale) become their channel mean;
true-colour pictures are converted to luminance (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B) and a note says so. An
alpha channel is dropped; fully transparent pixels become 0. ``channel_names`` is ``("grey",)`` for pictures.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LoadedImage", "BratsCase", "load_image", "load_mask", "load_brats_case", "display_to_canonical",
           "MIN_SIDE",
           "DEFAULT_MAX_BYTES", "SUPPORTED_FORMATS"]

DEFAULT_MAX_BYTES = 512 * 2**20
MIN_SIDE = 16                 # smallest accepted slice side in pixels
MAX_CHANNELS = 8              # a 4-D NIfTI's 4th axis holds modalities/channels, not a time series
GZIP_EXPANSION_LIMIT = 8      # a compressed NIfTI may declare at most this many times max_bytes of voxel data
SUPPORTED_FORMATS = ("NIfTI (.nii, .nii.gz)", "DICOM (file or series folder)", "PNG", "JPEG", "TIFF",
                     "NumPy (.npy)")
_GREY_TOLERANCE = 2.0 / 255.0  # RGB channels this close (fraction of full scale) count as grey


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

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the slice."""
        return int(self.data.shape[1]), int(self.data.shape[2])


# --------------------------------------------------------------------------------------------------------------
# helpers: errors, validation, slice picking


def _name(source: str) -> str:
    return "the array" if source == "<array>" else f"{source}"


def _pick_slice(n: int, slice_index: int | None, source: str) -> int:
    """Validate ``slice_index`` against a volume with ``n`` axial slices; 2-D sources (n == 1) accept None/0."""
    if slice_index is None:
        if n == 1:
            return 0
        raise ValueError(f"{_name(source)} is a 3-D volume with {n} axial slices: pass a slice index "
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
            raise ValueError(f"slice index {z} is out of range: {_name(source)} is a 2-D image (only slice 0); "
                             f"leave the slice index out")
        raise ValueError(f"slice index {z} is out of range: {_name(source)} has {n} axial slices (0..{n - 1})")
    return z


def _check_values(data: np.ndarray, source: str, *, allow_constant: bool = False, hint: str = "") -> None:
    """Shape, size, finiteness and non-constancy of a (C, H, W) slice."""
    if data.ndim != 3:
        raise ValueError(f"{_name(source)}: expected one 2-D slice, got shape {data.shape}")
    h, w = data.shape[1:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{_name(source)} is too small ({h}x{w} pixels): each side needs at least {MIN_SIDE} "
                         f"pixels")
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum() - n_nan)
        parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else ""]
        raise ValueError(f"{_name(source)} holds {' and '.join(p for p in parts if p)} value(s) out of "
                         f"{data.size}: fix or mask them (e.g. replace with the background value) and retry")
    if not allow_constant:
        lo, hi = float(data.min()), float(data.max())
        if lo == hi:
            raise ValueError(f"image is constant (value {lo}): nothing to analyse ({_name(source)}{hint})")


def _to_float32(arr: np.ndarray, source: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{_name(source)} holds {arr.dtype} values: expected numbers (integers, floats or "
                         f"booleans)")
    return np.asarray(arr, dtype=np.float32)


def _check_size(path: Path, max_bytes: int) -> int:
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the file was not written completely; export it again")
    if size > max_bytes:
        raise ValueError(f"{path} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit: crop or "
                         f"export a smaller file (one series / a few slices), or raise max_bytes")
    return size


# --------------------------------------------------------------------------------------------------------------
# format sniffing


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
                return True
    if len(head) >= 12:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def _sniff(path: Path) -> str:
    """Format from the content: "nifti" | "dicom" | "png" | "jpeg" | "tiff" | "numpy"; ValueError otherwise."""
    with open(path, "rb") as f:
        head = f.read(1024)
    ext = "".join(path.suffixes[-2:]).lower()
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] == b"\x93NUMPY":
        return "numpy"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if _is_nifti_header(head):
        return "nifti"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(544)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path} is a truncated or corrupted gzip file ({exc}): download or export it "
                             f"again") from None
        if _is_nifti_header(inner):
            return "nifti"
        if len(inner) < 348 and ext.endswith(".nii.gz"):
            raise ValueError(f"{path} is a truncated or corrupted NIfTI file (the header is incomplete): "
                             f"download or export it again")
        raise ValueError(f"{path} is gzip-compressed but does not hold a NIfTI image: supported formats are "
                         f"{', '.join(SUPPORTED_FORMATS)}")
    # DICOM without the 128-byte preamble: starts with a group 0002 or 0008 tag (little endian)
    if head[:2] in (b"\x02\x00", b"\x08\x00") and ext in ("", ".dcm", ".ima", ".dicom"):
        return "dicom"
    if ext in (".nii", ".nii.gz"):
        raise ValueError(f"{path} is named like NIfTI but its header is not a NIfTI header (truncated or "
                         f"corrupted file?): export it again")
    described = {".png": "a PNG image", ".jpg": "a JPEG image", ".jpeg": "a JPEG image", ".tif": "a TIFF image",
                 ".tiff": "a TIFF image", ".dcm": "a DICOM file", ".npy": "a NumPy .npy file"}
    last = path.suffix.lower()
    if last in described:
        raise ValueError(f"{path} is not {described[last]}: its content is not a recognised image format "
                         f"(wrong extension or damaged file); supported formats are {', '.join(SUPPORTED_FORMATS)}")
    raise ValueError(f"{path} is not an image this tool reads (unknown format{' ' + last if last else ''}): "
                     f"supported formats are {', '.join(SUPPORTED_FORMATS)}; convert other formats "
                     f"(e.g. .mha, .nrrd, .mgz) to NIfTI first")


# --------------------------------------------------------------------------------------------------------------
# NIfTI

_NIFTI_ERRORS = (OSError, EOFError, ValueError, zlib.error, struct.error, MemoryError, IndexError, TypeError)


def _open_nifti(path: Path, max_bytes: int, check_complete: bool = True):
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types (ImageFileError, HeaderDataError, EOFError, ...)
        raise ValueError(f"{path} is a corrupted NIfTI file ({type(exc).__name__}: {exc}): export it "
                         f"again") from None
    shape = tuple(int(s) for s in img.shape)
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    declared = int(np.prod(shape, dtype=np.int64)) * itemsize
    if declared > GZIP_EXPANSION_LIMIT * max_bytes:
        raise ValueError(f"{path} declares {declared / 2**20:.0f} MiB of voxel data, over the limit of "
                         f"{GZIP_EXPANSION_LIMIT * max_bytes / 2**20:.0f} MiB: crop the volume first")
    if check_complete:
        try:
            offset = int(getattr(img.dataobj, "offset", None) or img.header["vox_offset"])
        except (TypeError, ValueError, KeyError):
            offset = 352
        needed = offset + declared
        if _is_gzip(path):
            have = _gzip_length(path)
        else:
            have = path.stat().st_size
        if have < needed:
            raise ValueError(f"{path} is a truncated or corrupted NIfTI file (it holds {have} of the {needed} "
                             f"bytes its header declares): download or export it again")
    return img


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _gzip_length(path: Path) -> int:
    """Uncompressed length of a gzip file, streamed (nothing kept); ValueError when truncated or corrupted."""
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while True:
                chunk = g.read(4 * 2**20)
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is a truncated or corrupted gzip/NIfTI file ({type(exc).__name__}: {exc}): "
                         f"download or export it again") from None
    return total


def _nifti_layout(img, source: str):
    """Spatial shape, the squeezed extra axes and the orientation; ValueError for unusable dimensions."""
    import nibabel as nib

    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 2:
        raise ValueError(f"{source} has {len(shape)} dimension(s) {shape}: expected a 2-D slice or a 3-D/4-D "
                         f"volume")
    extra = shape[3:]
    non_single = [s for s in extra if s != 1]
    if len(non_single) > 1:
        raise ValueError(f"{source} has {len(shape)} dimensions {shape}: expected a 2-D slice, a 3-D volume or "
                         f"a 4-D volume whose 4th axis holds channels/modalities")
    channels = non_single[0] if non_single else 1
    if channels > MAX_CHANNELS:
        raise ValueError(f"{source} has {channels} volumes along its 4th axis {shape}: that looks like a time "
                         f"series, not channels (at most {MAX_CHANNELS}); extract one volume first")
    spatial = shape[:3] if len(shape) >= 3 else shape + (1,)
    affine = img.affine if img.affine is not None else np.eye(4)
    try:
        ornt = nib.orientations.io_orientation(affine)
    except Exception:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    if not np.isfinite(ornt).all() or sorted(ornt[:, 0].astype(int).tolist()) != [0, 1, 2]:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # degenerate affine: keep the stored order
    return shape, spatial, channels, ornt


def _canonical_to_display(sl: np.ndarray) -> np.ndarray:
    """Canonical (X, Y[, C]) axial slice -> (C, H, W) radiological display (anterior top, patient right left).

    The same transpose-and-flip shows a single coronal (X, Z) slice superior-up with the patient's right on the
    left, and a sagittal (Y, Z) slice superior-up with anterior on the left.
    """
    if sl.ndim == 2:
        sl = sl[:, :, None]
    return np.ascontiguousarray(np.transpose(sl, (2, 1, 0))[:, ::-1, ::-1])


def display_to_canonical(array) -> np.ndarray:
    """Inverse of the NIfTI display convention: (C, H, W) or (H, W) display slice -> canonical RAS (X, Y, C).

    Write it with an affine whose first two columns point to +x (Right) and +y (Anterior), e.g.
    ``np.diag([col_spacing, row_spacing, 1, 1])``, and viewers show the slice as :func:`load_image` returned it.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected a display slice (H, W) or (C, H, W), got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (2, 1, 0))[::-1, ::-1, :])


def _slice_axis(spatial: tuple[int, int, int], ornt: np.ndarray) -> int:
    """Input axis to slice: the one closest to superior-inferior, unless the file holds a single non-axial slice
    (exactly one spatial axis of size 1), which is then the slice axis."""
    kz = int(np.where(ornt[:, 0] == 2)[0][0])
    singles = [k for k in range(3) if spatial[k] == 1]
    if spatial[kz] > 1 and len(singles) == 1:
        return singles[0]
    return kz


def _nifti_read_slice(img, shape, spatial, ornt, ks: int, z_canonical: int, source: str) -> np.ndarray:
    """Read one canonical slice (A, B, C) along input axis ``ks`` straight from the proxy (only it is read);
    A and B are the two remaining axes in canonical order (x before y before z)."""
    import nibabel as nib

    n = spatial[ks]
    z_in = n - 1 - z_canonical if ornt[ks, 1] < 0 else z_canonical
    if len(shape) == 2:
        index: list = [slice(None), slice(None)]
    else:
        index = [slice(None)] * len(shape)
        index[ks] = z_in
        for ax in range(3, len(shape)):
            if shape[ax] == 1:
                index[ax] = 0
    try:
        sl = np.asanyarray(img.dataobj[tuple(index)])
    except Exception as exc:
        raise ValueError(f"{source} is a truncated or corrupted NIfTI file (reading its voxels failed: "
                         f"{type(exc).__name__}: {exc}): download or export it again") from None
    if sl.ndim == 2:
        sl = sl[:, :, None]
    rest = [a for a in range(3) if a != ks]
    sub = ornt[rest].copy()
    sub[:, 0] = np.argsort(np.argsort(sub[:, 0]))  # relabel the two remaining canonical axes as 0, 1
    return nib.orientations.apply_orientation(sl, sub)


def _nifti_spacing(img, ornt, ks: int) -> tuple[float, float]:
    """(row, col) spacing of the displayed slice: rows run along the later canonical axis, columns the earlier."""
    try:
        zooms = [float(v) for v in img.header.get_zooms()[:3]] + [1.0, 1.0, 1.0]
    except Exception:
        zooms = [1.0, 1.0, 1.0]
    rest = sorted((a for a in range(3) if a != ks), key=lambda a: ornt[a, 0])
    col, row = zooms[rest[0]], zooms[rest[1]]
    return tuple(v if np.isfinite(v) and v > 0 else 1.0 for v in (row, col))  # type: ignore[return-value]


def _load_nifti(path: Path, slice_index, max_bytes: int) -> LoadedImage:
    import nibabel as nib

    img = _open_nifti(path, max_bytes)
    source = str(path)
    shape, spatial, channels, ornt = _nifti_layout(img, source)
    ks = _slice_axis(spatial, ornt) if len(shape) >= 3 else 2
    if len(shape) == 2:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float) if int(ornt[2, 0]) != 2 else ornt
    n = spatial[ks]
    z = _pick_slice(n, slice_index, source)
    sl = _nifti_read_slice(img, shape, spatial, ornt, ks, z, source)
    data = _canonical_to_display(_to_float32(sl, source))
    try:
        affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, spatial)
    except Exception:
        affine = None
    names = ("intensity",) if channels == 1 else tuple(f"ch{i}" for i in range(channels))
    notes = ()
    if ks != int(np.where(ornt[:, 0] == 2)[0][0]):
        notes = ("single non-axial slice: shown as stored in canonical orientation (superior at the top)",)
    return LoadedImage(data=data, kind="nifti", spacing=_nifti_spacing(img, ornt, ks), modality=None,
                       num_slices=n, slice_index=z, channel_names=names, source=source, affine=affine, notes=notes)


def _nifti_canonical_volume(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Whole 3-D NIfTI in canonical RAS order (X, Y, Z) float32, with its canonical affine and (row, col) spacing."""
    import nibabel as nib

    _check_size(path, max_bytes)
    _sniff(path)
    img = _open_nifti(path, max_bytes, check_complete=False)  # reading every voxel below finds truncation
    shape, spatial, channels, ornt = _nifti_layout(img, str(path))
    if channels != 1 or len(shape) < 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {shape}")
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted NIfTI file (reading its voxels failed: "
                         f"{type(exc).__name__}: {exc}): download or export it again") from None
    arr = arr.reshape(spatial)
    arr = nib.orientations.apply_orientation(_to_float32(arr, str(path)), ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, spatial)
    zooms = [float(v) for v in img.header.get_zooms()[:3]]
    kx = int(np.where(ornt[:, 0] == 0)[0][0])
    ky = int(np.where(ornt[:, 0] == 1)[0][0])
    return np.ascontiguousarray(arr, dtype=np.float32), affine, (zooms[ky], zooms[kx])


# --------------------------------------------------------------------------------------------------------------
# DICOM


def _dicom_read(path: Path, *, header_only: bool, force: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only, force=force)
    except InvalidDicomError:
        if not force:
            return _dicom_read(path, header_only=header_only, force=True)
        raise ValueError(f"{path} is not a valid DICOM file") from None
    except Exception as exc:
        raise ValueError(f"{path} is a corrupted DICOM file ({type(exc).__name__}: {exc}): export it "
                         f"again") from None


def _dicom_first(ds, keyword: str, functional: str | None = None, frame: int | None = None):
    """A value from the top level, else the per-frame / shared functional groups (enhanced multi-frame)."""
    value = ds.get(keyword)
    if value is not None:
        return value
    if functional is None:
        return None
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        pf = ds.PerFrameFunctionalGroupsSequence
        if frame < len(pf):
            groups.append(pf[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for g in groups:
        seq = g.get(functional)
        if seq is not None and len(seq) and seq[0].get(keyword) is not None:
            return seq[0].get(keyword)
    return None


def _dicom_rescale(ds, frame: int | None) -> tuple[float, float]:
    slope = _dicom_first(ds, "RescaleSlope", "PixelValueTransformationSequence", frame)
    inter = _dicom_first(ds, "RescaleIntercept", "PixelValueTransformationSequence", frame)
    try:
        slope = float(slope) if slope is not None else 1.0
        inter = float(inter) if inter is not None else 0.0
    except (TypeError, ValueError):
        slope, inter = 1.0, 0.0
    return (slope if np.isfinite(slope) and slope != 0 else 1.0), (inter if np.isfinite(inter) else 0.0)


def _dicom_spacing(ds) -> tuple[float, float]:
    for kw, fg in (("PixelSpacing", "PixelMeasuresSequence"), ("ImagerPixelSpacing", None)):
        v = _dicom_first(ds, kw, fg, 0)
        if v is not None:
            try:
                r, c = float(v[0]), float(v[1])
                if r > 0 and c > 0:
                    return r, c
            except (TypeError, ValueError, IndexError):
                pass
    return 1.0, 1.0


def _dicom_position(ds, frame: int | None = None) -> float | None:
    """Slice position along the normal of the image plane (None when the header lacks it)."""
    pos = _dicom_first(ds, "ImagePositionPatient", "PlanePositionSequence", frame)
    ori = _dicom_first(ds, "ImageOrientationPatient", "PlaneOrientationSequence", frame)
    try:
        p = np.array([float(v) for v in pos], dtype=float)
    except (TypeError, ValueError):
        return None
    try:
        o = np.array([float(v) for v in ori], dtype=float)
        normal = np.cross(o[:3], o[3:6])
        if np.linalg.norm(normal) > 0.5:
            return float(p @ normal)
    except (TypeError, ValueError, IndexError):
        pass
    return float(p[2])


def _dicom_pixels(ds, source: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"{source} is a DICOM file without pixel data (a DICOMDIR, report or "
                         f"presentation state?): pass an image file or a series folder")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", str(ts)) if ts is not None else "unknown"
        raise ValueError(f"cannot decode the pixel data of {source} (transfer syntax {ts_name}: "
                         f"{type(exc).__name__}: {exc}); for compressed DICOM install pylibjpeg/gdcm or "
                         f"decompress it (e.g. `gdcmconv --raw`)") from None
    return np.asarray(arr)


def _dicom_frames(ds, source: str) -> tuple[np.ndarray, list[int]]:
    """Pixel frames (F, H, W[, 3]) as stored and their order along the slice normal."""
    arr = _dicom_pixels(ds, source)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if nframes == 1:
        arr = arr[None]
    if arr.ndim != (4 if spp > 1 else 3):
        raise ValueError(f"{source}: unexpected DICOM pixel array shape {arr.shape}")
    positions = [_dicom_position(ds, f) if nframes > 1 else None for f in range(nframes)]
    if nframes > 1 and all(p is not None for p in positions) and len(set(positions)) == nframes:
        order = [int(i) for i in np.argsort(positions, kind="stable")]
    else:
        order = list(range(nframes))
    return arr, order


def _dicom_to_slice(ds, frame_pixels: np.ndarray, frame: int | None, source: str,
                    notes: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Stored frame -> (C, H, W) float32 raw values: rescale, MONOCHROME1 inversion, colour -> grey."""
    arr = _to_float32(frame_pixels, source)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour: pydicom returns RGB (YBR converted)
        grey, note = _colour_to_grey(arr, 255.0 if frame_pixels.dtype.itemsize == 1 else float(arr.max() or 1))
        if note:
            notes.append(note)
        return grey[None], ("grey",)
    slope, inter = _dicom_rescale(ds, frame)
    if slope != 1.0 or inter != 0.0:
        arr = arr * np.float32(slope) + np.float32(inter)
    if photometric == "MONOCHROME1":
        # MONOCHROME1: the minimum value displays white; invert within the stored range so that bright = dense
        bits = int(ds.get("BitsStored", 0) or 0)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        if bits and not signed:
            lo = inter
            hi = (2**bits - 1) * slope + inter
        else:
            lo, hi = float(arr.min()), float(arr.max())
        arr = np.float32(lo + hi) - arr
        notes.append("MONOCHROME1 DICOM: intensities inverted so that bright means dense")
    name = "HU" if str(ds.get("Modality", "")).upper() == "CT" else "intensity"
    return arr[None], (name,)


def _dicom_modality(ds) -> str | None:
    m = str(ds.get("Modality", "") or "").upper().strip()
    return m or None


def _is_dicom_candidate(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return head[:2] in (b"\x02\x00", b"\x08\x00") and path.suffix.lower() in ("", ".dcm", ".ima", ".dicom")


def _load_dicom_file(path: Path, slice_index, max_bytes: int) -> LoadedImage:
    ds = _dicom_read(path, header_only=False)
    source = str(path)
    arr, order = _dicom_frames(ds, source)
    n = len(order)
    z = _pick_slice(n, slice_index, source)
    notes: list[str] = []
    data, names = _dicom_to_slice(ds, arr[order[z]], order[z] if n > 1 else None, source, notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind="dicom", spacing=_dicom_spacing(ds),
                       modality=_dicom_modality(ds), num_slices=n, slice_index=z, channel_names=names,
                       source=source, notes=tuple(notes))


def _load_dicom_folder(folder: Path, slice_index, max_bytes: int) -> LoadedImage:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    headers = []
    total = 0
    for p in files:
        if not _is_dicom_candidate(p):
            continue
        size = p.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{p} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit")
        try:
            ds = _dicom_read(p, header_only=True)
        except ValueError:
            continue  # junk that happened to look like DICOM
        if "Rows" not in ds or "Columns" not in ds:
            continue  # DICOMDIR, structured reports, ...
        headers.append((p, ds))
        total += size
    if not headers:
        raise ValueError(f"no DICOM images found in folder {folder} ({len(files)} file(s) looked at; "
                         f"subfolders are not searched): point to the folder that holds the series' .dcm files, "
                         f"or to one file")
    series: dict[str, list] = {}
    for p, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if len(series) > 1:
        desc = "; ".join(f"{len(v)} file(s) '{v[0][1].get('SeriesDescription', '?')}' "
                         f"(series {uid[-12:] or '?'})" for uid, v in series.items())
        raise ValueError(f"folder {folder} holds {len(series)} DICOM series ({desc}): point to a folder with "
                         f"one series, or to one file")
    items = next(iter(series.values()))
    if len(items) == 1:
        return _load_dicom_file(items[0][0], slice_index, max_bytes)
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        raise ValueError(f"folder {folder} mixes several multi-frame DICOM files: pass one file")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(sizes) > 1:
        raise ValueError(f"the DICOM files in {folder} have different sizes {sorted(sizes)}: not one series")
    positions = [_dicom_position(ds) for _, ds in items]
    if all(p is not None for p in positions) and len(set(positions)) == len(items):
        keys = positions
    else:
        keys = []
        for i, (_, ds) in enumerate(items):
            try:
                keys.append(float(ds.get("InstanceNumber")))
            except (TypeError, ValueError):
                keys.append(float(i))  # file-name order
    order = [int(i) for i in np.argsort(keys, kind="stable")]
    n = len(items)
    z = _pick_slice(n, slice_index, str(folder))
    path = items[order[z]][0]
    ds = _dicom_read(path, header_only=False)
    arr, _ = _dicom_frames(ds, str(path))
    notes: list[str] = []
    data, names = _dicom_to_slice(ds, arr[0], None, str(path), notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind="dicom", spacing=_dicom_spacing(ds),
                       modality=_dicom_modality(ds), num_slices=n, slice_index=z, channel_names=names,
                       source=str(folder), notes=tuple(notes))


# --------------------------------------------------------------------------------------------------------------
# PNG / JPEG / TIFF


def _colour_to_grey(arr: np.ndarray, full_scale: float) -> tuple[np.ndarray, str | None]:
    """(H, W, 3|4) -> (H, W) grey; an alpha channel is dropped (transparent pixels -> 0)."""
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
        if spread <= _GREY_TOLERANCE * full_scale:
            grey = arr.mean(axis=-1)
        else:
            grey = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
            note = "true-colour image converted to grey luminance (0.299 R + 0.587 G + 0.114 B)"
    grey = grey.astype(np.float32)
    if alpha is not None:
        grey = np.where(alpha > 0, grey, np.float32(0))
    return grey, note


def _full_scale(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "iu" else 1.0


def _picture_to_slice(arr: np.ndarray, source: str, notes: list[str]) -> np.ndarray:
    """(H, W) or (H, W, S) picture array -> (1, H, W) float32."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        return _to_float32(arr, source)[None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        full = _full_scale(arr.dtype) if arr.dtype.kind in "iu" else float(np.nanmax(np.abs(arr)) or 1.0)
        grey, note = _colour_to_grey(_to_float32(arr, source), full)
        if note:
            notes.append(note)
        return grey[None]
    raise ValueError(f"{source}: unexpected picture shape {arr.shape}: expected a grey or RGB(A) picture")


def _png_header(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26:
        return 8, 0
    return head[24], head[25]  # bit depth, colour type


def _read_with_pillow(path: Path, kind: str, slice_index) -> tuple[np.ndarray, int, int]:
    """Pixels (H, W[, S]) of one frame, the number of frames and the frame taken."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        n_frames = int(getattr(im, "n_frames", 1) or 1) if kind == "tiff" else 1
        z = _pick_slice(n_frames, slice_index, str(path))
        if n_frames > 1:
            im.seek(z)
        if kind == "jpeg":
            im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("P", "PA"):
            im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "1":
            im = im.convert("L")
        arr = np.array(im)
    return arr, n_frames, z


def _read_with_tifffile(path: Path, slice_index) -> tuple[np.ndarray, int, int]:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            arr = series.asarray()
            axes = series.axes
    except Exception as exc:
        raise ValueError(f"{path} is a damaged or unsupported TIFF image ({type(exc).__name__}: {exc}): "
                         f"export it again") from None
    arr = np.squeeze(arr) if arr.ndim > 2 and 1 in arr.shape[:-2] else arr
    has_samples = "S" in axes and arr.ndim >= 3 and arr.shape[-1] in (1, 2, 3, 4)
    plane_dims = 3 if has_samples else 2
    if arr.ndim == plane_dims:
        return arr, 1, _pick_slice(1, slice_index, str(path))
    if arr.ndim == plane_dims + 1:
        n = int(arr.shape[0])
        z = _pick_slice(n, slice_index, str(path))
        return arr[z], n, z
    raise ValueError(f"{path}: TIFF with axes {axes} and shape {arr.shape} is not a 2-D picture or a stack of "
                     f"pages")


def _load_picture(path: Path, kind: str, slice_index, max_bytes: int) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    source = str(path)
    notes: list[str] = []
    arr = None
    if kind == "png":
        depth, ctype = _png_header(path)
        if depth == 16 and ctype in (2, 6):  # Pillow truncates 16-bit colour PNG to 8 bits: use OpenCV
            import cv2

            n, z = 1, _pick_slice(1, slice_index, source)
            arr = cv2.imread(source, cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError(f"{path} is a damaged PNG image: export it again")
            arr = np.ascontiguousarray(arr[..., [2, 1, 0, 3]] if arr.shape[-1] == 4 else arr[..., ::-1])
    if arr is None:
        try:
            arr, n, z = _read_with_pillow(path, kind, slice_index)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, EOFError,
                struct.error, ValueError) as exc:
            if isinstance(exc, ValueError) and "slice index" in str(exc):
                raise
            if kind != "tiff":
                raise ValueError(f"{path} is a damaged or unsupported {kind.upper()} image "
                                 f"({type(exc).__name__}: {exc}): export it again") from None
            arr = None
        if arr is None or (kind == "tiff" and arr.dtype == object):  # TIFF Pillow cannot read: tifffile
            arr, n, z = _read_with_tifffile(path, slice_index)
    data = _picture_to_slice(np.asarray(arr), source, notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind=kind, spacing=(1.0, 1.0), modality=None,
                       num_slices=n, slice_index=z, channel_names=("grey",), source=source, notes=tuple(notes))


# --------------------------------------------------------------------------------------------------------------
# NumPy


def _array_to_image(arr: np.ndarray, slice_index, source: str, kind: str = "numpy") -> LoadedImage:
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        z = _pick_slice(1, slice_index, source)
        data, n = arr[None], 1
    elif arr.ndim == 3 and arr.shape[0] <= 4:
        z = _pick_slice(1, slice_index, source)
        data, n = arr, 1
    elif arr.ndim == 3:
        n = arr.shape[2]
        z = _pick_slice(n, slice_index, source)
        data = arr[None, :, :, z]
    elif arr.ndim == 4 and arr.shape[0] <= 4:
        n = arr.shape[3]
        z = _pick_slice(n, slice_index, source)
        data = arr[:, :, :, z]
    else:
        raise ValueError(f"{_name(source)} has shape {arr.shape} ({arr.ndim}-D): expected (H, W), (C, H, W) with "
                         f"C <= 4, a volume (H, W, Z) or (C, H, W, Z) with C <= 4")
    data = np.ascontiguousarray(_to_float32(data, source))
    names = ("intensity",) if data.shape[0] == 1 else tuple(f"ch{i}" for i in range(data.shape[0]))
    return LoadedImage(data=data, kind=kind, spacing=(1.0, 1.0), modality=None, num_slices=int(n),
                       slice_index=z, channel_names=names, source=source)


def _load_npy(path: Path, slice_index) -> LoadedImage:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} holds Python objects, not a numeric array ({exc}): save plain numbers with "
                         f"np.save") from None
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted .npy file ({type(exc).__name__}: {exc}): save it "
                         f"again") from None
    return _array_to_image(np.asarray(arr), slice_index, str(path))


# --------------------------------------------------------------------------------------------------------------
# public entry points


def _load_raw(path_or_array, slice_index, max_bytes: int) -> LoadedImage:
    if isinstance(path_or_array, LoadedImage):
        return path_or_array
    if isinstance(path_or_array, np.ndarray) or (not isinstance(path_or_array, (str, os.PathLike))
                                                 and hasattr(path_or_array, "__array__")):
        arr = np.asarray(path_or_array)
        if arr.nbytes > max_bytes:
            raise ValueError(f"the array is {arr.nbytes / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB "
                             f"limit: pass one slice or raise max_bytes")
        return _array_to_image(arr, slice_index, "<array>")
    if not isinstance(path_or_array, (str, os.PathLike)):
        raise ValueError(f"expected a file path or a NumPy array, got {type(path_or_array).__name__}")
    path = Path(path_or_array).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        return _load_dicom_folder(path, slice_index, max_bytes)
    _check_size(path, max_bytes)
    kind = _sniff(path)
    if kind == "nifti":
        return _load_nifti(path, slice_index, max_bytes)
    if kind == "dicom":
        return _load_dicom_file(path, slice_index, max_bytes)
    if kind == "numpy":
        return _load_npy(path, slice_index)
    return _load_picture(path, kind, slice_index, max_bytes)


def load_image(path_or_array, slice_index: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedImage:
    """Read one 2-D slice of raw values from a file, a DICOM series folder or an array.

    ``slice_index`` picks the axial slice of a volume (0 = most inferior for NIfTI/DICOM; the last axis for NumPy
    volumes; the page of a multi-page TIFF) and must be left out (or 0) for 2-D images. Files larger than
    ``max_bytes`` are refused before they are read. Raises ``FileNotFoundError`` for a missing path and
    ``ValueError`` with a message saying what to do for anything unreadable, NaN/inf values, a constant image,
    wrong dimensions or a slice smaller than 16 pixels a side. See the module docstring for orientations.
    """
    loaded = _load_raw(path_or_array, slice_index, max_bytes)
    hint = (f", slice {loaded.slice_index} of {loaded.num_slices}: pick a slice through the brain"
            if loaded.num_slices > 1 else "")
    _check_values(loaded.data, loaded.source, hint=hint)
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
            probe = _load_raw(path_or_array, None, max_bytes)
        except ValueError as exc:
            if "pass a slice index" not in str(exc):
                raise
        if probe is None:
            loaded = _load_raw(path_or_array, like.slice_index, max_bytes)
            if loaded.num_slices != like.num_slices:
                raise ValueError(f"the mask has {loaded.num_slices} slices but the image has {like.num_slices}: "
                                 f"pass the mask's slice index explicitly")
        else:
            loaded = probe
    else:
        loaded = _load_raw(path_or_array, slice_index, max_bytes)
    _check_values(loaded.data, loaded.source, allow_constant=True)
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


# --------------------------------------------------------------------------------------------------------------
# BraTS-layout case folders

MODALITY_PATTERNS = {
    # BraTS 2023 names native T1 "t1n", contrast T1 "t1c", FLAIR "t2f" and T2 "t2w"; earlier years flair/t1/t1ce/t2
    "flair": r"flair|(?<![a-z0-9])t2f(?![a-z0-9])",
    "t1c": r"(?<![a-z0-9])t1[-_]?(?:c|ce|gd|post)(?![a-z0-9])",
    "t1": r"(?<![a-z0-9])t1[nw]?(?![a-z0-9])",
    "t2": r"(?<![a-z0-9])t2w?(?![a-z0-9])",
}
MODALITY_ALIASES = {"flair": "flair", "t2f": "flair", "t2-flair": "flair", "t1": "t1", "t1n": "t1", "t1w": "t1",
                    "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t1-gd": "t1c", "t1post": "t1c", "t2": "t2",
                    "t2w": "t2"}
LABEL_PATTERN = r"(?<![a-z0-9])(?:seg|segmentation|label|labels|otmulticlass|ot|gt|groundtruth)(?![a-z0-9])"
BRAINMASK_PATTERN = r"brain[-_]?mask|(?<![a-z0-9])mask(?![a-z0-9])"


def _stem(p: Path) -> str:
    name = p.name.lower()
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


@dataclass
class BratsCase:
    """A BraTS-layout case: aligned modality volumes, labels and a brain mask, all in canonical RAS (X, Y, Z).

    ``slice(z)`` returns display-oriented (radiological, like :func:`load_image`) 2-D arrays.
    """

    folder: str
    modalities: tuple[str, ...]
    volumes: np.ndarray              # (C, X, Y, Z) float32 raw, canonical RAS
    labels: np.ndarray | None        # (X, Y, Z) uint8 label classes, canonical RAS; None without a label file
    brain: np.ndarray                # (X, Y, Z) uint8 {0, 1}
    affine: np.ndarray
    spacing: tuple[float, float]
    files: dict[str, str] = field(default_factory=dict)
    slice_index: int | None = None   # default slice for slice() when given to load_brats_case

    @property
    def num_slices(self) -> int:
        return int(self.volumes.shape[3])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) canonical volume shape."""
        return tuple(int(s) for s in self.volumes.shape[1:])  # type: ignore[return-value]

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def slice(self, z: int | None = None, apply_brain_mask: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (C, H, W) float32 raw, whole-tumour mask (H, W) uint8 = label > 0, brain mask (H, W) uint8).

        With ``apply_brain_mask`` the image is multiplied by the brain mask (background 0), which BraTS data
        z-scored inside the brain with a constant negative background needs. Without labels the tumour mask is
        all zeros (see :attr:`has_labels`).
        """
        z = _pick_slice(self.num_slices, self.slice_index if z is None else z, self.folder)
        brain = _canonical_to_display(self.brain[:, :, z])[0].astype(np.uint8)
        image = _canonical_to_display(np.moveaxis(self.volumes[:, :, :, z], 0, -1)).astype(np.float32)
        if apply_brain_mask:
            image = image * brain[None].astype(np.float32)
        if self.labels is None:
            tumour = np.zeros_like(brain)
        else:
            tumour = (_canonical_to_display(self.labels[:, :, z])[0] > 0).astype(np.uint8)
        return np.ascontiguousarray(image), np.ascontiguousarray(tumour), np.ascontiguousarray(brain)

    def label_slice(self, z: int) -> np.ndarray:
        """The label classes (H, W) uint8 of slice z (0 = background), display-oriented."""
        if self.labels is None:
            raise ValueError(f"{self.folder} has no label file")
        z = _pick_slice(self.num_slices, z, self.folder)
        return np.ascontiguousarray(_canonical_to_display(self.labels[:, :, z])[0]).astype(np.uint8)

    def tumour_slices(self) -> list[int]:
        """Axial slices z (ascending) holding any tumour label (> 0)."""
        if self.labels is None:
            raise ValueError(f"{self.folder} has no label file (seg / OTMultiClass / label): no tumour slices known")
        return [int(z) for z in np.nonzero((self.labels > 0).any(axis=(0, 1)))[0]]

    def brain_slices(self, min_fraction: float = 0.0) -> list[int]:
        """Axial slices whose brain mask covers more than ``min_fraction`` of the slice."""
        frac = self.brain.mean(axis=(0, 1))
        return [int(z) for z in np.nonzero(frac > min_fraction)[0]]


def _canon_modality(name: str) -> str:
    key = str(name).lower().strip()
    if key not in MODALITY_ALIASES:
        raise ValueError(f"unknown modality {name!r}: use flair, t1, t1c (t1ce) or t2")
    return MODALITY_ALIASES[key]


def load_brats_case(folder, slice_index: int | None = None, modalities=None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> BratsCase:
    """Read a BraTS-layout case folder: one NIfTI per modality, a label file and optionally a brain mask.

    Files are matched by case-insensitive name patterns (:data:`MODALITY_PATTERNS`: ``flair``/``t2f``,
    ``t1c``/``t1ce``/``t1gd``, ``t1``/``t1n`` -- never matching ``t1c``/``t1ce`` --, ``t2``/``t2w``; labels
    ``seg``/``OTMultiClass``/``label``; brain mask ``brainmask``/``mask``). ``modalities`` (e.g. ``("flair",)``)
    sets which channels and in which order; by default every modality found, in the order flair, t1, t1c, t2.
    A requested modality that is missing, or two files matching one modality, give a ``ValueError`` listing what
    was found. Volumes must share one grid. Without a brain-mask file the brain is where any modality differs from
    its value at the volume's corner (the background). ``slice_index`` becomes the default of
    :meth:`BratsCase.slice`.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: load_brats_case expects a case folder of NIfTI files")
    niftis = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz")))
    if not niftis:
        raise ValueError(f"no NIfTI files (.nii, .nii.gz) in {root}: expected one file per modality and a label "
                         f"file")
    label_files = [p for p in niftis if re.search(LABEL_PATTERN, _stem(p))]
    mask_files = [p for p in niftis if p not in label_files and re.search(BRAINMASK_PATTERN, _stem(p))]
    found: dict[str, list[Path]] = {}
    for p in niftis:
        if p in label_files or p in mask_files:
            continue
        for mod, pat in MODALITY_PATTERNS.items():
            if re.search(pat, _stem(p)):
                found.setdefault(mod, []).append(p)
                break

    def listing() -> str:
        parts = [f"{m}: {', '.join(q.name for q in v)}" for m, v in found.items()]
        parts += [f"label: {', '.join(q.name for q in label_files)}"] if label_files else []
        parts += [f"brain mask: {', '.join(q.name for q in mask_files)}"] if mask_files else []
        return "; ".join(parts) or "nothing recognised"

    if modalities is None:
        wanted = [m for m in ("flair", "t1", "t1c", "t2") if m in found]
        if not wanted:
            raise ValueError(f"no modality file recognised in {root} (files: "
                             f"{', '.join(p.name for p in niftis)}): names must contain flair, t1, t1c/t1ce or t2")
    else:
        if isinstance(modalities, str):
            modalities = (modalities,)
        wanted = [_canon_modality(m) for m in modalities]
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"modalities {tuple(modalities)} name one modality twice")
        missing = [m for m in wanted if m not in found]
        if missing:
            raise ValueError(f"{root} has no {', '.join(missing)} file; found {listing()}")
    for m in wanted:
        if len(found[m]) > 1:
            raise ValueError(f"{root}: several files match {m} ({', '.join(p.name for p in found[m])}): keep one")
    if len(label_files) > 1:
        raise ValueError(f"{root}: several label files ({', '.join(p.name for p in label_files)}): keep one")
    if len(mask_files) > 1:
        raise ValueError(f"{root}: several brain-mask files ({', '.join(p.name for p in mask_files)}): keep one")

    vols, affine, spacing, files = [], None, (1.0, 1.0), {}
    for m in wanted:
        vol, aff, sp = _nifti_canonical_volume(found[m][0], max_bytes)
        if vols and vol.shape != vols[0].shape:
            raise ValueError(f"{found[m][0].name} has shape {vol.shape}, {found[wanted[0]][0].name} has "
                             f"{vols[0].shape}: the modalities must share one grid (register/resample them)")
        if affine is not None and not np.allclose(aff, affine, atol=1e-3):
            raise ValueError(f"{found[m][0].name} and {found[wanted[0]][0].name} have different affines: "
                             f"the modalities must share one grid (register/resample them)")
        if not np.isfinite(vol).all():
            raise ValueError(f"{found[m][0]} holds {int((~np.isfinite(vol)).sum())} NaN/inf values")
        vols.append(vol)
        affine, spacing = (aff, sp) if affine is None else (affine, spacing)
        files[m] = str(found[m][0])
    volumes = np.stack(vols)

    def aux(path: Path, what: str) -> np.ndarray:
        vol, aff, _ = _nifti_canonical_volume(path, max_bytes)
        if vol.shape != volumes.shape[1:]:
            raise ValueError(f"the {what} {path.name} has shape {vol.shape}, the images {volumes.shape[1:]}")
        if not np.allclose(aff, affine, atol=1e-3):
            raise ValueError(f"the {what} {path.name} and the images have different affines")
        return np.nan_to_num(vol)

    labels = None
    if label_files:
        labels = np.rint(aux(label_files[0], "label file")).clip(0, 255).astype(np.uint8)
        files["label"] = str(label_files[0])
    if mask_files:
        brain = (aux(mask_files[0], "brain mask") > 0.5).astype(np.uint8)
        files["brain_mask"] = str(mask_files[0])
    else:
        corner = volumes[:, :1, :1, :1]
        brain = (volumes != corner).any(axis=0).astype(np.uint8)
    case = BratsCase(folder=str(root), modalities=tuple(wanted), volumes=volumes, labels=labels, brain=brain,
                     affine=affine, spacing=spacing, files=files)
    if slice_index is not None:
        case.slice_index = _pick_slice(case.num_slices, slice_index, str(root))
    return case
