"""diffuse-studio adapt: fine-tune the healthy model on a user's normal slices (issue 31, item 5)."""

import json

import numpy as np
import pytest
from PIL import Image

from diffuse_core.cli import main
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.evaluation.adapt import AdaptCancelled, adapt, held_out_lesions, split_groups
from diffuse_core.evaluation.scans_sentences import render_adapt_on_scans
from tiny_app import tiny_flair_ddpm


@pytest.fixture(autouse=True)
def small_classifier_stage(monkeypatch):
    """The classifier stage as adapt runs it, on a few steps and SynthBrain slices (its recipe is measured in
    docs/research/2026-12-08-adapt-learning-rate.md, not here)."""
    from diffuse_core.train.saliency import ADAPT_CLF

    monkeypatch.setitem(ADAPT_CLF, "steps", 3)
    monkeypatch.setitem(ADAPT_CLF, "synthbrain", 16)


@pytest.fixture(scope="module")
def normal_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("normal")
    for i in range(12):
        img = generate_slice(sample_seed("val", 0, i), ("flair",), 128, healthy=True).image[0]
        Image.fromarray(np.where(img > -1, 30 + 110 * (img + 1), 0).astype(np.uint8)).save(d / f"n{i:02d}.png")
    return d


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return tiny_flair_ddpm(tmp_path_factory.mktemp("base"))


def test_whole_groups_are_held_out():
    g = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"])
    held, names = split_groups(g, 0.2, seed=1)
    assert len(names) == 1 and set(g[held]) == set(names) and not set(g[~held]) & set(names)
    held, names = split_groups(np.array(["one"] * 10))
    assert names == [] and held.sum() == 2


def test_cases_held_out_by_name():
    g = np.array(["brats_2013_pat0001_1", "brats_2013_pat0002_1", "brats_2013_pat0003_1"] * 2)
    held, names = split_groups(g, named=["pat0002", "pat0003"])
    assert names == ["brats_2013_pat0002_1", "brats_2013_pat0003_1"] and held.tolist() == [False, True, True] * 2
    with pytest.raises(ValueError, match="no case named pat0009"):
        split_groups(g, named=["pat0009"])
    with pytest.raises(ValueError, match="every case"):
        split_groups(g, named=["pat000"])


def test_the_lesion_check_takes_labelled_lesion_slices_of_held_out_cases_only():
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[1, :8, :8] = 1                      # held-out case a, a lesion of 6 % of the slice: measured
    masks[2, :2, :2] = 1                      # held-out case a, 0.4 %: too small to measure a Dice on
    masks[4, :8, :8] = 1                      # case b, trained on: never measured
    data = {"images": np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1), "masks": masks,
            "labels": np.array([0, 1, 1, 0, 1, 0]), "groups": np.array(["a", "a", "a", "b", "b", "b"])}
    images, chosen = held_out_lesions(data, ["a"], 5, np.random.default_rng(0))
    assert images[:, 0, 0, 0].tolist() == [1.0] and chosen.shape == (1, 32, 32)
    assert held_out_lesions(data, ["b"], 5, np.random.default_rng(0))[0][:, 0, 0, 0].tolist() == [4.0]
    assert held_out_lesions(data, [], 5, np.random.default_rng(0)) == (None, None)
    assert held_out_lesions({**data, "labels": np.zeros(6, int)}, ["a"], 5, np.random.default_rng(0)) == (None, None)


@pytest.mark.slow
def test_adapt_writes_a_model_with_its_card_and_the_app_settings_of_its_base(normal_folder, base_model, tmp_path):
    stages = []
    rec = adapt(normal_folder, tmp_path / "adapted", base_model, minutes=0.05, holdout=0.25, n_measure=2,
                batch_size=4, on_progress=lambda stage, f: stages.append((stage, f)))
    out = tmp_path / "adapted"
    card = json.loads((out / "model_card.json").read_text())
    assert (out / "model.safetensors").is_file() and not (out / ".partial").exists()
    assert card["adaptation"] == rec and rec["steps"] >= 1 and rec["trained_on"] == 9 and rec["held_out"] == 3
    assert len(rec["held_out_groups"]) == 3 and rec["measured_on"] == 2
    for key in ("before", "after"):
        assert 0.0 <= rec[f"false_flags_{key}"]["mean"] <= rec[f"false_flags_{key}"]["max"] <= 1.0
    assert card["input_normalisation"] == "tissue" and card["score"] == "signed"        # the base's settings
    assert card["anomaly_threshold"] == 0.15
    from diffuse_core.run.level_check import trained_levels

    base_card = json.loads((base_model / "model_card.json").read_text())
    assert card["data"]["source"] == "folder" and trained_levels(card) == trained_levels(base_card) is not None
    assert card["written_by"]["adaptation"]["command"] == rec["command"]          # the command that measured it
    assert rec["classifier"]["steps"] == 3 and rec["classifier"]["per_slice"] == 4
    for part in ("autoencoder", "classifier"):                  # the adapted ACAT pair travels with the model
        assert (out / "saliency" / part / "model.safetensors").is_file()
        assert not (out / "saliency" / part / "checkpoint.pt").exists()
    from diffuse_core.run.models import saliency_model_dirs

    assert saliency_model_dirs(None, None, out) == (out / "saliency" / "autoencoder", out / "saliency" / "classifier")
    clf_card = json.loads((out / "saliency" / "classifier" / "model_card.json").read_text())
    assert clf_card["training"]["steps_done"] == 1500 + 3 and "pasted in" in clf_card["data"]["source"]
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and stages[-1] == ("done", 1.0)
    assert any(s == "fine-tuning" for s, _ in stages)


@pytest.mark.slow
def test_stop_leaves_no_finished_model(normal_folder, base_model, tmp_path):
    def stop_in_training(stage, fraction):
        return stage == "fine-tuning"

    with pytest.raises(AdaptCancelled, match="stopped"):
        adapt(normal_folder, tmp_path / "stopped", base_model, minutes=1, n_measure=1, batch_size=4,
              on_progress=stop_in_training)
    assert not (tmp_path / "stopped" / "model.safetensors").exists()


def test_the_cli_refuses_to_overwrite_a_model_in_one_line(normal_folder, base_model, capsys):
    assert main(["adapt", "--data", str(normal_folder), "--out", str(base_model), "--model", str(base_model),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "base model's folder" in err


@pytest.mark.slow
def test_the_cli_checks_held_out_lesions_and_takes_a_learning_rate(tmp_path, capsys):
    """A set with labelled lesions (index.csv with masks): the adapted model's card and the CLI's last line carry the
    held-out lesion Dice before and after, and ``--lr`` reaches the fine-tune and its recorded command."""
    d = tmp_path / "set"
    d.mkdir()
    rows = ["image,healthy,mask,case"]
    for i in range(12):
        s = generate_slice(sample_seed("val", 0, i), ("flair",), 128, healthy=i % 3 != 0)
        grey = np.where(s.image[0] > -1, 30 + 110 * (s.image[0] + 1), 0).astype(np.uint8)
        Image.fromarray(grey).save(d / f"s{i}.png")
        mask = ""
        if i % 3 == 0:                                  # the lesion's mask, at least 16 x 16 (>= 1 % of the slice)
            m = s.lesion_mask > 0
            m[56:72, 56:72] = True
            Image.fromarray(m.astype(np.uint8) * 255).save(d / f"m{i}.png")
            mask = f"m{i}.png"
        rows.append(f"s{i}.png,{int(i % 3 != 0)},{mask},case{i % 4}")
    (d / "index.csv").write_text("\n".join(rows) + "\n")
    verdict = {"percentile": 99.5, "threshold": 0.2, "false_abnormal_rate": 0.05}
    base = tiny_flair_ddpm(tmp_path / "base", verdict=verdict)
    record = tmp_path / "docs" / "results" / "adapt_on_scans.json"
    assert main(["adapt", "--data", str(d), "--out", str(tmp_path / "a"), "--model", str(base), "--minutes",
                 "0.05", "--holdout", "0.25", "--measure", "2", "--batch-size", "4", "--lr", "1e-4",
                 "--record", str(record), "--device", "cpu"]) == 0
    rec = json.loads((tmp_path / "a" / "adaptation.json").read_text())
    line = render_adapt_on_scans(tmp_path)                 # the docs' sentence, from the record --record wrote
    assert json.loads(record.read_text())["steps"] == rec["steps"] and "Made by `" in line
    assert f"{rec['steps']} DDPM steps (batch 4, peak rate 0.0001)" in line and "tumour Dice on 1 of" in line
    assert rec["lr"] == 1e-4 and rec["command"].endswith("--lr 0.0001") and rec["trained_on"] == 6
    assert rec["lesion_dice_before"]["n"] == rec["lesion_dice_after"]["n"] == 1
    assert 0.0 <= rec["lesion_dice_after"]["mean"] <= 1.0
    calls = rec["normal_called_abnormal_after"]                           # the base's card holds a verdict
    assert calls["measured"] == 2 and 0 <= calls["abnormal"] <= calls["called"] <= 2
    line = capsys.readouterr().out
    assert "lesion Dice on 1 held-out lesion slices" in line and f"-> {calls['abnormal']} of" in line


def test_a_model_folder_with_its_own_acat_pair_brings_it_everywhere(tmp_path, monkeypatch):
    """run --model, volume runs, the app's runs and its mask preview take an adapted folder's saliency/ pair; a
    folder without one (the installed model) keeps the installed pair; DIFFUSE_SALIENCY_DIR still wins."""
    from diffuse_core.run.models import saliency_model_dirs
    from diffuse_core.studio.model_store import MODELS

    installed = saliency_model_dirs()
    model = tmp_path / "adapted"
    assert saliency_model_dirs(None, None, model) == installed
    for part in ("autoencoder", "classifier"):
        (model / "saliency" / part).mkdir(parents=True)
        (model / "saliency" / part / "config.json").write_text("{}")
    assert saliency_model_dirs(None, None, model) == installed             # weights missing: not a pair
    for part in ("autoencoder", "classifier"):
        (model / "saliency" / part / "model.safetensors").write_bytes(b"")
    beside = (model / "saliency" / "autoencoder", model / "saliency" / "classifier")
    assert saliency_model_dirs(None, None, model) == beside
    assert MODELS.saliency_dirs(None, model) == beside and MODELS.saliency_dirs(None) == installed
    monkeypatch.setenv("DIFFUSE_SALIENCY_DIR", str(tmp_path / "mine"))
    assert MODELS.saliency_dirs(None, model) == (tmp_path / "mine" / "autoencoder", tmp_path / "mine" / "classifier")


def test_the_cli_names_a_missing_held_out_case_in_one_line(normal_folder, base_model, tmp_path, capsys):
    assert main(["adapt", "--data", str(normal_folder), "--out", str(tmp_path / "a"), "--model", str(base_model),
                 "--holdout-cases", "n03,nope", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()                 # the progress bar had started: the error is its own line
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and "no case named nope" in errors[0]
    assert not (tmp_path / "a").exists()
