"""Curated teaching sets: atomic saves, concurrent savers, name sanitisation, crash safety, zip archives."""

import json
import threading
import zipfile

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from diffuse_core.data import curation
from diffuse_core.io.preprocess import Geometry

R = 32
FILES = ["original", "counterfactual", "anomaly", "mask", "ground_truth"]


def make_case(case_id="case-1", with_truth=True, geometry=True) -> curation.CuratedCase:
    yy, xx = np.mgrid[:R, :R]
    brain = (np.hypot(yy - R / 2, xx - R / 2) < R / 2 - 2).astype(np.uint8)
    image = np.where(brain, 0.1, -1.0).astype(np.float32)[None]
    image[0, 10:14, 10:14] = 0.9
    cf = np.where(brain, 0.1, -1.0).astype(np.float32)[None]
    anomaly = np.abs(image - cf)[0]
    mask = np.zeros((R, R), np.uint8)
    mask[8:16, 8:16] = 1
    return curation.CuratedCase(
        case_id=case_id, image=image, counterfactual=cf, anomaly=anomaly, mask=mask,
        settings={"k": 500, "steps": 50, "percentile": 90}, seed=3, model_version="ddpm-test", note="a note",
        geometry=Geometry.for_shape((48, 40), R) if geometry else None, spacing=(0.9, 1.1),
        ground_truth=mask if with_truth else None, brain_mask=brain, lesion_type="glioma")


def test_save_writes_png_and_nifti_at_the_input_size_and_a_manifest_entry(tmp_path):
    entry = curation.save_case("Week 3", make_case(), tmp_path)
    folder = tmp_path / "Week 3" / "case-1"
    for role in FILES:
        assert Image.open(folder / f"{role}.png").size == (40, 48), role        # (W, H) of the input
        vol = nib.load(folder / f"{role}.nii.gz")
        assert vol.shape[:2] == (40, 48), role                                   # (x, y) = (W, H)
        assert np.allclose(vol.header.get_zooms()[:2], (1.1, 0.9))               # spacing carried to the export
    manifest = json.loads((tmp_path / "Week 3" / "manifest.json").read_text())
    assert manifest["format"] == curation.MANIFEST_FORMAT and manifest["cases"] == [entry]
    for key in ["id", "settings", "seed", "model_version", "date", "note", "files"]:
        assert key in entry, key
    assert entry["seed"] == 3 and entry["settings"]["k"] == 500 and entry["shape"] == [48, 40]
    assert sorted(p.name for p in (tmp_path / "Week 3").iterdir()) == [".lock", "case-1", "manifest.json"]
    meta, arrays = curation.read_case("Week 3", "case-1", tmp_path)
    assert arrays["image"].shape == (1, R, R) and np.array_equal(arrays["mask"], make_case().mask)


def test_an_existing_case_is_never_overwritten(tmp_path):
    curation.save_case("set", make_case(), tmp_path)
    before = (tmp_path / "set" / "case-1" / "counterfactual.png").read_bytes()
    other = make_case()
    other.counterfactual = other.counterfactual * 0 + 0.5
    with pytest.raises(curation.CaseExistsError, match="already holds"):
        curation.save_case("set", other, tmp_path)
    assert (tmp_path / "set" / "case-1" / "counterfactual.png").read_bytes() == before
    assert len(curation.load_manifest("set", tmp_path)["cases"]) == 1
    assert not [p for p in (tmp_path / "set").iterdir() if p.name.startswith(".tmp")]
    assert curation.unique_case_id("set", "case-1", tmp_path) == "case-1-2"


def test_an_educators_own_folder_of_that_name_is_left_alone(tmp_path):
    (tmp_path / "set" / "case-1").mkdir(parents=True)
    (tmp_path / "set" / "case-1" / "my_notes.txt").write_text("mine")
    with pytest.raises(curation.CaseExistsError):
        curation.save_case("set", make_case(), tmp_path)
    assert (tmp_path / "set" / "case-1" / "my_notes.txt").read_text() == "mine"


def test_concurrent_saves_to_one_set_keep_a_valid_manifest_with_both(tmp_path):
    errors = []
    barrier = threading.Barrier(4)

    def save(i):
        try:
            barrier.wait()
            curation.save_case("shared", make_case(f"case-{i}"), tmp_path)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    manifest = json.loads((tmp_path / "shared" / "manifest.json").read_text())
    assert sorted(e["id"] for e in manifest["cases"]) == [f"case-{i}" for i in range(4)]
    for i in range(4):
        assert (tmp_path / "shared" / f"case-{i}" / "model_grid.npz").is_file()


def test_two_threads_saving_the_same_id_one_wins_one_is_refused(tmp_path):
    results = []
    barrier = threading.Barrier(2)

    def save():
        barrier.wait()
        try:
            curation.save_case("race", make_case("same"), tmp_path)
            results.append("saved")
        except curation.CaseExistsError:
            results.append("refused")

    threads = [threading.Thread(target=save) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused", "saved"]
    assert len(curation.load_manifest("race", tmp_path)["cases"]) == 1


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", ".hidden", "", "   ", "x" * 65, "a\\b", "naïve",
                                 "semi;colon"])
def test_names_that_could_escape_or_confuse_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        curation.sanitize_name(bad)
    with pytest.raises(ValueError):
        curation.save_case(bad, make_case(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_good_names_pass_and_are_stripped():
    assert curation.sanitize_name("  Gliomas week_3-b ") == "Gliomas week_3-b"
    assert curation.slug("../weird name.png") == "weird-name-png"


def test_a_crash_mid_save_leaves_the_existing_set_intact(tmp_path, monkeypatch):
    curation.save_case("set", make_case("first"), tmp_path)
    manifest_before = (tmp_path / "set" / "manifest.json").read_bytes()
    files_before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*"))

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(curation, "_write_manifest", boom)             # crash after the case folder is in place
    with pytest.raises(OSError, match="simulated"):
        curation.save_case("set", make_case("second"), tmp_path)
    assert (tmp_path / "set" / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*")) == files_before

    monkeypatch.undo()
    monkeypatch.setattr(curation, "_nifti", boom)                      # crash while the files are written
    with pytest.raises(OSError, match="simulated"):
        curation.save_case("set", make_case("third"), tmp_path)
    assert (tmp_path / "set" / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*")) == files_before
    assert [e["id"] for e in curation.load_manifest("set", tmp_path)["cases"]] == ["first"]


def test_a_damaged_manifest_is_reported_not_overwritten(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        curation.save_case("set", make_case(), tmp_path)
    assert (tmp_path / "set" / "manifest.json").read_text() == "{not json"


def test_zip_holds_the_manifest_and_every_case_file(tmp_path):
    curation.save_case("Zip me", make_case("a"), tmp_path)
    curation.save_case("Zip me", make_case("b", with_truth=False, geometry=False), tmp_path)
    archive = curation.zip_set("Zip me", tmp_path, tmp_path / "out")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert "Zip me/manifest.json" in names
        for cid in "ab":
            for role in FILES:
                assert f"Zip me/{cid}/{role}.png" in names and f"Zip me/{cid}/{role}.nii.gz" in names
        manifest = json.loads(z.read("Zip me/manifest.json"))
        assert [e["has_ground_truth"] for e in manifest["cases"]] == [True, False]
        assert not [n for n in names if "/." in n]
        assert len(json.loads(z.read("Zip me/manifest.json"))["cases"]) == 2
    assert curation.list_sets(tmp_path) == ["Zip me"]


def test_nifti_exports_load_back_in_the_orientation_of_the_pngs(tmp_path):
    from diffuse_core.io.image import load_image

    case = make_case(geometry=False)
    case.image[0, 2:6, 20:28] = 0.7          # an asymmetric mark: top right
    curation.save_case("orient", case, tmp_path)
    folder = tmp_path / "orient" / "case-1"
    loaded = load_image(folder / "original.nii.gz").data[0]
    png = np.asarray(Image.open(folder / "original.png"), np.float32) / 127.5 - 1
    assert np.allclose(loaded, case.image[0], atol=1e-6)
    assert np.allclose(png, case.image[0], atol=1 / 127.5)
    assert np.allclose(load_image(folder / "original.nii.gz").spacing, (0.9, 1.1))


def test_a_curated_set_is_also_a_valid_teaching_set(tmp_path):
    teaching = pytest.importorskip("diffuse_core.data.teaching")
    curation.save_case("curated_set", make_case("c1"), tmp_path)
    cases = teaching.list_cases("curated_set", tmp_path)
    assert [c.id for c in cases] == ["c1"]
    assert cases[0].image.shape == (1, 48, 40) and cases[0].mask.shape == (48, 40) and cases[0].mask.any()


def test_upload_size_limit(tmp_path):
    f = tmp_path / "big.bin"
    f.write_bytes(b"0" * 2048)
    assert curation.check_upload_size(f, 4096) == 2048
    with pytest.raises(ValueError, match="upload limit"):
        curation.check_upload_size(f, 1024)


def test_review_decisions():
    items = [curation.ReviewItem(key="k1", label="a"), curation.ReviewItem(key="k2", label="b")]
    items[0].decide("accepted")
    items[1].decide("rejected")
    assert curation.review_counts(items) == {"pending": 0, "accepted": 1, "rejected": 1}
    with pytest.raises(ValueError):
        items[0].decide("maybe")
