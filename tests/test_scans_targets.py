"""docs/results.md's table of the real-scans issue's targets: each row from its results file, none typed."""

import json

from diffuse_core.evaluation.scans_targets import render_real_scans_targets


def test_without_results_it_says_which_command_measures_them(tmp_path):
    assert "Not measured yet" in render_real_scans_targets(tmp_path)


def test_rows_come_from_the_results_files_and_say_what_is_reached(tmp_path):
    res = tmp_path / "docs" / "results"
    res.mkdir(parents=True)
    real = {"dice": {"dif_fuse": {"mean": 0.86, "ci95_cases": [0.8, 0.9]}, "threshold": {"mean": 0.79}},
            "lesion_contrast_kept": {"median": 0.3},
            "normal_flagged": {"dif_fuse": {"mean": 0.01, "max": 0.04, "slices_above_5pct": 0},
                               "threshold": {"mean": 0.087}},
            "data": {"tumour_free_slices": 18}}
    (res / "real_data.json").write_text(json.dumps(real))
    (res / "adapt_on_scans.json").write_text(json.dumps({
        "trained_on": 141, "seconds": 1500, "false_flags_before": {"mean": 0.08}, "false_flags_after": {"mean": 0.03}}))
    table = render_real_scans_targets(tmp_path)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert len(rows) == 4                                            # only the targets whose files exist
    dice = next(v for k, v in rows.items() if k.startswith("real BraTS tumour Dice"))
    assert "0.860 (0.800 to 0.900)" in dice and "above the baseline: yes; the aim: yes" in dice
    kept = next(v for k, v in rows.items() if "contrast" in k)
    assert "30 %" in kept and "**no**" in kept                       # 0.3 kept: over the 10 % target
    flagged = next(v for k, v in rows.items() if k.startswith("normal real brain"))
    assert "1.0 %; max 4.0 %; 0 of 18" in flagged and "| yes |" in flagged
    adapt = next(v for k, v in rows.items() if k.startswith("adapt"))
    assert "25.0 min" in adapt and "**no**" in adapt                  # halved, but over the 20-minute budget
