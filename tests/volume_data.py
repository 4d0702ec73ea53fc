"""Small synthetic scans for the volume tests (issue 34): a DICOM MR series written with pydicom, a NIfTI volume in a
non-canonical orientation. Real BraTS cases are read from ../shared/real_cases/brats2015 where present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"


def head_phantom(n: int = 8, rows: int = 48, cols: int = 40, seed: int = 0) -> np.ndarray:
    """(Z, rows, cols) int16: an ellipse of 'tissue' (growing then shrinking along z) with a bright blob, air 0;
    the first and last slices are empty (no brain)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    out = np.zeros((n, rows, cols), np.int16)
    for z in range(1, n - 1):
        r = 0.35 + 0.1 * np.sin(np.pi * z / (n - 1))
        inside = ((yy - rows / 2) / (rows * r)) ** 2 + ((xx - cols / 2) / (cols * r)) ** 2 < 1
        sl = np.where(inside, 400 + rng.normal(0, 20, (rows, cols)), 0)
        blob = (yy - rows * 0.4) ** 2 + (xx - cols * 0.55) ** 2 < (rows * 0.08) ** 2
        sl = np.where(blob & inside, 900, sl)
        out[z] = np.clip(sl, 0, 2000).astype(np.int16)
    return out


def write_series(folder: Path, volume: np.ndarray | None = None, *, spacing=(0.9, 0.8), step: float = 2.5,
                 orientation=(1, 0, 0, 0, 1, 0), study_uid: str | None = None, series_uid: str | None = None,
                 skip: tuple[int, ...] = (), modality: str = "MR", start_instance: int = 1,
                 shuffle: bool = True) -> list[Path]:
    """A single-frame DICOM series of ``volume`` (Z, rows, cols) into ``folder``, files in shuffled order;
    slices in ``skip`` are left out (a series with missing slices)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, CTImageStorage, generate_uid

    vol = head_phantom() if volume is None else volume
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    o = np.asarray(orientation, float)
    normal = np.cross(o[:3], o[3:])
    order = np.random.default_rng(1).permutation(len(vol)) if shuffle else np.arange(len(vol))
    paths = []
    for z in order:
        if z in skip:
            continue
        sop = MRImageStorage if modality == "MR" else CTImageStorage
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20240101", "120000", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 3, int(z) + start_instance
        ds.Manufacturer = "test"
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in (np.array([-20.0, -30.0, 10.0]) + normal * step * z)]
        ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
        ds.SliceThickness = float(step)
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(vol[z].astype(np.int16)).tobytes()
        p = folder / f"im{len(paths):03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def write_nifti(path: Path, volume: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    """``volume`` (Z, rows, cols) stored in a non-canonical voxel order (LPS-like: x and y flipped, axes swapped)."""
    import nibabel as nib

    vol = head_phantom() if volume is None else volume
    data = np.transpose(vol, (1, 2, 0))            # (rows, cols, Z): axis 0 runs along y, axis 1 along x
    if affine is None:
        affine = np.array([[0, -0.8, 0, 20], [-0.9, 0, 0, 30], [0, 0, 2.5, -10], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path
