"""Where the real-scans issue's measured targets stand (docs/results.md), each from the results file that measured
it: the real-data check (``docs/results/real_data.json``), the full evaluation (``evaluation.json``), ``adapt`` on
held-out BraTS cases (``adapt_on_scans.json``), the domain gap (the realism check's record in docs/research/) and the
one-run benchmark (``benchmarks/results/one_run.json``). Nothing is typed here but the targets themselves."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path("docs") / "results"
DOMAIN_GAP = Path("docs") / "research" / "2026-12-06-domain-gap-tissue.json"   # the shipped preparation's gap
ONE_RUN = Path("benchmarks") / "results" / "one_run.json"

# issue 31's targets (its "Measured targets"), as numbers
TARGETS = {"dice_aim": 0.85, "contrast_kept": 0.10, "flagged_mean": 0.02, "flagged_max": 0.05,
           "synthbrain_dice": 0.687, "healthy_change": 0.062, "domain_gap": 0.75, "adapt_slices": 100,
           "adapt_minutes": 20.0}


def _read(root: Path, rel: Path) -> dict | None:
    path = root / rel
    return json.loads(path.read_text()) if path.is_file() else None


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _pct(x: float) -> str:
    return f"{100 * float(x):.1f} %"


def _rows(root: Path) -> list[tuple[str, str, str, str, str]]:
    """(target, measured, threshold baseline, reached, source) per target whose results file is there."""
    t, rows = TARGETS, []
    real = _read(root, RESULTS / "real_data.json")
    if real and "dice" in real:
        d, z = real["dice"]["dif_fuse"], real["dice"]["threshold"]
        ci = " ({:.3f} to {:.3f})".format(*d["ci95_cases"]) if d.get("ci95_cases") else ""
        rows.append((f"real BraTS tumour Dice above the threshold baseline on the same slices (aim {t['dice_aim']:.2f})",
                     f"{d['mean']:.3f}{ci}", f"{z['mean']:.3f}",
                     f"above the baseline: {_yes(d['mean'] > z['mean'])}; the aim: {_yes(d['mean'] >= t['dice_aim'])}",
                     "real-data check"))
    if real and "lesion_contrast_kept" in real:          # the keys of the real-data check's later versions
        kept = real["lesion_contrast_kept"]["median"]
        rows.append((f"the counterfactual keeps <= {100 * t['contrast_kept']:.0f} % of a real lesion's contrast "
                     f"(median)", f"{100 * kept:.0f} %", "", _yes(kept <= t["contrast_kept"]), "real-data check"))
    if real and "slices_above_5pct" in (real.get("normal_flagged") or {}).get("dif_fuse", {}):
        f, fz = real["normal_flagged"]["dif_fuse"], real["normal_flagged"]["threshold"]
        n_free = real["data"]["tumour_free_slices"]
        rows.append((f"normal real brain flagged <= {_pct(t['flagged_mean'])}, no slice above "
                     f"{_pct(t['flagged_max'])}",
                     f"{_pct(f['mean'])}; max {_pct(f['max'])}; {f['slices_above_5pct']} of {n_free} slices above "
                     f"5 %", f"{_pct(fz['mean'])}",
                     _yes(f["mean"] <= t["flagged_mean"] and f["max"] <= t["flagged_max"]), "real-data check"))
    ev = _read(root, RESULTS / "evaluation.json")
    if ev:
        m, thr = ev["methods"]["dif-fuse"], ev["methods"].get("flair-threshold", {})
        rows.append((f"SynthBrain test Dice not below {t['synthbrain_dice']:.3f} (the app's run)", f"{m['dice']:.3f}",
                     f"{thr['dice']:.3f}" if "dice" in thr else "", _yes(m["dice"] >= t["synthbrain_dice"]),
                     "full evaluation"))
        rows.append((f"healthy change not above {t['healthy_change']:.3f} (SynthBrain test)",
                     f"{m['identity_change']:.3f}", "", _yes(m["identity_change"] <= t["healthy_change"]),
                     "full evaluation"))
    gap = _read(root, DOMAIN_GAP)
    if gap:
        cnn, hist = gap["cnn"]["auroc"], gap["histogram"]["auroc"]
        rows.append((f"domain gap: AUROC of telling SynthBrain from real tumour-free slices <= {t['domain_gap']:.2f}",
                     f"CNN {cnn:.2f}; histogram {hist:.2f}", "", _yes(max(cnn, hist) <= t["domain_gap"]),
                     f"realism check ({gap['n_real']} real slices)"))
    run = _read(root, ONE_RUN)
    if run:
        calls = run["in_unet_calls"]
        rows.append(("a run no slower than at the issue (in UNet calls)",
                     f"{calls['cli']:.0f} (`run`), {calls['app']:.0f} (the app)", "",
                     "not compared: first measured after the issue's changes", "one-run benchmark"))
    ad = _read(root, RESULTS / "adapt_on_scans.json")
    if ad:
        minutes = float(ad["seconds"]) / 60.0
        b, a = ad["false_flags_before"]["mean"], ad["false_flags_after"]["mean"]
        ok = ad["trained_on"] >= t["adapt_slices"] and minutes <= t["adapt_minutes"] and a <= 0.5 * b
        rows.append((f"adapt: >= {t['adapt_slices']} normal slices in <= {t['adapt_minutes']:.0f} minutes on 2 cores, "
                     "false flags on held-out cases at least halved",
                     f"{ad['trained_on']} slices, {minutes:.1f} min; {_pct(b)} -> {_pct(a)}", "", _yes(ok),
                     "adapt on held-out BraTS cases"))
    return rows


def render_real_scans_targets(root: Path) -> str:
    """The markdown table of the targets, or a line saying which command makes the first results file."""
    rows = _rows(Path(root))
    if not rows:
        return ("*Not measured yet: `diffuse-studio real-data --brats ../shared/real_cases/brats2015 --write-docs` "
                "writes the first of its results files.*\n")
    lines = ["| target | measured | threshold baseline | reached | from |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines) + "\n"
