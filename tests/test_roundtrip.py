"""Write, load, export, load again: pixels, spacing and the affine survive every reader and writer.

A slice keeps its place in the scanner's world: each displayed pixel maps, through the affine the loader reports,
to the world coordinate its voxel had in the input file, and `diffuse-studio run` writes counterfactual.nii.gz with
the input's slice affine (NIfTI) or its pixel spacing (DICOM).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from diffuse_core.cli import main
from diffuse_core.io.brats import load_brats_case
from diffuse_core.io.export import _write_nifti
from diffuse_core.io.image import load_image
from diffuse_core.io.orientation import affine_of_slice, display_nifti, nifti_gz_bytes
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser

TINY = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)
SHAPE = (40, 48, 7)  # stored voxel grid (I, J, K)


def oblique_lps_affine(spacing=(0.8, 1.1, 3.0), degrees=10.0, origin=(91.0, 126.0, -72.0)) -> np.ndarray:
    """A stored-as-LPS (x and y flipped), slightly rotated, anisotropic affine: nothing about it is canonical."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-spacing[0], -spacing[1], spacing[2]])
    a[:3, 3] = origin
    return a


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def numbered_volume(shape=SHAPE) -> np.ndarray:
    """Every voxel a different value (1, 2, ...), so a value names its voxel."""
    return np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32).reshape(shape)


def world_of_display(loaded) -> np.ndarray:
    """(H, W, 3) world coordinates (mm) of each displayed pixel, through the loader's slice affine:
    display[r, c] is canonical voxel (X - 1 - c, Y - 1 - r, 0) of the slice."""
    s = loaded.slice_affine()
    h, w = loaded.shape
    r, c = np.mgrid[:h, :w]
    ijk = np.stack([w - 1 - c, h - 1 - r, np.zeros_like(r), np.ones_like(r)], axis=-1).astype(float)
    return (ijk @ s.T)[..., :3]


def world_of_values(volume: np.ndarray, affine: np.ndarray, values: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the stored voxels holding ``values`` (a numbered volume)."""
    flat = np.asarray(values).astype(np.int64).ravel() - 1
    ijk = np.stack(np.unravel_index(flat, volume.shape), axis=-1).astype(float)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return world.reshape(*np.shape(values), 3)


# ------------------------------------------------------------------------------------------------ NIfTI, no model


def test_nifti_2d_slice_round_trip_keeps_pixels_spacing_and_affine(tmp_path):
    display = np.arange(40 * 48, dtype=np.float32).reshape(40, 48)
    affine = np.diag([0.9, 1.3, 2.5, 1.0])
    affine[:3, 3] = (-60.0, 20.0, 33.0)
    path = tmp_path / "slice.nii.gz"
    path.write_bytes(nifti_gz_bytes(display_nifti(display, affine=affine)))
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.data[0], display)
    assert loaded.spacing == pytest.approx((1.3, 0.9))
    np.testing.assert_allclose(loaded.slice_affine(), affine, atol=1e-5)


@pytest.mark.parametrize("z", [0, 4, 6])
def test_slice_of_an_oblique_lps_volume_lands_where_its_voxels_were(tmp_path, z):
    vol, affine = numbered_volume(), oblique_lps_affine()
    loaded = load_image(save_nifti(tmp_path / "vol.nii.gz", vol, affine), slice_index=z)
    assert loaded.spacing == pytest.approx((1.1, 0.8))
    np.testing.assert_allclose(world_of_display(loaded), world_of_values(vol, affine, loaded.data[0]), atol=1e-4)


def test_export_of_a_volume_slice_carries_its_affine_and_spacing(tmp_path):
    vol, affine = numbered_volume(), oblique_lps_affine()
    loaded = load_image(save_nifti(tmp_path / "vol.nii.gz", vol, affine), slice_index=4)
    out = tmp_path / "counterfactual.nii.gz"
    _write_nifti(out, loaded.data, loaded.spacing, loaded.slice_affine())
    np.testing.assert_allclose(nib.load(out).affine, loaded.slice_affine(), atol=1e-4)
    back = load_image(out)
    np.testing.assert_array_equal(back.data, loaded.data)
    assert back.spacing == pytest.approx(loaded.spacing)
    np.testing.assert_allclose(world_of_display(back), world_of_display(loaded), atol=1e-4)


def test_single_coronal_slice_keeps_its_world_position(tmp_path):
    vol = numbered_volume((40, 1, 30))                 # one coronal slice: (X, 1, Z)
    affine = np.diag([0.7, 2.0, 1.2, 1.0])
    affine[:3, 3] = (-14.0, 8.0, -20.0)
    loaded = load_image(save_nifti(tmp_path / "coronal.nii", vol, affine))
    assert loaded.notes and loaded.spacing == pytest.approx((1.2, 0.7))
    np.testing.assert_allclose(world_of_display(loaded), world_of_values(vol, affine, loaded.data[0]), atol=1e-4)


def test_brats_case_slices_carry_the_header_spacing_and_affine(tmp_path):
    from diffuse_core.cases import prepare_case

    affine = oblique_lps_affine(spacing=(0.9, 1.2, 2.0), degrees=0.0)
    flair = np.zeros(SHAPE, np.float32)
    flair[8:32, 10:38, :] = 100.0
    flair[14:20, 16:22, 3] = 300.0
    seg = (flair > 200).astype(np.float32)
    save_nifti(tmp_path / "case_flair.nii.gz", flair, affine)
    save_nifti(tmp_path / "case_seg.nii.gz", seg, affine)
    case = load_brats_case(tmp_path)
    assert case.spacing == pytest.approx((1.2, 0.9))
    prepared = prepare_case(tmp_path, size=32)
    assert prepared.slice_index == 3 and prepared.spacing == pytest.approx((1.2, 0.9))
    np.testing.assert_allclose(prepared.affine, affine_of_slice(case.affine, 3))
    np.testing.assert_allclose(prepared.affine, load_image(tmp_path / "case_flair.nii.gz", 3).slice_affine())


# ------------------------------------------------------------------------------------------------ DICOM, no model


def write_mr_dicom(path: Path, pixels: np.ndarray, spacing=(0.5, 0.7)) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.Modality = "MR"
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def phantom(h=40, w=48) -> np.ndarray:
    """A grey ellipse on black with a bright square anterior and to the patient's right (top-left)."""
    yy, xx = np.mgrid[:h, :w]
    img = np.where(np.hypot((yy - h / 2) / (0.42 * h), (xx - w / 2) / (0.42 * w)) < 1, 110.0, 0.0)
    img[12:20, 14:22] = 250.0
    return img.astype(np.float32)


def test_dicom_round_trip_carries_pixel_spacing(tmp_path):
    pixels = phantom().astype(np.uint16)
    loaded = load_image(write_mr_dicom(tmp_path / "mr.dcm", pixels))
    assert loaded.spacing == pytest.approx((0.5, 0.7)) and loaded.slice_affine() is None
    out = tmp_path / "counterfactual.nii.gz"
    _write_nifti(out, loaded.data, loaded.spacing, loaded.slice_affine())
    back = load_image(out)
    np.testing.assert_array_equal(back.data[0], pixels)
    assert back.spacing == pytest.approx((0.5, 0.7))
    assert nib.load(out).header.get_zooms()[:2] == pytest.approx((0.7, 0.5))  # (x = col, y = row)


# ------------------------------------------------------------------------------------------ diffuse-studio run


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_denoiser(new_denoiser(TINY, seed=0), folder, card={"anomaly_threshold": 0.1})
    return folder


def run(tiny_model, source: Path, mask: Path, out: Path, *extra: str) -> dict:
    code = main(["run", str(source), "--mask-from", str(mask), "--k", "50", "--steps", "2", "--model",
                 str(tiny_model), "--device", "cpu", "--precision", "fp32", "--out", str(out), *extra])
    assert code == 0
    return json.loads((out / "result.json").read_text())


def test_run_on_a_nifti_volume_exports_the_input_slice_affine(tiny_model, tmp_path):
    affine = oblique_lps_affine()
    stored = np.stack([phantom().T * (1 + 0.1 * k) for k in range(SHAPE[2])], axis=-1)   # (I=48, J=40, K=7)
    vol_path = save_nifti(tmp_path / "vol.nii.gz", stored, affine)
    mask = np.zeros_like(stored)
    mask[20:30, 15:25, :] = 1.0
    mask_path = save_nifti(tmp_path / "mask.nii.gz", mask, affine)
    z = 4
    source = load_image(vol_path, slice_index=z)
    summary = run(tiny_model, vol_path, mask_path, tmp_path / "out", "--slice", str(z))
    written = nib.load(tmp_path / "out" / "counterfactual.nii.gz")
    np.testing.assert_allclose(written.affine, source.slice_affine(), atol=1e-4)
    back = load_image(tmp_path / "out" / "counterfactual.nii.gz")
    assert back.shape == source.shape and back.spacing == pytest.approx(source.spacing)
    assert summary["spacing_mm"] == pytest.approx([1.1, 0.8])


def test_run_on_a_dicom_exports_its_pixel_spacing(tiny_model, tmp_path):
    dcm = write_mr_dicom(tmp_path / "mr.dcm", phantom().astype(np.uint16), spacing=(0.5, 0.7))
    mask = np.zeros((40, 48), np.uint8)
    mask[10:22, 12:24] = 255
    np.save(tmp_path / "mask.npy", mask)
    summary = run(tiny_model, dcm, tmp_path / "mask.npy", tmp_path / "out")
    back = load_image(tmp_path / "out" / "counterfactual.nii.gz")
    assert back.shape == (40, 48) and back.spacing == pytest.approx((0.5, 0.7))
    assert summary["spacing_mm"] == pytest.approx([0.5, 0.7])
