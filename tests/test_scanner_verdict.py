"""diffuse-studio calibrate-verdict: the slice verdict's threshold chosen on a user's own scans (issue 36, item 1)."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from diffuse_core.cli import main
from diffuse_core.core.verdict import verdict_of, withheld_because
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.evaluation.scanner_verdict import RECORD_FILE, calibrate_on_scans, spaced
from diffuse_core.models.checkpoint import read_config
from tiny_app import tiny_flair_ddpm


def _png(img, path):
    Image.fromarray(np.where(img > -1, 30 + 110 * (img + 1), 0).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three "cases" of four slices each, three normal and one with a lesion, listed in index.csv."""
    d = tmp_path_factory.mktemp("scans")
    rows = ["image,healthy,case"]
    for c in range(3):
        for j in range(4):
            i = 4 * c + j
            healthy = j < 3
            s = generate_slice(sample_seed("val", 0, i), ("flair",), 128, healthy=healthy,
                               lesion_type=None if healthy else "glioma")
            _png(s.image[0], d / f"s{i:02d}.png")
            rows.append(f"s{i:02d}.png,{int(healthy)},case{c}")
    (d / "index.csv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return tiny_flair_ddpm(tmp_path_factory.mktemp("base"),
                           verdict={"percentile": 99.5, "threshold": 0.01, "false_abnormal_rate": 0.05})


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_spaced_keeps_ends_and_spreads_evenly():
    assert spaced(np.arange(3), 8).tolist() == [0, 1, 2]
    picked = spaced(np.arange(100, 200), 5).tolist()
    assert picked[0] == 100 and picked[-1] == 199 and len(picked) == 5
    assert np.diff(picked).max() - np.diff(picked).min() <= 1


@pytest.mark.slow
def test_the_threshold_comes_from_the_other_cases_and_is_measured_on_the_held_out_one(scans, base_model, tmp_path):
    before = _digest(base_model)
    out = tmp_path / "mine"
    rec = calibrate_on_scans(scans, out, base_model, holdout=0.34, per_group=8)
    assert _digest(base_model) == before                                  # the base model is never changed
    peaks = rec["peaks"]
    assert len(peaks) == 12 and len(rec["held_out"]["groups"]) == 1
    held = rec["held_out"]["groups"][0]
    chosen = [p["peak"] for p in peaks if p["group"] != held and not p["lesion"]]
    assert rec["chosen_on"]["normal_slices"] == len(chosen) == 6
    assert rec["threshold"] == pytest.approx(np.quantile(chosen, 0.95), abs=1e-3)
    normal_held = [p["peak"] for p in peaks if p["group"] == held and not p["lesion"]]
    lesion_held = [p["peak"] for p in peaks if p["group"] == held and p["lesion"]]
    assert rec["false_abnormal_rate_held_out"] == pytest.approx(np.mean(np.array(normal_held) > rec["threshold"]))
    assert rec["sensitivity"] == pytest.approx(np.mean(np.array(lesion_held) > rec["threshold"]))
    assert rec["sensitivity_measured_on"]["n"] == 1 and "held-out" in rec["sensitivity_measured_on"]["source"]
    assert rec["base_false_abnormal_rate_held_out"] == pytest.approx(np.mean(np.array(normal_held) > 0.01))
    card = read_config(out, "ddpm")["card"]
    assert card["verdict"]["threshold"] == pytest.approx(rec["threshold"])
    assert card["verdict"]["chosen_on"] == "6 normal slices of your scans"
    assert card["calibration"]["verdict"]["sensitivity_on_validation"] == rec["sensitivity"]
    assert card["written_by"]["verdict"]["command"].startswith("diffuse-studio calibrate-verdict")
    assert json.loads((out / RECORD_FILE).read_text())["threshold"] == rec["threshold"]
    assert card["anomaly_threshold"] == 0.15 and card["mask_rule"]["kind"] == "weighted"   # the rest of the card kept
    assert (withheld_because(card) is None) == rec["verdict_used"]
    if rec["verdict_used"]:
        amap = np.zeros((128, 128), np.float32)
        v = verdict_of(amap, np.ones((128, 128), np.uint8), card)
        assert v.label == "normal" and "of 6 normal slices of your scans stay under" in v.sentence()
    with pytest.raises(ValueError, match="already holds a model"):               # an educator's model is kept
        calibrate_on_scans(scans, out, base_model)


def test_the_cli_says_what_is_wrong_in_one_line(scans, base_model, tmp_path, capsys):
    assert main(["calibrate-verdict", "--data", str(scans), "--out", str(base_model), "--model",
                 str(base_model)]) == 2
    assert "base model's folder" in capsys.readouterr().err
    assert main(["calibrate-verdict", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                 "--model", str(base_model)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["calibrate-verdict", "--data", str(scans), "--out", str(tmp_path / "o"), "--model",
                 str(base_model), "--false-abnormal", "0.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--false-abnormal must lie between 0 and 0.5" in err and len(err.splitlines()) == 1
    assert main(["calibrate-verdict", "--data", str(scans), "--out", str(tmp_path / "o"), "--model",
                 str(base_model), "--holdout", "0.95"]) == 2
    assert "normal slices outside the held-out groups" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_verdict_calibrated_on_an_adapted_model_keeps_its_classifier(scans, tmp_path):
    """The threshold is chosen with the adapted model's own ACAT pair (saliency/), so the new folder carries it."""
    import shutil

    from diffuse_core.run.models import saliency_model_dirs

    base = tiny_flair_ddpm(tmp_path / "adapted", verdict={"percentile": 99.5, "threshold": 0.01,
                                                          "false_abnormal_rate": 0.05})
    for part, folder in zip(("autoencoder", "classifier"), saliency_model_dirs()):
        shutil.copytree(folder, base / "saliency" / part, ignore=shutil.ignore_patterns("checkpoint.pt", "log.csv"))
    out = tmp_path / "mine"
    calibrate_on_scans(scans, out, base, holdout=0.34, per_group=8)
    assert saliency_model_dirs(None, None, out) == (out / "saliency" / "autoencoder", out / "saliency" / "classifier")
    assert _digest(out / "saliency" / "classifier") == _digest(base / "saliency" / "classifier")
