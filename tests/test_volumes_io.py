"""Whole scans in and out (issue 34, items 1 and "Bad input"): a NIfTI volume, a DICOM series (folder or zip) and a
BraTS case read into display slices equal to what a one-slice run reads; results written back on the input's grid
(voxel order, affine, spacing kept); the DICOM Segmentation referencing the series and passing dciodvfy; and each
bad input refused with one line saying what is wrong."""

from __future__ import annotations

import shutil
import subprocess
import zipfile

import nibabel as nib
import numpy as np
import pytest

from diffuse_core.io.image import load_raw
from diffuse_core.volumes.grid import dicom_affine
from diffuse_core.volumes.prepare import brain_slices, parse_slices, slice_case
from diffuse_core.volumes.read import read_volume
from diffuse_core.volumes.write import counterfactual_in_input_units, write_nifti
from volume_data import BRATS, head_phantom, write_nifti as write_test_nifti, write_series


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_nifti_volume_slices_equal_the_one_slice_reader_and_write_back_onto_the_input_grid(tmp_path):
    path = write_test_nifti(tmp_path / "v.nii.gz")
    vol = read_volume(path)
    assert vol.shape == (8, 48, 40) and vol.kind == "nifti"
    for z in range(vol.num_slices):
        assert np.array_equal(vol.slices[z], load_raw(path, z).data)
    # the input itself, written through the volume path, comes back voxel for voxel with its affine and zooms
    out = write_nifti(tmp_path / "back.nii.gz", vol.grid, vol.slices[:, 0])
    src, back = nib.load(path), nib.load(out)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(src.dataobj))
    assert np.allclose(back.affine, src.affine) and np.allclose(back.header.get_zooms(), src.header.get_zooms())
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(src.affine) != ("R", "A", "S")
    assert not list(tmp_path.glob(".*tmp*")), "a temporary file was left behind"


def test_dicom_series_folder_and_zip_read_in_slice_order_with_the_series_geometry(tmp_path):
    truth = head_phantom()
    write_series(tmp_path / "s", truth, spacing=(0.9, 0.8), step=2.5)
    vol = read_volume(tmp_path / "s")
    assert vol.kind == "dicom" and vol.modality == "MR" and vol.slice_step == pytest.approx(2.5)
    assert np.array_equal(vol.slices[:, 0], truth.astype(np.float32))        # files were written shuffled
    for z in (0, 3, 7):
        assert np.array_equal(vol.slices[z], load_raw(tmp_path / "s", z).data)
    # the affine maps voxel (col, row, slice) to RAS mm: position (-20, -30, 10) LPS is (20, 30, 10) RAS
    assert np.allclose(vol.grid.affine @ [0, 0, 0, 1], [20, 30, 10, 1])
    assert np.allclose(vol.grid.affine @ [1, 2, 3, 1], [20 - 0.8, 30 - 1.8, 10 + 7.5, 1])
    img = vol.grid.image(vol.slices[:, 0])
    assert img.shape == (40, 48, 8) and np.allclose(img.header.get_zooms(), (0.8, 0.9, 2.5))
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        for p in sorted((tmp_path / "s").iterdir()):
            zf.write(p, f"nested/dir/{p.name}")
    zipped = read_volume(tmp_path / "s.zip")
    assert np.array_equal(zipped.slices, vol.slices) and np.allclose(zipped.grid.affine, vol.grid.affine)


def test_dicom_affine_of_an_oblique_series():
    o = (0, 1, 0, 0, 0, -1)                     # a sagittal series: rows along +y (LPS), columns down -z
    a = dicom_affine((5, 6, 7), o, (2.0, 3.0), (1.5, 0, 0))
    assert np.allclose(a @ [1, 0, 0, 1], [-5, -6 - 3, 7, 1])
    assert np.allclose(a @ [0, 1, 0, 1], [-5, -6, 7 - 2, 1])
    assert np.allclose(a @ [0, 0, 1, 1], [-5 - 1.5, -6, 7, 1])


def test_brain_slices_and_slice_ranges(tmp_path):
    vol = read_volume(write_test_nifti(tmp_path / "v.nii.gz"))
    assert brain_slices(vol) == [1, 2, 3, 4, 5, 6]                         # the empty end slices are skipped
    assert brain_slices(vol, parse_slices("2-4", vol.num_slices)) == [2, 3, 4]
    assert parse_slices("all", 5) == [0, 1, 2, 3, 4] and parse_slices(" 3 ", 5) == [3]
    for bad, says in (("4-2", "backwards"), ("0-9", "has 5 slices"), ("x", "expected all")):
        with pytest.raises(ValueError, match=says):
            parse_slices(bad, 5)


def test_a_volume_slice_is_prepared_exactly_as_a_one_slice_run_prepares_it(tmp_path):
    from diffuse_core.cases import prepare_case

    path = write_test_nifti(tmp_path / "v.nii.gz")
    vol = read_volume(path)
    a, b = slice_case(vol, 4), prepare_case(path, 4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.brain_mask, b.brain_mask)
    assert np.allclose(a.affine, b.affine) and a.spacing == b.spacing and a.slice_index == b.slice_index == 4


@pytest.mark.skipif(not BRATS.is_dir(), reason="the BraTS cases (../shared/real_cases/brats2015) are not here")
def test_a_brats_case_reads_whole_with_its_labels_and_matches_the_case_reader():
    from diffuse_core.cases import prepare_case

    case = sorted(BRATS.iterdir())[0]
    vol = read_volume(case)
    assert vol.kind == "brats" and vol.shape == (155, 240, 240) and vol.truth is not None and vol.truth.any()
    z = int(np.argmax(vol.truth.reshape(155, -1).sum(axis=1)))
    a, b = slice_case(vol, z), prepare_case(case, z)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.ground_truth, b.ground_truth)
    flair = next(p for p in case.iterdir() if "flair" in p.name.lower())
    assert np.allclose(vol.grid.affine, nib.load(flair).affine)


def test_counterfactual_in_input_units_keeps_the_input_where_nothing_changed():
    rng = np.random.default_rng(0)
    raw = rng.uniform(100, 900, (32, 32)).astype(np.float32)
    brain = np.ones((32, 32), np.uint8)
    image = (raw - 500) / 400                                   # a linear preparation, inside [-1, 1]
    cf = image.copy()
    cf[10:14, 10:14] -= 0.5
    back = counterfactual_in_input_units(raw, image, cf, brain)
    outside = np.ones_like(brain, bool)
    outside[10:14, 10:14] = False
    assert np.array_equal(back[outside], raw[outside])
    assert np.allclose(back[10:14, 10:14], raw[10:14, 10:14] - 200, atol=1e-2)


DCIODVFY = shutil.which("dciodvfy")


def test_the_dicom_segmentation_references_the_series_and_lies_in_its_frame(tmp_path):
    import highdicom as hd
    import pydicom

    from diffuse_core.volumes.seg import write_segmentation

    write_series(tmp_path / "s")
    vol = read_volume(tmp_path / "s")
    flagged = np.zeros(vol.shape, np.uint8)
    flagged[3, 10:20, 12:18] = 1
    flagged[5, 30:33, 5:9] = 1
    path = write_segmentation(tmp_path / "seg.dcm", vol.grid, flagged)
    seg = hd.seg.segread(path)
    src = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((tmp_path / "s").iterdir())]
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == {ds.SOPInstanceUID for ds in src}
    # frame of slice 3 (the 4th along the normal) holds the first blob, at the source image's position
    by_uid = {h.SOPInstanceUID: z for z, h in enumerate(vol.grid.headers)}
    got = np.zeros(vol.shape, np.uint8)
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        got[by_uid[uid]] = seg.pixel_array[f] if seg.pixel_array.ndim == 3 else seg.pixel_array
    assert np.array_equal(got, flagged)
    if DCIODVFY:
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert not errors, "\n".join(errors)


# ------------------------------------------------------------------------------------------------------ bad input
def test_a_series_mixing_studies_is_refused_in_one_line(tmp_path):
    vol = head_phantom()
    write_series(tmp_path / "s", vol[:4], study_uid="1.2.3.1", series_uid="1.2.3.9")
    write_series(tmp_path / "t", vol[4:], study_uid="1.2.3.2", series_uid="1.2.3.9")
    for p in (tmp_path / "t").iterdir():
        p.rename(tmp_path / "s" / f"t_{p.name}")
    with pytest.raises(ValueError) as err:
        read_volume(tmp_path / "s")
    assert "mixes 2 studies" in _one_line(err)


def test_a_series_mixing_orientations_is_refused(tmp_path):
    vol = head_phantom()
    write_series(tmp_path / "s", vol[:4], series_uid="1.2.3.9", study_uid="1.2.3.1")
    write_series(tmp_path / "t", vol[4:], series_uid="1.2.3.9", study_uid="1.2.3.1", orientation=(1, 0, 0, 0, 0, -1))
    for p in (tmp_path / "t").iterdir():
        p.rename(tmp_path / "s" / f"t_{p.name}")
    with pytest.raises(ValueError) as err:
        read_volume(tmp_path / "s")
    assert "mixes slice orientations" in _one_line(err)


def test_slices_of_different_sizes_are_refused(tmp_path):
    write_series(tmp_path / "s", head_phantom()[:4], series_uid="1.2.3.9", study_uid="1.2.3.1")
    write_series(tmp_path / "t", head_phantom(rows=40, cols=40)[4:], series_uid="1.2.3.9", study_uid="1.2.3.1")
    for p in (tmp_path / "t").iterdir():
        p.rename(tmp_path / "s" / f"t_{p.name}")
    with pytest.raises(ValueError) as err:
        read_volume(tmp_path / "s")
    assert "slices of different sizes (40x40, 48x40)" in _one_line(err)


def test_missing_slices_are_refused(tmp_path):
    write_series(tmp_path / "s", skip=(4,))
    with pytest.raises(ValueError) as err:
        read_volume(tmp_path / "s")
    assert "missing slices: a 5.0 mm gap after slice 3 where the slices are 2.5 mm apart" in _one_line(err)


def test_a_4d_file_is_refused(tmp_path):
    data = np.zeros((20, 20, 6, 3), np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "four.nii.gz"))
    with pytest.raises(ValueError) as err:
        read_volume(tmp_path / "four.nii.gz")
    assert "is a 4-D file (20 x 20 x 6 x 3)" in _one_line(err)


def test_a_volume_over_the_voxel_limit_is_refused_before_its_voxels_are_read(tmp_path, monkeypatch):
    from diffuse_core.io import loaded

    write_series(tmp_path / "s")
    write_test_nifti(tmp_path / "v.nii.gz")
    monkeypatch.setattr(loaded, "MAX_VOLUME_VOXELS", 48 * 40 * 7)
    for path in (tmp_path / "s", tmp_path / "v.nii.gz"):
        with pytest.raises(loaded.TooLargeError) as err:
            read_volume(path)
        assert "the limit is" in _one_line(err)


def test_what_a_volume_run_cannot_read_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError) as err:
        read_volume(tmp_path / "notes.txt")
    assert "a volume run reads a NIfTI volume, a DICOM series" in _one_line(err)
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "absent.nii.gz")


def test_the_cuda_batch_size_follows_the_free_memory():
    """The GPU's batch size as a function of its free memory (the code path a GPU takes, run here on numbers)."""
    import torch

    from diffuse_core.volumes.throughput import (BYTES_PER_SLICE_128, CPU_BATCH, MAX_BATCH, RESERVE_FRACTION,
                                                 auto_batch_size, batch_size_for_memory)

    assert batch_size_for_memory(0) == 1                                   # never zero: one slice is tried
    assert batch_size_for_memory(80 * 2**30) == MAX_BATCH                  # an H100 is capped
    free = 4 * 2**30
    expected = int(free * (1 - RESERVE_FRACTION) // BYTES_PER_SLICE_128)
    assert batch_size_for_memory(free) == expected > 1
    assert batch_size_for_memory(free, precision="bf16") in (min(MAX_BATCH, 2 * expected),
                                                             min(MAX_BATCH, 2 * expected + 1))
    assert batch_size_for_memory(free, size=256) == max(1, expected // 4)
    assert batch_size_for_memory(free // 2) < batch_size_for_memory(free)
    assert auto_batch_size(torch.device("cpu")) == CPU_BATCH
