"""Choose a healthy model's app settings on SynthBrain validation and write them into its card.

``python -m diffuse_core.evaluation.calibrate --model assets/ddpm --write-card`` puts validation slices on the
model's preparation (``--normalisation``, default the tissue scale), computes ACAT saliency and the classifier's
P(diseased), draws the redrawn region by ``--rule`` and runs Dif-fuse at the card's K and steps, then chooses

- the anomaly threshold: the one of the threshold grid with the best mean Dice on the diseased validation slices
  (score ``--score``);
- the slice verdict (normal / abnormal): a slice's score is its peak anomaly (the 99.5th percentile of its anomaly
  map inside the brain); the threshold is the (1 - ``--false-abnormal``) quantile of that score over healthy
  validation slices, so about that share of healthy slices is called abnormal.

The card gets ``input_normalisation``, ``tissue_scale``, ``mask_rule``, ``score``, ``anomaly_threshold``,
``verdict`` and a ``calibration`` record (slices, seeds, hardware, date, command, what was measured). Nothing is
chosen on real scans: they are the test (``diffuse-studio real-data``).

The SynthBrain modality is the card's (``data.modalities``: a CT model is calibrated on CT slices with the CT ACAT
pair), or ``--modality``. ``--verdict-only`` chooses the verdict alone and keeps every other setting of the card as
it is (threshold, mask rule, score, preparation): the slices run at the card's app settings, the verdict threshold
is chosen on the healthy set as above, and it is measured on slices not used to choose it: its sensitivity on the
diseased validation slices and its false-abnormal rate on ``--n-heldout`` further healthy validation slices (and the
healthy ones of the diseased set). The CT model's verdict: ``python -m diffuse_core.evaluation.calibrate --model
assets/ct/ddpm --verdict-only --n-val 32 --n-healthy 32 --n-heldout 32 --write-card`` (its record: the card's
``calibration``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

VERDICT_PERCENTILE = 99.5      # a slice's score: this percentile of its anomaly map inside the brain
DEFAULT_FALSE_ABNORMAL = 0.05


def slice_scores(maps: np.ndarray, brains: np.ndarray) -> np.ndarray:
    """Each slice's peak anomaly: the :data:`VERDICT_PERCENTILE`-th percentile of its map inside the brain."""
    return np.array([float(np.percentile(m[b.astype(bool)], VERDICT_PERCENTILE)) if b.any() else 0.0
                     for m, b in zip(maps, brains)])


def modality_of(card) -> str:
    """The SynthBrain modality a model is calibrated on: the one its card says it was trained on (``data.modalities``,
    when it names exactly one), else FLAIR."""
    mods = ((card or {}).get("data") or {}).get("modalities") or []
    return str(mods[0]).lower() if isinstance(mods, (list, tuple)) and len(mods) == 1 else "flair"


def _model_modality(model_dir, modality: str | None) -> str:
    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.run.models import read_card

    return str(modality).lower() if modality else modality_of(read_card(model_dir or default_model_dir("ddpm")))


def run_set(denoiser, sal, data, rule: dict, seed: int = 0, batch_size: int = 8, k: int | None = None,
            steps: int | None = None):
    """(counterfactuals, anomaly maps, redrawn masks) of a set through the one assembly of a run at the card's
    settings, redrawn by ``rule`` (K ``k`` where given): :func:`~diffuse_core.evaluation.protocol.run_assembly_on_set`."""
    from diffuse_core.evaluation.protocol import run_assembly_on_set

    out = run_assembly_on_set(denoiser, sal, data, k, steps, seed, batch_size, mask_rule=rule)
    return out["counterfactuals"], out["anomalies"], out["masks"]


def calibrate(model_dir=None, rule: dict | None = None, score: str = "signed", normalisation: str = "tissue",
              n_val: int = 32, n_healthy: int = 32, false_abnormal: float = DEFAULT_FALSE_ABNORMAL, seed: int = 0,
              device="cpu", batch_size: int = 8, k: int | None = None, realism: str = "default",
              steps: int | None = None, modality: str | None = None, saliency_dir=None) -> dict:
    from diffuse_core.run.models import load_default_models
    from diffuse_core.core.metrics import dice
    from diffuse_core.core.redraw import check_rule, score_of
    from diffuse_core.evaluation.protocol import choose_threshold, identity_change, model_scale, synthbrain_set
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary
    from diffuse_core.core.intensity import TISSUE_SCALE

    t0 = time.perf_counter()
    modality = _model_modality(model_dir, modality)
    denoiser, sal = load_default_models(model_dir, saliency_dir, device, True, modality=modality)
    rule = check_rule(dict(rule or {"kind": "weighted", "level": 0.2, "max_share": 0.5}))
    settings = {"input_normalisation": normalisation, "mask_rule": rule, "score": score_of({}, score)}
    if normalisation == "tissue":
        settings["tissue_scale"] = {**TISSUE_SCALE, **(denoiser.card.get("tissue_scale") or {})}
    denoiser.card = {**(denoiser.card or {}), **settings}
    mods = (modality,)
    val = model_scale(denoiser, synthbrain_set("val", n_val, healthy_fraction=0.25, realism=realism, modalities=mods))
    healthy = model_scale(denoiser, synthbrain_set("val", n_healthy, base_seed=1, healthy_fraction=1.0,
                                                   realism=realism, modalities=mods))
    _, anos, masks = run_set(denoiser, sal, val, rule, seed, batch_size, k, steps)
    sick = val.diseased
    grid = threshold_grid(modality)
    thr = choose_threshold(anos[sick], val.lesions[sick], grid)
    val_dice = float(np.mean([dice(a > thr, l) for a, l in zip(anos[sick], val.lesions[sick])]))
    h_cfs, h_anos, h_masks = run_set(denoiser, sal, healthy, rule, seed, batch_size, k, steps)
    flagged = np.array([(a[b.astype(bool)] > thr).mean() for a, b in zip(h_anos, healthy.brains)])
    h_scores = slice_scores(h_anos, healthy.brains)
    v_scores = slice_scores(anos[sick], val.brains[sick])
    verdict_thr = float(np.quantile(h_scores, 1.0 - false_abnormal))
    record = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit_id(), "hardware": hardware_summary(device),
        "seconds": round(time.perf_counter() - t0, 1), "command": None,
        "data": {"synthbrain_val_diseased": int(sick.sum()), "synthbrain_val_healthy_in_threshold_set":
                 int((~sick).sum()), "synthbrain_val_healthy": int(len(healthy)), "seed": seed,
                 "synthbrain_realism": realism, "modality": modality},
        "settings": {**settings, "k": None, "steps": None},
        "anomaly_threshold": thr, "threshold_grid": grid_text(grid), "validation_dice": val_dice,
        "healthy_flagged": {"mean": float(flagged.mean()), "max": float(flagged.max())},
        "healthy_change": identity_change(healthy.images, h_cfs, healthy.brains),
        "redrawn_share": {"diseased": float(np.mean([m[b.astype(bool)].mean() for m, b in
                                                     zip(masks[sick], val.brains[sick])])),
                          "healthy": float(np.mean([m[b.astype(bool)].mean() for m, b in
                                                    zip(h_masks, healthy.brains)]))},
        "verdict": {"score": f"peak anomaly (the {VERDICT_PERCENTILE:g}th percentile of the map inside the brain)",
                    "threshold": verdict_thr, "false_abnormal_rate_chosen": false_abnormal,
                    "sensitivity_on_validation": float((v_scores > verdict_thr).mean()),
                    "healthy_called_abnormal": float((h_scores > verdict_thr).mean())},
    }
    from diffuse_core.run.settings import default_settings

    chosen = default_settings(denoiser)
    record["settings"].update(k=int(k or chosen["k"]), steps=int(steps or chosen["steps"]))
    return record


def calibrate_verdict(model_dir=None, n_val: int = 32, n_healthy: int = 32, n_heldout: int = 32,
                      false_abnormal: float = DEFAULT_FALSE_ABNORMAL, seed: int = 0, device="cpu", batch_size: int = 8,
                      realism: str = "default", modality: str | None = None, saliency_dir=None) -> dict:
    """The slice verdict alone, at the card's app settings (its K, steps, percentile, mask rule, score, preparation
    and anomaly threshold, none of them changed): the threshold is the (1 - ``false_abnormal``) quantile of the peak
    anomaly of ``n_healthy`` healthy validation slices (base seed 1, as :func:`calibrate`); it is then measured on
    slices that did not choose it: sensitivity on the diseased of ``n_val`` validation slices (base seed 0, a quarter
    healthy as in :func:`calibrate`), false-abnormal rate on their healthy ones and on ``n_heldout`` further healthy
    validation slices (base seed 2). The record also holds the Dice of the card's anomaly threshold on the diseased
    slices beside the best of the threshold grid there (a check, not a choice: the card's threshold is kept)."""
    from diffuse_core.core.metrics import dice
    from diffuse_core.evaluation.protocol import choose_threshold, model_scale, synthbrain_set
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary
    from diffuse_core.run.models import load_default_models
    from diffuse_core.core.redraw import score_of
    from diffuse_core.run.card import anomaly_threshold_of
    from diffuse_core.run.settings import default_settings, mask_rule, settings_for

    t0 = time.perf_counter()
    modality = _model_modality(model_dir, modality)
    denoiser, sal = load_default_models(model_dir, saliency_dir, device, True, modality=modality)
    card = denoiser.card or {}
    mods = (modality,)
    sets = {"val": synthbrain_set("val", n_val, healthy_fraction=0.25, realism=realism, modalities=mods),
            "healthy": synthbrain_set("val", n_healthy, base_seed=1, healthy_fraction=1.0, realism=realism,
                                      modalities=mods)}
    if n_heldout:
        sets["heldout"] = synthbrain_set("val", n_heldout, base_seed=2, healthy_fraction=1.0, realism=realism,
                                         modalities=mods)
    thr = float(anomaly_threshold_of(denoiser))
    peaks, flagged, anos = {}, {}, {}
    for name, data in sets.items():
        data = sets[name] = model_scale(denoiser, data)
        _, anos[name], _ = run_set(denoiser, sal, data, None, seed, batch_size)
        peaks[name] = slice_scores(anos[name], data.brains)
        flagged[name] = np.array([(a[b.astype(bool)] > thr).mean() for a, b in zip(anos[name], data.brains)])
    verdict_thr = float(np.quantile(peaks["healthy"], 1.0 - false_abnormal))
    val = sets["val"]
    sick = val.diseased
    heldout = np.concatenate([peaks["val"][~sick]] + ([peaks["heldout"]] if n_heldout else []))
    grid = threshold_grid(modality)
    best = choose_threshold(anos["val"][sick], val.lesions[sick], grid)

    def mean_dice(t):
        return float(np.mean([dice(a > t, l) for a, l in zip(anos["val"][sick], val.lesions[sick])]))

    run = settings_for(card, seed=seed)
    chosen = default_settings(card)
    called = peaks["val"][sick] > verdict_thr
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit_id(), "hardware": hardware_summary(device),
        "seconds": round(time.perf_counter() - t0, 1), "command": None, "chose": "verdict only",
        "data": {"modality": modality, "synthbrain_realism": realism, "seed": seed,
                 "synthbrain_val_healthy": int(len(sets["healthy"])), "synthbrain_val_healthy_base_seed": 1,
                 "synthbrain_val_diseased": int(sick.sum()), "synthbrain_val_base_seed": 0,
                 "synthbrain_val_healthy_held_out": int(len(heldout)),
                 "held_out": "the healthy slices of the diseased set (base seed 0) and of base seed 2"},
        "settings": {"k": int(run.k), "steps": int(run.steps), "percentile": float(run.percentile),
                     "solver": chosen["solver"], "seed": seed, "mask_rule": mask_rule(run, card),
                     "score": score_of(card),
                     "input_normalisation": card.get("input_normalisation") or "absolute",
                     "anomaly_threshold": thr, "kept": "the card's, unchanged"},
        "verdict": {"score": f"peak anomaly (the {VERDICT_PERCENTILE:g}th percentile of the map inside the brain)",
                    "threshold": verdict_thr, "false_abnormal_rate_chosen": false_abnormal,
                    "healthy_called_abnormal": float((peaks["healthy"] > verdict_thr).mean()),
                    "sensitivity_on_validation": float(called.mean()),
                    "diseased_called_abnormal": int(called.sum()), "diseased": int(sick.sum()),
                    "false_abnormal_rate_held_out": float((heldout > verdict_thr).mean()),
                    "held_out_called_abnormal": int((heldout > verdict_thr).sum()), "held_out": int(len(heldout)),
                    "healthy_peaks": [round(float(p), 4) for p in np.sort(peaks["healthy"])],
                    "held_out_peaks": [round(float(p), 4) for p in np.sort(heldout)],
                    "diseased_peaks": [round(float(p), 4) for p in np.sort(peaks["val"][sick])]},
        "healthy_flagged_at_anomaly_threshold": {"mean": float(flagged["healthy"].mean()),
                                                 "max": float(flagged["healthy"].max())},
        "anomaly_threshold_check": {"card": thr, "validation_dice_at_card": mean_dice(thr), "grid_best": best,
                                    "validation_dice_at_grid_best": mean_dice(best),
                                    "grid": grid_text(grid)},
    }


def threshold_grid(modality: str):
    """The anomaly thresholds tried on validation for a model of ``modality``: the CT grid (finer and lower: an early
    infarct is only a few HU darker than its tissue) for CT, the evaluation's grid otherwise."""
    from diffuse_core.evaluation.ct_check import CT_THRESHOLD_GRID
    from diffuse_core.evaluation.protocol import THRESHOLD_GRID

    return CT_THRESHOLD_GRID if str(modality).lower() == "ct" else THRESHOLD_GRID


def grid_text(grid) -> str:
    return f"{grid[0]:g}..{grid[-1]:g} step {grid[1] - grid[0]:g}"


def write_verdict(model_dir, record: dict) -> dict:
    """Write a :func:`calibrate_verdict` record into the card: ``verdict`` and ``calibration`` only."""
    from diffuse_core.models.checkpoint import update_card

    entries = {"verdict": {"percentile": VERDICT_PERCENTILE, "threshold": record["verdict"]["threshold"],
                           "false_abnormal_rate": record["verdict"]["false_abnormal_rate_chosen"]},
               "calibration": record}
    return update_card(model_dir, entries, by="calibrate", command=record.get("command"),
                       hardware=record.get("hardware"))


def write_card(model_dir, record: dict) -> dict:
    from diffuse_core.models.checkpoint import update_card

    s = record["settings"]
    entries = {"input_normalisation": s["input_normalisation"], "mask_rule": s["mask_rule"], "score": s["score"],
               "anomaly_threshold": record["anomaly_threshold"],
               "verdict": {"percentile": VERDICT_PERCENTILE, "threshold": record["verdict"]["threshold"],
                           "false_abnormal_rate": record["verdict"]["false_abnormal_rate_chosen"]},
               "calibration": record}
    if "tissue_scale" in s:
        entries["tissue_scale"] = s["tissue_scale"]
    from diffuse_core.models.checkpoint import read_config

    rec = dict((read_config(model_dir).get("card") or {}).get("recommended_settings") or {})
    if rec.get("k") != s["k"] or rec.get("steps") != s["steps"]:
        from diffuse_core.evaluation.cards import CALIBRATED_K

        rec.update(k=s["k"], steps=s["steps"], k_chosen_by=CALIBRATED_K)
        entries["recommended_settings"] = rec
    return update_card(model_dir, entries, by="calibrate", command=record.get("command"),
                       hardware=record.get("hardware"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="assets/ddpm")
    ap.add_argument("--rule", default='{"kind": "weighted", "level": 0.2, "max_share": 0.5}',
                    help="the mask rule as JSON (see diffuse_core.core.redraw)")
    ap.add_argument("--score", default="signed", choices=("abs", "signed", "signed-floor"))
    ap.add_argument("--normalisation", default="tissue", choices=("absolute", "percentile", "tissue"))
    ap.add_argument("--n-val", type=int, default=32)
    ap.add_argument("--n-healthy", type=int, default=32)
    ap.add_argument("--false-abnormal", type=float, default=DEFAULT_FALSE_ABNORMAL)
    ap.add_argument("--realism", default="default",
                    help="SynthBrain's realism of the validation slices: default, scanner, or effects joined by "
                         "commas (diffuse_core.data.synthbrain.check_realism)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", type=int, default=None, help="noise level K (default: the card's); written into the card")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the card's); written into the card")
    ap.add_argument("--modality", default=None, choices=("flair", "ct"),
                    help="the SynthBrain modality of the slices (default: the one the model's card was trained on)")
    ap.add_argument("--verdict-only", action="store_true",
                    help="choose the slice verdict only, at the card's settings (nothing else of the card changes)")
    ap.add_argument("--n-heldout", type=int, default=32,
                    help="with --verdict-only: further healthy validation slices the verdict is measured on")
    ap.add_argument("--out", default=None, help="also write the record to this JSON file")
    ap.add_argument("--saliency-models", default=None, metavar="DIR",
                    help="a folder holding autoencoder/ and classifier/ (ACAT's models; default: the shipped ones)")
    ap.add_argument("--write-card", action="store_true")
    args = ap.parse_args(argv)
    if args.verdict_only:
        rec = calibrate_verdict(args.model, args.n_val, args.n_healthy, args.n_heldout, args.false_abnormal,
                                device=args.device, realism=args.realism, modality=args.modality,
                                saliency_dir=args.saliency_models)
    else:
        rec = calibrate(args.model, json.loads(args.rule), args.score, args.normalisation, args.n_val,
                        args.n_healthy, args.false_abnormal, device=args.device, k=args.k, realism=args.realism,
                        steps=args.steps, modality=args.modality, saliency_dir=args.saliency_models)
    rec["command"] = "python -m diffuse_core.evaluation.calibrate " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(rec, indent=1))
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(rec, indent=1) + "\n")
    if args.write_card:
        (write_verdict if args.verdict_only else write_card)(args.model, rec)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def verdict_on_real_normals(folder, model_dir=None, healthy_per_case: int = 6, false_abnormal: float = 0.05,
                            seed: int = 0, device="cpu", batch_size: int = 8) -> dict:
    """The verdict threshold chosen on real tumour-free slices of the BraTS-layout cases in ``folder`` (cases kept
    apart from the ones reported): the (1 - ``false_abnormal``) quantile of their peak anomaly at the card's settings.
    Real normal slices change more under the walk than SynthBrain's, so a threshold from SynthBrain calls most of
    them abnormal (measured: docs/results.md, real-data section)."""
    from diffuse_core.run.models import load_default_models
    from diffuse_core.core.redraw import mask_rule_of
    from diffuse_core.evaluation.protocol import brats_set
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary

    denoiser, sal = load_default_models(model_dir, None, device, True)
    from diffuse_core.run.card import mri_reference_for

    data = brats_set(folder, size=denoiser.config.resolution, per_case=1, healthy_per_case=healthy_per_case,
                     mri_reference=mri_reference_for(denoiser, "auto"))
    normal = data.subset(np.where(~data.diseased)[0])
    _, anos, _ = run_set(denoiser, sal, normal, mask_rule_of(denoiser.card), seed, batch_size)
    peaks = slice_scores(anos, normal.brains)
    thr = float(np.quantile(peaks, 1.0 - false_abnormal))
    return {"threshold": thr, "false_abnormal_rate_chosen": false_abnormal, "slices": int(len(normal)),
            "cases": sorted({i.split("-z")[0] for i in normal.ids}), "peaks": [round(float(p), 4) for p in peaks],
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit_id(), "hardware": hardware_summary(device)}
