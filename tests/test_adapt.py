"""diffuse-studio adapt: fine-tune the healthy model on a user's normal slices (issue 31, item 5)."""

import json

import numpy as np
import pytest
from PIL import Image

from diffuse_core.cli import main
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.evaluation.adapt import AdaptCancelled, adapt, split_groups
from tiny_app import tiny_flair_ddpm


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
    assert card["written_by"]["adaptation"]["command"] == rec["command"]          # the command that measured it
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
