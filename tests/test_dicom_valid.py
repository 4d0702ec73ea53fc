"""Every DICOM file the project writes passes the DICOM validator ``dciodvfy`` (Debian's dicom3tools) with no errors
(issue 34, item 4).

The files are those of the teaching-set DICOM export, written by the real export path: shipped teaching cases with
their shipped counterfactuals (the models' own output, ``teaching_sets/default/counterfactuals``) are saved into a
curated set as the Curate tab saves them (:func:`diffuse_core.data.curation.save_case`) and exported by
:func:`diffuse_core.data.curated_dicom.zip_set_dicom`, the function behind the app's "Download as DICOM" button.
The project writes no other DICOM today (no DICOM Segmentation yet: issue 34, item 1 adds one, and this file is where
it is to be validated too).

Where ``dciodvfy`` is absent (``.ci/run`` installs dicom3tools only as root with apt-get) the tests skip and say so.
"""

import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from diffuse_core.data import curation, teaching
from diffuse_core.data.curated_case import CuratedCase
from diffuse_core.data.curated_dicom import zip_set_dicom
from diffuse_core.io.dicom_export import SERIES
from diffuse_core.io.preprocess import Geometry

DCIODVFY = shutil.which("dciodvfy")
DCENTVFY = shutil.which("dcentvfy")
NO_DICOM3TOOLS = "dciodvfy is not installed (Debian package dicom3tools: apt-get install dicom3tools; .ci/run " \
                 "installs it when CI runs as root with apt-get)"
# (case id, the input's size (H, W) the case is saved at, or None for the model grid, its pixel spacing or None)
CASES = [("case01_flair_glioma", None, None),          # MRI, a lesion
         ("case13_ct_stroke", None, None),             # CT
         ("case16_flair_healthy", None, None),         # a healthy control
         ("case05_flair_stroke", (150, 118), (0.9, 1.2))]   # an input of another size: Rows != Columns, own spacing
# Type 2 and 2C attributes of a Secondary Capture image the export has no value for (dciodvfy: "Missing attribute")
EMPTY = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber",
         "PatientOrientation")


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Nothing is written into the user's data folder."""
    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path_factory.mktemp("data") / "diffuse"))
    monkeypatch.delenv("DIFFUSE_CURATED_ROOT", raising=False)
    monkeypatch.delenv("DIFFUSE_TEACHING_ROOT", raising=False)


def _shipped_result(case_id: str) -> dict:
    """The counterfactual shipped with the default teaching set for ``case_id`` (model grid arrays)."""
    found = sorted((teaching.PACKAGE_ROOT / "default" / "counterfactuals").glob(f"*/{case_id}.npz"))
    assert found, f"no shipped counterfactual of {case_id}"
    with np.load(found[0], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _curated_case(case_id: str, shape, spacing) -> CuratedCase:
    case = teaching.load_case("default", case_id)
    run = _shipped_result(case_id)
    return CuratedCase(
        case_id=case_id, image=run["image"].astype(np.float32), counterfactual=run["counterfactual"].astype(np.float32),
        anomaly=run["anomaly"].astype(np.float32), mask=run["mask"], brain_mask=run["brain_mask"],
        ground_truth=case.mask, settings={"k": 500, "percentile": 90, "steps": 25}, model_version="shipped",
        geometry=Geometry.for_shape(shape, run["image"].shape[-1]) if shape else None,
        spacing=tuple(spacing or case.spacing), modality=case.modality, lesion_type=case.lesion_type,
        location=case.location, difficulty=case.difficulty, healthy=case.healthy, note=case.note)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> list[Path]:
    """The DICOM files of one exported teaching set, unpacked from the export's zip."""
    tmp = tmp_path_factory.mktemp("dicom")
    root, out = tmp / "curated", tmp / "downloads"
    for case_id, shape, spacing in CASES:
        curation.save_case("Week 3 stroke", _curated_case(case_id, shape, spacing), root)
    archive = zip_set_dicom("Week 3 stroke", root, out)
    files = []
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if name.endswith(".dcm"):
                path = tmp / "unzipped" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(z.read(name))
                files.append(path)
    assert len(files) == len(CASES) * len(SERIES), sorted(files)
    return files


@pytest.mark.skipif(DCIODVFY is None, reason=NO_DICOM3TOOLS)
def test_every_exported_dicom_file_passes_dciodvfy_with_no_error(exported):
    failures = {}
    for path in exported:
        proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        report = (proc.stdout + proc.stderr).splitlines()
        bad = [line for line in report if line.startswith(("Error", "Abort"))]
        if bad or proc.returncode != 0:
            failures[f"{path.parent.name}/{path.name}"] = bad or report
    assert not failures, "dciodvfy reported errors:\n" + "\n".join(
        f"{name}: {len(lines)} line(s)\n  " + "\n  ".join(lines) for name, lines in failures.items())


@pytest.mark.skipif(DCENTVFY is None, reason=NO_DICOM3TOOLS.replace("dciodvfy", "dcentvfy"))
def test_the_exported_files_agree_on_their_patients_studies_and_series(exported):
    """``dcentvfy`` (dicom3tools): attributes of one patient, study or series are the same in each of its files."""
    proc = subprocess.run([DCENTVFY, *map(str, exported)], capture_output=True, text=True, timeout=120)
    report = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("Error", "Abort"))]
    assert proc.returncode == 0 and not report, "\n".join(report) or proc.stdout + proc.stderr


def test_the_type_2_attributes_are_present_and_carry_nothing(exported):
    """What the validator wants present is present and empty: no value (a patient's or an invented one) in it."""
    from pydicom import dcmread

    for path in exported:
        ds = dcmread(path)
        for keyword in EMPTY:
            assert keyword in ds and ds[keyword].is_empty, (path.name, keyword, ds.get(keyword))
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName).startswith("Teaching^case")
