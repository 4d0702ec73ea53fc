"""The way back from display-oriented slices to the input's voxel grid: what keeps a volume run's outputs in the
input's space (same voxel order, affine, spacing and orientation), so that a viewer (3D Slicer, ITK-SNAP, OHIF) lays
them over the original.

A volume is read as a stack of display slices ``(Z, H, W)`` (radiological: anterior at the top, the patient's right
on the image's left; ``z = 0`` the most inferior, see :mod:`diffuse_core.io.image`). :class:`NiftiGrid` undoes the
canonical reorientation of a NIfTI file (:func:`diffuse_core.io.orientation.display_to_canonical`, then the file's own
axis order and flips); :class:`DicomGrid` lays the slices out as stored (columns, rows, slices along the normal) with
the RAS affine of the series' Image Position / Orientation and Pixel Spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuse_core.io.orientation import MM, display_to_canonical

__all__ = ["DicomGrid", "NiftiGrid", "RAS_ORNT", "dicom_affine"]

RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class NiftiGrid:
    """A NIfTI input's grid: its 4x4 ``affine``, spatial ``shape`` and ``ornt`` (``nibabel`` orientation of its voxel
    axes, the one :mod:`diffuse_core.io.nifti` reorients with), ``zooms`` and the qform/sform codes to keep."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    ornt: np.ndarray
    zooms: tuple[float, float, float]
    qform_code: int = 1
    sform_code: int = 1

    @classmethod
    def of_image(cls, img) -> NiftiGrid:
        """The grid of a ``nibabel`` image (its first three axes)."""
        import nibabel as nib

        shape = tuple(int(s) for s in img.shape[:3])
        affine = np.asarray(img.affine if img.affine is not None else np.eye(4), dtype=float)
        try:
            ornt = nib.orientations.io_orientation(affine)
        except Exception:
            ornt = RAS_ORNT.copy()
        if not np.isfinite(ornt).all() or sorted(ornt[:, 0].astype(int).tolist()) != [0, 1, 2]:
            ornt = RAS_ORNT.copy()                      # degenerate affine: the reader keeps the stored order too
        zooms = tuple(float(z) for z in (list(img.header.get_zooms()[:3]) + [1.0, 1.0, 1.0])[:3])
        q = int(img.header["qform_code"]) if "qform_code" in img.header else 1
        s = int(img.header["sform_code"]) if "sform_code" in img.header else 1
        return cls(affine, shape, ornt, zooms, q or 1, s or 1)  # type: ignore[arg-type]

    def canonical_affine(self) -> np.ndarray:
        """The affine of the canonical (RAS) volume the slices were cut from."""
        import nibabel as nib

        return self.affine @ nib.orientations.inv_ornt_aff(self.ornt, self.shape)

    def to_input(self, display: np.ndarray) -> np.ndarray:
        """Display slices ``(Z, H, W)`` -> an array in the input file's voxel order (its shape)."""
        import nibabel as nib

        canonical = display_to_canonical(np.asarray(display))          # (X, Y, Z): the slices' axis plays C
        back = nib.orientations.ornt_transform(RAS_ORNT, self.ornt)
        out = nib.orientations.apply_orientation(canonical, back)
        if tuple(out.shape) != tuple(self.shape):
            raise ValueError(f"the result volume {out.shape} does not fit the input's grid {self.shape}")
        return np.ascontiguousarray(out)

    def image(self, display: np.ndarray, dtype=np.float32):
        """A ``nibabel`` image of ``display`` slices on this grid (affine, qform/sform, units mm)."""
        import nibabel as nib

        img = nib.Nifti1Image(self.to_input(display).astype(dtype, copy=False), self.affine)
        img.header.set_zooms(self.zooms)
        img.header.set_xyzt_units(MM)
        img.set_qform(self.affine, code=self.qform_code)
        img.set_sform(self.affine, code=self.sform_code)
        return img


def dicom_affine(position0, orientation, spacing: tuple[float, float], step) -> np.ndarray:
    """RAS affine of a series stored as ``array[col, row, slice]``: ``position0`` the first slice's Image Position
    (LPS, mm), ``orientation`` the six Image Orientation cosines (along a row, then down a column), ``spacing`` the
    (row, col) Pixel Spacing and ``step`` the LPS vector from one slice to the next."""
    o = np.asarray(orientation, dtype=float)
    lps = np.eye(4)
    lps[:3, 0] = o[:3] * float(spacing[1])          # i: one column to the right
    lps[:3, 1] = o[3:6] * float(spacing[0])         # j: one row down
    lps[:3, 2] = np.asarray(step, dtype=float)      # k: the next slice
    lps[:3, 3] = np.asarray(position0, dtype=float)
    return LPS_TO_RAS @ lps


@dataclass
class DicomGrid:
    """A DICOM series' grid: the RAS ``affine`` of ``array[col, row, slice]`` and the series' headers (pixel data
    not kept), sorted as the slices are, for a DICOM Segmentation that references them (:mod:`.seg`)."""

    affine: np.ndarray
    shape: tuple[int, int, int]                      # (columns, rows, slices)
    headers: list

    def to_input(self, display: np.ndarray) -> np.ndarray:
        """Display slices ``(Z, H, W)`` (a DICOM slice is shown as stored) -> ``(W, H, Z)``."""
        out = np.ascontiguousarray(np.transpose(np.asarray(display), (2, 1, 0)))
        if tuple(out.shape) != tuple(self.shape):
            raise ValueError(f"the result volume {out.shape} does not fit the series' grid {self.shape}")
        return out

    def image(self, display: np.ndarray, dtype=np.float32):
        """A ``nibabel`` image of ``display`` slices in the series' physical space (mm)."""
        import nibabel as nib

        img = nib.Nifti1Image(self.to_input(display).astype(dtype, copy=False), self.affine)
        img.header.set_xyzt_units(MM)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img
