"""``diffuse-studio evaluate``: run the evaluation protocol of :mod:`diffuse_core.evaluation.protocol` and write the report.

Outputs (in ``--docs``, default ``docs/``): ``results.md`` (tables, with the command and hardware at the top),
``results_per_slice.csv``, and Plotly figures as HTML (and PNG where a browser for kaleido is available):
``fig_k_percentile`` (Dice over K x percentile, paper Fig. 5), ``fig_steps`` (Dice against sampling steps),
``fig_methods`` (Dice per method).
"""

from __future__ import annotations

import csv
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.core.anomaly import anomaly_kernel_of
from diffuse_core.evaluation.protocol import (THRESHOLD_GRID, bootstrap_ci, brats_set, choose_threshold,
                                              classifier_features, compute_saliency_maps, flagged_share,
                                              identity_change, kid, masks_at, model_scale, pixel_scores,
                                              run_on_set, scores, synthbrain_set)
from diffuse_core.evaluation.methods import METHODS, REGISTRY
from diffuse_core.evaluation.baselines import ORACLE_RADIUS
from diffuse_core.evaluation.picture import GRID_METHODS, real_data_grid

log = logging.getLogger(__name__)

METHOD_LABELS = {name: method.label for name, method in REGISTRY.items()}


@dataclass
class EvalSettings:
    n_val: int = 32                 # a quarter healthy: 24 diseased slices choose each method's threshold
    n_test: int = 80                # a quarter healthy: 60 diseased + 20 healthy test slices
    seeds: tuple[int, ...] = (0, 1, 2)
    k: int = 500
    steps: int = 25
    percentile: float = 90.0
    methods: tuple[str, ...] = METHODS
    # methods run with every seed; the others (ablations and peers, which the headline numbers do not rest on) with
    # the first seed only, to keep the full run within about two hours on two CPU cores
    all_seed_methods: tuple[str, ...] = ("dif-fuse", "dif-fuse-oracle")
    sweep_k: tuple[int, ...] = (250, 500, 750)
    sweep_percentiles: tuple[float, ...] = (80.0, 85.0, 90.0, 95.0)
    sweep_steps: tuple[int, ...] = (10, 25, 50)
    brats_dir: str | None = None
    brats_per_case: int = 4
    brats_healthy_per_case: int = 2   # tumour-free slices of the same cases: what a method flags on healthy tissue
    batch_size: int = 8
    precision: str = "auto"
    command: str = ""
    png_figures: bool = True      # PNG copies of the figures (kaleido drives a local Chromium; off for --quick)
    extra: dict = field(default_factory=dict)


def _se(values) -> float:
    v = np.asarray(values, float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def _fmt(mean: float, se: float | None = None) -> str:
    return f"{mean:.3f}" if se is None else f"{mean:.3f} ({se:.3f})"


def _emit(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def validation_set(denoiser, saliency_models, s: EvalSettings, progress: Callable[[str], None] | None = None):
    """The SynthBrain validation split of an evaluation (a quarter healthy), with its saliency maps."""
    mods = ("flair",) if denoiser.config.channels == 1 else ("flair", "t1", "t1c", "t2")
    _emit(progress, "generating SynthBrain validation slices")
    val = model_scale(denoiser, synthbrain_set("val", s.n_val, size=denoiser.config.resolution, modalities=mods,
                                               healthy_fraction=0.25))
    compute_saliency_maps(val, saliency_models)
    return val


def run_validation_sweeps(denoiser, val, s: EvalSettings, progress: Callable[[str], None] | None = None) -> dict:
    """Dif-fuse's validation Dice over K x percentile (paper Fig. 5) and over sampling steps, per slice as well.

    The per-slice Dice (diseased validation slices, in ``val``'s order) lets :func:`recommended_settings` compare
    two settings on the same slices rather than by their means alone.
    """
    from diffuse_core.pipeline import InversionCache

    val_d = val.subset(np.where(val.diseased)[0])
    cache = InversionCache(size=4 * (len(val_d) // max(s.batch_size, 1) + 1))   # one K's inversions at a time
    sweeps: dict = {}
    if s.sweep_k and s.sweep_percentiles:
        _emit(progress, "sweep: K x percentile on validation (Fig. 5)")
        per_slice = np.zeros((len(s.sweep_k), len(s.sweep_percentiles), len(val_d)))
        for a, k in enumerate(s.sweep_k):
            for b, p in enumerate(s.sweep_percentiles):
                m = {kk: v[val.diseased] for kk, v in masks_at(val, p).items()}
                _, ano, _, _ = run_on_set("dif-fuse", denoiser, val_d, m, k, s.steps, 0, s.batch_size, s.precision,
                                          inversion_cache=cache)
                per_slice[a, b] = scores(ano, val_d.lesions, choose_threshold(ano, val_d.lesions))[0]
        sweeps["k_percentile"] = per_slice.mean(axis=2).tolist()
        sweeps["k_percentile_per_slice"] = per_slice.round(4).tolist()
    if s.sweep_steps:
        _emit(progress, "sweep: sampling steps on validation")
        masks = {k: v[val.diseased] for k, v in masks_at(val, s.percentile).items()}
        dice_steps, sec_steps, per_slice_steps = [], [], []
        for n in s.sweep_steps:
            _, ano, _, sec = run_on_set("dif-fuse", denoiser, val_d, masks, s.k, n, 0, s.batch_size, s.precision)
            d = scores(ano, val_d.lesions, choose_threshold(ano, val_d.lesions))[0]
            dice_steps.append(float(d.mean()))
            per_slice_steps.append(d.round(4).tolist())
            sec_steps.append(sec)
        sweeps["steps"] = {"steps": list(s.sweep_steps), "dice": dice_steps, "seconds_per_slice": sec_steps,
                           "dice_per_slice": per_slice_steps}
    return sweeps


def run_evaluation(denoiser, saliency_models, settings: EvalSettings, docs_dir: str | Path = "docs",
                   progress: Callable[[str], None] | None = None) -> dict:
    """Run the whole protocol and write the report; returns the numbers as a dict."""
    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    s = settings
    size, chans = denoiser.config.resolution, denoiser.config.channels
    mods = ("flair",) if chans == 1 else ("flair", "t1", "t1c", "t2")
    t_start = time.perf_counter()
    from diffuse_core.pipeline import InversionCache

    _emit(progress, "generating SynthBrain validation and test slices")
    val = model_scale(denoiser, synthbrain_set("val", s.n_val, size=size, modalities=mods, healthy_fraction=0.25))
    test = model_scale(denoiser, synthbrain_set("test", s.n_test, size=size, modalities=mods, healthy_fraction=0.25))
    healthy_ref = model_scale(denoiser, synthbrain_set("val", max(8, s.n_test // 2), base_seed=1, size=size,
                                                       modalities=mods, healthy_fraction=1.0))
    _emit(progress, "saliency maps (ACAT, Grad-CAM, gradient)")
    for data in (val, test):
        compute_saliency_maps(data, saliency_models)
    val_masks, test_masks = masks_at(val, s.percentile), masks_at(test, s.percentile)
    val_d = val.subset(np.where(val.diseased)[0])
    val_d_masks = {k: v[val.diseased] for k, v in val_masks.items()}

    rows: list[dict] = []
    summary: dict[str, dict] = {}
    feats_ref = classifier_features(saliency_models.classifier, healthy_ref.images)
    test_cache = InversionCache(size=len(test) // max(s.batch_size, 1) + 1)
    dis = test.diseased
    for method in s.methods:
        _emit(progress, f"method {method}: choosing the threshold on validation")
        # a fresh run (no inversion reuse): its calls and seconds per slice are the method's cost in the tables
        _, ano_val, calls, sec_fresh = run_on_set(method, denoiser, val_d, val_d_masks, s.k, s.steps, seed=0,
                                                  batch_size=s.batch_size, precision=s.precision)
        grid = REGISTRY[method].threshold_grid
        thr = 0.5 if method == "acat" else (choose_threshold(ano_val, val_d.lesions, grid=grid) if grid
                                            else choose_threshold(ano_val, val_d.lesions))
        seeds = s.seeds if method in s.all_seed_methods else s.seeds[:1]
        per_seed_dice, per_seed_iou, per_seed_id, per_seed_kid = [], [], [], []
        per_slice_dice = np.zeros((len(seeds), len(test)))
        first_ano = None
        for si, seed in enumerate(seeds):
            _emit(progress, f"method {method}: test split, seed {seed}")
            cf, ano, _, _ = run_on_set(method, denoiser, test, test_masks, s.k, s.steps, seed=seed + 1,
                                       batch_size=s.batch_size, precision=s.precision, inversion_cache=test_cache)
            first_ano = ano if first_ano is None else first_ano
            d, j = scores(ano, test.lesions, thr)
            per_seed_dice.append(d[dis].mean())
            per_seed_iou.append(j[dis].mean())
            per_seed_id.append(identity_change(test.images[~dis], cf[~dis], test.brains[~dis]) if (~dis).any()
                               else float("nan"))
            if REGISTRY[method].walk is not None and dis.sum() >= 2:
                per_seed_kid.append(kid(classifier_features(saliency_models.classifier, cf[dis]), feats_ref))
            per_slice_dice[si] = d
            for i in range(len(test)):
                rows.append({"method": method, "seed": seed, "id": test.ids[i], "lesion_type": test.lesion_types[i],
                             "lesion_size": test.lesion_sizes[i], "healthy": int(not dis[i]),
                             "dice": round(float(d[i]), 4), "iou": round(float(j[i]), 4),
                             "mean_abs_change_in_brain": round(float(np.abs(test.images[i] - cf[i]).mean(axis=0)[
                                 test.brains[i].astype(bool)].mean()), 4), "threshold": thr})
        by_type = {}
        for lt in sorted(set(t for t, dd in zip(test.lesion_types, dis) if dd)):
            sel = np.array([t == lt for t in test.lesion_types]) & dis
            by_type[lt] = float(per_slice_dice[:, sel].mean())
        by_size = {}
        for sz in ("small", "medium", "large"):
            sel = np.array([z == sz for z in test.lesion_sizes]) & dis
            if sel.any():
                by_size[sz] = float(per_slice_dice[:, sel].mean())
        slice_dice = per_slice_dice[:, dis].mean(axis=0)
        summary[method] = {
            "dice": float(np.mean(per_seed_dice)), "dice_se": _se(per_seed_dice),
            "dice_ci": bootstrap_ci(slice_dice), "dice_per_slice": slice_dice.round(4).tolist(),
            "iou": float(np.mean(per_seed_iou)), "iou_se": _se(per_seed_iou),
            "identity_change": float(np.nanmean(per_seed_id)) if per_seed_id else float("nan"),
            "healthy_flagged": (float(flagged_share(first_ano[~dis], test.brains[~dis], thr).mean())
                                if (~dis).any() else float("nan")),
            **pixel_scores(first_ano, test.lesions, test.brains),
            "kid": float(np.mean(per_seed_kid)) if per_seed_kid else float("nan"),
            "kid_se": _se(per_seed_kid) if per_seed_kid else float("nan"),
            "threshold": thr, "calls_per_slice": calls, "seconds_per_slice": sec_fresh,
            "seeds": list(seeds), "by_type": by_type, "by_size": by_size,
        }

    sweeps = run_validation_sweeps(denoiser, val, s, progress) if "dif-fuse" in s.methods else {}

    real = {}
    if s.brats_dir and Path(s.brats_dir).is_dir():
        _emit(progress, "real BraTS cases (out of domain)")
        brats = brats_set(s.brats_dir, size=size, per_case=s.brats_per_case,
                          healthy_per_case=s.brats_healthy_per_case)
        compute_saliency_maps(brats, saliency_models)
        bm = masks_at(brats, s.percentile)
        tum = brats.diseased
        brats_cache = InversionCache(size=len(brats) // max(s.batch_size, 1) + 1)
        grid_outputs = {}
        for method in s.methods:
            _emit(progress, f"method {method}: BraTS slices")
            cf, ano, _, _ = run_on_set(method, denoiser, brats, bm, s.k, s.steps, 1, s.batch_size, s.precision,
                                       inversion_cache=brats_cache)
            thr = summary[method]["threshold"]
            if method in GRID_METHODS:
                grid_outputs[method] = (cf, ano, thr)
            d, j = scores(ano[tum], brats.lesions[tum], thr)
            grid = REGISTRY[method].threshold_grid or THRESHOLD_GRID
            best = choose_threshold(ano[tum], brats.lesions[tum], grid=grid)
            real[method] = {"dice": float(d.mean()), "iou": float(j.mean()), "n": int(tum.sum()),
                            "dice_ci": bootstrap_ci(d), "dice_per_slice": d.round(4).tolist(),
                            "n_healthy": int((~tum).sum()),
                            "healthy_flagged": (float(flagged_share(ano[~tum], brats.brains[~tum], thr).mean())
                                                if (~tum).any() else float("nan")),
                            "dice_best_threshold": float(scores(ano[tum], brats.lesions[tum], best)[0].mean()),
                            "best_threshold": best, **pixel_scores(ano, brats.lesions, brats.brains)}
        if grid_outputs:
            order = {m: grid_outputs[m] for m in GRID_METHODS if m in grid_outputs}
            real_data_grid(brats, order, docs / "brats_grid.png")

    result = {"settings": {k: v for k, v in s.__dict__.items() if k != "extra"}, "methods": summary,
              "sweeps": sweeps, "real": real, "wall_seconds": time.perf_counter() - t_start,
              "n_test_diseased": int(test.diseased.sum()), "n_test_healthy": int((~test.diseased).sum()),
              "n_val_diseased": int(val.diseased.sum())}
    _write_csv(docs / "results_per_slice.csv", rows)
    figures = _write_figures(docs, result)
    _write_markdown(docs / "results.md", result, denoiser, figures)
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _save_figure(fig, docs: Path, name: str, png: bool = True) -> list[str]:
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


def _write_figures(docs: Path, result: dict) -> dict[str, list[str]]:
    import plotly.graph_objects as go

    figs: dict[str, list[str]] = {}
    methods = result["methods"]
    png = bool(result["settings"].get("png_figures", True))
    names = list(methods)
    fig = go.Figure(go.Bar(x=[METHOD_LABELS.get(m, m) for m in names], y=[methods[m]["dice"] for m in names],
                           error_y={"type": "data", "array": [methods[m]["dice_se"] for m in names]}))
    fig.update_layout(title="Dice of the anomaly maps on the SynthBrain test split (mean over seeds, SE bars)",
                      yaxis_title="Dice", template="plotly_white")
    figs["methods"] = _save_figure(fig, docs, "fig_methods", png)
    sw = result["sweeps"]
    s = result["settings"]
    if "k_percentile" in sw:
        fig = go.Figure(go.Heatmap(z=sw["k_percentile"], x=[f"{p:g}th" for p in s["sweep_percentiles"]],
                                   y=[f"K={k}" for k in s["sweep_k"]], colorscale="Viridis", texttemplate="%{z:.3f}"))
        fig.update_layout(title="Dif-fuse Dice on validation: noise level K x saliency percentile (cf. paper Fig. 5)",
                          template="plotly_white")
        figs["k_percentile"] = _save_figure(fig, docs, "fig_k_percentile", png)
    if "steps" in sw:
        fig = go.Figure(go.Scatter(x=sw["steps"]["steps"], y=sw["steps"]["dice"], mode="lines+markers"))
        fig.update_layout(title="Dif-fuse Dice on validation against the number of sampling steps",
                          xaxis_title="steps over [0, K]", yaxis_title="Dice", template="plotly_white")
        figs["steps"] = _save_figure(fig, docs, "fig_steps", png)
    return figs


def _hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def _ci(pair) -> str:
    return f"{pair[0]:.3f}–{pair[1]:.3f}"


def answers(result: dict) -> list[str]:
    """The report's opening: the four questions a reader from the field asks (issue: evaluation v2), answered with
    this run's numbers. Comparisons are paired over the same slices (95% bootstrap interval of the difference)."""
    from diffuse_core.evaluation.protocol import paired_difference

    out = ["## In short", ""]
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


def _write_markdown(path: Path, result: dict, denoiser, figures: dict) -> None:
    s, methods = result["settings"], result["methods"]
    card = denoiser.card or {}
    steps_trained = (card.get("training") or {}).get("steps_done")
    ranked = sorted(methods, key=lambda m: -methods[m]["dice"])
    rank = ranked.index("dif-fuse") + 1 if "dif-fuse" in methods else None
    lines = [
        "# Evaluation results",
        "",
        f"Generated by `{s['command'] or 'diffuse-studio evaluate'}` on {time.strftime('%Y-%m-%d')} "
        f"({_hardware()}; {result['wall_seconds'] / 60:.1f} min). Denoiser: {steps_trained} training steps. ",
        f"Data: SynthBrain {result['n_test_diseased']} diseased + {result['n_test_healthy']} healthy test slices; "
        f"thresholds chosen on {result['n_val_diseased']} diseased validation slices. K = {s['k']}, "
        f"{s['steps']} steps, {s['percentile']:g}th percentile, seeds {list(s['seeds'])}, anomaly maps opened/closed "
        f"with a {anomaly_kernel_of(card)}x{anomaly_kernel_of(card)} kernel (card `anomaly_kernel`).",
        "",
    ]
    if s.get("all_seed_methods"):
        lines[-2] += (f" Seeds {list(s['seeds'])} for {', '.join(METHOD_LABELS.get(m, m) for m in s['all_seed_methods'])}"
                      f"; the other methods seed {s['seeds'][0]} only (time). Calls and seconds per slice: a fresh run "
                      "(the validation pass); the test and BraTS passes share each slice's DDIM inversion between "
                      "methods and seeds (the same tensor).")
    lines += answers(result)
    if rank is not None:
        lines += [f"**Dif-fuse ranks {rank} of {len(methods)}** by mean Dice on SynthBrain"
                  + ("." if rank == 1 else f"; ahead of it: {', '.join(METHOD_LABELS.get(m, m) for m in ranked[:rank - 1])}."),
                  ""]
    lines += ["## Table I on SynthBrain (mean over seeds, standard error over seeds in brackets; 95% bootstrap "
              "interval over slices)", "",
              "| Method | Dice | Dice 95% CI | IoU | healthy change | healthy flagged | AUPRC | AUROC | "
              "KID (own-classifier features) | threshold | calls/slice | s/slice |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in ranked:
        r = methods[m]
        ci = r.get("dice_ci", (float("nan"), float("nan")))
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {_fmt(r['dice'], r['dice_se'] if len(r.get('seeds', [0, 1])) > 1 else None)} | "
                     f"{ci[0]:.3f}–{ci[1]:.3f} | "
                     f"{_fmt(r['iou'], r['iou_se'] if len(r.get('seeds', [0, 1])) > 1 else None)} | "
                     f"{r['identity_change']:.4f} | {100 * r.get('healthy_flagged', float('nan')):.1f} % | "
                     f"{r.get('auprc', float('nan')):.3f} | {r.get('auroc', float('nan')):.3f} | "
                     f"{'n/a' if np.isnan(r['kid']) else _fmt(r['kid'], r['kid_se'] if len(r.get('seeds', [0, 1])) > 1 else None)} | "
                     f"{r['threshold']:.2f} | {r['calls_per_slice']:.0f} | {r['seconds_per_slice']:.2f} |")
    lines += ["", "*healthy change*: mean absolute intensity change inside the brain on healthy test slices "
              "(images in [-1, 1]; the identity check of paper Fig. 6). *healthy flagged*: share of the brain above "
              "the method's threshold on the healthy test slices. *AUPRC/AUROC*: over every brain pixel of the test "
              "slices (first seed; threshold-free). *KID*: kernel distance between the "
              "counterfactuals of diseased slices and real healthy slices, on pooled features of the project's own "
              "classifier (Inception weights cannot be downloaded here), so it is not comparable to the paper's KID.",
              "", "## Dice per lesion type and size", ""]
    types = sorted({t for r in methods.values() for t in r["by_type"]})
    sizes = [z for z in ("small", "medium", "large") if any(z in r["by_size"] for r in methods.values())]
    lines += ["| Method | " + " | ".join(types + sizes) + " |", "|---" * (1 + len(types) + len(sizes)) + "|"]
    for m in ranked:
        r = methods[m]
        cells = [f"{r['by_type'].get(t, float('nan')):.3f}" for t in types] + \
                [f"{r['by_size'].get(z, float('nan')):.3f}" for z in sizes]
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    sw = result["sweeps"]
    if "k_percentile" in sw:
        lines += ["", "## Sweep: K x percentile (validation Dice, Fig. 5)", "",
                  "| K \\ percentile | " + " | ".join(f"{p:g}" for p in s["sweep_percentiles"]) + " |",
                  "|---" * (1 + len(s["sweep_percentiles"])) + "|"]
        for k, row in zip(s["sweep_k"], sw["k_percentile"]):
            lines.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if "steps" in sw:
        lines += ["", "## Sweep: sampling steps (validation)", "", "| steps | Dice | s/slice |", "|---|---|---|"]
        for n, d, sec in zip(sw["steps"]["steps"], sw["steps"]["dice"], sw["steps"]["seconds_per_slice"]):
            lines.append(f"| {n} | {d:.3f} | {sec:.2f} |")
    if result["real"]:
        lines += ["", "## Real data, out of domain: BraTS 2015 FLAIR, whole tumour", "",
                  *(["![Real BraTS slices: input, counterfactuals and anomaly maps of the main methods, the "
                     "expert's outline in green](brats_grid.png)", ""]
                    if (path.parent / "brats_grid.png").exists() else []),
                  "Thresholds from the SynthBrain validation split; models never saw real data. Dice and IoU on the "
                  "tumour slices (95% bootstrap interval over slices); *healthy flagged*: share of the brain flagged "
                  "on tumour-free slices of the same cases; AUPRC/AUROC over every brain pixel of all slices "
                  "(threshold-free); *Dice at best threshold* is an oracle (the threshold chosen on these slices "
                  "themselves), shown beside the honest one.", "",
                  "| Method | Dice | Dice 95% CI | IoU | healthy flagged | AUPRC | AUROC | Dice at best threshold "
                  "(oracle) | tumour / healthy slices |", "|---|---|---|---|---|---|---|---|---|"]
        for m in sorted(result["real"], key=lambda m: -result["real"][m]["dice"]):
            r = result["real"][m]
            ci = r.get("dice_ci", (float("nan"), float("nan")))
            lines.append(f"| {METHOD_LABELS.get(m, m)} | {r['dice']:.3f} | {ci[0]:.3f}–{ci[1]:.3f} | {r['iou']:.3f} | "
                         f"{100 * r.get('healthy_flagged', float('nan')):.1f} % | {r.get('auprc', float('nan')):.3f} | "
                         f"{r.get('auroc', float('nan')):.3f} | {r.get('dice_best_threshold', float('nan')):.3f} | "
                         f"{r['n']} / {r.get('n_healthy', 0)} |")
    lines += targets_section(result, card)
    lines += _ct_section()
    if figures:
        lines += ["", "## Figures", ""]
        for name, files in figures.items():
            png = [f for f in files if f.endswith(".png")]
            if png:
                lines.append(f"![{name}]({png[0]})")
            lines.append(f"Interactive: [{files[0]}]({files[0]})")
            lines.append("")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def targets_section(result: dict, card: dict) -> list[str]:
    """The models issue's measured targets beside what this run (and the DDPM and CT cards) measured: a target not
    reached stays in the table with its value, never lowered."""
    from diffuse_core.models.card import history_value
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
    hb = card.get("healthy_change_breakdown") or history_value(card, "previous_weights/healthy_change_breakdown") or {}
    best = min(hb.get("rows", []), key=lambda r: r["healthy_change"]["brain"], default=None)
    rows.append(("Healthy slices: mean absolute change <= 0.03",
                 f"{ours['identity_change']:.3f}" + (f" (lowest option: {best['walk']} walk + {best['solver']} "
                                                     f"{best['healthy_change']['brain']:.3f}, SynthBrain test Dice "
                                                     f"{best['test_dice']:.3f})" if best else ""),
                 "yes" if ours["identity_change"] <= 0.03 else "no (the default)"))
    q = ((card.get("quality") or {}).get("samples_from_noise") or {}).get("ddpm")
    if q:
        rows.append(("Samples from pure noise: 0 of 16 grey, 0 grainy",
                     f"{q['grey_background']} of {q['n']} grey, {q['grainy']} grainy",
                     "yes" if q["grey_background"] == 0 and q["grainy"] == 0 else "no"))
    out = ["", "## Where the models issue's targets stand", "",
           "Measured by this run where it can (the Dif-fuse and threshold rows above); the healthy-change options from "
           "the DDPM card's `healthy_change_breakdown` (`benchmarks/bench_inversion.py`; its `history` keeps that of the "
           "previous weights), the samples from its `quality`; CT below. A target not reached is listed with its value.", "",
           "| target | measured | reached |", "|---|---|---|"]
    return out + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]


def _ct_section() -> list[str]:
    """The shipped CT model's comparison (its card's ``ct_check``, :mod:`diffuse_core.evaluation.ct_check`)."""
    from diffuse_core.evaluation.ct_check import markdown
    from diffuse_core.models.checkpoint import read_config
    from diffuse_core.models.registry import default_model_dir, is_installed

    folder = default_model_dir("ddpm", "ct")
    check = (read_config(folder).get("card") or {}).get("ct_check") if is_installed(folder) else None
    return ["", *markdown(check, shipped=check.get("shipped")), "See [ct.md](ct.md) for how the CT models were "
            "trained, the picture and what they get wrong.", ""] if check else []


def command_line() -> str:
    return "diffuse-studio " + " ".join(sys.argv[1:]) if sys.argv and "diffuse" in sys.argv[0] else ""
