"""The docs' sentences on what ``calibrate-verdict`` and ``adapt`` did on real scans (docs/training.md), each from
the record its command wrote with ``--record`` (``docs/results/verdict_on_scans.json``, ``adapt_on_scans.json``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

RESULTS = Path("docs") / "results"


def _cases(groups) -> str:
    """BraTS case folder names as their patient ids (brats_2013_pat0004_1 -> pat0004), other names as they are."""
    return ", ".join(m.group(0) if (m := re.search(r"pat\d+", g)) else g for g in groups)


def _pct(value) -> str:
    return f"{100 * float(value):.1f} %"


def _made_by(doc: dict, what: str = "") -> str:
    return (f"Made by `{doc['command']}` ({doc['date']}, commit {str(doc['commit'])[:12]}, {doc['hardware']}, "
            f"{float(doc['seconds']):.0f} s{what}).*\n")


def _record(root: Path, name: str) -> dict | None:
    """The record ``docs/results/<name>.json`` a command wrote with ``--record``, or None where it has not run."""
    path = root / RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _not_measured(command: str) -> str:
    return f"*Not measured yet: `{command}`.*\n"


def render_verdict_on_scans(root: Path) -> str:
    """The demonstration of ``diffuse-studio calibrate-verdict`` on BraTS (docs/training.md) from its record."""
    d = _record(root, "verdict_on_scans")
    if d is None:
        return _not_measured("diffuse-studio calibrate-verdict --data ../shared/real_cases/brats2015 --out "
                             "runs/verdict_brats --record docs/results/verdict_on_scans.json")
    return (f"*Threshold {d['threshold']:.3f} chosen on {d['chosen_on']['normal_slices']} tumour-free slices of cases "
            f"{_cases(d['chosen_on']['groups'])}; on the held-out cases {_cases(d['held_out']['groups'])}: "
            f"{_pct(d['false_abnormal_rate_held_out'])} of their {d['held_out']['normal_slices']} tumour-free slices "
            f"called abnormal (the shipped SynthBrain threshold {d['base_threshold']:.3f}: "
            f"{_pct(d['base_false_abnormal_rate_held_out'])}), {_pct(d['sensitivity'])} of their "
            f"{d['held_out']['lesion_slices']} tumour slices called abnormal. " + _made_by(d))


def render_adapt_on_scans(root: Path) -> str:
    """The demonstration of ``diffuse-studio adapt`` on BraTS (docs/training.md) from its record."""
    d = _record(root, "adapt_on_scans")
    if d is None:
        return _not_measured("diffuse-studio adapt --data ../shared/real_cases/brats2015 --out runs/adapt_brats "
                             "--holdout-cases pat0002,pat0003 --record docs/results/adapt_on_scans.json")
    before, after = d["false_flags_before"], d["false_flags_after"]
    clf = d.get("classifier")
    stage = ("" if not clf else f"the classifier adapted first ({clf['steps']} steps, {clf['per_slice']} pasted "
                                f"lesions per slice, {float(clf['seconds']):.0f} s), then ")
    b, a = d.get("normal_called_abnormal_before"), d.get("normal_called_abnormal_after")
    calls = ("" if not b or not a else
             f"; called abnormal {b['abnormal']} of {b['called']} called -> {a['abnormal']} of {a['called']}")
    lb, la = d.get("lesion_dice_before"), d.get("lesion_dice_after")
    lesions = ("" if not lb or not la else
               f"; tumour Dice on {lb['n']} of their tumour slices {lb['mean']:.3f} -> {la['mean']:.3f}")
    ddpm = (f"{d['steps']} DDPM steps (batch {d['batch_size']}, peak rate {d['lr']:g}) in a "
            f"{d['minutes_budget']:g}-minute budget" if d["steps"] else "the DDPM kept as it was")
    return (f"*On {d['trained_on']} tumour-free slices of the other cases, {stage}{ddpm}; on "
            f"{d['measured_on']} tumour-free slices of the held-out cases {_cases(d['held_out_groups'])}: normal brain "
            f"flagged {_pct(before['mean'])} -> {_pct(after['mean'])} ({'halved' if d['halved'] else 'not halved'}; "
            f"max {_pct(before['max'])} -> {_pct(after['max'])}){calls}{lesions}. " + _made_by(d, " in all"))
