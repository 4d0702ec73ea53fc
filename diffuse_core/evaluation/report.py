"""``diffuse-studio evaluate``: run the evaluation protocol of :mod:`diffuse_core.evaluation.protocol` and write the report.

Outputs (in ``--docs``, default ``docs/``): the results file ``results/NAME.json`` (``evaluation``, or
``evaluation_quick`` with ``--quick``: every figure with the date, commit, hardware, threads, command and settings),
and from it alone the region ``<!-- generated:NAME -->`` of ``results.md`` (:func:`~diffuse_core.evaluation.results_page.markdown`; the rest of the page is
kept, and :mod:`diffuse_core.evaluation.docs_tables` rewrites or checks the region from the file); the picture grid
``NAME_grid.png`` (SynthBrain test slices x the main methods); the per-slice CSV (``results_per_slice.csv``, or
``results/evaluation_quick_per_slice.csv``); and for the full run Plotly figures as HTML (and PNG where a browser for
kaleido is available): ``fig_k_percentile`` (Dice over K x percentile, paper Fig. 5), ``fig_steps`` (Dice against
sampling steps), ``fig_methods`` (Dice per method).
"""

from __future__ import annotations

import logging
import os
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
from diffuse_core.evaluation.picture import GRID_METHODS, real_data_grid
from diffuse_core.evaluation.results_page import card_targets, json_safe, write_csv, write_figures, write_results
from diffuse_core.evaluation.kept_results import KeptResults, results_key

log = logging.getLogger(__name__)



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
    name: str = "evaluation"      # the results file docs/results/NAME.json and its region of results.md
    synth_grid: bool = True       # the SynthBrain picture grid (NAME_grid.png): test slices x the main methods
    part: tuple[int, int] | None = None   # (i, n): compute the i-th of n shares of the work, keep it, write nothing
    extra: dict = field(default_factory=dict)


def _se(values) -> float:
    v = np.asarray(values, float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


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
                _, ano, _, _ = run_on_set("dif-fuse-percentile", denoiser, val_d, m, k, s.steps, 0, s.batch_size, s.precision,
                                          inversion_cache=cache)
                per_slice[a, b] = scores(ano, val_d.lesions, choose_threshold(ano, val_d.lesions))[0]
        sweeps["k_percentile"] = per_slice.mean(axis=2).tolist()
        sweeps["k_percentile_per_slice"] = per_slice.round(4).tolist()
    if s.sweep_steps:
        _emit(progress, "sweep: sampling steps on validation")
        masks = {k: v[val.diseased] for k, v in masks_at(val, s.percentile).items()}
        dice_steps, sec_steps, per_slice_steps = [], [], []
        for n in s.sweep_steps:
            _, ano, _, sec = run_on_set("dif-fuse-percentile", denoiser, val_d, masks, s.k, n, 0, s.batch_size, s.precision)
            d = scores(ano, val_d.lesions, choose_threshold(ano, val_d.lesions))[0]
            dice_steps.append(float(d.mean()))
            per_slice_steps.append(d.round(4).tolist())
            sec_steps.append(sec)
        sweeps["steps"] = {"steps": list(s.sweep_steps), "dice": dice_steps, "seconds_per_slice": sec_steps,
                           "dice_per_slice": per_slice_steps}
    return sweeps


QUICK_METHODS = ("dif-fuse", "dif-fuse-percentile", "dif-fuse-oracle", "acat", "flair-threshold")
QUICK_SIZES = {"n_val": 16, "n_test": 48, "seeds": (0,)}
"""``diffuse-studio evaluate --quick``: the app's Dif-fuse beside the FLAIR threshold and three informative peers
(the paper's percentile mask, the oracle mask, ACAT alone) on 36 + 12 test slices, one seed, no sweeps: within 30
minutes on 2 CPU cores (how long it took is recorded in docs/results/evaluation_quick.json)."""


GRID_ROWS = 6      # diseased test slices in the SynthBrain picture grid


def run_evaluation(denoiser, saliency_models, settings: EvalSettings, docs_dir: str | Path = "docs",
                   progress: Callable[[str], None] | None = None) -> dict:
    """Run the protocol and write its results file (``DOCS/results/NAME.json``, NAME = ``settings.name``), its
    region of ``DOCS/results.md`` (``<!-- generated:NAME -->``, the rest of the page kept), the per-slice CSV, the
    figures and the picture grids; returns the results file's content. Each finished method is kept under
    ``DOCS/results/.NAME_parts/`` until the run is written: the same command resumes an interrupted run."""
    import torch

    from diffuse_core.evaluation.methods import SALIENCY_SOURCES
    from diffuse_core.evaluation.protocol import run_assembly_on_set
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary
    from diffuse_core.pipeline import InversionCache
    from diffuse_core.run.settings import default_settings

    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    s = settings
    size, chans = denoiser.config.resolution, denoiser.config.channels
    mods = ("flair",) if chans == 1 else ("flair", "t1", "t1c", "t2")
    # a run whose shares were computed by worker processes first (evaluate --workers) counts from their start
    t_start = s.extra.get("t_start", time.perf_counter())
    load_at_start = s.extra.get("load_at_start", os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    cpu_start = s.extra.get("cpu_start", cpu_seconds())
    card = denoiser.card or {}
    card_threshold = card.get("anomaly_threshold")
    parts = KeptResults(docs / "results" / f".{s.name}_parts", results_key(denoiser, s, saliency_models))

    _emit(progress, "generating SynthBrain validation and test slices")
    val = model_scale(denoiser, synthbrain_set("val", s.n_val, size=size, modalities=mods, healthy_fraction=0.25))
    test = model_scale(denoiser, synthbrain_set("test", s.n_test, size=size, modalities=mods, healthy_fraction=0.25))
    healthy_ref = model_scale(denoiser, synthbrain_set("val", max(8, s.n_test // 2), base_seed=1, size=size,
                                                       modalities=mods, healthy_fraction=1.0))

    def from_card(method: str) -> bool:         # the app's run at the card's threshold: no validation pass
        return REGISTRY[method].assembly and card_threshold is not None

    def seeds_of(method: str) -> tuple[int, ...]:
        return s.seeds if method in s.all_seed_methods else s.seeds[:1]

    want_sweeps = bool(s.sweep_k or s.sweep_steps) and bool({"dif-fuse", "dif-fuse-percentile"} & set(s.methods))
    kept = {m: parts.load(m, seeds_of(m)) for m in s.methods}
    # kept before this start (the wall clock's start; --workers' shares count from theirs): not in this run's minutes
    started_at = time.time() - (time.perf_counter() - t_start)
    from_earlier = [m for m in [*s.methods, "_sweeps"]
                    if (parts.folder / f"{m}.json").is_file() and (parts.folder / f"{m}.json").stat().st_mtime < started_at
                    and (m == "_sweeps" or kept.get(m) is not None)]
    todo = [m for m in s.methods if kept[m] is None]
    mine = None
    if s.part is not None:                  # one share of the jobs (methods, then the sweeps), round robin
        i, n = s.part
        jobs = list(s.methods) + (["_sweeps"] if want_sweeps else [])
        mine = {job for j, job in enumerate(jobs) if j % n == i}
        todo = [m for m in todo if m in mine]
    if any(v is not None for v in kept.values()):
        _emit(progress, f"resuming: {', '.join(m for m in s.methods if kept[m] is not None)} kept from "
                        f"{parts.folder}")
    sources = {REGISTRY[m].mask_source for m in todo} & set(SALIENCY_SOURCES)
    val_sources = {REGISTRY[m].mask_source for m in todo if not from_card(m)} & set(SALIENCY_SOURCES)
    first_assembly = {}
    for m in todo:                       # the app's run first: its ACAT maps serve the other methods' masks too
        if REGISTRY[m].assembly:
            _emit(progress, f"method {m}: the app's run on the test split, seed {s.seeds[0]}")
            first_assembly[m] = run_assembly_on_set(denoiser, saliency_models, test, s.k, s.steps, s.seeds[0],
                                                    s.batch_size, s.precision)
            test.saliency.setdefault("acat", first_assembly[m]["saliency"])
    _emit(progress, "saliency maps (" + ", ".join(sorted(sources | val_sources)) + ")")
    compute_saliency_maps(test, saliency_models, sources=tuple(sorted(sources)))
    compute_saliency_maps(val, saliency_models, sources=tuple(sorted(val_sources)))
    val_masks, test_masks = masks_at(val, s.percentile), masks_at(test, s.percentile)
    val_d = val.subset(np.where(val.diseased)[0])
    val_d_masks = {k: v[val.diseased] for k, v in val_masks.items()}

    rows: list[dict] = []
    summary: dict[str, dict] = {}
    grid_outputs: dict[str, tuple] = {}
    feats_ref = classifier_features(saliency_models.classifier, healthy_ref.images)
    test_cache = InversionCache(size=len(test) // max(s.batch_size, 1) + 1)
    dis = test.diseased
    grid_rows = np.where(dis)[0][:GRID_ROWS]
    for method in s.methods:
        spec = REGISTRY[method]
        if kept[method] is None and method not in todo:                   # another share's job
            continue
        if kept[method] is not None:
            m_summary, m_rows, grid = kept[method]
            summary[method], rows = m_summary, rows + m_rows
            if grid is not None:
                grid_outputs[method] = (grid["counterfactuals"], grid["anomalies"], m_summary["threshold"])
            continue
        calls = sec_fresh = None
        if from_card(method):
            thr = float(card_threshold)
        else:
            _emit(progress, f"method {method}: choosing the threshold on validation")
            # a fresh run (no inversion reuse): its calls and seconds per slice are the method's cost in the tables
            if spec.assembly:
                run = run_assembly_on_set(denoiser, saliency_models, val_d, s.k, s.steps, 0, s.batch_size, s.precision)
                ano_val, calls, sec_fresh = run["anomalies"], run["calls_per_slice"], run["seconds_per_slice"]
            else:
                _, ano_val, calls, sec_fresh = run_on_set(method, denoiser, val_d, val_d_masks, s.k, s.steps, seed=0,
                                                          batch_size=s.batch_size, precision=s.precision)
            grid = spec.threshold_grid
            thr = 0.5 if method == "acat" else (choose_threshold(ano_val, val_d.lesions, grid=grid) if grid
                                                else choose_threshold(ano_val, val_d.lesions))
        seeds = seeds_of(method)
        per_seed_dice, per_seed_iou, per_seed_id, per_seed_kid = [], [], [], []
        per_slice_dice = np.zeros((len(seeds), len(test)))
        first_ano, m_rows, verdicts, shares = None, [], [], []
        for si, seed in enumerate(seeds):
            _emit(progress, f"method {method}: test split, seed {seed}")
            if spec.assembly:
                run = (first_assembly.pop(method) if si == 0 and method in first_assembly else
                       run_assembly_on_set(denoiser, saliency_models, test, s.k, s.steps, seed, s.batch_size,
                                           s.precision))
                cf, ano = run["counterfactuals"], run["anomalies"]
                if calls is None:
                    calls, sec_fresh = run["calls_per_slice"], run["seconds_per_slice"]
                verdicts.append(run["abnormal"])
                shares.append([float(mk[b.astype(bool)].mean()) if b.any() else 0.0
                               for mk, b in zip(run["masks"], test.brains)])
            else:
                cf, ano, calls_t, _ = run_on_set(method, denoiser, test, test_masks, s.k, s.steps, seed=seed + 1,
                                                 batch_size=s.batch_size, precision=s.precision,
                                                 inversion_cache=test_cache)
                if calls is None:                # no validation pass (never happens today): the test pass's cost
                    calls, sec_fresh = calls_t, float("nan")
            if first_ano is None:
                first_ano = ano
                if method in GRID_METHODS and s.synth_grid:
                    grid_outputs[method] = (cf[grid_rows], ano[grid_rows], thr)
            d, j = scores(ano, test.lesions, thr)
            per_seed_dice.append(d[dis].mean())
            per_seed_iou.append(j[dis].mean())
            per_seed_id.append(identity_change(test.images[~dis], cf[~dis], test.brains[~dis]) if (~dis).any()
                               else float("nan"))
            if spec.walk is not None and dis.sum() >= 2:
                per_seed_kid.append(kid(classifier_features(saliency_models.classifier, cf[dis]), feats_ref))
            per_slice_dice[si] = d
            for i in range(len(test)):
                m_rows.append({"method": method, "seed": seed, "id": test.ids[i], "lesion_type": test.lesion_types[i],
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
        m_summary = {
            "dice": float(np.mean(per_seed_dice)), "dice_se": _se(per_seed_dice),
            "dice_ci": bootstrap_ci(slice_dice), "dice_per_slice": slice_dice.round(4).tolist(),
            "iou": float(np.mean(per_seed_iou)), "iou_se": _se(per_seed_iou),
            "identity_change": float(np.nanmean(per_seed_id)) if per_seed_id else float("nan"),
            "healthy_flagged": (float(flagged_share(first_ano[~dis], test.brains[~dis], thr).mean())
                                if (~dis).any() else float("nan")),
            **pixel_scores(first_ano, test.lesions, test.brains),
            "kid": float(np.mean(per_seed_kid)) if per_seed_kid else float("nan"),
            "kid_se": _se(per_seed_kid) if per_seed_kid else float("nan"),
            "threshold": thr, "threshold_from": "card" if from_card(method) else "validation",
            "calls_per_slice": calls, "seconds_per_slice": sec_fresh,
            "seeds": list(seeds), "by_type": by_type, "by_size": by_size,
        }
        if shares:
            share = np.mean(shares, axis=0)
            m_summary["redrawn_share"] = {"diseased": float(share[dis].mean()) if dis.any() else float("nan"),
                                          "healthy": float(share[~dis].mean()) if (~dis).any() else float("nan")}
        if verdicts and any(v is not None for v in verdicts[0]):
            # seeds x slices: 1 abnormal, 0 normal, nan no call (outside the levels the model learned)
            calls = np.array([[np.nan if v is None else float(v) for v in row] for row in verdicts])
            m_summary["verdict"] = {"threshold": float((card.get("verdict") or {}).get("threshold")),
                                    "sensitivity": float(np.nanmean(calls[:, dis])) if dis.any() else float("nan"),
                                    "specificity": float(np.nanmean(1.0 - calls[:, ~dis])) if (~dis).any()
                                    else float("nan"), "no_call": int(np.isnan(calls[0]).sum())}
        summary[method] = m_summary
        rows += m_rows
        grid = grid_outputs.get(method)
        parts.save(method, m_summary, m_rows, None if grid is None else
                   {"counterfactuals": grid[0], "anomalies": grid[1]}, seeds=seeds)

    sweeps = {}
    if want_sweeps and (mine is None or "_sweeps" in mine):
        kept_sweeps = parts.load("_sweeps")
        if kept_sweeps is not None:
            sweeps = kept_sweeps[0]
        else:
            sweeps = run_validation_sweeps(denoiser, _with_acat(val, saliency_models), s, progress)
            parts.save("_sweeps", sweeps, [], None)
    if s.part is not None:                  # a share: its jobs are kept for the run that writes the results
        done = sorted(m for m in (mine or ()) if m == "_sweeps" or parts.load(m, seeds_of(m)) is not None)
        _emit(progress, f"share {s.part[0] + 1} of {s.part[1]}: kept {', '.join(done) or 'nothing'} in {parts.folder}")
        return {"part": list(s.part), "kept": done, "folder": str(parts.folder)}

    real = {}
    if s.brats_dir and Path(s.brats_dir).is_dir():
        real = _brats_check(denoiser, saliency_models, s, summary, docs, progress)

    grid_name = None
    if grid_outputs:
        grid_name = f"{s.name}_grid.png"
        order = {m: grid_outputs[m] for m in GRID_METHODS if m in grid_outputs}
        _small_png(real_data_grid(test.subset(grid_rows), order, docs / grid_name, labels=_grid_labels(card)))
    per_slice = "results_per_slice.csv" if s.name == "evaluation" else f"results/{s.name}_per_slice.csv"
    write_csv(docs / per_slice, rows)
    result = {
        "what": "Dif-fuse against its ablations, peers and the FLAIR threshold on SynthBrain (diffuse-studio evaluate)",
        "name": s.name, "date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit_id(),
        "hardware": hardware_summary(str(denoiser.device)), "torch_threads": torch.get_num_threads(),
        "load_average_at_start": None if load_at_start is None else round(load_at_start, 2),
        "command": s.command or "diffuse-studio evaluate",
        "settings": {k: v for k, v in s.__dict__.items() if k != "extra"},
        "model": {"steps_done": (card.get("training") or {}).get("steps_done"),
                  "anomaly_kernel": anomaly_kernel_of(card), "input_normalisation": card.get("input_normalisation"),
                  "mask_rule": card.get("mask_rule"), "score": card.get("score"),
                  "anomaly_threshold": card_threshold, "k": default_settings(card)["k"],
                  "steps": default_settings(card)["steps"],
                  "verdict_threshold": (card.get("verdict") or {}).get("threshold")},
        "card_targets": card_targets(card),
        "methods": summary, "sweeps": sweeps, "real": real,
        "n_test_diseased": int(test.diseased.sum()), "n_test_healthy": int((~test.diseased).sum()),
        "n_val_diseased": int(val.diseased.sum()), "per_slice_csv": per_slice, "grid": grid_name,
    }
    result["figure_files"] = write_figures(docs, result) if s.name == "evaluation" else {}
    if s.brats_dir and (docs / "brats_grid.png").exists() and real:
        result["brats_grid"] = "brats_grid.png"
    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    result["kept_from_earlier_starts"] = from_earlier      # computed by an interrupted earlier start of the same run
    result["cpu_seconds"] = round(cpu_seconds() - cpu_start, 1)     # this process's CPU time: the cost on a quiet CPU
    result = write_results(docs, result)
    parts.clear()
    return result


def _small_png(path: Path) -> Path:
    """The grid as an indexed-colour PNG (a tenth of the bytes; the tiles are greyscale with a few tints)."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far (its threads together), and of the worker processes it
    has waited for (evaluate --workers)."""
    import resource

    use, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime + kids.ru_utime + kids.ru_stime


def _with_acat(val, saliency_models):
    """``val`` with its ACAT maps (the sweeps' masks), computed where the methods run did not need them."""
    compute_saliency_maps(val, saliency_models, sources=("acat",))
    return val


def _grid_labels(card: dict) -> dict:
    return {"dif-fuse": "Dif-fuse, the app's run"}


def _brats_check(denoiser, saliency_models, s: EvalSettings, summary: dict, docs: Path, progress) -> dict:
    """Every method on real BraTS cases at its SynthBrain threshold (out of domain), and the BraTS picture grid."""
    from diffuse_core.evaluation.protocol import run_assembly_on_set
    from diffuse_core.pipeline import InversionCache

    _emit(progress, "real BraTS cases (out of domain)")
    brats = brats_set(s.brats_dir, size=denoiser.config.resolution, per_case=s.brats_per_case,
                      healthy_per_case=s.brats_healthy_per_case)
    compute_saliency_maps(brats, saliency_models)
    bm = masks_at(brats, s.percentile)
    tum = brats.diseased
    brats_cache = InversionCache(size=len(brats) // max(s.batch_size, 1) + 1)
    grid_outputs, real = {}, {}
    for method in s.methods:
        _emit(progress, f"method {method}: BraTS slices")
        if REGISTRY[method].assembly:
            run = run_assembly_on_set(denoiser, saliency_models, brats, s.k, s.steps, s.seeds[0], s.batch_size,
                                      s.precision)
            cf, ano = run["counterfactuals"], run["anomalies"]
        else:
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
        real_data_grid(brats, order, docs / "brats_grid.png", labels={"dif-fuse": "Dif-fuse, the app's run"})
    return real


def command_line() -> str:
    return "diffuse-studio " + " ".join(sys.argv[1:]) if sys.argv and "diffuse" in sys.argv[0] else ""
