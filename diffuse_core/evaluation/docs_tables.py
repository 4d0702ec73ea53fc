"""One source for every figure: the generated regions of README.md and docs/*.md, written from results files.

A region of a Markdown file between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` belongs to this
module: ``python -m diffuse_core.evaluation.docs_tables`` rewrites every such region from the results files alone,
and ``--check`` rewrites nothing and exits 1 naming each region that differs from what it would write now
(``tests/test_docs_tables.py`` runs the check, so a figure edited by hand, or a card re-measured without regenerating
the docs, fails the suite). No number in a region is typed here: each comes from a key of a results file.

The results files:

- the model cards, ``assets/**/model_card.json``: written by the commands recorded inside them (``command`` beside
  ``measured_on`` and ``hardware`` in the section that holds the figure); :data:`CARD_FIGURES` names which card keys
  the shipped-models table shows and where their provenance sits;
- ``docs/results/*.json``: any file there with a ``figures`` list (see :func:`results_file_rows` for the format) adds
  its rows to the shipped-models table and its provenance to the sources, with no change here; a figure whose ``id``
  is one of :data:`CARD_FIGURES`' ids replaces that card row. ``docs/results/hero_figure.json`` (written by
  ``python -m diffuse_core.evaluation.hero_figure``) also feeds the hero figure's caption.

Regions: ``models`` (the shipped models, one table), ``model_sources`` (each source: command, date, hardware, commit or
weights), ``training`` (each card's training: steps, wall time, hardware), ``hero`` (the README figure's caption),
``real_data``, ``evaluation_quick`` and ``evaluation`` (docs/results.md: ``diffuse-studio real-data``'s and
``diffuse-studio evaluate [--quick]``'s results files).
A new card key: add one entry to :data:`CARD_FIGURES` and re-run; a new results file: drop it in ``docs/results/``
and re-run. docs/results_files.md describes both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

RESULTS_DIR = "docs/results"
REGION = re.compile(r"(<!-- generated:([a-z_]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.S)
MARKER = re.compile(r"<!-- (/?)generated:([a-z_]+) -->")

#: The card figures of the shipped-models table: ``value``/``baseline``/``on`` are templates whose ``{path}`` (keys
#: joined by ``/``, optionally ``:fmt`` with fmt one of f1, f2, f3 (decimals), pct, int, sha) are read from the card;
#: ``source`` is the
#: card section carrying ``command``, ``measured_on`` and ``hardware`` (``command`` here only where the card's section
#: has none and names it in prose, as its ``quality.note`` does for the samples).
CARD_FIGURES: list[dict] = [
    {"id": "flair.synthbrain_test_dice", "card": "assets/ddpm", "figure": "Dif-fuse Dice, SynthBrain test lesions",
     "value": "{ST/test_seeds/dif-fuse/test_dice_mean}",
     "baseline": "{ST/flair_threshold/test_dice} (FLAIR threshold, z > {ST/flair_threshold/threshold_from_val:f2})",
     "on": "{ST/kernel_3_paired_vs_flair_threshold/n} diseased slices, seeds {ST/test_seeds/seeds}, threshold "
           "{ST/test_seeds/dif-fuse/threshold_from_val:f2} (the app's: {anomaly_threshold:f2}), "
           "{ST/test_seeds/kernel}x{ST/test_seeds/kernel} kernel",
     "source": ["ST", "ST/other_methods_kernel_3"]},
    {"id": "flair.brats_dice", "card": "assets/ddpm", "figure": "Dif-fuse Dice, real BraTS 2015 FLAIR tumours",
     "value": "{RD/brats_dice_acat_mask}",
     "baseline": "{RD/flair_threshold_baseline/brats_dice} (FLAIR threshold, z > "
                 "{RD/flair_threshold_baseline/threshold_from_validation_z:f2})",
     "on": "{RD/slices/brats_tumour} tumour slices, seed {RD/settings/seed}, "
           "threshold {RD/settings/threshold_from_validation:f2}",
     "source": "RD"},
    {"id": "flair.brats_normal_flagged", "card": "assets/ddpm", "figure": "tumour-free real brain flagged",
     "value": "{RD/brats_tumour_free_brain_flagged:pct}", "baseline": "",
     "on": "{RD/slices/brats_tumour_free} tumour-free BraTS slices, seed {RD/settings/seed}",
     "source": "RD"},
    {"id": "flair.healthy_change", "card": "assets/ddpm", "figure": "mean change on healthy slices",
     "value": "{RD/healthy_mean_abs_change_in_brain}", "baseline": "",
     "on": "{RD/slices/synthbrain_healthy} healthy SynthBrain slices, seed {RD/settings/seed}",
     "source": "RD"},
    {"id": "flair.samples_grey", "card": "assets/ddpm", "figure": "samples from pure noise with a grey background",
     "value": "{quality/samples_from_noise/ddpm/grey_background} of {quality/samples_from_noise/ddpm/n}",
     "baseline": "", "on": "DDPM sampler, seed {quality/samples_from_noise/ddpm/seed}",
     "source": "quality/samples_from_noise", "command": "diffuse-studio evaluate --samples-only --write-cards"},
    {"id": "ct.synthbrain_test_dice", "card": "assets/ct/ddpm", "figure": "Dif-fuse Dice, SynthBrain CT test strokes",
     "value": "{ct_check/candidates/CT-models/test_dice}",
     "baseline": "{ct_check/ct_threshold/test_dice} (CT threshold, z > {ct_check/ct_threshold/threshold_from_val:f2})",
     "on": "{ct_check/slices/test} slices, seed {ct_check/candidates/CT-models/settings/seed}, threshold "
           "{ct_check/candidates/CT-models/threshold_from_val}",
     "source": "ct_check"},
    {"id": "ct.healthy_flagged", "card": "assets/ct/ddpm", "figure": "healthy CT brain flagged",
     "value": "{ct_check/candidates/CT-models/healthy_flagged_share:pct}",
     "baseline": "{ct_check/ct_threshold/healthy_flagged_share:pct} (CT threshold)",
     "on": "{ct_check/slices/healthy} healthy SynthBrain CT slices", "source": "ct_check"},
    {"id": "flair.classifier", "card": "assets/classifier",
     "figure": "classifier accuracy / AUROC, diseased vs healthy",
     "value": "{quality/accuracy} / {quality/auroc}", "baseline": "",
     "on": "{quality/n} SynthBrain FLAIR test slices", "source": "quality",
     "command": "diffuse-studio evaluate --write-cards"},
    {"id": "flair.acat_mask", "card": "assets/autoencoder", "figure": "share of lesion inside the ACAT mask",
     "value": "{quality/saliency/acat/lesion_share:pct}", "baseline": "",
     "on": "{quality/saliency/acat/n} diseased FLAIR test slices, {quality/saliency/acat/percentile:int}th percentile",
     "source": "quality", "command": "diffuse-studio evaluate --write-cards"},
    {"id": "ct.classifier", "card": "assets/ct/classifier", "figure": "CT classifier accuracy / AUROC",
     "value": "{quality/accuracy} / {quality/auroc}", "baseline": "",
     "on": "{quality/n} SynthBrain CT test slices", "source": "quality"},
    {"id": "flair.level", "card": "assets/level", "figure": "slice level error, mean / 90th pct (1 mm levels)",
     "value": "{quality/levels/test/mean_abs_error_levels:f1} / {quality/levels/test/p90_abs_error_levels:f1}",
     "baseline": "",
     "on": "{quality/levels/test/n} SynthBrain test slices; margin {level_margin}: "
           "{quality/levels/test/outside_caught:pct} of outside slices caught, "
           "{quality/levels/test/inside_called_outside:pct} of inside ones lost",
     "source": "quality/levels", "command": "diffuse-studio train level --normalise tissue"},
]

#: Figures of results files in ``docs/results/`` that have their own layout, read as :data:`CARD_FIGURES` reads the
#: cards (``source`` None: the file's top level carries command, date, commit, hardware). A row appears once its file
#: exists and replaces the card row of the same id. ``real_data.json`` is written by ``diffuse-studio real-data``
#: (:mod:`diffuse_core.evaluation.real_data`).
RESULT_FIGURES: list[dict] = [
    {"id": "flair.brats_dice", "file": "docs/results/real_data.json", "model": "assets/ddpm",
     "figure": "Dif-fuse Dice, real BraTS 2015 FLAIR tumours",
     "value": "{dice/dif_fuse/mean}",
     "baseline": "{dice/threshold/mean} (FLAIR threshold, z > {settings/zscore_baseline:f2})",
     "on": "{data/tumour_slices} tumour slices, seed {settings/seed}, threshold {settings/threshold:f2}",
     "source": None},
    {"id": "flair.synthbrain_app_defaults", "file": "docs/results/evaluation_quick.json", "model": "assets/ddpm",
     "figure": "Dif-fuse Dice, SynthBrain test, the app's defaults",
     "value": "{methods/dif-fuse/dice}",
     "baseline": "{methods/flair-threshold/dice} (FLAIR threshold, z > {methods/flair-threshold/threshold:f2})",
     "on": "{n_test_diseased} diseased slices, seed {settings/seeds}, K {model/k}, {model/steps} steps, threshold "
           "{model/anomaly_threshold:f2} (`evaluate --quick`)",
     "source": None, "unless": "docs/results/evaluation.json"},       # the full run's figure says it better
    {"id": "flair.synthbrain_test_dice", "file": "docs/results/evaluation.json", "model": "assets/ddpm",
     "figure": "Dif-fuse Dice, SynthBrain test lesions, the app's run",
     "value": "{methods/dif-fuse/dice}",
     "baseline": "{methods/flair-threshold/dice} (FLAIR threshold, z > {methods/flair-threshold/threshold:f2})",
     "on": "{n_test_diseased} diseased slices, seeds {methods/dif-fuse/seeds}, K {model/k}, {model/steps} steps, "
           "threshold {model/anomaly_threshold:f2} (full `evaluate`)",
     "source": None},
    {"id": "flair.healthy_change", "file": "docs/results/evaluation.json", "model": "assets/ddpm",
     "figure": "mean change on healthy slices", "value": "{methods/dif-fuse/identity_change:f3}", "baseline": "",
     "on": "{n_test_healthy} healthy SynthBrain test slices, seeds {methods/dif-fuse/seeds}", "source": None},
    {"id": "flair.brats_normal_flagged", "file": "docs/results/real_data.json", "model": "assets/ddpm",
     "figure": "tumour-free real brain flagged",
     "value": "{normal_flagged/dif_fuse/mean:pct}", "baseline": "{normal_flagged/threshold/mean:pct} (FLAIR threshold)",
     "on": "{data/tumour_free_slices} tumour-free BraTS slices, seed {settings/seed}", "source": None},
]

MODEL_NAMES = {"assets/ddpm": "FLAIR DDPM", "assets/ct/ddpm": "CT DDPM", "assets/classifier": "FLAIR ACAT",
               "assets/autoencoder": "FLAIR ACAT", "assets/ct/classifier": "CT ACAT",
               "assets/ct/autoencoder": "CT ACAT", "assets/level": "FLAIR level check"}


class RegionError(ValueError):
    """A marked region that cannot be rewritten: unbalanced markers or a name no generator knows."""


#: Short names in the templates for the two blocks of the FLAIR card that no command writes any more: they were
#: assembled by hand from the outputs of benchmarks/bench_anomaly_kernel.py and evaluation.candidates (their commands
#: and hardware are inside), and the card migration (:func:`diffuse_core.models.card.migrate`) keeps them in
#: ``history`` as recorded.
ALIASES = {"ST": "history/quality.synthbrain_test/value", "RD": "history/real_data_check/value"}


def _get(doc, path: str):
    node = doc
    head, _, rest = path.partition("/")
    path = ALIASES[head] + ("/" + rest if rest else "") if head in ALIASES else path
    for key in path.split("/"):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"no key {path!r} (missing {key!r})")
        node = node[key]
    return node


def _fmt(value, fmt: str | None) -> str:
    if isinstance(value, list):
        return ", ".join(_fmt(v, fmt) for v in value)
    if fmt == "pct":
        return f"{100 * float(value):.1f} %"
    if fmt == "int":
        return str(int(round(float(value))))
    if fmt == "sha":
        return str(value)[:12]
    if fmt and re.fullmatch(r"f\d", fmt):
        return f"{float(value):.{fmt[1]}f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def fill(template: str, doc: dict) -> str:
    """``template`` with every ``{path[:fmt]}`` replaced by that key of ``doc``, formatted."""
    return re.sub(r"\{([^{}:]+)(?::(\w+))?\}", lambda m: _fmt(_get(doc, m.group(1)), m.group(2)), template)


def _hardware(hw) -> str:
    if isinstance(hw, dict):
        parts = [hw.get("gpu") or hw.get("processor"), hw.get("device"),
                 f"torch {hw['torch']}" if "torch" in hw else None,
                 f"{hw['torch_threads']} threads" if "torch_threads" in hw else None]
        return ", ".join(str(p) for p in parts if p)
    return str(hw).split(";")[0].strip() if hw else "hardware not recorded"


def load_cards(root: Path) -> dict[str, dict]:
    """Every model card under ``assets/`` (``model_card.json``, read as the loaders read it), keyed by its
    folder relative to ``root`` (``assets/ct/ddpm``)."""
    from diffuse_core.models.card import read_card

    return {p.parent.relative_to(root).as_posix(): read_card(p.parent)
            for p in sorted((root / "assets").rglob("config.json"))}


def load_results(root: Path) -> dict[str, dict]:
    """Every results file in ``docs/results/``, keyed by its path relative to ``root``."""
    return {p.relative_to(root).as_posix(): json.loads(p.read_text())
            for p in sorted((root / RESULTS_DIR).glob("*.json"))}


def _provenance(file: str, doc: dict, key: str | None, command: str | None = None) -> dict:
    """Where a figure comes from: the file, the section (``key``, ``None`` for the whole file) and that section's
    command, date (``measured_on`` or ``date``), hardware, commit and weights digest."""
    sec = doc if key is None else _get(doc, key)
    if key is not None and key.partition("/")[0] in ALIASES:
        key = ALIASES[key.partition("/")[0]] + key[len(key.partition("/")[0]):]
    return {"file": file, "key": None if key is None else key.replace("/", "."),
            "command": sec.get("command") or command,
            "measured_on": sec.get("measured_on") or sec.get("date") or "date not recorded",
            "hardware": _hardware(sec.get("hardware")), "commit": sec.get("commit"),
            "weights": sec.get("weights_sha256")}


def _spec_row(spec: dict, file: str, doc: dict) -> dict:
    keys = spec.get("source")
    keys = [keys] if keys is None or isinstance(keys, str) else keys
    try:
        return {"id": spec["id"], "card": spec.get("card") or spec["model"], "figure": spec["figure"],
                "value": fill(spec["value"], doc), "baseline": fill(spec["baseline"], doc), "on": fill(spec["on"], doc),
                "sources": [_provenance(file, doc, k, spec.get("command")) for k in keys]}
    except KeyError as e:
        raise KeyError(f"{file} has no key the table reads for {spec['id']!r} ({e.args[0]}): update its entry in "
                       f"diffuse_core/evaluation/docs_tables.py") from None


def results_file_rows(path: str, doc: dict) -> list[dict]:
    """The table rows of one results file in the generic format.

    Format: ``{"command", "measured_on" (or "date"), "commit", "hardware", "settings", "figures": [{"model":
    "assets/ddpm", "figure": "...", "value": 0.71, "baseline": 0.48, "baseline_name": "FLAIR threshold", "on": "24
    tumour slices", "seeds": [0], "format": "f3|pct|int", "id": optional id of the row it replaces}]}``; a file
    without ``figures`` adds nothing here (unless :data:`RESULT_FIGURES` reads it)."""
    figures = doc.get("figures") or []
    if not figures:
        return []
    for key in ("command", "commit", "hardware"):
        if not doc.get(key):
            raise KeyError(f"{path}: a results file with figures needs {key!r}")
    if not (doc.get("measured_on") or doc.get("date")):
        raise KeyError(f"{path}: a results file with figures needs 'measured_on' (or 'date')")
    source = _provenance(path, doc, None)
    rows = []
    for f in figures:
        fmt = f.get("format")
        base = "" if f.get("baseline") is None else _fmt(f["baseline"], fmt) + (
            f" ({f['baseline_name']})" if f.get("baseline_name") else "")
        on = f.get("on", "") + (f", seeds {_fmt(f['seeds'], None)}" if f.get("seeds") is not None else "")
        rows.append({"id": f.get("id"), "card": f["model"], "figure": f["figure"], "value": _fmt(f["value"], fmt),
                     "baseline": base, "on": on, "sources": [source]})
    return rows


def _place(rows: list[dict], row: dict) -> None:
    """``row`` replaces the row with its id, else goes after the last row of its model."""
    same = [i for i, r in enumerate(rows) if row["id"] and r["id"] == row["id"]]
    if same:
        rows[same[0]] = row
        return
    after = [i for i, r in enumerate(rows) if r["card"] == row["card"]]
    rows.insert(after[-1] + 1 if after else len(rows), row)


def model_rows(root: Path) -> tuple[list[dict], list[dict]]:
    """(rows of the shipped-models table, their sources in order of first use): :data:`CARD_FIGURES` from the cards,
    then :data:`RESULT_FIGURES` of the results files present, then every results file's own ``figures``."""
    cards = load_cards(root)
    results = load_results(root)
    rows = [_spec_row(spec, f"{spec['card']}/model_card.json", cards[spec["card"]])
            for spec in CARD_FIGURES if spec["card"] in cards]   # a model not installed here has no row
    for spec in RESULT_FIGURES:
        if spec["file"] in results and spec.get("unless") not in results:
            _place(rows, _spec_row(spec, spec["file"], results[spec["file"]]))
    for path, doc in results.items():
        for row in results_file_rows(path, doc):
            _place(rows, row)
    sources: list[dict] = []
    for row in rows:
        sources += [s for s in row["sources"] if s not in sources]
    return rows, sources


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "—"


def render_models(root: Path) -> str:
    rows, sources = model_rows(root)
    out = ["| model | figure | value | threshold baseline | measured on | source |", "|---|---|---|---|---|---|"]
    for r in rows:
        refs = ", ".join(f"S{sources.index(s) + 1}" for s in r["sources"])
        model = f"{MODEL_NAMES.get(r['card'], r['card'])} (`{r['card']}`)"
        out.append("| " + " | ".join(_cell(c) for c in (model, r["figure"], f"**{r['value']}**", r["baseline"], r["on"],
                                                           f"[{refs}](docs/models.md#sources)")) + " |")
    return "\n".join(out) + "\n"


def render_sources(root: Path) -> str:
    _, sources = model_rows(root)
    out = []
    for n, s in enumerate(sources, 1):
        where = f"`{s['file']}`" + (f" → `{s['key']}`" if s["key"] else "")
        ident = [f"commit {s['commit'][:10]}" if s["commit"] else "commit not recorded in the card",
                 f"weights sha256 {s['weights'][:12]}" if s["weights"] else None]
        command = f"`{s['command']}`" if s["command"] else "command not recorded"
        out.append(f"- **S{n}** {where}; {s['measured_on']}; {s['hardware']}; "
                   f"{'; '.join(i for i in ident if i)}  \n  {command}")
    return "\n".join(out) + "\n"


def render_training(root: Path) -> str:
    out = ["| model | steps (all stages) | wall time (all stages) | batch | hardware (last stage) "
           "| command (last stage) |",
           "|---|---|---|---|---|---|"]
    for folder, card in load_cards(root).items():
        tr = card.get("training") or {}
        steps, seconds, batch = tr.get("steps_done"), tr.get("wall_seconds"), tr.get("batch_size")
        hw = _hardware(tr.get("hardware"))
        wall = "not recorded" if seconds is None else f"{float(seconds) / 3600:.1f} h"
        command = ((card.get("written_by") or {}).get("training") or {}).get("command")
        # as typed: a card written before command_line() dropped the interpreter keeps "python3 /.../diffuse-studio"
        typed = re.sub(r"^python3? \S*/diffuse-studio ", "diffuse-studio ", str(command).split('  #')[0].strip())
        cmd = f"`{typed}`" if command else "not recorded in the card"
        out.append("| " + " | ".join(_cell(c) for c in (f"`{folder}`", _fmt(steps, "int") if steps is not None else "",
                                                           wall, _fmt(batch, None) if batch else "", hw,
                                                           cmd)) + " |")
    return "\n".join(out) + "\n"


def _mask_words(settings: dict) -> str:
    """The redrawn region of a run's record: the paper's percentile or the card's rule."""
    rule = settings.get("mask_rule") or {}
    if settings.get("percentile") is not None:
        return f"{float(settings['percentile']):g}th percentile mask"
    if rule.get("kind") == "weighted":
        return (f"mask: saliency weighted by P(diseased) >= {rule['level']:g} x its maximum, at most "
                f"{100 * float(rule['max_share']):g} % of the brain")
    return f"mask rule {rule.get('kind', 'of the card')}"


def render_hero(root: Path) -> str:
    doc = json.loads((root / RESULTS_DIR / "hero_figure.json").read_text())
    doc = {**doc, "_mask": _mask_words(doc["settings"])}
    return fill("*{case/id} ({case/lesion_type}, {case/difficulty}) from `teaching_sets/default`, through `{model}` at "
                "K {settings/k}, {settings/steps} steps, {_mask}, seed {settings/seed}: "
                "Dice {result/dice:f3} against the expert outline; the run took {result/seconds:f1} s on "
                "{hardware/summary}. Made by `{command}` ({measured_on}, commit {commit:sha}).*\n", doc)


def render_real_data(root: Path) -> str:
    """The real-data section (docs/results.md) from ``diffuse-studio real-data``'s results file."""
    from diffuse_core.evaluation.real_data_report import markdown

    path = root / RESULTS_DIR / "real_data.json"
    if not path.is_file():
        return "*Not measured yet: run `diffuse-studio real-data --brats DIR --write-docs`.*\n"
    doc = json.loads(path.read_text())
    grid = doc.get("grid")
    try:
        return markdown(doc, None if not grid else os.path.relpath(root / grid, root / "docs"))
    except KeyError as err:
        return (f"*{path.relative_to(root)} lacks {err} (not written by `diffuse-studio real-data`?): run "
                f"`diffuse-studio real-data --brats DIR --write-docs`.*\n")


EVALUATION_COMMANDS = {
    "evaluation_quick": "diffuse-studio evaluate --quick --threads 2",
    "evaluation": "nohup diffuse-studio evaluate --every-seed --workers 2 --threads 1 > evaluate.log 2>&1 &",
}


def render_evaluation(root: Path, name: str = "evaluation") -> str:
    """An evaluation's region of docs/results.md (``evaluation_quick``: ``diffuse-studio evaluate --quick``;
    ``evaluation``: the full run) from its results file ``docs/results/NAME.json``
    (:func:`diffuse_core.evaluation.results_page.markdown`)."""
    from diffuse_core.evaluation.results_page import markdown

    path = root / RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return (f"*Not run on the shipped weights yet: `{EVALUATION_COMMANDS[name]}` writes "
                f"`{path.relative_to(root).as_posix()}` and this section.*\n")
    return markdown(json.loads(path.read_text()))


def _scans(name: str, root: Path) -> str:
    """docs/training.md's demonstrations on real scans (:mod:`.scans_sentences`)."""
    from diffuse_core.evaluation import scans_sentences

    return getattr(scans_sentences, name)(root)


def _targets(root: Path) -> str:
    """docs/results.md's table of the real-scans issue's targets (:mod:`.scans_targets`)."""
    from diffuse_core.evaluation.scans_targets import render_real_scans_targets

    return render_real_scans_targets(root)


def _bench(name: str, root: Path) -> str:
    """docs/benchmarks.md's regions, from the benchmark scripts' results files (:mod:`.benchmark_report`)."""
    from diffuse_core.evaluation import benchmark_report

    return getattr(benchmark_report, name)(root)


GENERATORS = {"models": render_models, "model_sources": render_sources, "training": render_training,
              "hero": render_hero, "real_data": render_real_data, "verdict_on_scans": lambda root: _scans("render_verdict_on_scans", root),
              "adapt_on_scans": lambda root: _scans("render_adapt_on_scans", root),
              "real_scans_targets": _targets,
              "evaluation": render_evaluation, "evaluation_quick": lambda root: render_evaluation(root, "evaluation_quick"),
              "bench_one_run": lambda root: _bench("render_one_run", root),
              "bench_volume": lambda root: _bench("render_volume", root)}


def _regions_of(text: str, path: str) -> list[str]:
    stack, names = [], []
    for m in MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if name not in GENERATORS:
            raise RegionError(f"{path}: no generator for region {name!r} (known: {', '.join(sorted(GENERATORS))})")
        if closing:
            if not stack or stack.pop() != name:
                raise RegionError(f"{path}: <!-- /generated:{name} --> without its opening marker")
        else:
            if stack:
                raise RegionError(f"{path}: region {name!r} opens inside {stack[-1]!r}")
            stack.append(name)
            names.append(name)
    if stack:
        raise RegionError(f"{path}: region {stack[-1]!r} is never closed")
    return names


def documents(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def regenerate(root: Path, write: bool = True) -> list[str]:
    """Rewrite every generated region under ``root`` (README.md, docs/**/*.md); return ``file:region`` for each region
    whose text changed (with ``write=False`` nothing is written: the regions that are stale)."""
    root = Path(root)
    rendered: dict[str, str] = {}
    stale = []
    for path in documents(root):
        text = path.read_text()
        rel = path.relative_to(root).as_posix()
        if not _regions_of(text, rel):
            continue

        def sub(m, rel=rel):
            name = m.group(2)
            if name not in rendered:
                rendered[name] = GENERATORS[name](root)
            body = rendered[name]
            if name == "models" and rel.startswith("docs/"):     # links from docs/ pages are relative to docs/
                body = body.replace("](docs/models.md#sources)", "](models.md#sources)")
            if body != m.group(3):
                stale.append(f"{rel}:{name}")
            return m.group(1) + body + m.group(4)

        new = REGION.sub(sub, text)
        if write and new != text:
            path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: here)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any generated region is stale")
    a = p.parse_args(argv)
    stale = regenerate(a.root, write=not a.check)
    if a.check and stale:
        print("stale generated regions (run `python -m diffuse_core.evaluation.docs_tables`): " + ", ".join(stale))
        return 1
    print(("rewrote " + ", ".join(stale)) if stale else "every generated region is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
