"""The paper's DDIM inversion against the fixed-point refined one ("ddim-refined"), for the paper's one-call walk and
the authors' two-chain walk: thresholds chosen on diseased SynthBrain validation slices, then Dice on held-out
SynthBrain test slices and on the real BraTS tumour slices, the change on healthy slices split inside / outside the
mask, and the network calls. Quality, not time.

    python benchmarks/bench_inversion.py --brats ../shared/real_cases/brats2015 --out inversion.json
    python benchmarks/bench_inversion.py --configs paper:ddim,paper:ddim-refined --n-val 8 --n-test 8   # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _change(images, cfs, brains, masks) -> dict:
    d = np.abs(images - cfs).mean(axis=1)
    b, m = brains.astype(bool), masks.astype(bool)
    return {part: float(np.mean([d[i][b[i] & sel[i]].mean() for i in range(len(d)) if (b[i] & sel[i]).any()]))
            for part, sel in (("brain", np.ones_like(m)), ("inside_mask", m), ("outside_mask", ~m))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="paper:ddim,paper:ddim-refined,two-chain:ddim,two-chain:ddim-refined",
                    help="walk:solver pairs, comma-separated")
    ap.add_argument("--brats", default=None, help="BraTS 2015 folder (optional)")
    ap.add_argument("--n-val", type=int, default=16, help="validation slices (a quarter healthy)")
    ap.add_argument("--n-test", type=int, default=24, help="test slices (a quarter healthy)")
    ap.add_argument("--per-case", type=int, default=4, help="BraTS tumour slices per case")
    ap.add_argument("--steps", type=int, default=None, help="default: the card's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()

    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.settings import default_settings
    from diffuse_core.evaluation.protocol import (brats_set, choose_threshold, compute_saliency_maps, masks_at,
                                                  pixel_scores, scores, synthbrain_set)
    from diffuse_core.pipeline import InversionCache, run_batch

    denoiser, sal = load_default_models(None, None, "cpu")
    s = default_settings(denoiser)
    steps = args.steps or s["steps"]
    size = denoiser.config.resolution
    sets = {"val": synthbrain_set("val", args.n_val, size=size, healthy_fraction=0.25),
            "test": synthbrain_set("test", args.n_test, size=size, healthy_fraction=0.25)}
    if args.brats:
        sets["brats"] = brats_set(args.brats, size=size, per_case=args.per_case)
    masks = {}
    for name, data in sets.items():
        compute_saliency_maps(data, sal, sources=("acat",))
        masks[name] = masks_at(data, s["percentile"])["acat"]
    caches = {name: InversionCache(size=64) for name in sets}      # the two walks share a solver's inversion
    rows = []
    for pair in args.configs.split(","):
        walk, solver = pair.split(":")
        start = time.perf_counter()
        out = {}
        for name, data in sets.items():
            parts = [run_batch(denoiser, data.images[i:i + args.batch_size], masks[name][i:i + args.batch_size],
                               data.brains[i:i + args.batch_size], k=s["k"], steps=steps, seed=args.seed,
                               variant=walk, solver=solver, inversion_cache=caches[name])
                     for i in range(0, len(data), args.batch_size)]
            out[name] = (np.concatenate([p.counterfactuals for p in parts]),
                         np.concatenate([p.anomalies for p in parts]))
        fresh = run_batch(denoiser, sets["val"].images[:1], masks["val"][:1], sets["val"].brains[:1], k=s["k"],
                          steps=steps, seed=args.seed, variant=walk, solver=solver)     # a fresh run's calls
        calls = fresh.network_calls
        val, test = sets["val"], sets["test"]
        vd, td = val.diseased, test.diseased
        thr = choose_threshold(out["val"][1][vd], val.lesions[vd])
        healthy = np.concatenate([val.images[~vd], test.images[~td]])
        row = {"walk": walk, "solver": solver, "steps": steps, "calls_per_slice": calls, "threshold_from_val": thr,
               "val_dice": float(scores(out["val"][1][vd], val.lesions[vd], thr)[0].mean()),
               "test_dice": float(scores(out["test"][1][td], test.lesions[td], thr)[0].mean()),
               "test_auprc": float(pixel_scores(out["test"][1][td], test.lesions[td], test.brains[td])["auprc"]),
               "healthy_change": _change(healthy, np.concatenate([out["val"][0][~vd], out["test"][0][~td]]),
                                         np.concatenate([val.brains[~vd], test.brains[~td]]),
                                         np.concatenate([masks["val"][~vd], masks["test"][~td]])),
               "healthy_flagged": float(np.mean([(a > thr)[b.astype(bool)].mean() for a, b in zip(
                   np.concatenate([out["val"][1][~vd], out["test"][1][~td]]),
                   np.concatenate([val.brains[~vd], test.brains[~td]]))])),
               "slices": {k: int(len(v)) for k, v in sets.items()}, "seconds": round(time.perf_counter() - start, 1)}
        if "brats" in sets:
            b = sets["brats"]
            row["brats_dice"] = float(scores(out["brats"][1], b.lesions, thr)[0].mean())
            row["brats_auprc"] = float(pixel_scores(out["brats"][1], b.lesions, b.brains)["auprc"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    print("\n| walk | solver | calls | threshold | val Dice | test Dice | BraTS Dice | healthy change (inside / "
          "outside the mask) | healthy flagged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["healthy_change"]
        print(f"| {r['walk']} | {r['solver']} | {r['calls_per_slice']:.0f} | {r['threshold_from_val']:.2f} | "
              f"{r['val_dice']:.3f} | {r['test_dice']:.3f} | {r.get('brats_dice', float('nan')):.3f} | "
              f"{c['brain']:.3f} ({c['inside_mask']:.3f} / {c['outside_mask']:.3f}) | {100 * r['healthy_flagged']:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
