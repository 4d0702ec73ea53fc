"""Model cards are data written by code: one schema, one copy per model, every field written by a registered command
(diffuse_core/models/card.py), older cards migrated on read without losing anything."""

import importlib
import inspect
import json
from collections import Counter
from pathlib import Path

import pytest

from diffuse_core.models import card as cards
from diffuse_core.models.checkpoint import (CARD_NAME, load_autoencoder, migrate_folder, read_config, save,
                                            steps_done, update_card)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.parent for p in (ROOT / "assets").rglob("config.json"))


def _leaves(node) -> Counter:
    """Every scalar in a JSON tree (dict keys dropped), counted: what a card records, whatever its layout."""
    if isinstance(node, dict):
        return sum((_leaves(v) for v in node.values()), Counter())
    if isinstance(node, list):
        return sum((_leaves(v) for v in node), Counter())
    return Counter([json.dumps(node)])


def test_the_shipped_models_are_seven():
    assert [p.relative_to(ROOT).as_posix() for p in SHIPPED] == [
        "assets/autoencoder", "assets/classifier", "assets/ct/autoencoder", "assets/ct/classifier", "assets/ct/ddpm",
        "assets/ddpm", "assets/level"]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_card_holds_only_fields_a_command_writes(folder):
    raw = json.loads((folder / CARD_NAME).read_text())
    assert "card" not in json.loads((folder / "config.json").read_text()), "one copy of the card: model_card.json"
    assert raw.get("schema") == cards.SCHEMA, "an older card: run diffuse_core.models.checkpoint.migrate_folder"
    assert cards.unwritten_fields(raw) == [], "fields no command writes: register their writer, or leave them in history"
    assert cards.migrate(raw, json.loads((folder / "config.json").read_text())["kind"]) == raw
    for field, stamp in (raw.get("written_by") or {}).items():
        assert field in cards.fields_of(raw), f"written_by names {field}, which the card does not hold"
        assert stamp["writer"] in cards.writers_of(field), f"{field} stamped by {stamp['writer']}, not its writer"
        assert stamp.get("command"), f"{field}: no command recorded"
    for field, entry in (raw.get("history") or {}).items():
        assert set(entry) == {"value", "why"} and entry["why"], field


def test_every_registered_writer_is_code_that_writes_as_itself():
    """The registry is not a list of wishes: each writer's function exists and passes ``by=<writer>`` when it writes."""
    assert set(cards.WRITERS) == set(cards.COMMANDS)
    for writer, spec in cards.WRITERS.items():
        module, _, name = spec["code"].partition(":")
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        assert f'by="{writer}"' in inspect.getsource(obj) or f'"by": "{writer}"' in inspect.getsource(obj), writer
        assert spec["fields"], writer


def test_a_card_of_the_earlier_layout_loads_and_is_migrated_without_losing_a_value(tmp_path):
    """A user's own ACAT model trained before schema 2: the run's facts at the top level, a hand-typed command and
    block, the card twice (config.json and model_card.json, config.json's winning as it did). It loads, continues its step count, and every value it
    held is still in the migrated card (moved into ``training`` or ``history``)."""
    from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder

    folder = tmp_path / "my_ae"
    save(new_autoencoder(AutoencoderConfig(resolution=16, widths=(4, 8), latent_channels=2)), folder)
    meta = json.loads((folder / "config.json").read_text())
    old = {"model": "ACAT autoencoder", "data": {"generator": "SynthBrain", "n_slices": 40}, "steps": 1300,
           "batch_size": 32, "lr": 0.002, "wall_time_s": 3387.7, "hardware": {"device": "cpu"}, "seed": 0,
           "precision": "bfloat16", "final_loss": 0.0204, "loss_curve": [[10, 0.5], [20, 0.3]], "parameters": 99,
           "quality": {"measured_on": "2026-11-27", "saliency": {"acat": {"lesion_share": 0.41}},
                       "hand_note": "typed"},
           "command": "diffuse-studio train autoencoder --steps 1300", "ct_training": {"steps": 300}}
    meta["card"] = old
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / CARD_NAME).write_text(json.dumps({"kind": "autoencoder", **old}))

    card = load_autoencoder(folder).card
    assert card["schema"] == cards.SCHEMA and "steps" not in card and "wall_time_s" not in card
    assert card["training"]["steps_done"] == 1300 and card["training"]["final_loss_ema"] == 0.0204
    assert steps_done(card) == (1300, 3387.7)              # one schema: the trainer's --init-from reads it
    assert card["written_by"]["training"]["command"] == "diffuse-studio train autoencoder --steps 1300"
    assert card["history"]["ct_training"]["value"] == {"steps": 300}
    assert card["history"]["quality.hand_note"]["value"] == "typed" and "hand_note" not in card["quality"]
    assert cards.unwritten_fields(card) == []
    assert not _leaves(old) - _leaves(card), "a value of the old card was lost in the migration"
    assert cards.migrate(card, "autoencoder") == card                         # migrating twice changes nothing

    migrate_folder(folder)                                     # on disk: one copy beside the weights, the new schema
    assert json.loads((folder / CARD_NAME).read_text()) == card
    assert "card" not in json.loads((folder / "config.json").read_text())
    assert read_config(folder)["card"] == card


def test_a_time_boxed_runs_placeholder_step_count_is_not_shown_as_its_steps():
    old = {"model": "healthy DDPM", "training": {"steps": 10**7, "steps_done": 12465, "wall_seconds": 10.0}}
    card = cards.migrate(old, "ddpm")
    assert card["training"]["steps"] is None and card["training"]["steps_done"] == 12465
    assert card["history"]["training.steps"]["value"] == 10**7
    kept = cards.migrate({"training": {"steps": 4000, "steps_done": 4000}}, "ddpm")
    assert kept["training"]["steps"] == 4000 and "history" not in kept


def test_the_shipped_flair_card_keeps_its_hand_assembled_blocks_in_history_and_the_report_reads_them():
    from diffuse_core.evaluation.results_page import targets_section

    card = read_config(ROOT / "assets" / "ddpm")["card"]
    assert {"real_data_check", "previous_weights", "quality.synthbrain_test"} <= set(card["history"])
    breakdown = cards.history_value(card, "previous_weights/healthy_change_breakdown")
    assert breakdown["rows"], "the evaluation's targets read the healthy-change options from here"
    best = min(breakdown["rows"], key=lambda r: r["healthy_change"]["brain"])
    result = {"methods": {"dif-fuse": {"dice": 0.6, "identity_change": 0.07}}}
    row = next(line for line in targets_section(result, card) if "mean absolute change" in line)
    assert f"{best['healthy_change']['brain']:.3f}" in row and best["walk"] in row


def test_update_card_refuses_what_its_writer_does_not_measure_and_names_the_fix(tmp_path):
    from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder

    save(new_autoencoder(AutoencoderConfig(resolution=16, widths=(4, 8), latent_channels=2)), tmp_path / "ae",
         card={"model": "x"})
    with pytest.raises(ValueError, match="register them for it in diffuse_core.models.card.WRITERS"):
        update_card(tmp_path / "ae", real_data_check={"brats_dice": 0.8}, by="evaluate")
    with pytest.raises(ValueError, match="train may not write card field"):
        save(new_autoencoder(AutoencoderConfig(resolution=16, widths=(4, 8), latent_channels=2)), tmp_path / "b",
             card={"model": "x", "status": "typed by hand"}, by="train")


def test_a_command_line_reads_as_typed(monkeypatch):
    """A card's command is what a user would type: the console script by name (not the interpreter and the
    script's absolute path in a virtual environment), ``python -m module`` and ``python script.py`` as run."""
    import sys

    from diffuse_core.models.card import command_line

    script = "/home/u/.venv/bin/diffuse-studio"
    monkeypatch.setattr(sys, "orig_argv", ["/home/u/.venv/bin/python3", script, "train", "ddpm", "--out", "a b"])
    monkeypatch.setattr(sys, "argv", [script, "train", "ddpm", "--out", "a b"])
    assert command_line() == "diffuse-studio train ddpm --out 'a b'"
    monkeypatch.setattr(sys, "orig_argv", ["/usr/bin/python3", "-m", "diffuse_core.evaluation.calibrate", "--k", "7"])
    monkeypatch.setattr(sys, "argv", ["/src/diffuse_core/evaluation/calibrate.py", "--k", "7"])
    assert command_line() == "python3 -m diffuse_core.evaluation.calibrate --k 7"
    monkeypatch.setattr(sys, "orig_argv", ["python", "benchmarks/bench_train_step.py", "--threads", "1"])
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_train_step.py", "--threads", "1"])
    assert command_line() == "python benchmarks/bench_train_step.py --threads 1"
