"""The model is chosen by the case's modality (issue: models v2, item 3): CT input runs through the CT models in
assets/ct/ where they are installed, MRI through assets/; the registry lists both; without a CT model a CT case runs
through the MRI model and says so."""

import json

import numpy as np
import pytest

from diffuse_core.cli import main
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser
from diffuse_core.models.registry import default_model_dir, installed_models, model_dir_for

TINY = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)


def _model(folder, modality, threshold):
    save_denoiser(new_denoiser(TINY, seed=0), folder,
                  card={"anomaly_threshold": threshold, "data": {"modalities": [modality]}})


@pytest.fixture()
def assets(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    _model(root / "ddpm", "flair", 0.1)
    monkeypatch.setenv("DIFFUSE_ASSETS", str(root))
    return root


def _inputs(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    head = np.hypot(yy - 32, xx - 32) < 26
    ct = np.where(head, 35.0, -1000.0).astype(np.float32)          # Hounsfield units: air, brain
    ct[28:36, 20:28] = 15.0                                          # a hypodense "infarct"
    mri = np.where(head, 100.0, 0.0).astype(np.float32)
    mri[28:36, 20:28] = 220.0
    mask = np.zeros((64, 64), np.uint8)
    mask[26:38, 18:30] = 1
    for name, a in (("ct", ct), ("mri", mri), ("mask", mask)):
        np.save(tmp_path / f"{name}.npy", a)


def _run(tmp_path, name):
    out = tmp_path / f"out_{name}"
    assert main(["run", str(tmp_path / f"{name}.npy"), "--mask-from", str(tmp_path / "mask.npy"), "--k", "50",
                 "--steps", "2", "--device", "cpu", "--precision", "fp32", "--out", str(out)]) == 0
    return json.loads((out / "result.json").read_text())


def test_ct_runs_through_the_ct_model_where_one_is_installed(assets, tmp_path):
    _inputs(tmp_path)
    r = _run(tmp_path, "ct")
    assert r["modality"] == "ct" and r["model"] == "assets/ddpm"
    assert any("no CT model is installed" in n for n in r["notes"])
    _model(assets / "ct" / "ddpm", "ct", 0.2)
    assert model_dir_for("ddpm", "ct") == default_model_dir("ddpm", "ct") == assets / "ct" / "ddpm"
    assert model_dir_for("ddpm", "mri") == assets / "ddpm"
    assert [(m.kind, m.modality) for m in installed_models()] == [("ddpm", "flair"), ("ddpm", "ct")]
    r = _run(tmp_path, "ct")
    assert r["model"] == "assets/ct/ddpm" and r["threshold"] == 0.2            # the CT card's threshold
    assert not any("no CT model" in n for n in r["notes"])
    r = _run(tmp_path, "mri")
    assert r["modality"] == "mri" and r["model"] == "assets/ddpm" and r["threshold"] == 0.1


def test_a_teaching_set_file_is_read_as_the_app_reads_it(assets, tmp_path):
    """A teaching set stores its CT slices windowed already ([-1, 1], no Hounsfield air): ``run`` on such a file takes
    the modality from the set's manifest and the stored intensities as they are (as the app's gallery does), so a CT
    teaching case reaches the CT model; so does a byte-identical copy elsewhere (the app's temporary copy of an
    upload); the same values in other bytes are read by their values (no CT evidence: MRI)."""
    import shutil
    from pathlib import Path

    from diffuse_core.cases import prepare_case
    from diffuse_core.data.teaching import load_case

    shipped = Path(__file__).resolve().parent.parent / "teaching_sets"
    teach = tmp_path / "sets" / "default"
    shutil.copytree(shipped / "default", teach, ignore=shutil.ignore_patterns("counterfactuals"))
    stored = load_case("default", "case13_ct_stroke", tmp_path / "sets")
    image = teach / "case13_ct_stroke_image.nii.gz"
    case = prepare_case(image, size=128, gt=teach / "case13_ct_stroke_mask.nii.gz")
    assert case.modality == "ct" and any("teaching-set case default/case13_ct_stroke" in n for n in case.notes)
    np.testing.assert_array_equal(case.image, np.clip(stored.image, -1, 1))
    np.testing.assert_array_equal(case.ground_truth, stored.mask)
    asked = prepare_case(image, size=128, window="stroke", modality="mri")   # what the set stores wins, and says so
    assert asked.modality == "ct" and np.array_equal(asked.image, case.image)
    assert any("window 'stroke' not applied" in n for n in asked.notes)
    assert any("modality 'mri' not used" in n for n in asked.notes)
    flair = prepare_case(teach / "case05_flair_stroke_image.nii.gz", size=128)
    assert flair.modality == "mri"
    np.testing.assert_array_equal(flair.image, np.clip(load_case("default", "case05_flair_stroke",
                                                                 tmp_path / "sets").image, -1, 1))
    alone = tmp_path / "elsewhere" / "upload_copy.nii.gz"               # e.g. the app's temporary copy of an upload
    alone.parent.mkdir()
    shutil.copy(shipped / "default" / image.name, alone)
    copied = prepare_case(alone, size=128)
    assert copied.modality == "ct" and np.array_equal(copied.image, case.image)
    assert any("teaching-set case default/case13_ct_stroke" in n for n in copied.notes)
    import nibabel as nib                                                  # the same values in other bytes: by values
    img = nib.load(image)
    edited = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    edited.header["descrip"] = b"edited"
    nib.save(edited, alone.parent / "edited.nii.gz")
    assert prepare_case(alone.parent / "edited.nii.gz", size=128).modality == "mri"
    shutil.copy(alone.parent / "edited.nii.gz", image)
    (teach / "manifest.json").write_text("{ not json")                   # a broken set: read as any other file
    assert prepare_case(image, size=128).modality == "mri"
    shutil.copy(shipped / "default" / image.name, image)
    _model(assets / "ct" / "ddpm", "ct", 0.2)
    (teach / "manifest.json").write_text((shipped / "default" / "manifest.json").read_text())
    out = tmp_path / "out_teaching"
    assert main(["run", str(image), "--mask-from", str(teach / "case13_ct_stroke_mask.nii.gz"), "--k", "50",
                 "--steps", "2", "--device", "cpu", "--precision", "fp32", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["modality"] == "ct" and r["model"] == "assets/ct/ddpm" and r["threshold"] == 0.2


def test_the_app_store_picks_by_modality(assets, monkeypatch):
    from diffuse_core.studio.model_store import ModelStore

    store = ModelStore()
    assert store.ddpm_dir("ct") == assets / "ddpm" and store.out_of_domain("ct") == ["flair"]
    _model(assets / "ct" / "ddpm", "ct", 0.2)
    assert store.ddpm_dir("ct") == assets / "ct" / "ddpm" and store.ddpm_dir("mri") == assets / "ddpm"
    assert store.out_of_domain("ct") == [] and store.out_of_domain("flair") == []
    assert store.denoiser("cpu", "ct").card["anomaly_threshold"] == 0.2
    monkeypatch.setenv("DIFFUSE_MODEL_DIR", str(assets / "ddpm"))          # an explicit folder always wins
    assert store.ddpm_dir("ct") == assets / "ddpm"


def test_models_command_lists_what_is_installed(assets, capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "ddpm" in text and "flair" in text and "no CT model installed" in text
    _model(assets / "ct" / "ddpm", "ct", 0.2)
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["for_cases"], r["modality"], r["anomaly_threshold"]) for r in rows] == [
        ("ddpm", "mri", "flair", 0.1), ("ddpm", "ct", "ct", 0.2)]
    assert [r["anomaly_kernel"] for r in rows] == [5, 5]          # cards without the key: the paper's 5x5
    assert main(["models"]) == 0
    assert "no CT model installed" not in capsys.readouterr().out
