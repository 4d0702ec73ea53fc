"""Noise-floor strength sweep (research; the rule and the reading are in 2026-12-07-noise-floor-strength.md).

Runs the shipped FLAIR model once at the card's settings over SynthBrain validation (32 mixed + 32 healthy slices,
seed 0) and over the BraTS slices of ``diffuse-studio real-data``, then scores the same counterfactuals with each
floor variant. Usage: python docs/research/2026-12-07-floor-sweep.py OUT.json [BRATS_DIR]
"""
import json
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)

from diffuse_core.core.anomaly import clean_anomaly_map  # noqa: E402
from diffuse_core.core.metrics import dice  # noqa: E402
from diffuse_core.core.redraw import mask_rule_of, score_maps  # noqa: E402
from diffuse_core.evaluation.baselines import zscore_maps  # noqa: E402
from diffuse_core.evaluation.calibrate import run_set, slice_scores  # noqa: E402
from diffuse_core.evaluation.protocol import brats_set, choose_threshold, model_scale, synthbrain_set  # noqa: E402
from diffuse_core.run.card import mri_reference_for, resolve_intensity  # noqa: E402
from diffuse_core.run.models import load_default_models  # noqa: E402

VARIANTS = [(0.0, 99.0)] + [(a, p) for p in (95.0, 99.0) for a in (0.25, 0.5, 0.75, 1.0)]
TUNING = ("brats_2013_pat0001_1", "brats_2013_pat0002_1", "brats_2013_pat0003_1")


def floor_map(x, c, brain, redrawn, a, p, kernel):
    raw = np.maximum((x - c).mean(axis=0), 0.0)
    outside = brain & ~redrawn
    floor = float(np.percentile(raw[outside], p)) if outside.sum() >= 16 else 0.0
    return (clean_anomaly_map(np.maximum(raw - a * floor, 0.0).astype(np.float32), kernel) * brain).astype(np.float32)


def maps_of(images, cfs, brains, masks, a, p, kernel):
    return np.stack([floor_map(x, c, b.astype(bool), m.astype(bool), a, p, kernel)
                     for x, c, b, m in zip(images, cfs, brains, masks)])


def main(out, brats="../shared/real_cases/brats2015"):
    t0 = time.perf_counter()
    den, sal = load_default_models(None, None, "cpu", True)
    rule = mask_rule_of(den.card, None)
    kernel = int(den.card.get("anomaly_kernel", 5))
    val = model_scale(den, synthbrain_set("val", 32, healthy_fraction=0.25))
    healthy = model_scale(den, synthbrain_set("val", 32, base_seed=1, healthy_fraction=1.0))
    real = brats_set(brats, size=den.config.resolution, per_case=4, healthy_per_case=3,
                     mri_reference=mri_reference_for(den, resolve_intensity(den, "auto")))
    runs = {name: run_set(den, sal, s, rule) for name, s in (("val", val), ("healthy", healthy), ("real", real))}
    print(f"runs done in {time.perf_counter() - t0:.0f} s", flush=True)

    # the sweep's a = 0 and (1, 99) must be the engine's own signed and signed-floor scores
    cf, _, m = runs["real"]
    for (a, p), name in (((0.0, 99.0), "signed"), ((1.0, 99.0), "signed-floor")):
        ref = score_maps(real.images, cf, real.brains, m, name, kernel, modality="mri")
        assert np.allclose(ref, maps_of(real.images, cf, real.brains, m, a, p, kernel), atol=1e-6), name

    groups = np.array([i.split("-z")[0] for i in real.ids])
    tum = np.array([bool(l.any()) for l in real.lesions])
    brains = real.brains.astype(bool)
    z = zscore_maps(real.images, real.brains)
    sick = val.diseased
    rows = []
    for a, p in VARIANTS:
        v_maps = maps_of(val.images, runs["val"][0], val.brains, runs["val"][2], a, p, kernel)
        thr = choose_threshold(v_maps[sick], val.lesions[sick])
        h_maps = maps_of(healthy.images, runs["healthy"][0], healthy.brains, runs["healthy"][2], a, p, kernel)
        h_peaks = slice_scores(h_maps, healthy.brains)
        verdict_thr = float(np.quantile(h_peaks, 0.95))
        r_maps = maps_of(real.images, runs["real"][0], real.brains, runs["real"][2], a, p, kernel)
        r_peaks = slice_scores(r_maps, real.brains)
        row = {"a": a, "p": p, "threshold": thr, "verdict_threshold": verdict_thr,
               "val_dice": float(np.mean([dice(x > thr, l) for x, l in zip(v_maps[sick], val.lesions[sick])])),
               "val_healthy_flagged": float(np.mean([(x[b.astype(bool)] > thr).mean()
                                                     for x, b in zip(h_maps, healthy.brains)])),
               "verdict_sensitivity": float((slice_scores(v_maps[sick], val.brains[sick]) > verdict_thr).mean())}
        for part, cases in (("tuning", np.isin(groups, TUNING)), ("check", ~np.isin(groups, TUNING)),
                            ("all", np.ones(len(groups), bool))):
            t, f = cases & tum, cases & ~tum
            flagged = np.array([(x[b] > thr).mean() for x, b in zip(r_maps[f], brains[f])])
            row[part] = {"dice": float(np.mean([dice(x > thr, l) for x, l in zip(r_maps[t], real.lesions[t])])),
                         "dice_threshold": float(np.mean([dice(x > 1.0, l) for x, l in zip(z[t], real.lesions[t])])),
                         "normal_flagged": float(flagged.mean()), "normal_flagged_max": float(flagged.max()),
                         "slices_above_5pct": int((flagged > 0.05).sum()), "n_tumour": int(t.sum()),
                         "verdict_sensitivity": float((r_peaks[t] > verdict_thr).mean()),
                         "verdict_specificity": float((r_peaks[f] <= verdict_thr).mean()),
                         "n_free": int(f.sum())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    json.dump({"what": "noise-floor strength sweep (docs/research/2026-12-07-noise-floor-strength.md)",
               "date": time.strftime("%Y-%m-%d", time.gmtime()), "seconds": round(time.perf_counter() - t0, 1),
               "settings": {"k": 700, "steps": 25, "mask_rule": rule, "kernel": kernel, "seed": 0, "threads": 1},
               "rows": rows}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
