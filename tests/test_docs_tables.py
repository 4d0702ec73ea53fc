"""One source for every figure: each generated region of README.md and docs/*.md is what
``python -m diffuse_core.evaluation.docs_tables`` writes now from the model cards and docs/results/*.json."""

import json
import shutil
from pathlib import Path

import pytest

from diffuse_core.evaluation import docs_tables

ROOT = Path(__file__).resolve().parent.parent


def _copy(tmp_path: Path) -> Path:
    """README, docs and every model's config.json and card (not the weights) in a scratch root."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copytree(ROOT / "benchmarks" / "results", root / "benchmarks" / "results")
    shutil.copytree(ROOT / "docs", root / "docs", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.png", "*.html", "*.csv"))
    for config in (ROOT / "assets").rglob("config.json"):
        dest = root / config.parent.relative_to(ROOT)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model_card.json"):
            shutil.copy(config.parent / name, dest / name)
    return root


def test_every_generated_region_matches_its_results_files():
    stale = docs_tables.regenerate(ROOT, write=False)
    assert not stale, f"stale generated regions {stale}: run `python -m diffuse_core.evaluation.docs_tables`"


def test_readme_and_docs_carry_the_generated_tables():
    """Deleting a region's markers would escape the check above: the README keeps the models table and the hero
    caption, docs/models.md the table, its sources and the training costs."""
    readme = (ROOT / "README.md").read_text()
    for name in ("models", "hero"):
        assert f"<!-- generated:{name} -->" in readme, name
    models = (ROOT / "docs" / "models.md").read_text()
    for name in ("models", "model_sources", "training"):
        assert f"<!-- generated:{name} -->" in models, name


def test_a_figure_edited_by_hand_is_caught(tmp_path):
    root = _copy(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    start = text.index("<!-- generated:models -->")
    row = text.index("**0.", start)                      # the first figure in the table
    digit = row + 4                                      # "**0.687**": the first decimal
    readme.write_text(text[:digit] + ("9" if text[digit] != "9" else "8") + text[digit + 1:])
    assert "README.md:models" in docs_tables.regenerate(root, write=False)
    docs_tables.regenerate(root)
    assert readme.read_text() == text and not docs_tables.regenerate(root, write=False)


def test_a_remeasured_card_makes_the_docs_stale(tmp_path):
    root = _copy(tmp_path)
    card_path = root / "assets" / "ddpm" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["quality"]["samples_from_noise"]["ddpm"]["grey_background"] = 7   # a card row no results file replaces
    card_path.write_text(json.dumps(card))
    stale = docs_tables.regenerate(root, write=False)
    assert "README.md:models" in stale and "docs/models.md:models" in stale
    docs_tables.regenerate(root)
    assert "**7 of 16**" in (root / "README.md").read_text()


def test_a_new_results_file_shows_up_and_replaces_the_card_row_it_names(tmp_path):
    root = _copy(tmp_path)
    new = {"command": "python -m somewhere --brats DIR", "measured_on": "2031-01-02", "commit": "0123456789abcdef",
           "hardware": "test box", "settings": {"k": 500},
           "figures": [{"id": "flair.brats_dice", "model": "assets/ddpm", "figure": "real BraTS Dice, new protocol",
                        "value": 0.7777, "baseline": 0.5, "baseline_name": "FLAIR threshold", "on": "99 slices",
                        "seeds": [0, 1]},
                       {"model": "assets/ddpm", "figure": "a new measure", "value": 0.25, "format": "pct", "on": "x"}]}
    (root / "docs" / "results" / "new_check.json").write_text(json.dumps(new))
    docs_tables.regenerate(root)
    table = (root / "README.md").read_text()
    assert "**0.778**" in table and "99 slices, seeds 0, 1" in table and "**25.0 %**" in table
    assert "real BraTS 2015 FLAIR tumours" not in table                  # the card row it replaces is gone
    sources = (root / "docs" / "models.md").read_text()
    assert "`docs/results/new_check.json`" in sources and "commit 0123456789" in sources
    del new["commit"]
    (root / "docs" / "results" / "new_check.json").write_text(json.dumps(new))
    with pytest.raises(KeyError, match="commit"):
        docs_tables.regenerate(root, write=False)


def test_unknown_or_unbalanced_regions_are_refused(tmp_path):
    root = _copy(tmp_path)
    page = root / "docs" / "extra.md"
    page.write_text("<!-- generated:nonsense -->\nx\n<!-- /generated:nonsense -->\n")
    with pytest.raises(docs_tables.RegionError, match="nonsense"):
        docs_tables.regenerate(root, write=False)
    page.write_text("<!-- generated:models -->\nx\n")
    with pytest.raises(docs_tables.RegionError, match="never closed"):
        docs_tables.regenerate(root, write=False)


def test_the_check_command_exits_1_on_a_stale_region(tmp_path, capsys):
    root = _copy(tmp_path)
    assert docs_tables.main(["--root", str(root), "--check"]) == 0
    hero = root / "docs" / "results" / "hero_figure.json"
    doc = json.loads(hero.read_text())
    doc["settings"]["steps"] += 1
    hero.write_text(json.dumps(doc))
    assert docs_tables.main(["--root", str(root), "--check"]) == 1
    assert "README.md:hero" in capsys.readouterr().out


def test_the_real_data_file_replaces_the_cards_real_data_rows_once_it_exists(tmp_path):
    """``diffuse-studio real-data`` writes docs/results/real_data.json in its own layout; its rows take the place of the
    card's older real-data figures with nothing but a re-run of the generator."""
    root = _copy(tmp_path)
    (root / "docs" / "results" / "real_data.json").unlink(missing_ok=True)
    doc = {"date": "2031-02-03", "commit": "fedcba9876543210", "hardware": {"device": "cpu", "torch": "9.9"},
           "command": "diffuse-studio real-data --brats DIR",
           "data": {"tumour_slices": 30, "tumour_free_slices": 12},
           "settings": {"seed": 0, "threshold": 0.2, "zscore_baseline": 1.0},
           "dice": {"dif_fuse": {"mean": 0.81234}, "threshold": {"mean": 0.6}},
           "normal_flagged": {"dif_fuse": {"mean": 0.031}, "threshold": {"mean": 0.02}}}
    (root / "docs" / "results" / "real_data.json").write_text(json.dumps(doc))
    docs_tables.regenerate(root)
    readme = (root / "README.md").read_text()
    assert "**0.812**" in readme and "0.600 (FLAIR threshold, z > 1.00)" in readme and "**3.1 %**" in readme
    assert "30 tumour slices" in readme and readme.count("real BraTS 2015 FLAIR tumours") == 1
    assert "`docs/results/real_data.json`; 2031-02-03" in (root / "docs" / "models.md").read_text()
    del doc["dice"]
    (root / "docs" / "results" / "real_data.json").write_text(json.dumps(doc))
    with pytest.raises(KeyError, match="real_data.json has no key"):
        docs_tables.regenerate(root, write=False)


def test_the_readme_stays_a_short_users_guide():
    """Issue 33: at most 10 KB, with the sections a newcomer needs; the research record lives in docs/research/."""
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme) <= 10 * 1024, f"README.md is {len(readme)} bytes: move detail into docs/"
    text = readme.decode()
    for heading in ("## Quick start (two commands)", "## The app", "## The method in five steps", "## Command line",
                    "## Python API", "## Retrain or adapt on your own data", "## The shipped models", "## Limits",
                    "## Hosting", "## Links"):
        assert heading in text, heading
    assert "not a diagnostic device" in text.lower()
    for link in ("docs/hero.png", "docs/app_screenshot.png"):
        assert (ROOT / link).is_file() and f"]({link})" in text, link


def test_the_evaluation_regions_are_made_from_their_results_files_alone(tmp_path):
    """docs/results.md's `evaluation_quick` region is `diffuse-studio evaluate --quick`'s results file rendered: a
    figure edited in the file (or in the page) makes the region stale; the full run's region says it has not run
    until its file exists."""
    root = _copy(tmp_path)
    path = root / "docs" / "results" / "evaluation_quick.json"
    if not path.is_file():
        pytest.skip("no quick evaluation results file yet")
    assert not docs_tables.regenerate(root, write=False)
    doc = json.loads(path.read_text())
    doc["methods"]["dif-fuse"]["dice"] = 0.9876
    path.write_text(json.dumps(doc))
    assert "docs/results.md:evaluation_quick" in docs_tables.regenerate(root, write=False)
    docs_tables.regenerate(root)
    assert "0.988" in (root / "docs" / "results.md").read_text()
    (root / "docs" / "results" / "evaluation.json").unlink(missing_ok=True)
    docs_tables.regenerate(root)
    full = (root / "docs" / "results.md").read_text().split("<!-- generated:evaluation -->")[1]
    assert full.lstrip().startswith("*Not run on the shipped weights yet")


def test_the_full_evaluation_replaces_the_hand_assembled_synthbrain_rows_and_the_quick_one(tmp_path):
    """Once docs/results/evaluation.json exists, the shipped-models table reads its SynthBrain Dice and healthy change
    from it (not from the card's history block, which no command writes any more), and the quick run's row goes."""
    root = _copy(tmp_path)
    path = root / "docs" / "results" / "evaluation.json"
    path.unlink(missing_ok=True)
    before = {r["id"]: r for r in docs_tables.model_rows(root)[0]}
    assert "history" in before["flair.synthbrain_test_dice"]["sources"][0]["key"]
    assert "flair.synthbrain_app_defaults" in before
    dif = {"dice": 0.61234, "identity_change": 0.0712, "seeds": [0, 1, 2]}
    path.write_text(json.dumps({
        "date": "2031-02-03", "commit": "fedcba9876543210", "hardware": {"device": "cpu"},
        "command": "diffuse-studio evaluate --workers 2", "n_test_diseased": 36, "n_test_healthy": 12,
        "model": {"k": 700, "steps": 25, "anomaly_threshold": 0.32},
        "methods": {"dif-fuse": dif, "flair-threshold": {"dice": 0.6, "threshold": 2.0}}}))
    rows, sources = docs_tables.model_rows(root)
    after = {r["id"]: r for r in rows}
    assert "flair.synthbrain_app_defaults" not in after
    dice, change = after["flair.synthbrain_test_dice"], after["flair.healthy_change"]
    assert dice["value"] == "0.612" and dice["baseline"].startswith("0.600 (FLAIR threshold, z > 2.00)")
    assert "36 diseased slices, seeds 0, 1, 2, K 700, 25 steps, threshold 0.32" in dice["on"]
    assert change["value"] == "0.071" and "12 healthy SynthBrain test slices" in change["on"]
    assert {s["file"] for s in dice["sources"] + change["sources"]} == {"docs/results/evaluation.json"}


def test_the_benchmark_page_is_made_from_the_benchmark_scripts_results(tmp_path):
    """docs/benchmarks.md's figures come from benchmarks/results/*.json: a new measurement shows up there with its
    date, commit and command, and a figure typed over by hand is caught as stale."""
    root = _copy(tmp_path)
    assert docs_tables.regenerate(root, write=False) == []
    path = root / "benchmarks" / "results" / "one_run.json"
    doc = json.loads(path.read_text())
    doc.update(date="2031-02-03 10:00 UTC", commit="abc1234", command="python benchmarks/bench_one_run.py --repeats 3",
               app_over_cli=1.5)
    doc["seconds"]["app"] = 9.87
    path.write_text(json.dumps(doc))
    assert docs_tables.regenerate(root) == ["docs/benchmarks.md:bench_one_run"]
    page = (root / "docs" / "benchmarks.md").read_text()
    assert "Measured 2031-02-03 10:00 UTC at commit `abc1234`" in page and "`python benchmarks/bench_one_run.py" in page
    assert "| 9.87 |" in page and "**1.50x** the CLI's" in page
    tp = json.loads((root / "benchmarks" / "results" / "volume_throughput.json").read_text())
    tp["seconds"]["batched"] = tp["seconds"]["one_slice_cli"] / 3.2
    (root / "benchmarks" / "results" / "volume_throughput.json").write_text(json.dumps(tp))
    docs_tables.regenerate(root)
    page_tp = (root / "docs" / "benchmarks.md").read_text()
    assert "issue 34's 3x is reached" in page_tp and "| **3.20x** |" in page_tp and "**3.20x** (against" in page_tp
    (root / "docs" / "benchmarks.md").write_text(page.replace("| 9.87 |", "| 1.00 |"))
    assert "docs/benchmarks.md:bench_one_run" in docs_tables.regenerate(root, write=False)   # typed over: caught
