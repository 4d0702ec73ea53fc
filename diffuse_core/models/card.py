"""The model card: its one schema, which command writes each field, and the migration of older cards.

A card is a model folder's ``model_card.json``, beside ``model.safetensors`` and ``config.json`` (the architecture),
its only copy; older folders kept it as the ``card`` block of ``config.json``, which
:mod:`diffuse_core.models.checkpoint` reads and moves at the next write. Every model kind has the same layout:

- what the model is and how it was trained, written by ``diffuse-studio train`` (:data:`WRITERS` ``"train"``):
  ``model``, ``data``, ``training`` (the trainer's settings, ``steps_done``, ``wall_seconds``, ``final_loss_ema``,
  ``loss_curve``, ``hardware``; ``steps`` is the step count asked for, null for a run bounded by a time box only),
  ``parameters``, ...;
- what was measured on it, each field by the command that measured it (``evaluate``, ``calibrate``, ``ct-check``,
  ``adapt``, ...); ``quality`` is shared, so its sub-fields count as fields;
- ``written_by``: for each field, the writer, its command line, commit, hardware and date
  (:func:`provenance`), stamped by :func:`diffuse_core.models.checkpoint.update_card` at every write;
- ``history``: what an older card held that no command writes (hand-edited blocks, numbers of weights since
  replaced), moved there unchanged by :func:`migrate` with the reason, so nothing recorded is lost and nothing
  unwritable passes for a field.

:func:`check_fields` refuses a write of a field its writer is not registered for; ``tests/test_cards.py`` walks the
shipped cards and fails on a field no writer writes.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

SCHEMA = 2

#: Fields a card holds whatever wrote it: its schema number, the provenance of each field, older content.
STRUCTURE = ("schema", "written_by", "history")

#: Each writer: the code that writes (``module:function``, which passes ``by=<writer>`` to ``update_card`` or
#: ``write_model``) and the fields it writes. A field is a top-level key, or ``quality.<key>``.
WRITERS: dict[str, dict] = {
    "train": {"code": "diffuse_core.train.trainer:Trainer._export",
              "fields": {"model", "latent_shape", "loss", "augmentation", "data", "training", "parameters", "init_from",
                         "input_normalisation", "tissue_scale", "intensity_reference", "anomaly_kernel"}},
    "intensity-reference": {"code": "diffuse_core.train.data:write_intensity_reference",
                            "fields": {"intensity_reference"}},
    "evaluate": {"code": "diffuse_core.cli.evaluation:_write_cards",
                 "fields": {"recommended_settings", "anomaly_threshold", "quality.measured_on", "quality.measured_for",
                            "quality.data", "quality.saliency", "quality.samples_from_noise", "quality.evaluation",
                            "quality.dif_fuse", "quality.n", "quality.n_healthy", "quality.n_diseased",
                            "quality.accuracy", "quality.auroc", "quality.sensitivity", "quality.specificity",
                            "quality.threshold", "quality.per_lesion_type", "quality.per_lesion_size",
                            "quality.size_bins"}},
    "calibrate": {"code": "diffuse_core.evaluation.calibrate:write_card",
                  "fields": {"input_normalisation", "mask_rule", "score", "anomaly_threshold", "verdict", "calibration",
                             "tissue_scale", "recommended_settings"}},
    "ct-check": {"code": "diffuse_core.evaluation.ct_check:write_cards",
                 "fields": {"anomaly_threshold", "recommended_settings", "mask_rule", "score", "ct_check",
                            "quality.measured_on", "quality.data", "quality.saliency", "quality.n", "quality.n_healthy", "quality.n_diseased",
                            "quality.accuracy", "quality.auroc", "quality.sensitivity", "quality.specificity",
                            "quality.threshold", "quality.per_lesion_type", "quality.per_lesion_size",
                            "quality.size_bins"}},
    "adapt": {"code": "diffuse_core.evaluation.adapt:adapt",
              "fields": {"adaptation", "anomaly_kernel", "anomaly_threshold", "recommended_settings",
                         "input_normalisation", "tissue_scale", "intensity_reference", "mask_rule", "score",
                         "verdict"}},
    "calibrate-verdict": {"code": "diffuse_core.evaluation.scanner_verdict:calibrate_on_scans",
                          "fields": {"verdict", "calibration", "verdict_calibration"}},
    "level-check": {"code": "diffuse_core.train.level:measure_levels", "fields": {"quality.levels", "level_margin"}},
}

#: Fields whose sub-keys are the fields (several commands write into them).
SHARED = ("quality",)

#: What each writer's command is called on the command line (for a record written without one).
COMMANDS = {"train": "diffuse-studio train", "evaluate": "diffuse-studio evaluate --write-cards",
            "calibrate": "python -m diffuse_core.evaluation.calibrate --write-card",
            "ct-check": "python -m diffuse_core.evaluation.ct_check --write-card",
            "adapt": "diffuse-studio adapt", "intensity-reference": "python -m diffuse_core.train.data",
            "calibrate-verdict": "diffuse-studio calibrate-verdict", "level-check": "diffuse-studio train level"}

#: A ``training.steps`` at or above this was the "no step limit" placeholder of a time-boxed run (session, adapt).
NO_STEP_LIMIT = 10**6

#: The ACAT cards before schema 2 kept the run's facts at the top level: old name -> name in ``training``.
_ACAT_TRAINING = {"steps": "steps_done", "wall_time_s": "wall_seconds", "final_loss": "final_loss_ema",
                  "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "hardware": "hardware",
                  "seed": "seed", "precision": "precision", "loss_curve": "loss_curve"}


def fields_of(card: dict) -> list[str]:
    """The card's fields: its top-level keys, with ``quality`` (:data:`SHARED`) split into ``quality.<key>``."""
    out = []
    for key, value in card.items():
        if key in SHARED and isinstance(value, dict):
            out += [f"{key}.{sub}" for sub in value]
        else:
            out.append(key)
    return out


def writers_of(field: str) -> list[str]:
    """The writers registered for ``field`` (:data:`STRUCTURE` fields: ``card``)."""
    if field in STRUCTURE or field == "kind":
        return ["card"]
    return [w for w, spec in WRITERS.items() if field in spec["fields"]]


def unwritten_fields(card: dict) -> list[str]:
    """The fields of ``card`` that no registered writer writes."""
    return [f for f in fields_of(card) if not writers_of(f)]


def check_fields(by: str, updates: dict) -> list[str]:
    """The fields ``updates`` writes, after checking that writer ``by`` is registered for each (ValueError if not)."""
    if by not in WRITERS:
        raise ValueError(f"unknown card writer {by!r}: register it in diffuse_core.models.card.WRITERS")
    fields = fields_of(updates)
    wrong = [f for f in fields if f not in WRITERS[by]["fields"] and f not in STRUCTURE]
    if wrong:
        raise ValueError(f"{by} may not write card field(s) {', '.join(wrong)}: register them for it in "
                         f"diffuse_core.models.card.WRITERS (a card holds only what a command writes)")
    return fields


# --------------------------------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def commit_id() -> str:
    """The short commit of the working tree the code runs from (when this process first asked: the code it loaded),
    or "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware_summary(device) -> str:
    """"AMD EPYC, 2 cores (bf16 autocast)" on a CPU; the device's name otherwise."""
    from diffuse_core.models.device import cpu_has_fast_bf16

    if str(device) != "cpu":
        return str(device)
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores" + (" (bf16 autocast)" if cpu_has_fast_bf16() else " (fp32)")


def command_line() -> str:
    """This process's command line as typed (``diffuse-studio evaluate ...``, ``python -m module ...``)."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if len(argv) > 1 and sys.argv and argv[1] == sys.argv[0] and not argv[1].endswith(".py"):
        argv = argv[1:]             # a console script (diffuse-studio ...): as typed, without the interpreter
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def provenance(by: str, command: str | None = None, hardware=None, device=None) -> dict:
    """Who wrote a field: the writer, its command line, commit, hardware (``hardware`` as given, else a summary of
    ``device``, else of the CPU) and the date (UTC)."""
    if hardware is None:
        hardware = hardware_summary(device if device is not None else "cpu")
    return {"writer": by, "command": command or command_line(), "commit": commit_id(), "hardware": hardware,
            "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat()}


# ---------------------------------------------------------------------------------------------------- migration
def _to_history(card: dict, field: str, value, why: str) -> None:
    card.setdefault("history", {})[field] = {"value": value, "why": why}


def migrate(card: dict | None, kind: str) -> dict:
    """A card of any earlier layout in schema :data:`SCHEMA` (a copy; a schema-2 card comes back unchanged).

    - ACAT cards: the run's facts (steps, wall time, loss, hardware, ...) move from the top level into ``training``
      under the DDPM's names, so every kind reads ``training.steps_done``;
    - ``command`` (the training command, typed by hand) becomes ``written_by.training.command``;
    - ``training.steps`` at :data:`NO_STEP_LIMIT` or more (the placeholder of a time-boxed run) becomes null;
    - every other field no writer writes moves unchanged into ``history`` with the reason.
    """
    card = copy.deepcopy(card or {})
    if card.get("schema") == SCHEMA:
        return card
    card.pop("kind", None)
    if kind in ("autoencoder", "classifier") and "training" not in card and "steps" in card:
        card["training"] = {new: card.pop(old) for old, new in _ACAT_TRAINING.items() if old in card}
    written = card.setdefault("written_by", {})
    if "command" in card:
        written["training"] = {"writer": "train", "command": card.pop("command"),
                               "recorded": "typed into the card by hand before card schema 2"}
    training = card.get("training")
    if isinstance(training, dict) and isinstance(training.get("steps"), int) and training["steps"] >= NO_STEP_LIMIT:
        _to_history(card, "training.steps", training["steps"], "the 'no step limit' placeholder of a run bounded by "
                    "a time box; steps_done is what it trained")
        training["steps"] = None
    for key, rec in (("calibration", card.get("calibration")), ("ct_check", card.get("ct_check"))):
        if isinstance(rec, dict) and rec.get("command"):
            writer = "calibrate" if key == "calibration" else "ct-check"
            stamp = {"writer": writer, "command": rec["command"], "commit": rec.get("commit"),
                     "hardware": rec.get("hardware"), "date": rec.get("date") or rec.get("measured_on")}
            fields = [key] + (["verdict", "mask_rule", "score"] if writer == "calibrate" else [])
            if writer == "calibrate" and card.get("anomaly_threshold") == rec.get("anomaly_threshold"):
                fields.append("anomaly_threshold")
            for field in fields:
                if field in card:
                    written[field] = stamp
    for field in unwritten_fields(card):
        if "." in field:
            parent, sub = field.split(".", 1)
            value = card[parent].pop(sub)
        else:
            value = card.pop(field)
        _to_history(card, field, value, "no command writes this field: it was typed or pasted into the card by hand "
                    "(its own command, date and hardware, where it names them, are inside); kept as recorded")
    if not written:
        card.pop("written_by")
    card["schema"] = SCHEMA
    return card


def history_value(card: dict, path: str):
    """A value an older card held, from ``history`` (``"previous_weights/healthy_change_breakdown"``), or None."""
    field, *rest = path.split("/")
    node = ((card.get("history") or {}).get(field) or {}).get("value")
    for key in rest:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def read_card(folder: str | Path) -> dict:
    """The card of the model folder ``folder`` in schema :data:`SCHEMA`, read without loading torch or the weights
    (``model_card.json``; an older folder's ``config.json`` card where it has one). {} where the
    folder holds no readable config; :func:`diffuse_core.models.checkpoint.read_config` checks and explains."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        card = meta.get("card")
        if not card and (folder / "model_card.json").is_file():
            card = json.loads((folder / "model_card.json").read_text())
        return migrate(card if isinstance(card, dict) else {}, meta.get("kind"))
    except (OSError, ValueError, AttributeError):
        return {}
