"""The evaluation's page: the results file ``docs/results/NAME.json`` (:func:`write_results`) and, from it alone, the
region ``<!-- generated:NAME -->`` of ``results.md`` (:func:`markdown`, :func:`write_region`), the per-slice CSV and
the Plotly figures. :mod:`diffuse_core.evaluation.report` runs the evaluation and calls these;
:mod:`diffuse_core.evaluation.docs_tables` rewrites or checks the region from the file."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from diffuse_core.evaluation.baselines import ORACLE_RADIUS
from diffuse_core.evaluation.methods import REGISTRY

log = logging.getLogger(__name__)

METHOD_LABELS = {name: method.label for name, method in REGISTRY.items()}


def json_safe(value):
    """``value`` with numpy scalars and arrays, tuples and paths as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def card_targets(card: dict) -> dict:
    """What the targets table reads from the DDPM card (kept in the results file, so the page is made from it alone):
    the healthy-change option with the lowest change, and the samples drawn from pure noise."""
    from diffuse_core.models.card import history_value

    hb = card.get("healthy_change_breakdown") or history_value(card, "previous_weights/healthy_change_breakdown") or {}
    best = min(hb.get("rows", []), key=lambda r: r["healthy_change"]["brain"], default=None)
    samples = ((card.get("quality") or {}).get("samples_from_noise") or {}).get("ddpm")
    return {"lowest_healthy_change": None if best is None else
            {"walk": best["walk"], "solver": best["solver"], "healthy_change": best["healthy_change"]["brain"],
             "test_dice": best["test_dice"]},
            "samples_from_noise": None if not samples else
            {k: samples[k] for k in ("grey_background", "grainy", "n") if k in samples}}



def _fmt(mean: float, se: float | None = None) -> str:
    return f"{mean:.3f}" if se is None else f"{mean:.3f} ({se:.3f})"


def write_results(docs: Path, result: dict) -> dict:
    """The results file ``DOCS/results/NAME.json`` and, from that file as written, its region of ``DOCS/results.md``
    (the page created where missing; every other part of it kept). Returns the file's content as read back."""
    import json

    path = Path(docs) / "results" / f"{result['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json_safe(result), indent=1) + "\n")
    os.replace(tmp, path)
    doc = json.loads(path.read_text())
    write_region(Path(docs) / "results.md", doc["name"], markdown(doc))
    return doc


REGION_TITLES = {"evaluation_quick": "Quick evaluation on the shipped weights (`diffuse-studio evaluate --quick`)",
                 "evaluation": "Full evaluation (`diffuse-studio evaluate`)"}


def write_region(page: Path, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` of ``page``: in place where
    the markers are, else appended under a heading (a new page gets a title); nothing else of the page changes."""
    import re

    opening, closing = f"<!-- generated:{name} -->\n", f"<!-- /generated:{name} -->"
    text = page.read_text() if page.is_file() else "# Evaluation results\n"
    pattern = re.compile(re.escape(opening) + r".*?" + re.escape(closing), re.S)
    if pattern.search(text):
        new = pattern.sub(lambda m: opening + body + closing, text, count=1)
    else:
        new = text.rstrip("\n") + f"\n\n## {REGION_TITLES.get(name, name)}\n\n{opening}{body}{closing}\n"
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, page)


def _earlier_starts(doc: dict) -> str:
    """What the minutes leave out: results kept from earlier starts of a resumed run (recorded since 2026-12-07; an
    older file says only that its time is that of the start that wrote it)."""
    earlier = doc.get("kept_from_earlier_starts")
    if earlier is None:
        return " in the start of the command that wrote it; a resumed run's earlier starts are not counted"
    if not earlier:
        return ""
    n = len([m for m in earlier if m != "_sweeps"])
    return (f" in the start that wrote it, which resumed {n} of {len(doc['methods'])} methods"
            + (" and the sweeps" if "_sweeps" in earlier else "") + " kept from earlier starts, not counted here")


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def save_figure(fig, docs: Path, name: str, png: bool = True) -> list[str]:
    written = []
    fig.write_html(docs / f"{name}.html", include_plotlyjs="cdn")
    written.append(f"{name}.html")
    if png:
        try:
            fig.write_image(docs / f"{name}.png", width=900, height=520)
            written.append(f"{name}.png")
        except Exception as err:  # kaleido needs a Chrome/Chromium; the HTML is always there
            log.warning("no PNG for %s (%s); the HTML figure is written", name, err)
    return written


def write_figures(docs: Path, result: dict) -> dict[str, list[str]]:
    import plotly.graph_objects as go

    figs: dict[str, list[str]] = {}
    methods = result["methods"]
    png = bool(result["settings"].get("png_figures", True))
    names = list(methods)
    fig = go.Figure(go.Bar(x=[METHOD_LABELS.get(m, m) for m in names], y=[methods[m]["dice"] for m in names],
                           error_y={"type": "data", "array": [methods[m]["dice_se"] for m in names]}))
    fig.update_layout(title="Dice of the anomaly maps on the SynthBrain test split (mean over seeds, SE bars)",
                      yaxis_title="Dice", template="plotly_white")
    figs["methods"] = save_figure(fig, docs, "fig_methods", png)
    sw = result["sweeps"]
    s = result["settings"]
    if "k_percentile" in sw:
        fig = go.Figure(go.Heatmap(z=sw["k_percentile"], x=[f"{p:g}th" for p in s["sweep_percentiles"]],
                                   y=[f"K={k}" for k in s["sweep_k"]], colorscale="Viridis", texttemplate="%{z:.3f}"))
        fig.update_layout(title="Dif-fuse Dice on validation: noise level K x saliency percentile (cf. paper Fig. 5)",
                          template="plotly_white")
        figs["k_percentile"] = save_figure(fig, docs, "fig_k_percentile", png)
    if "steps" in sw:
        fig = go.Figure(go.Scatter(x=sw["steps"]["steps"], y=sw["steps"]["dice"], mode="lines+markers"))
        fig.update_layout(title="Dif-fuse Dice on validation against the number of sampling steps",
                          xaxis_title="steps over [0, K]", yaxis_title="Dice", template="plotly_white")
        figs["steps"] = save_figure(fig, docs, "fig_steps", png)
    return figs


def _ci(pair) -> str:
    return f"{pair[0]:.3f}–{pair[1]:.3f}"


def _num(value, fmt: str = ".3f", none: str = "n/a") -> str:
    return none if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)


def answers(result: dict) -> list[str]:
    """The report's opening: the four questions a reader from the field asks (issue: evaluation v2), answered with
    this run's numbers. Comparisons are paired over the same slices (95% bootstrap interval of the difference)."""
    from diffuse_core.evaluation.protocol import paired_difference

    out = ["### In short", ""]
    sets = [("SynthBrain test", result["methods"])] + ([("real BraTS", result["real"])] if result["real"] else [])
    for name, table in sets:
        ours, thr, orc = table.get("dif-fuse"), table.get("flair-threshold"), table.get("dif-fuse-oracle")
        if not ours:
            continue
        lines = []
        if thr:
            diff = paired_difference(ours["dice_per_slice"], thr["dice_per_slice"])
            word = {"higher": "**beats**", "lower": "**loses to**", "level": "is **level with**"}[diff["verdict"]]
            lines.append(f"1. *Does it beat thresholding?* Dif-fuse {word} the FLAIR threshold: Dice {ours['dice']:.3f} "
                         f"({_ci(ours['dice_ci'])}) against {thr['dice']:.3f} ({_ci(thr['dice_ci'])}); paired "
                         f"difference {diff['mean']:+.3f} ({_ci(diff['ci'])}) over {diff['n']} slices.")
            lines.append(f"2. *What does it flag on healthy tissue?* {100 * ours['healthy_flagged']:.1f} % of the brain "
                         f"on healthy slices, the threshold {100 * thr['healthy_flagged']:.1f} %.")
        if orc:
            gap = paired_difference(orc["dice_per_slice"], ours["dice_per_slice"])
            mask_share, model_share = orc["dice"] - ours["dice"], 1 - orc["dice"]
            part = "the healthy model" if model_share > mask_share else "the mask (saliency)"
            lines.append(f"3. *Mask or model?* With the true lesion (+{ORACLE_RADIUS} px) as its mask Dif-fuse reaches "
                         f"{orc['dice']:.3f} ({_ci(orc['dice_ci'])}): the mask costs {mask_share:.3f} Dice (paired "
                         f"{_ci(gap['ci'])}), the healthy model {model_share:.3f}; the larger part of the error is "
                         f"{part}'s.")
        lines.append(f"4. *How sure?* Intervals are 95% bootstrap intervals over {ours.get('n', len(ours['dice_per_slice']))} "
                     f"diseased slices; their width for Dif-fuse is {ours['dice_ci'][1] - ours['dice_ci'][0]:.3f}.")
        out += [f"**{name}**", ""] + lines + [""]
    return out


def _rule_text(rule) -> str:
    if not rule:
        return "the paper's percentile"
    if rule.get("kind") == "percentile":
        return f"the {rule['percentile']:g}th saliency percentile (the paper's)"
    weighted = " weighted by the classifier's P(diseased)" if rule.get("kind") == "weighted" else ""
    grown = f", grown by {rule['margin']} px" if rule.get("margin") else ""
    return (f"saliency{weighted} >= {rule['level']:g} x its maximum, at most {100 * rule['max_share']:.0f} % of the "
            f"brain{grown}")


def _as_card(s: dict, m: dict) -> str:
    if (s["k"], s["steps"]) == (m.get("k"), m.get("steps")):
        return "the card's, as in the app"
    return f"the card's: K {m.get('k')}, {m.get('steps')} steps"


def _opening(doc: dict) -> list[str]:
    """Who measured what, where and how: the stamp and the subset, every value read from the results file."""
    s, m = doc["settings"], doc["model"]
    load = doc.get("load_average_at_start")
    seeds_all = [METHOD_LABELS.get(x, x) for x in s["all_seed_methods"] if x in s["methods"]]
    seeds_line = (f"seeds {list(s['seeds'])} for {', '.join(seeds_all)}, seed {s['seeds'][0]} for the others"
                  if len(s["seeds"]) > 1 and len(seeds_all) < len(s["methods"]) else f"seeds {list(s['seeds'])}")
    ours = doc["methods"].get("dif-fuse") or {}
    thr_from = ("the card's anomaly threshold" if ours.get("threshold_from") == "card"
                else "a threshold chosen on validation")
    return [
        f"Measured {doc['date']} at commit `{doc['commit']}` on {doc['hardware']}, {doc['torch_threads']} torch "
        f"thread(s)" + (f" (load average {load:g} at the start)" if load is not None else "") +
        f", by `{doc['command']}` ({doc['wall_seconds'] / 60:.1f} min"
        + (f" wall, {doc['cpu_seconds'] / 60:.1f} min CPU" if doc.get("cpu_seconds") is not None else "")
        + _earlier_starts(doc) + f"). Denoiser: {m['steps_done']} training steps, "
        f"intensity `{m['input_normalisation']}`.",
        "",
        f"Subset: SynthBrain {doc['n_test_diseased']} diseased + {doc['n_test_healthy']} healthy test slices; the "
        f"other methods' thresholds chosen on {doc['n_val_diseased']} diseased validation slices; methods: "
        f"{', '.join(METHOD_LABELS.get(x, x) for x in s['methods'])}; {seeds_line}. K {s['k']}, {s['steps']} steps "
        f"({_as_card(s, m)}), anomaly maps opened/closed with a {m['anomaly_kernel']}x{m['anomaly_kernel']} kernel. "
        f"Dif-fuse is the app's run (`diffuse_core.run.assembly.run_stack`): mask {_rule_text(m['mask_rule'])}, "
        f"score `{m['score']}`, {thr_from} ({_num(ours.get('threshold'), 'g')}), sampler seed as listed; the "
        f"percentile-mask methods use the {s['percentile']:g}th percentile. Calls and seconds per slice: a fresh run "
        f"(the app's run with its saliency; the others' validation pass); the test passes of the other walks share "
        f"each slice's DDIM inversion.",
        "",
    ]


def markdown(doc: dict) -> str:
    """The evaluation's region of docs/results.md from its results file alone (no card, no model)."""
    s, methods = doc["settings"], doc["methods"]
    ranked = sorted(methods, key=lambda m: -methods[m]["dice"])
    rank = ranked.index("dif-fuse") + 1 if "dif-fuse" in methods else None
    lines = _opening(doc) + answers(doc)
    ours = methods.get("dif-fuse") or {}
    if ours.get("verdict") or ours.get("redrawn_share"):
        v, share = ours.get("verdict"), ours.get("redrawn_share")
        bits = []
        if v:
            bits.append(f"slice verdict at the card's threshold ({v['threshold']:.3g}): diseased test slices called "
                        f"abnormal {100 * v['sensitivity']:.0f} %, healthy ones called normal "
                        f"{100 * v['specificity']:.0f} %")
        if share:
            bits.append(f"redrawn region {100 * share['diseased']:.1f} % of the brain on diseased slices, "
                        f"{100 * share['healthy']:.1f} % on healthy ones")
        lines += ["The app's run: " + "; ".join(bits) + ".", ""]
    if rank is not None:
        lines += [f"**Dif-fuse ranks {rank} of {len(methods)}** by mean Dice on SynthBrain"
                  + ("." if rank == 1 else f"; ahead of it: {', '.join(METHOD_LABELS.get(m, m) for m in ranked[:rank - 1])}."),
                  ""]
    if doc.get("grid"):
        lines += [f"![SynthBrain test slices: input, then each main method's counterfactual and anomaly map, the "
                  f"lesion outline in green]({doc['grid']})", ""]
    several = lambda r: len(r.get("seeds", [0])) > 1     # noqa: E731
    lines += ["### Table I on SynthBrain (mean over seeds, standard error over seeds in brackets; 95% bootstrap "
              "interval over slices)", "",
              "| Method | Dice | Dice 95% CI | IoU | healthy change | healthy flagged | AUPRC | AUROC | "
              "KID (own-classifier features) | threshold | calls/slice | s/slice |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in ranked:
        r = methods[m]
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {_fmt(r['dice'], r['dice_se'] if several(r) else None)} | "
                     f"{_ci(r['dice_ci'])} | {_fmt(r['iou'], r['iou_se'] if several(r) else None)} | "
                     f"{_num(r['identity_change'], '.4f')} | {_num(100 * r['healthy_flagged'], '.1f')} % | "
                     f"{_num(r.get('auprc'))} | {_num(r.get('auroc'))} | "
                     f"{'n/a' if _num(r['kid']) == 'n/a' else _fmt(r['kid'], r['kid_se'] if several(r) else None)} | "
                     f"{r['threshold']:.2f} | {_num(r['calls_per_slice'], '.0f')} | "
                     f"{_num(r['seconds_per_slice'], '.2f')} |")
    lines += ["", "*healthy change*: mean absolute intensity change inside the brain on healthy test slices "
              "(images in [-1, 1]; the identity check of paper Fig. 6). *healthy flagged*: share of the brain above "
              "the method's threshold on the healthy test slices. *AUPRC/AUROC*: over every brain pixel of the test "
              "slices (first seed; threshold-free). *KID*: kernel distance between the "
              "counterfactuals of diseased slices and real healthy slices, on pooled features of the project's own "
              "classifier (Inception weights cannot be downloaded here), so it is not comparable to the paper's KID. "
              f"Per slice: [{doc['per_slice_csv']}]({doc['per_slice_csv']}).",
              "", "### Dice per lesion type and size", ""]
    types = sorted({t for r in methods.values() for t in r["by_type"]})
    sizes = [z for z in ("small", "medium", "large") if any(z in r["by_size"] for r in methods.values())]
    lines += ["| Method | " + " | ".join(types + sizes) + " |", "|---" * (1 + len(types) + len(sizes)) + "|"]
    for m in ranked:
        r = methods[m]
        cells = [_num(r["by_type"].get(t)) for t in types] + [_num(r["by_size"].get(z)) for z in sizes]
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    sw = doc["sweeps"]
    if "k_percentile" in sw:
        lines += ["", "### Sweep: K x percentile (validation Dice, Fig. 5; the paper's percentile mask)", "",
                  "| K \\ percentile | " + " | ".join(f"{p:g}" for p in s["sweep_percentiles"]) + " |",
                  "|---" * (1 + len(s["sweep_percentiles"])) + "|"]
        for k, row in zip(s["sweep_k"], sw["k_percentile"]):
            lines.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if "steps" in sw:
        lines += ["", "### Sweep: sampling steps (validation; the paper's percentile mask)", "",
                  "| steps | Dice | s/slice |", "|---|---|---|"]
        for n, d, sec in zip(sw["steps"]["steps"], sw["steps"]["dice"], sw["steps"]["seconds_per_slice"]):
            lines.append(f"| {n} | {d:.3f} | {sec:.2f} |")
    if doc["real"]:
        lines += ["", "### Real data, out of domain: BraTS 2015 FLAIR, whole tumour", "",
                  *([f"![Real BraTS slices: input, counterfactuals and anomaly maps of the main methods, the "
                     f"expert's outline in green]({doc['brats_grid']})", ""] if doc.get("brats_grid") else []),
                  "Thresholds from the SynthBrain validation split (Dif-fuse: the card's); models never saw real data. "
                  "Dice and IoU on the tumour slices (95% bootstrap interval over slices); *healthy flagged*: share of "
                  "the brain flagged on tumour-free slices of the same cases; AUPRC/AUROC over every brain pixel of all "
                  "slices (threshold-free); *Dice at best threshold* is an oracle (the threshold chosen on these "
                  "slices themselves), shown beside the honest one.", "",
                  "| Method | Dice | Dice 95% CI | IoU | healthy flagged | AUPRC | AUROC | Dice at best threshold "
                  "(oracle) | tumour / healthy slices |", "|---|---|---|---|---|---|---|---|---|"]
        for m in sorted(doc["real"], key=lambda m: -doc["real"][m]["dice"]):
            r = doc["real"][m]
            lines.append(f"| {METHOD_LABELS.get(m, m)} | {r['dice']:.3f} | {_ci(r['dice_ci'])} | {r['iou']:.3f} | "
                         f"{_num(100 * r['healthy_flagged'], '.1f')} % | {_num(r.get('auprc'))} | "
                         f"{_num(r.get('auroc'))} | {_num(r.get('dice_best_threshold'))} | "
                         f"{r['n']} / {r.get('n_healthy', 0)} |")
    lines += targets_section(doc)
    figures = doc.get("figure_files") or {}
    if figures:
        lines += ["### Figures", ""]
        for name, files in figures.items():
            png = [f for f in files if f.endswith(".png")]
            if png:
                lines.append(f"![{name}]({png[0]})")
            lines.append(f"Interactive: [{files[0]}]({files[0]})")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def targets_section(result: dict, card: dict | None = None) -> list[str]:
    """The models issue's measured targets beside what this run measured and what the results file kept of the DDPM
    card (``card``: read that card instead): a target not reached stays in the table with its value, never lowered."""
    methods, real = result.get("methods", {}), result.get("real") or {}
    ours, thr = methods.get("dif-fuse"), methods.get("flair-threshold")
    if ours is None:
        return []
    ranked, rows = sorted(methods, key=lambda m: -methods[m]["dice"]), []
    if "dif-fuse" in real and "flair-threshold" in real:
        d, t = real["dif-fuse"]["dice"], real["flair-threshold"]["dice"]
        rows.append(("Real BraTS Dice above the FLAIR threshold (both thresholds from SynthBrain validation); aim 0.85",
                     f"{d:.3f} vs {t:.3f}", "above the threshold" + ("; 0.85 reached" if d >= 0.85 else
                                                                       "; 0.85 not reached") if d > t else "no"))
    rows.append(("SynthBrain test Dice >= 0.70 and first of all methods",
                 f"{ours['dice']:.3f}, rank {ranked.index('dif-fuse') + 1} of {len(methods)}"
                 + (f" (FLAIR threshold {thr['dice']:.3f})" if thr else ""),
                 "yes" if ours["dice"] >= 0.70 and ranked[0] == "dif-fuse" else "no"))
    extra = card_targets(card) if card is not None else result.get("card_targets") or {}
    best = extra.get("lowest_healthy_change")
    rows.append(("Healthy slices: mean absolute change <= 0.03",
                 f"{ours['identity_change']:.3f}" + (f" (lowest option: {best['walk']} walk + {best['solver']} "
                                                     f"{best['healthy_change']:.3f}, SynthBrain test Dice "
                                                     f"{best['test_dice']:.3f})" if best else ""),
                 "yes" if ours["identity_change"] <= 0.03 else "no (the default)"))
    q = extra.get("samples_from_noise")
    if q:
        rows.append(("Samples from pure noise: 0 of 16 grey, 0 grainy",
                     f"{q['grey_background']} of {q['n']} grey, {q['grainy']} grainy",
                     "yes" if q["grey_background"] == 0 and q["grainy"] == 0 else "no"))
    out = ["", "### Where the models issue's targets stand", "",
           "Measured by this run where it can (the Dif-fuse and threshold rows above); the healthy-change options from "
           "the DDPM card's `healthy_change_breakdown` (`benchmarks/bench_inversion.py`; its `history` keeps that of the "
           "previous weights), the samples from its `quality`, both copied into the results file when it was written. "
           "A target not reached is listed with its value.", "",
           "| target | measured | reached |", "|---|---|---|"]
    return out + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]
