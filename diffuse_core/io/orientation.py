"""Orientation and pixel spacing of a 2-D slice: the one place that maps stored voxels to what a viewer shows.

Every reader and writer of the project goes through here, so a slice keeps its orientation and its spacing from the
loader to the export.

Conventions
-----------
* **Canonical** is nibabel's RAS+: array axis 0 runs towards +x (the patient's Right), axis 1 towards +y
  (Anterior), axis 2 towards +z (Superior).
* **Display** is the radiological convention of an axial slice, a (C, H, W) array: anterior at the top, the patient's
  right on the image's left. ``display[c, r, col] = canonical[X - 1 - col, Y - 1 - r, c]``.
* **Spacing** is ``(row, col)`` in millimetres: the distance between display rows (along y) and columns (along x).
"""

from __future__ import annotations

import gzip

import numpy as np

MM = "mm"


def canonical_to_display(sl: np.ndarray) -> np.ndarray:
    """Canonical (X, Y[, C]) axial slice -> (C, H, W) radiological display (anterior top, patient right left).

    The same transpose-and-flip shows a single coronal (X, Z) slice superior-up with the patient's right on the
    left, and a sagittal (Y, Z) slice superior-up with anterior on the left.
    """
    a = np.asarray(sl)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected a canonical slice (X, Y) or (X, Y, C), got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (2, 1, 0))[:, ::-1, ::-1])


def display_to_canonical(array) -> np.ndarray:
    """Inverse of :func:`canonical_to_display`: (C, H, W) or (H, W) display slice -> canonical RAS (X, Y, C)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected a display slice (H, W) or (C, H, W), got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (2, 1, 0))[::-1, ::-1, :])


def check_spacing(spacing) -> tuple[float, float]:
    """``(row, col)`` spacing in mm as two positive finite floats; ValueError otherwise."""
    try:
        row, col = (float(v) for v in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be (row_mm, col_mm), got {spacing!r}") from None
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        raise ValueError(f"spacing must be positive and finite in mm, got {spacing!r}")
    return row, col


def slice_affine(spacing=(1.0, 1.0), thickness: float = 1.0) -> np.ndarray:
    """4x4 RAS affine of a canonical slice with ``(row, col)`` spacing in mm: columns step along +x, rows along +y."""
    row, col = check_spacing(spacing)
    return np.diag([col, row, float(thickness), 1.0])


def spacing_of_affine(affine: np.ndarray) -> tuple[float, float]:
    """``(row, col)`` spacing in mm of a canonical slice's affine (lengths of its y and x columns)."""
    a = np.asarray(affine, dtype=float)
    col, row = float(np.linalg.norm(a[:3, 0])), float(np.linalg.norm(a[:3, 1]))
    return check_spacing((row, col))


def affine_of_slice(volume_affine: np.ndarray, z: int, axis: int = 2) -> np.ndarray:
    """The affine of canonical slice ``z`` of a canonical volume whose affine is ``volume_affine``.

    ``axis`` is the canonical axis the slice is cut across (2: axial). For a single coronal (``axis=1``) or sagittal
    (``axis=0``) slice the remaining two axes, in canonical order, become the slice's first two columns, as the
    NIfTI reader lays them out.
    """
    a = np.asarray(volume_affine, dtype=float)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (a canonical RAS axis), got {axis!r}")
    in_plane = [k for k in range(3) if k != axis]
    out = a[:, in_plane + [axis, 3]].copy()
    out[:, 3] = a[:, 3] + float(z) * a[:, axis]
    return out


def display_nifti(array, spacing=(1.0, 1.0), affine: np.ndarray | None = None):
    """A display-oriented (H, W) or (C, H, W) array as a canonical ``nibabel.Nifti1Image`` that the loaders show
    exactly as given. One channel -> (X, Y); several -> (X, Y, 1, C). ``affine`` (a canonical slice affine, e.g. the
    input's via :func:`affine_of_slice`) wins over ``spacing``; both are stored as qform and sform, units mm."""
    import nibabel as nib

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    vol = display_to_canonical(a)
    vol = vol[:, :, 0] if vol.shape[2] == 1 else vol[:, :, None, :]
    aff = slice_affine(spacing) if affine is None else np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(np.ascontiguousarray(vol), aff)
    img.header.set_xyzt_units(MM)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    return img


def nifti_gz_bytes(img, compresslevel: int = 6) -> bytes:
    """Deterministic ``.nii.gz`` bytes of a NIfTI image (no timestamp in the gzip header)."""
    return gzip.compress(img.to_bytes(), compresslevel=compresslevel, mtime=0)


def read_display_slice(img) -> tuple[np.ndarray, tuple[float, float]]:
    """A single-slice NIfTI image (X, Y), (X, Y, 1) or (X, Y, 1, C), in any stored orientation -> its display array
    (H, W) or (C, H, W) and ``(row, col)`` spacing in mm."""
    import nibabel as nib

    data = np.asanyarray(img.dataobj)
    ornt = nib.orientations.io_orientation(img.affine)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4) or data.shape[2] != 1:
        raise ValueError(f"not a single slice (shape {data.shape})")
    data = nib.orientations.apply_orientation(data, ornt)
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    kx, ky = (int(np.where(ornt[:, 0] == ax)[0][0]) for ax in (0, 1))
    spacing = (zooms[ky], zooms[kx])
    if data.ndim == 3:
        return canonical_to_display(data[:, :, 0])[0], spacing
    return canonical_to_display(data[:, :, 0, :]), spacing
