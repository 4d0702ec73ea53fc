"""NIfTI (.nii, .nii.gz) -> one display-oriented slice, or a whole canonical volume for BraTS case folders.

The volume is reoriented to the closest canonical orientation (RAS+: voxel axes increase towards the patient's
Right, Anterior and Superior; as ``nibabel.as_closest_canonical``) and the axial slice ``[:, :, z]`` is taken, so
``z = 0`` is the most inferior slice. :func:`diffuse_core.io.orientation.canonical_to_display` then shows it in the
radiological convention (anterior at the top, the patient's right on the image's left). Spacing is (row, col) =
(y, x) in mm. Only the requested slice is read from disk. A file holding a single coronal or sagittal slice is shown
as stored in canonical orientation (superior at the top). The dimensions are checked from the header
(:func:`~diffuse_core.io.loaded.check_pixels`) and the bytes they declare (dims x bytes per voxel, against
:data:`~diffuse_core.io.loaded.MAX_DECODED_BYTES`) before any voxel is read or a ``.gz`` inflated, and a NIfTI
file with another name (``scan.png`` holding a ``.nii.gz``) is read by its content.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import LoadedImage, check_decoded_bytes, check_pixels, check_size, pick_slice, to_float32
from diffuse_core.io.orientation import canonical_to_display
from diffuse_core.io.sniff import NIFTI2_HEADER_BYTES, is_gzip, sniff

__all__ = ["MAX_CHANNELS", "load_nifti", "open_nifti", "read_canonical_volume"]

MAX_CHANNELS = 8              # a 4-D NIfTI's 4th axis holds modalities/channels, not a time series
NIFTI1_VOX_OFFSET = 352       # where a single-file NIfTI-1's voxels start when the header does not say
_IDENTITY_ORNT = ((0, 1), (1, 1), (2, 1))


def _load_by_content(path: Path):
    """A single-file NIfTI-1/-2 whose name does not say so (nibabel picks the format and gzip by the name)."""
    import nibabel as nib

    fileobj = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # noqa: SIM115 - the proxy reads later
    head = fileobj.read(4)
    fileobj.seek(0)
    cls = nib.Nifti2Image if int.from_bytes(head, "little") == NIFTI2_HEADER_BYTES or \
        int.from_bytes(head, "big") == NIFTI2_HEADER_BYTES else nib.Nifti1Image
    holder = nib.FileHolder(filename=str(path), fileobj=fileobj)  # stays open while the image's proxy reads
    try:
        return cls.from_file_map({"header": holder, "image": holder})
    except Exception:
        fileobj.close()
        raise


def _check_dimensions(shape: tuple[int, ...], source: str) -> None:
    """The header's dimensions against the pixel limits: the two largest spatial sides as one slice (whichever
    axis is cut), every voxel as the volume."""
    spatial = sorted(shape[:3], reverse=True)
    h, w = (spatial + [1, 1])[:2]
    total = int(np.prod(shape, dtype=np.int64)) if shape else 0
    check_pixels(source, h, w, total // max(1, h * w))


def open_nifti(path: Path, max_bytes: int, check_complete: bool = True):
    """``nibabel`` image of ``path`` (voxels not read); ValueError for a corrupted, oversized or truncated file."""
    import nibabel as nib

    try:
        named = path.name.lower().endswith((".nii", ".nii.gz"))
        img = nib.load(str(path)) if named else _load_by_content(path)
    except Exception as exc:  # nibabel raises many types (ImageFileError, HeaderDataError, EOFError, ...)
        raise ValueError(f"{path} is a corrupted NIfTI file ({type(exc).__name__}: {exc}): export it "
                         f"again") from None
    shape = tuple(int(s) for s in img.shape)
    _check_dimensions(shape, str(path))
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    declared = int(np.prod(shape, dtype=np.int64)) * itemsize
    check_decoded_bytes(str(path), declared, f"voxel data ({' x '.join(map(str, shape))} x {itemsize} bytes)",
                        fix="crop the volume or keep fewer slices (or store it as int16 / float32) first")
    if check_complete:
        try:
            offset = int(getattr(img.dataobj, "offset", None) or img.header["vox_offset"])
        except (TypeError, ValueError, KeyError):
            offset = NIFTI1_VOX_OFFSET
        needed = offset + declared
        have = _gzip_length(path, enough=needed) if is_gzip(path) else path.stat().st_size
        if have < needed:
            raise ValueError(f"{path} is a truncated or corrupted NIfTI file (it holds {have} of the {needed} "
                             f"bytes its header declares): download or export it again")
    return img


def _gzip_length(path: Path, enough: int | None = None) -> int:
    """Uncompressed length of a gzip file, streamed (nothing kept) and stopped once ``enough`` bytes are seen;
    ValueError when truncated or corrupted."""
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while enough is None or total < enough:
                chunk = g.read(4 * 2**20)
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is a truncated or corrupted gzip/NIfTI file ({type(exc).__name__}: {exc}): "
                         f"download or export it again") from None
    return total


def _layout(img, source: str):
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
        ornt = np.array(_IDENTITY_ORNT, dtype=float)
    if not np.isfinite(ornt).all() or sorted(ornt[:, 0].astype(int).tolist()) != [0, 1, 2]:
        ornt = np.array(_IDENTITY_ORNT, dtype=float)  # degenerate affine: keep the stored order
    return shape, spatial, channels, ornt


def _slice_axis(spatial: tuple[int, int, int], ornt: np.ndarray) -> int:
    """Input axis to slice: the one closest to superior-inferior, unless the file holds a single non-axial slice
    (exactly one spatial axis of size 1), which is then the slice axis."""
    kz = int(np.where(ornt[:, 0] == 2)[0][0])
    singles = [k for k in range(3) if spatial[k] == 1]
    if spatial[kz] > 1 and len(singles) == 1:
        return singles[0]
    return kz


def _read_slice(img, shape, spatial, ornt, ks: int, z_canonical: int, source: str) -> np.ndarray:
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
    except MemoryError:
        raise                                  # the caller's memory cap: not a broken file
    except Exception as exc:
        raise ValueError(f"{source} is a truncated or corrupted NIfTI file (reading its voxels failed: "
                         f"{type(exc).__name__}: {exc}): download or export it again") from None
    if sl.ndim == 2:
        sl = sl[:, :, None]
    rest = [a for a in range(3) if a != ks]
    sub = ornt[rest].copy()
    sub[:, 0] = np.argsort(np.argsort(sub[:, 0]))  # relabel the two remaining canonical axes as 0, 1
    return nib.orientations.apply_orientation(sl, sub)


def _spacing(img, ornt, ks: int) -> tuple[float, float]:
    """(row, col) spacing of the displayed slice: rows run along the later canonical axis, columns the earlier."""
    try:
        zooms = [float(v) for v in img.header.get_zooms()[:3]] + [1.0, 1.0, 1.0]
    except Exception:
        zooms = [1.0, 1.0, 1.0]
    rest = sorted((a for a in range(3) if a != ks), key=lambda a: ornt[a, 0])
    col, row = zooms[rest[0]], zooms[rest[1]]
    return tuple(v if np.isfinite(v) and v > 0 else 1.0 for v in (row, col))  # type: ignore[return-value]


def load_nifti(path: Path, slice_index, max_bytes: int) -> LoadedImage:
    """One display-oriented slice of a NIfTI file (see the module docstring); values unchecked."""
    import nibabel as nib

    img = open_nifti(path, max_bytes)
    source = str(path)
    shape, spatial, channels, ornt = _layout(img, source)
    ks = _slice_axis(spatial, ornt) if len(shape) >= 3 else 2
    if len(shape) == 2:
        ornt = np.array(_IDENTITY_ORNT, dtype=float) if int(ornt[2, 0]) != 2 else ornt
    n = spatial[ks]
    z = pick_slice(n, slice_index, source)
    sl = _read_slice(img, shape, spatial, ornt, ks, z, source)
    data = canonical_to_display(to_float32(sl, source))
    try:
        affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, spatial)
    except Exception:
        affine = None
    names = ("intensity",) if channels == 1 else tuple(f"ch{i}" for i in range(channels))
    notes = ()
    if ks != int(np.where(ornt[:, 0] == 2)[0][0]):
        notes = ("single non-axial slice: shown as stored in canonical orientation (superior at the top)",)
    return LoadedImage(data=data, kind="nifti", spacing=_spacing(img, ornt, ks), modality=None,
                       num_slices=n, slice_index=z, channel_names=names, source=source, affine=affine, notes=notes,
                       slice_axis=int(ornt[ks, 0]))


def read_canonical_volume(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Whole 3-D NIfTI in canonical RAS order (X, Y, Z) float32, with its canonical affine and (row, col) spacing."""
    import nibabel as nib

    check_size(path, max_bytes)
    sniff(path)
    img = open_nifti(path, max_bytes, check_complete=False)  # reading every voxel below finds truncation
    shape, spatial, channels, ornt = _layout(img, str(path))
    if channels != 1 or len(shape) < 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {shape}")
    try:
        arr = np.asanyarray(img.dataobj)
    except MemoryError:
        raise                                  # the caller's memory cap: not a broken file
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted NIfTI file (reading its voxels failed: "
                         f"{type(exc).__name__}: {exc}): download or export it again") from None
    arr = arr.reshape(spatial)
    arr = nib.orientations.apply_orientation(to_float32(arr, str(path)), ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, spatial)
    zooms = [float(v) for v in img.header.get_zooms()[:3]]
    kx = int(np.where(ornt[:, 0] == 0)[0][0])
    ky = int(np.where(ornt[:, 0] == 1)[0][0])
    return np.ascontiguousarray(arr, dtype=np.float32), affine, (zooms[ky], zooms[kx])
