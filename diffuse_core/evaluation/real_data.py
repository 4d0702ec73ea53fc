"""Dif-fuse on real scans, beside the FLAIR threshold: the figures of docs/results.md's real-data section.

One command, ``diffuse-studio real-data --brats DIR``, measures on real BraTS FLAIR slices (per case ``per_case``
tumour slices spread over the tumour and ``healthy_per_case`` tumour-free slices whose brain is at least half the
case's largest section), each prepared as ``diffuse-studio run`` and the app prepare an upload (the model's own
intensity preparation unless ``--intensity`` says otherwise), at the app's defaults (the card's K, steps, mask rule,
anomaly score and threshold, seed 0):

- Dice on the tumour slices (model grid), Dif-fuse and the FLAIR z-score threshold (z > 1 inside the brain, the
  baseline the issues quote) on the same slices; and both with their threshold chosen on the other cases
  (leave-one-case-out: the threshold that maximises the other cases' mean Dice);
- the share of normal brain flagged on the tumour-free slices (mean, max, slices above 5 %);
- the lesion contrast the counterfactual keeps: the lesion's mean z-score against the slice's normal brain (more than
  3 px from the lesion), counterfactual over input (0 = gone, 1 = untouched);
- case-level bootstrap 95 % intervals (cases resampled, their slices with them) of every mean.

Results go to a JSON file with the date, commit, hardware and settings (``docs/results/real_data.json``), which
:mod:`diffuse_core.evaluation.real_data_report` turns into the markdown section and the picture grid of every slice.
The BraTS cases are read where they are (``../shared/real_cases/brats2015``); nothing of them is written but
figures and the grid of small slices.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

import numpy as np

ZSCORE_BASELINE = 1.0          # FLAIR z-score threshold of the baseline (z > 1 inside the brain)
LESION_MARGIN_PX = 3           # normal brain for the contrast measure: farther than this from the lesion
GRID_THRESHOLDS = np.round(np.arange(0.04, 0.62, 0.02), 3)
Z_GRID = np.round(np.arange(0.5, 3.01, 0.1), 2)


def _dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * (a & b).sum() / s)


def lesion_contrast_kept(image, counterfactual, lesion, brain) -> float:
    """The lesion's mean z-score against normal brain in the counterfactual over the same in the input (first
    channel); NaN where the input's lesion is not brighter than its normal brain."""
    import cv2

    les, brain = np.asarray(lesion, bool), np.asarray(brain, bool)
    k = np.ones((2 * LESION_MARGIN_PX + 1,) * 2, np.uint8)
    normal = brain & ~cv2.dilate(les.astype(np.uint8), k).astype(bool)
    if les.sum() < 4 or normal.sum() < 16:
        return float("nan")
    x, c = np.asarray(image)[0], np.asarray(counterfactual)[0]
    z_in = (x[les].mean() - x[normal].mean()) / (x[normal].std() + 1e-6)
    z_cf = (c[les].mean() - c[normal].mean()) / (c[normal].std() + 1e-6)
    return float(z_cf / z_in) if z_in > 0.25 else float("nan")


def case_bootstrap(values, groups, n: int = 2000, seed: int = 0, stat=np.nanmean) -> tuple[float, float]:
    """95 % interval of ``stat`` over slices, resampling whole cases (``groups``: the case of each slice)."""
    v, g = np.asarray(values, float), np.asarray(groups)
    cases = np.unique(g)
    if len(cases) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = [np.where(g == c)[0] for c in cases]
    out = []
    for _ in range(n):
        pick = np.concatenate([idx[i] for i in rng.integers(0, len(cases), len(cases))])
        out.append(stat(v[pick]))
    lo, hi = np.nanpercentile(out, [2.5, 97.5])
    return float(lo), float(hi)


def leave_case_out(maps, lesions, groups, grid) -> np.ndarray:
    """Per tumour slice, Dice at the threshold of ``grid`` that maximises the mean Dice of the OTHER cases."""
    g = np.asarray(groups)
    table = np.array([[_dice(m > t, l) for t in grid] for m, l in zip(maps, lesions)])   # slices x thresholds
    out = np.zeros(len(maps))
    for c in np.unique(g):
        held = g == c
        best = int(np.argmax(table[~held].mean(axis=0))) if (~held).any() else 0
        out[held] = table[held, best]
    return out


def _auroc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, bool)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def verdicts(maps, zmaps, brains, tumour, groups, card: dict, false_abnormal: float = 0.05, withheld=None) -> dict:
    """Slice verdicts (tumour slice -> abnormal, tumour-free -> normal) of Dif-fuse (peak anomaly; at the card's
    threshold, chosen on healthy SynthBrain validation, and at a threshold chosen on the other cases' tumour-free
    slices for ``false_abnormal``) and of the FLAIR threshold (peak z-score, the same leave-one-case-out choice):
    AUROC, sensitivity and specificity with case-level intervals. ``withheld`` (bool per slice): the slices a run
    makes no call on (outside the denoiser's trained levels, :mod:`diffuse_core.run.level_check`); the card's verdict
    is then also given as the app makes it, on the slices it calls."""
    from diffuse_core.core.verdict import slice_score

    pct = float(((card or {}).get("verdict") or {}).get("percentile", 99.5))
    s_df = np.array([slice_score(m, b, pct) for m, b in zip(maps, brains)])
    s_z = np.array([slice_score(zz, b, pct) for zz, b in zip(zmaps, brains)])
    tumour, groups = np.asarray(tumour, bool), np.asarray(groups)

    def lco_calls(scores):
        calls = np.zeros(len(scores), bool)
        for c in np.unique(groups):
            held = groups == c
            ref = scores[~held & ~tumour]
            thr = np.quantile(ref, 1.0 - false_abnormal) if ref.size else np.inf
            calls[held] = scores[held] > thr
        return calls

    def rates(calls):
        sens, spec = calls[tumour].astype(float), (~calls[~tumour]).astype(float)
        return {"sensitivity": float(sens.mean()), "sensitivity_ci95_cases": list(case_bootstrap(sens, groups[tumour])),
                "specificity": float(spec.mean()), "specificity_ci95_cases": list(case_bootstrap(spec, groups[~tumour]))}

    auc_df = _auroc(tumour, s_df)
    out = {"score": f"peak anomaly: the {pct:g}th percentile of the map (FLAIR: of the z-score) inside the brain",
           "auroc": {"dif_fuse": auc_df, "threshold": _auroc(tumour, s_z)},
           "leave_case_out": {"false_abnormal_rate": false_abnormal, "dif_fuse": rates(lco_calls(s_df)),
                              "threshold": rates(lco_calls(s_z))}}
    v = (card or {}).get("verdict")
    if isinstance(v, dict) and v.get("threshold") is not None:
        out["card"] = {"threshold": float(v["threshold"]), "false_abnormal_rate_on_synthbrain":
                       float(v.get("false_abnormal_rate", 0.05)), **rates(s_df > float(v["threshold"]))}
        if withheld is not None and np.any(withheld):
            keep = ~np.asarray(withheld, bool)
            calls = s_df[keep] > float(v["threshold"])
            t, g = tumour[keep], groups[keep]
            sens, spec = calls[t].astype(float), (~calls[~t]).astype(float)
            out["card_level_checked"] = {
                "what": "the card's verdict as the app makes it: no call on slices outside the denoiser's trained "
                        "levels; sensitivity and specificity over the slices called",
                "withheld": {"tumour": int((~keep & tumour).sum()), "tumour_free": int((~keep & ~tumour).sum())},
                "sensitivity": float(sens.mean()) if sens.size else None,
                "sensitivity_ci95_cases": list(case_bootstrap(sens, g[t])) if sens.size else None,
                "specificity": float(spec.mean()) if spec.size else None,
                "specificity_ci95_cases": list(case_bootstrap(spec, g[~t])) if spec.size else None,
                "false_abnormal_calls": int((~calls[~t]).size - (~calls[~t]).sum())}
    return out


def measure(brats_dir, model_dir=None, saliency_dir=None, device="cpu", per_case: int = 4, healthy_per_case: int = 3,
            intensity: str = "auto", mask_rule: str | None = None, score: str | None = None,
            threshold: float | None = None, seed: int = 0, batch_size: int = 8, keep_arrays: bool = False) -> dict:
    """The real-data figures (see the module docstring) as a dict; ``keep_arrays`` adds the slices, counterfactuals
    and maps under "_arrays" (for the picture grid; not written to JSON)."""
    from diffuse_core.core.redraw import mask_rule_of, score_maps, score_of
    from diffuse_core.evaluation.baselines import zscore_maps
    from diffuse_core.evaluation.protocol import brats_set, run_assembly_on_set
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary
    from diffuse_core.run.card import anomaly_threshold_of, mri_reference_for, resolve_intensity
    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.settings import default_settings

    t0 = time.perf_counter()
    denoiser, sal = load_default_models(model_dir, saliency_dir, device, True)
    chosen = default_settings(denoiser)
    rule = mask_rule_of(denoiser.card, mask_rule)
    score = score_of(denoiser.card, score)
    thr = anomaly_threshold_of(denoiser) if threshold is None else float(threshold)
    intensity = resolve_intensity(denoiser, intensity)
    data = brats_set(brats_dir, size=denoiser.config.resolution, per_case=per_case, healthy_per_case=healthy_per_case,
                     mri_reference=mri_reference_for(denoiser, intensity))
    run = run_assembly_on_set(denoiser, sal, data, seed=seed, batch_size=batch_size, mask_rule=rule)
    secs, calls = run["seconds_per_slice"], int(run["calls_per_slice"])
    cfs = run["counterfactuals"]
    masks = {"acat": run["masks"]}
    kernel = int(denoiser.card.get("anomaly_kernel", 5))
    maps = score_maps(data.images, cfs, data.brains, masks["acat"], score, kernel, modality="mri")
    z = zscore_maps(data.images, data.brains)
    groups = np.array([i.split("-z")[0] for i in data.ids])
    tum = np.array([bool(l.any()) for l in data.lesions])
    free = ~tum
    les, brains = data.lesions, data.brains.astype(bool)

    dice_df = np.array([_dice(m > thr, l) for m, l in zip(maps[tum], les[tum])])
    dice_z = np.array([_dice(zz > ZSCORE_BASELINE, l) for zz, l in zip(z[tum], les[tum])])
    lco_df = leave_case_out(maps[tum], les[tum], groups[tum], GRID_THRESHOLDS)
    lco_z = leave_case_out(z[tum], les[tum], groups[tum], Z_GRID)
    flag_df = np.array([(m[b] > thr).mean() for m, b in zip(maps[free], brains[free])])
    flag_z = np.array([(zz[b] > ZSCORE_BASELINE).mean() for zz, b in zip(z[free], brains[free])])
    kept = np.array([lesion_contrast_kept(x, c, l, b) for x, c, l, b in
                     zip(data.images[tum], cfs[tum], les[tum], brains[tum])])
    mask_share = np.array([m[b].mean() for m, b in zip(masks["acat"], brains)])
    lesion_in_mask = np.array([(m & l.astype(bool)).sum() / max(1, l.sum()) for m, l in
                               zip(masks["acat"][tum].astype(bool), les[tum])])
    # normal tissue unchanged: mean |change| on the tumour-free slices' brain
    change_free = np.array([np.abs(x[0] - c[0])[b].mean() for x, c, b in zip(data.images[free], cfs[free],
                                                                             brains[free])])

    withheld = np.array([w is not None for w in run["withheld"]], bool)
    verdict_block = verdicts(maps, z, data.brains, tum, groups, denoiser.card, withheld=withheld)

    def summary(values, groups_):
        lo, hi = case_bootstrap(values, groups_)
        return {"mean": float(np.nanmean(values)), "ci95_cases": [lo, hi], "n": int(np.isfinite(values).sum())}

    res = {
        "what": "Dif-fuse on real BraTS FLAIR slices beside the FLAIR z-score threshold (diffuse-studio real-data)",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), "commit": commit_id(),
        "hardware": hardware_summary(device), "seconds": round(time.perf_counter() - t0, 1),
        "command": None,
        "data": {"folder": Path(brats_dir).name, "cases": sorted(set(groups.tolist())),
                 "tumour_slices": int(tum.sum()), "tumour_free_slices": int(free.sum()),
                 "per_case": per_case, "healthy_per_case": healthy_per_case, "grid": int(denoiser.config.resolution)},
        "settings": {"model": str(model_dir or "assets/ddpm"), "saliency": str(saliency_dir or "assets"), "model_steps": (denoiser.card.get("training") or {})
                     .get("steps_done"), "intensity": intensity, "k": chosen["k"], "steps": chosen["steps"],
                     "mask_rule": rule, "score": score, "threshold": thr, "anomaly_kernel": kernel, "seed": seed,
                     "network_calls_per_slice": calls, "seconds_per_slice": round(float(secs), 3),
                     "zscore_baseline": ZSCORE_BASELINE},
        "dice": {"dif_fuse": summary(dice_df, groups[tum]), "threshold": summary(dice_z, groups[tum]),
                 "paired_gain": summary(dice_df - dice_z, groups[tum])},
        "dice_leave_case_out": {"dif_fuse": summary(lco_df, groups[tum]), "threshold": summary(lco_z, groups[tum]),
                                "paired_gain": summary(lco_df - lco_z, groups[tum])},
        "normal_flagged": {"dif_fuse": {**summary(flag_df, groups[free]), "max": float(flag_df.max(initial=0)),
                                        "slices_above_5pct": int((flag_df > 0.05).sum())},
                           "threshold": {**summary(flag_z, groups[free]), "max": float(flag_z.max(initial=0))}},
        "lesion_contrast_kept": {"median": float(np.nanmedian(kept)), "ci95_cases": list(case_bootstrap(
            kept, groups[tum], stat=np.nanmedian)), "above_0.55": int(np.sum(kept > 0.55)), "n": int(np.isfinite(
                kept).sum())},
        "normal_change": summary(change_free, groups[free]),
        "verdict": verdict_block,
        "mask_share_of_brain": {"tumour": float(mask_share[tum].mean()), "tumour_free": float(mask_share[free].mean())},
        "lesion_in_mask": float(lesion_in_mask.mean()),
        "per_slice": [{"id": data.ids[i], "tumour": bool(tum[i]), "mask_share": round(float(mask_share[i]), 4)}
                      for i in range(len(data))],
    }
    from diffuse_core.core.verdict import slice_score

    for i in range(len(data)):
        res["per_slice"][i]["peak_anomaly"] = round(slice_score(maps[i], data.brains[i]), 4)
        if run["levels"][i] is not None:
            res["per_slice"][i]["level"] = round(float(run["levels"][i]), 1)
            res["per_slice"][i]["call_withheld"] = bool(withheld[i])
    ti, fi = np.where(tum)[0], np.where(free)[0]
    for j, i in enumerate(ti):
        res["per_slice"][i].update(dice=round(float(dice_df[j]), 4), dice_threshold=round(float(dice_z[j]), 4),
                                   contrast_kept=None if not np.isfinite(kept[j]) else round(float(kept[j]), 4))
    for j, i in enumerate(fi):
        res["per_slice"][i].update(flagged=round(float(flag_df[j]), 4), flagged_threshold=round(float(flag_z[j]), 4))
    if keep_arrays:
        res["_arrays"] = {"images": data.images, "counterfactuals": cfs, "maps": maps, "lesions": les,
                          "brains": data.brains, "masks": masks["acat"], "ids": list(data.ids), "threshold": thr}
    return res


def write(res: dict, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in res.items() if not k.startswith("_")}
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(out)
    return out
