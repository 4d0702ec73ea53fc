"""Loaders: every format on small synthetic files, orientation, DICOM rescale/sorting, bad inputs, BraTS cases."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from diffuse_core.io.brats import load_brats_case
from diffuse_core.io.image import LoadedImage, load_image, load_mask
from diffuse_core.io.orientation import display_to_canonical

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"
RNG = np.random.default_rng(0)


def smooth(h: int, w: int, lo: float = 0.0, hi: float = 100.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    f = np.sin(yy / 5.0) + np.cos(xx / 7.0) + yy / h
    return (lo + (f - f.min()) / (f.max() - f.min()) * (hi - lo)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------- NIfTI

X, Y, Z = 20, 24, 10


def ras_volume_with_marker(z: int = 3) -> np.ndarray:
    """Canonical RAS volume; a marker at the patient's right-most (x = X-1), most anterior (y = Y-1) voxel."""
    vol = np.tile(smooth(X, Y, 0, 50)[:, :, None], (1, 1, Z))
    vol[X - 1, Y - 1, z] = 1000.0
    return vol


def test_nifti_orientation_radiological_from_any_storage_order(tmp_path):
    ras = ras_volume_with_marker()
    stored = {
        "ras": (ras, np.diag([1.0, 1.0, 1.0, 1.0])),
        # LPS storage (as BraTS): x runs towards the left, y towards posterior
        "lps": (ras[::-1, ::-1, :].copy(), np.array([[-1, 0, 0, X - 1], [0, -1, 0, Y - 1], [0, 0, 1, 0],
                                                      [0, 0, 0, 1]], dtype=float)),
        # axes stored in the order (z, x, y)
        "perm": (np.transpose(ras, (2, 0, 1)).copy(), np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0],
                                                                 [0, 0, 0, 1]], dtype=float)),
    }
    for name, (data, affine) in stored.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        img = load_image(path, slice_index=3)
        assert img.kind == "nifti" and img.num_slices == Z and img.slice_index == 3
        assert img.data.shape == (1, Y, X), name  # rows = anterior..posterior, cols = patient right..left
        r, c = np.unravel_index(np.argmax(img.data[0]), img.data.shape[1:])
        assert (r, c) == (0, 0), f"{name}: marker (anterior, patient right) should be top-left, got {(r, c)}"
        np.testing.assert_allclose(img.affine[:3, :3], np.eye(3), atol=1e-6)
        other = load_image(path, slice_index=4)
        assert other.data[0].max() < 1000.0  # the marker lives on slice 3 only


def test_display_to_canonical_round_trips_through_a_file(tmp_path):
    img = load_image(ras_volume_with_marker(), slice_index=3)  # any display slice
    path = tmp_path / "back.nii.gz"
    nib.save(nib.Nifti1Image(display_to_canonical(img.data)[:, :, :1], np.eye(4)), str(path))
    np.testing.assert_array_equal(load_image(path).data, img.data)


def test_nifti_spacing_rows_cols(tmp_path):
    path = tmp_path / "aniso.nii"
    nib.save(nib.Nifti1Image(ras_volume_with_marker(), np.diag([0.8, 0.9, 2.0, 1.0])), str(path))
    img = load_image(path, slice_index=0)
    assert img.spacing == pytest.approx((0.9, 0.8))


def test_nifti_2d_and_single_slice_need_no_index(tmp_path):
    plane = smooth(32, 40)
    p2 = tmp_path / "plane.nii.gz"
    nib.save(nib.Nifti1Image(plane, np.eye(4)), str(p2))
    img = load_image(p2)
    assert img.data.shape == (1, 40, 32) and img.num_slices == 1 and img.slice_index == 0
    p3 = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(plane[:, :, None], np.eye(4)), str(p3))
    np.testing.assert_array_equal(load_image(p3).data, img.data)


def test_nifti_4d_channels(tmp_path):
    vol = np.stack([ras_volume_with_marker(), ras_volume_with_marker() * 2 + 1], axis=-1)
    path = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    img = load_image(path, slice_index=3)
    assert img.data.shape == (2, Y, X) and img.channel_names == ("ch0", "ch1")
    np.testing.assert_allclose(img.data[1], img.data[0] * 2 + 1)


def test_nifti_volume_needs_slice_and_range(tmp_path):
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(ras_volume_with_marker(), np.eye(4)), str(path))
    with pytest.raises(ValueError, match=r"3-D volume with 10 axial slices: pass a slice index \(--slice Z, 0..9\)"):
        load_image(path)
    with pytest.raises(ValueError, match="out of range"):
        load_image(path, slice_index=10)
    with pytest.raises(ValueError, match="out of range"):
        load_image(path, slice_index=-1)


def test_truncated_and_corrupted_nifti(tmp_path):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(RNG.normal(size=(32, 32, 8)).astype(np.float32), np.eye(4)), str(good))
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    for z in (0, 7):  # even a slice before the cut: the file is incomplete
        with pytest.raises(ValueError, match="truncated or corrupted"):
            load_image(cut, slice_index=z)
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(RNG.normal(size=(32, 32, 8)).astype(np.float32), np.eye(4)), str(plain))
    plain.write_bytes(plain.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_image(plain, slice_index=0)
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\x00" * 400)
    with pytest.raises(ValueError, match="NIfTI"):
        load_image(bad)
    notnifti = tmp_path / "x.nii.gz"
    notnifti.write_bytes(gzip.compress(b"hello world" * 100))
    with pytest.raises(ValueError, match="does not hold a NIfTI"):
        load_image(notnifti)


# ---------------------------------------------------------------------------------------------------------- DICOM


def write_dicom(path: Path, pixels: np.ndarray, *, modality="CT", slope=1.0, intercept=-1024.0, z=0.0,
                instance=1, photometric="MONOCHROME2", series_uid=None, frames: int = 1):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid or "1.2.3.4.5"
    ds.Modality = modality
    ds.PatientName = "Test^Phantom"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.7]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_dicom_file_rescaled_to_hu(tmp_path):
    stored = np.clip(smooth(40, 48, 0, 2000), 0, 4095).astype(np.uint16)
    path = tmp_path / "ct.dcm"
    write_dicom(path, stored, slope=1.0, intercept=-1024.0)
    img = load_image(path)
    assert img.kind == "dicom" and img.modality == "CT" and img.data.shape == (1, 40, 48)
    np.testing.assert_allclose(img.data[0], stored.astype(np.float32) - 1024.0)
    assert img.spacing == pytest.approx((0.5, 0.7)) and img.num_slices == 1
    path2 = tmp_path / "noext"
    write_dicom(path2, stored, modality="MR", slope=0.5, intercept=10.0)
    img2 = load_image(path2)
    assert img2.modality == "MR"
    np.testing.assert_allclose(img2.data[0], stored * 0.5 + 10.0)


def test_dicom_monochrome1_inverted(tmp_path):
    stored = np.clip(smooth(32, 32, 0, 4000), 0, 4095).astype(np.uint16)
    path = tmp_path / "m1.dcm"
    write_dicom(path, stored, modality="MR", slope=1.0, intercept=0.0, photometric="MONOCHROME1")
    img = load_image(path)
    np.testing.assert_allclose(img.data[0], 4095.0 - stored)  # 12 bits stored
    assert any("MONOCHROME1" in n for n in img.notes)


def test_dicom_series_folder_sorted_by_position(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    # file names in one order, positions in another, instance numbers misleading
    for name, z, inst in (("a.dcm", 10.0, 1), ("b.dcm", -5.0, 3), ("c.dcm", 2.5, 2)):
        write_dicom(folder / name, smooth(32, 36, 0, 100) + 1000 + 100 * z, z=z, instance=inst)
    (folder / "notes.txt").write_text("not a dicom")
    (folder / "DICOMDIR_junk").write_bytes(b"\x08\x00garbage" * 10)
    means = []
    for k in range(3):
        img = load_image(folder, slice_index=k)
        assert img.num_slices == 3 and img.slice_index == k and img.kind == "dicom"
        means.append(float(img.data.mean()))
    assert means == sorted(means)  # inferior (z = -5) first
    with pytest.raises(ValueError, match="3 axial slices"):
        load_image(folder)


def test_dicom_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match="no DICOM images found"):
        load_image(tmp_path)


def test_dicom_multiframe_is_a_volume(tmp_path):
    frames = np.stack([smooth(20, 24, 0, 100) + 200 * k for k in range(3)])
    path = tmp_path / "mf.dcm"
    write_dicom(path, frames, modality="MR", intercept=0.0, frames=3)
    img = load_image(path, slice_index=2)
    assert img.num_slices == 3
    np.testing.assert_allclose(img.data[0], frames[2].astype(np.uint16))
    with pytest.raises(ValueError, match="pass a slice index"):
        load_image(path)


# ---------------------------------------------------------------------------------------------------- pictures


def test_png_8bit_and_16bit(tmp_path):
    g8 = smooth(40, 30, 0, 255).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    img = load_image(tmp_path / "g8.png")
    assert img.kind == "png" and img.data.shape == (1, 40, 30) and img.channel_names == ("grey",)
    np.testing.assert_array_equal(img.data[0], g8)
    g16 = smooth(40, 30, 0, 60000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png").data[0], g16)


def test_rgb_grey_and_colour(tmp_path):
    g8 = smooth(32, 32, 0, 255).astype(np.uint8)
    Image.fromarray(np.stack([g8] * 3, -1)).save(tmp_path / "greyrgb.png")
    img = load_image(tmp_path / "greyrgb.png")
    assert img.data.shape == (1, 32, 32) and img.notes == ()
    np.testing.assert_allclose(img.data[0], g8)
    colour = np.stack([g8, 255 - g8, np.full_like(g8, 30)], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    img = load_image(tmp_path / "colour.png")
    assert img.data.shape == (1, 32, 32) and img.channel_names == ("grey",)
    np.testing.assert_allclose(img.data[0], 0.299 * g8 + 0.587 * (255.0 - g8) + 0.114 * 30, atol=1e-3)
    assert any("luminance" in n for n in img.notes)
    rgba = np.dstack([np.stack([g8] * 3, -1), np.full_like(g8, 255)])
    rgba[:4, :4, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    img = load_image(tmp_path / "rgba.png")
    assert img.data.shape == (1, 32, 32) and img.data[0, :4, :4].max() == 0
    np.testing.assert_allclose(img.data[0, 10:, 10:], g8[10:, 10:])


def test_rgb_16bit_png(tmp_path):
    import cv2

    g16 = smooth(24, 28, 0, 60000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.stack([g16] * 3, -1))
    img = load_image(tmp_path / "rgb16.png")
    np.testing.assert_allclose(img.data[0], g16)


def test_jpeg(tmp_path):
    g8 = smooth(48, 40, 20, 230).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / "g.jpg", quality=95)
    img = load_image(tmp_path / "g.jpg")
    assert img.kind == "jpeg" and img.data.shape == (1, 48, 40)
    assert np.abs(img.data[0] - g8).mean() < 3
    Image.fromarray(np.stack([g8] * 3, -1)).save(tmp_path / "rgb.jpeg", quality=95)
    assert load_image(tmp_path / "rgb.jpeg").data.shape == (1, 48, 40)


def test_tiff_16bit_float_and_pages(tmp_path):
    import tifffile

    g16 = smooth(30, 34, 0, 50000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g16.tif", g16)
    img = load_image(tmp_path / "g16.tif")
    assert img.kind == "tiff"
    np.testing.assert_array_equal(img.data[0], g16)
    f32 = smooth(30, 34, -3.5, 7.25)
    tifffile.imwrite(tmp_path / "f32.tiff", f32)
    np.testing.assert_allclose(load_image(tmp_path / "f32.tiff").data[0], f32)
    f64 = smooth(30, 34, -3.5, 7.25).astype(np.float64)
    tifffile.imwrite(tmp_path / "f64.tiff", f64)
    np.testing.assert_allclose(load_image(tmp_path / "f64.tiff").data[0], f64, rtol=1e-6)
    stack = np.stack([g16, g16 // 2, g16 // 3])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    img = load_image(tmp_path / "stack.tif", slice_index=1)
    assert img.num_slices == 3
    np.testing.assert_array_equal(img.data[0], g16 // 2)


# ------------------------------------------------------------------------------------------------------- NumPy


def test_numpy_files_and_arrays(tmp_path):
    plane = smooth(20, 22)
    np.save(tmp_path / "p.npy", plane)
    img = load_image(tmp_path / "p.npy")
    assert img.kind == "numpy" and img.data.shape == (1, 20, 22)
    chans = np.stack([plane, plane * 2])
    img = load_image(chans)
    assert img.source == "<array>" and img.data.shape == (2, 20, 22) and img.num_slices == 1
    vol = np.stack([plane + k for k in range(6)], axis=-1)  # (H, W, Z): slices on the last axis
    img = load_image(vol, slice_index=4)
    assert img.num_slices == 6 and img.data.shape == (1, 20, 22)
    np.testing.assert_allclose(img.data[0], plane + 4)
    with pytest.raises(ValueError, match="6 axial slices"):
        load_image(vol)
    assert load_image(np.stack([vol, vol]), slice_index=1).data.shape == (2, 20, 22)  # (C, H, W, Z)
    assert load_image(plane.astype(np.int16)).data.dtype == np.float32


# ---------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.nii.gz")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(empty)
    text = tmp_path / "text.png"
    text.write_text("this is not an image\n" * 10)
    with pytest.raises(ValueError, match="is not a PNG image"):
        load_image(text)
    unknown = tmp_path / "data.xyz"
    unknown.write_text("hello\n" * 10)
    with pytest.raises(ValueError, match="not an image this tool reads"):
        load_image(unknown)
    broken_png = tmp_path / "broken.png"
    buf = tmp_path / "ok.png"
    Image.fromarray(smooth(40, 40, 0, 255).astype(np.uint8)).save(buf)
    broken_png.write_bytes(buf.read_bytes()[:60])
    with pytest.raises(ValueError, match="damaged"):
        load_image(broken_png)
    nan = smooth(32, 32)
    nan[0, :3] = np.nan
    nan[1, 0] = np.inf
    with pytest.raises(ValueError, match="3 NaN and 1 infinite"):
        load_image(nan)
    with pytest.raises(ValueError, match=r"image is constant \(value 0.0\): nothing to analyse"):
        load_image(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="1-D"):
        load_image(np.arange(100.0))
    with pytest.raises(ValueError, match="5-D"):
        load_image(np.zeros((1, 2, 16, 16, 3)))
    with pytest.raises(ValueError, match="too small"):
        load_image(smooth(10, 40))
    big = tmp_path / "big.npy"
    np.save(big, smooth(64, 64))
    with pytest.raises(ValueError, match="over the"):
        load_image(big, max_bytes=1000)
    with pytest.raises(ValueError, match="over the"):
        load_image(smooth(64, 64), max_bytes=1000)
    with pytest.raises(ValueError, match="numbers"):
        load_image(np.array([["a"] * 20] * 20))
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        load_image(obj)
    with pytest.raises(ValueError, match="2-D image"):
        load_image(smooth(20, 20), slice_index=3)


def test_pixel_limit_is_read_from_every_format_header(tmp_path, monkeypatch):
    """The per-slice limit applies to every format, from the header: with the limit lowered below 64 x 64, each
    64 x 64 file is refused naming its size, before any decoding."""
    from diffuse_core.io import loaded

    plane = smooth(64, 64, 0, 255)
    Image.fromarray(plane.astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(plane.astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(plane.astype(np.uint8)).save(tmp_path / "a.tif", compression="tiff_deflate")
    nib.save(nib.Nifti1Image(np.stack([plane] * 3, -1), np.eye(4)), str(tmp_path / "a.nii.gz"))
    write_dicom(tmp_path / "a.dcm", plane.astype(np.uint16) + 1000)
    np.save(tmp_path / "a.npy", plane)
    monkeypatch.setattr(loaded, "MAX_SLICE_PIXELS", 64 * 64 - 1)
    for name in ("a.png", "a.jpg", "a.tif", "a.nii.gz", "a.dcm", "a.npy"):
        with pytest.raises(loaded.TooLargeError, match="64 x 64 pixels .*: the limit is 0.0 MP per slice"):
            load_image(tmp_path / name, slice_index=1 if name.endswith(".nii.gz") else None)
    monkeypatch.setattr(loaded, "MAX_SLICE_PIXELS", 64 * 64)
    monkeypatch.setattr(loaded, "MAX_VOLUME_VOXELS", 64 * 64 * 2)
    with pytest.raises(loaded.TooLargeError, match="64 x 64 x 3 voxels"):
        load_image(tmp_path / "a.nii.gz", slice_index=1)
    assert load_image(tmp_path / "a.png").shape == (64, 64)


def test_dicom_values_outside_any_scanner_range_are_refused(tmp_path):
    stored = (smooth(32, 32, 0, 2000)).astype(np.uint16)
    write_dicom(tmp_path / "slope.dcm", stored, slope=1e30)
    with pytest.raises(ValueError, match="far outside any scanner's range .*Rescale Slope"):
        load_image(tmp_path / "slope.dcm")
    write_dicom(tmp_path / "mr.dcm", stored, modality="MR", slope=1e4, intercept=0.0)
    with pytest.raises(ValueError, match="far outside"):
        load_image(tmp_path / "mr.dcm")
    write_dicom(tmp_path / "ok.dcm", stored, modality="MR", slope=100.0, intercept=0.0)  # 2e5: an MR range
    assert float(load_image(tmp_path / "ok.dcm").data.max()) == pytest.approx(2000 * 100.0)


def test_nifti_with_a_wrong_name_is_read_by_content(tmp_path):
    vol = ras_volume_with_marker()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "scan.nii.gz"))
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "scan.nii"))
    (tmp_path / "upload.png").write_bytes((tmp_path / "scan.nii.gz").read_bytes())
    (tmp_path / "upload").write_bytes((tmp_path / "scan.nii").read_bytes())
    want = load_image(tmp_path / "scan.nii.gz", slice_index=3)
    for name in ("upload.png", "upload"):
        got = load_image(tmp_path / name, slice_index=3)
        assert got.kind == "nifti" and got.num_slices == Z
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_allclose(got.affine, want.affine)


def test_npy_is_read_from_its_header_and_one_slice(tmp_path):
    vol = np.stack([smooth(20, 22) + k for k in range(5)], axis=-1)
    np.save(tmp_path / "v.npy", vol)
    img = load_image(tmp_path / "v.npy", slice_index=2)
    assert img.data.flags.writeable and img.data.flags.owndata  # not a view on the memory map
    np.testing.assert_allclose(img.data[0], vol[:, :, 2])
    (tmp_path / "cut.npy").write_bytes((tmp_path / "v.npy").read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated .npy file"):
        load_image(tmp_path / "cut.npy", slice_index=2)


# ---------------------------------------------------------------------------------------------------------- masks


def test_load_mask(tmp_path):
    image = load_image(smooth(40, 30))
    m = np.zeros((40, 30), np.uint8)
    m[5:10, 5:12] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png", like=image)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1} and mask.sum() == 35
    assert load_mask(np.zeros((40, 30))).sum() == 0  # an empty mask is fine
    with pytest.raises(ValueError, match="same size"):
        load_mask(np.ones((20, 30)), like=image)
    # a mask volume follows the image's slice
    vol = np.zeros((X, Y, Z), np.uint8)
    vol[2:5, 3:9, 3] = 1
    nib.save(nib.Nifti1Image(ras_volume_with_marker(), np.eye(4)), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "seg.nii.gz"))
    img = load_image(tmp_path / "img.nii.gz", slice_index=3)
    seg = load_mask(tmp_path / "seg.nii.gz", like=img)
    assert seg.shape == img.shape and seg.sum() == 18
    assert load_mask(tmp_path / "seg.nii.gz", slice_index=4).sum() == 0


# --------------------------------------------------------------------------------------------- BraTS layouts


def test_brats_name_patterns_synthetic(tmp_path):
    case = tmp_path / "BraTS2021_00001"
    case.mkdir()
    for k, mod in enumerate(("flair", "t1", "t1ce", "t2")):
        vol = np.zeros((20, 20, 6), np.float32)
        vol[4:16, 4:16, :] = 10.0 * (k + 1)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(case / f"BraTS2021_00001_{mod}.nii.gz"))
    seg = np.zeros((20, 20, 6), np.uint8)
    seg[6:9, 6:9, 2:4] = 2
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(case / "BraTS2021_00001_seg.nii.gz"))
    c = load_brats_case(case)
    assert c.modalities == ("flair", "t1", "t1c", "t2") and c.num_slices == 6 and not c.files.get("brain_mask")
    assert c.tumour_slices() == [2, 3]
    img, tumour, brain = c.slice(2)
    assert img.shape == (4, 20, 20) and img.dtype == np.float32
    np.testing.assert_allclose([img[i].max() for i in range(4)], [10, 20, 30, 40])  # t1 is not t1ce
    assert tumour.sum() == 9 and brain.sum() == 144  # brain from the constant background
    c2 = load_brats_case(case, modalities=("t1ce", "flair"))
    assert c2.modalities == ("t1c", "flair") and c2.slice(0)[0][0].max() == 30
    (case / "BraTS2021_00001_t2.nii.gz").unlink()
    with pytest.raises(ValueError, match="no t2 file; found flair"):
        load_brats_case(case, modalities=("flair", "t2"))


@pytest.fixture(scope="module")
def brats_case():
    cases = sorted(BRATS.glob("brats_*")) if BRATS.is_dir() else []
    if not cases:
        pytest.skip(f"real BraTS cases not available at {BRATS}")
    return load_brats_case(cases[0], modalities=("flair", "t1c"))


def test_brats_real_case(brats_case):
    c = brats_case
    assert c.shape == (240, 240, 155) and c.num_slices == 155
    assert set(c.files) >= {"flair", "t1c", "label", "brain_mask"}
    zs = c.tumour_slices()
    assert len(zs) > 20
    tumour_in, brain_out = [], []
    for z in zs[len(zs) // 2 - 2: len(zs) // 2 + 3]:
        img, tumour, brain = c.slice(z)
        assert img.shape == (2, 240, 240) and tumour.shape == brain.shape == (240, 240)
        assert tumour.sum() > 0 and tumour.dtype == np.uint8 and brain.dtype == np.uint8
        assert not (tumour.astype(bool) & ~brain.astype(bool)).sum() > 0.05 * tumour.sum()
        assert img[:, brain == 0].max() == 0  # background multiplied away
        tumour_in.append(img[0][tumour > 0].mean())
        brain_out.append(img[0][(brain > 0) & (tumour == 0)].mean())
    assert np.mean(tumour_in) > np.mean(brain_out) + 0.5  # FLAIR: the tumour is hyperintense


def test_brats_real_load_image_matches_case(brats_case):
    z = brats_case.tumour_slices()[0]
    img = load_image(brats_case.files["flair"], slice_index=z)
    assert img.data.shape == (1, 240, 240) and img.num_slices == 155
    raw, _, _ = brats_case.slice(z, apply_brain_mask=False)
    np.testing.assert_array_equal(img.data[0], raw[0])
    mask = load_mask(brats_case.files["label"], like=img)
    np.testing.assert_array_equal(mask, brats_case.slice(z)[1])
    assert isinstance(img, LoadedImage)
