"""Curated teaching sets: atomic saves, concurrent savers, name sanitisation, crash safety, zip archives; their own
data folder (never the shipped teaching sets); recovery after killed saves."""

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from diffuse_core.data import curated_case, curation, teaching
from diffuse_core.io.preprocess import Geometry

R = 32
FILES = ["original", "counterfactual", "anomaly", "mask", "ground_truth"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """No test writes into the user's data folder or the system temp folder: both point into pytest's tmp."""
    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path_factory.mktemp("data") / "diffuse"))
    monkeypatch.delenv("DIFFUSE_CURATED_ROOT", raising=False)
    monkeypatch.delenv("DIFFUSE_TEACHING_ROOT", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("systmp")))


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

    monkeypatch.setattr(curation, "write_manifest", boom)              # crash after the case folder is in place
    with pytest.raises(OSError, match="simulated"):
        curation.save_case("set", make_case("second"), tmp_path)
    assert (tmp_path / "set" / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "set").rglob("*")) == files_before

    monkeypatch.undo()
    monkeypatch.setattr(curated_case, "write_nifti", boom)             # crash while the files are written
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


# ---------------------------------------------------------------------------------------------------------------
# where curated sets live: a data folder of their own, never the shipped teaching sets


def _tree(root: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every entry under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_the_curated_root_is_a_data_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path / "data"))
    assert curation.default_root() == tmp_path / "data" / "curated"
    monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(tmp_path / "teach"))          # no longer a fallback
    assert curation.default_root() == tmp_path / "data" / "curated"
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(tmp_path / "exact"))
    assert curation.default_root() == tmp_path / "exact"
    monkeypatch.delenv("DIFFUSE_CURATED_ROOT")
    monkeypatch.delenv("DIFFUSE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert curation.default_root() == tmp_path / "xdg" / "diffuse-studio" / "curated"
    space = tmp_path / "space_data"
    space.mkdir()
    monkeypatch.setattr(curation, "SPACE_STORAGE", space)
    assert curation.default_root() == tmp_path / "xdg" / "diffuse-studio" / "curated"   # not on a Space
    monkeypatch.setenv("SPACE_ID", "someone/diffuse-studio")
    assert curation.default_root() == space / "diffuse-studio" / "curated"             # persistent storage
    monkeypatch.delenv("XDG_DATA_HOME")
    shutil.rmtree(space)                                                              # a Space without it
    home_default = curation.default_root()
    assert home_default == Path.home() / ".local" / "share" / "diffuse-studio" / "curated"
    assert not home_default.resolve().is_relative_to(teaching.PACKAGE_ROOT.parent)    # outside the package tree


@pytest.mark.parametrize("name", ["default", "DEFAULT", " Default "])
def test_a_set_named_like_a_shipped_set_is_refused_and_the_shipped_set_is_untouched(tmp_path, name):
    shipped = teaching.PACKAGE_ROOT
    assert "default" in teaching.list_sets()
    before = _tree(shipped)
    for root in (tmp_path / "curated", None):                      # an explicit root, and the app's default one
        with pytest.raises(ValueError, match="shipped teaching set") as err:
            curation.save_case(name, make_case(), root)
        assert "\n" not in str(err.value)
    assert _tree(shipped) == before
    assert curation.list_sets(tmp_path / "curated") == [] and curation.list_sets() == []


def test_nothing_is_ever_saved_inside_the_teaching_sets(tmp_path, monkeypatch):
    shipped = teaching.PACKAGE_ROOT
    before = _tree(shipped)
    for root in (shipped, shipped / "curated", shipped / "default"):
        with pytest.raises(ValueError, match="read-only"):
            curation.save_case("Week 1", make_case(), root)
        with pytest.raises(ValueError, match="read-only"):
            curation.recover(root)
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(shipped))       # an old configuration pointing at them
    with pytest.raises(ValueError, match=r"DIFFUSE_DATA_DIR"):
        curation.save_case("Week 1", make_case())
    assert _tree(shipped) == before
    # a teaching root inside the curated root: a set of that folder's name is refused too
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(tmp_path))
    monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(tmp_path / "teach"))
    (tmp_path / "teach").mkdir()
    with pytest.raises(ValueError, match="overlap"):
        curation.save_case("teach", make_case())
    assert list((tmp_path / "teach").iterdir()) == []


def test_older_curated_sets_among_the_teaching_sets_are_listed_read_only(tmp_path, monkeypatch):
    from diffuse_core.studio import library

    teach = tmp_path / "teach"
    shutil.copytree(teaching.PACKAGE_ROOT / "default", teach / "default")
    curation.save_case("Week 1", make_case("c1"), teach)            # what an older version did
    monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(teach))
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(tmp_path / "curated"))
    curation.save_case("Week 2", make_case("c2"))
    before = _tree(teach)
    with pytest.raises(ValueError, match="older curated set"):
        curation.save_case("week 1", make_case("c3"))
    keys = [e.key for e in library.list_library()]
    assert "curated/Week 2/c2" in keys and "legacy/Week 1/c1" in keys
    assert sum(k.startswith("teaching/default/") for k in keys) == len(teaching.list_cases("default"))
    assert not [k for k in keys if k.startswith("teaching/Week")]
    assert _tree(teach) == before                                   # listing them wrote nothing


# ---------------------------------------------------------------------------------------------------------------
# recovery: debris of killed saves goes, complete sets stay as they are


def _set_state(set_dir: Path) -> dict:
    """Bytes of the manifest and of every file of every listed case."""
    manifest = json.loads((set_dir / "manifest.json").read_text())
    state = {"manifest.json": (set_dir / "manifest.json").read_bytes()}
    for e in manifest["cases"]:
        for f in sorted((set_dir / e["id"]).iterdir()):
            state[f"{e['id']}/{f.name}"] = f.read_bytes()
    return state


def test_recover_removes_debris_of_killed_saves_and_nothing_else(tmp_path):
    for cid in ("a", "b"):
        curation.save_case("set", make_case(cid), tmp_path)
    curation.save_case("damaged", make_case("x"), tmp_path)
    d = tmp_path / "set"
    complete = _set_state(d)
    # the debris a kill -9 can leave
    dead = d / ".tmp-c-dead1"
    dead.mkdir()
    (dead / "original.png").write_bytes(b"half")
    (d / ".tmp-c-dead1.lock").touch()                               # its saver died: nobody holds the lock
    (d / ".tmp-c-old2").mkdir()                                     # an older version's scratch, no lock file
    (d / ".tmp-c-gone3.lock").touch()                               # killed before its folder was made
    (d / ".manifest-abc.tmp").write_text("{")
    shutil.copytree(d / "a", d / "orphan")                          # renamed into place, not in the manifest
    # what must stay: a live saver's scratch folder, an educator's own folder and file, a damaged set
    live = d / ".tmp-c-live4"
    live.mkdir()
    fd = os.open(d / ".tmp-c-live4.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (d / "my notes").mkdir()
    (d / "my notes" / "notes.txt").write_text("mine")
    (d / "half").mkdir()
    (d / "half" / "preview.png").write_bytes(b"not all files: not certainly ours")
    (d / "README.txt").write_text("mine")
    (tmp_path / "damaged" / "manifest.json").write_text("{broken")
    shutil.copytree(d / "a", tmp_path / "damaged" / "unlisted")
    (tmp_path / "not a set" / ".tmp-cache").mkdir(parents=True)     # a folder no save wrote into (no .lock)
    try:
        report = curation.recover(tmp_path)
        assert sorted(p.name for p in report.removed) == sorted(
            [".tmp-c-dead1", ".tmp-c-dead1.lock", ".tmp-c-old2", ".tmp-c-gone3.lock", ".manifest-abc.tmp", "orphan"])
        assert sorted(p.name for p in report.kept) == ["damaged", "half", "my notes"]
        assert live.is_dir() and (d / ".tmp-c-live4.lock").is_file()
    finally:
        os.close(fd)
    assert _set_state(d) == complete
    assert (d / "my notes" / "notes.txt").read_text() == "mine" and (d / "README.txt").is_file()
    assert (tmp_path / "damaged" / "unlisted").is_dir() and (tmp_path / "not a set" / ".tmp-cache").is_dir()
    assert sorted(p.name for p in curation.recover(tmp_path).removed) == [".tmp-c-live4", ".tmp-c-live4.lock"]
    assert curation.recover(tmp_path).removed == []                 # nothing left to do
    assert _set_state(d) == complete


def test_opening_a_root_recovers_it_once(tmp_path):
    curation.save_case("set", make_case("a"), tmp_path / "root")
    (tmp_path / "root" / "set" / ".manifest-x.tmp").write_text("{")
    fresh = tmp_path / "root" / "."                                 # another spelling: resolved to the same root
    curation._OPENED.discard(fresh.resolve())                       # as in a new process
    assert curation.open_root(fresh) == fresh
    assert not (tmp_path / "root" / "set" / ".manifest-x.tmp").exists()


SAVER = textwrap.dedent('''
    """Saves cases in a loop until killed; prints "saved <set> <id>" after each save returns."""
    import json, sys, tempfile, time
    import numpy as np
    from diffuse_core.data import curation, set_folder

    class SlowJson:                     # widen the windows a kill can hit: the manifest's temporary file ...
        def __getattr__(self, name):
            return getattr(json, name)

        def dump(self, *args, **kwargs):
            time.sleep(0.02)
            return json.dump(*args, **kwargs)

    set_folder.json = SlowJson()
    write_manifest = curation.write_manifest

    def slow_write_manifest(set_dir, manifest):   # ... and a case folder in place, not yet in the manifest
        time.sleep(0.03)
        write_manifest(set_dir, manifest)

    curation.write_manifest = slow_write_manifest
    root, run = sys.argv[1], sys.argv[2]
    yy, xx = np.mgrid[:32, :32]
    image = np.where(np.hypot(yy - 16, xx - 16) < 14, 0.1, -1.0).astype(np.float32)[None]
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 1


    def save(name, cid, where):
        curation.save_case(name, curation.CuratedCase(cid, image, image * 0.5, np.abs(image[0]), mask,
                                                      {"k": 500}, ground_truth=mask), where)

    with tempfile.TemporaryDirectory() as warm:   # the first save imports the image writers: not in the loop
        save("warm-up", "c", warm)
    print("ready", flush=True)
    i = 0
    while True:
        name, cid = f"set {i % 3}", f"r{run}-c{i}"
        save(name, cid, root)
        print("saved", name.replace(" ", "_"), cid, flush=True)
        i += 1
''')


def _debris(root: Path) -> list[Path]:
    """Temporary entries and case folders no manifest lists."""
    out = []
    for d in (p for p in root.iterdir() if p.is_dir()):
        manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else {"cases": []}
        listed = {e["id"] for e in manifest["cases"]}
        out += [p for p in d.iterdir() if p.name.startswith((".tmp-", ".manifest-"))
                or (p.is_dir() and p.name not in listed)]
    return out


@pytest.mark.slow
def test_saves_killed_at_random_moments_leave_only_complete_sets_after_the_next_start(tmp_path):
    root = tmp_path / "curated"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = random.Random(16)
    reported, debris_seen = set(), 0
    for run in range(10):
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(run)], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).resolve().parents[1])
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        lines = proc.stdout.read().splitlines()
        proc.stdout.close()
        reported |= {(s.replace("_", " "), cid) for _, s, cid in (ln.split() for ln in lines if ln.startswith("saved"))}
        debris_seen += bool(_debris(root))                          # (the next saver's start cleans it)
    assert reported and debris_seen > 0                             # the kills did land mid-save
    curation._OPENED.discard(root.resolve())
    curation.open_root(root)                                        # the next start
    assert _debris(root) == []
    listed = set()
    for name in curation.list_sets(root):
        d = root / name
        assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == [".lock"]
        manifest = curation.load_manifest(name, root)
        for e in manifest["cases"]:
            listed.add((name, e["id"]))
            for rel in e["files"].values():
                assert (d / rel).is_file(), rel
            _, arrays = curation.read_case(name, e["id"], root)
            assert arrays["image"].shape == (1, 32, 32)
            assert nib.load(d / e["files"]["counterfactual_nifti"]).get_fdata().shape[:2] == (32, 32)
            Image.open(d / e["files"]["preview"]).load()
    assert reported <= listed                                       # no reported save was lost
    assert len(listed - reported) <= 10                             # at most one unreported save per kill


# ---------------------------------------------------------------------------------------------------------------
# archives made for a download do not pile up in the temp folder


def test_zips_for_downloads_are_removed_after_a_while_not_left_behind(tmp_path, monkeypatch):
    curation.save_case("Zip me", make_case("a"), tmp_path)
    system_tmp = Path(tempfile.gettempdir())
    old = system_tmp / "diffuse-set-k2j4x9ab"                       # what older versions left per download
    old.mkdir()
    (old / "Week_1.zip").write_bytes(b"PK")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    other = system_tmp / "diffuse-set-notes"                        # not an archive folder: not ours to remove
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert curation.prune_downloads() == [old] and not old.exists() and other.is_dir()
    shutil.rmtree(other)
    archives = [curation.zip_set("Zip me", tmp_path) for _ in range(3)]
    assert all(zipfile.ZipFile(a).testzip() is None for a in archives)
    assert {a.name for a in archives} == {"Zip_me.zip"} and len({a.parent for a in archives}) == 3
    assert [p.name for p in system_tmp.iterdir()] == [curation.downloads_dir().name]   # one folder in all
    assert all(a.is_relative_to(curation.downloads_dir()) for a in archives)
    assert curation.prune_downloads() == []                         # young archives stay (the app copies them)
    monkeypatch.setattr(curation, "DOWNLOAD_TTL_S", 0)
    assert curation.prune_downloads(0) and list(curation.downloads_dir().iterdir()) == []
    last = curation.zip_set("Zip me", tmp_path)                     # every new zip prunes the old ones
    assert last.is_file() and list(curation.downloads_dir().iterdir()) == [last.parent]
    curation._remove_made_downloads()                               # and the process's own go at exit
    assert not last.exists() and not curation.downloads_dir().exists()
