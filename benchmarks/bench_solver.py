"""DDIM (the paper's deterministic updates) against DPM-Solver++ (2M) at several step counts, on the validation slices
the thresholds are chosen on (issue: performance): Dice at the card's threshold and at the best one, pixel AUPRC and
the change on healthy slices. Quality, not time: the network calls per run are 2 x steps for both solvers.

    python benchmarks/bench_solver.py                                   # 25 / 15 / 10 steps, seeds 0 and 1
    python benchmarks/bench_solver.py --configs 25:ddim,25:dpm-solver++ --seeds 0 --out solver.json
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="25:ddim,25:dpm-solver++,15:dpm-solver++,10:dpm-solver++",
                    help="steps:solver pairs, comma-separated")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--n", type=int, default=32, help="validation slices (a quarter healthy)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()

    from diffuse_core.run.card import anomaly_threshold_of
    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.settings import default_settings
    from diffuse_core.evaluation.protocol import (choose_threshold, compute_saliency_maps, identity_change, masks_at,
                                                  pixel_scores, scores, synthbrain_set)
    from diffuse_core.pipeline import run_batch

    denoiser, sal = load_default_models(None, None, "cpu")
    s = default_settings(denoiser)
    val = synthbrain_set("val", args.n, size=denoiser.config.resolution)
    compute_saliency_maps(val, sal, sources=("acat",))
    masks = masks_at(val, s["percentile"])["acat"]
    thr = anomaly_threshold_of(denoiser)
    dis = val.diseased
    rows = []
    for pair in args.configs.split(","):
        steps, solver = pair.split(":")
        for seed in (int(x) for x in args.seeds.split(",")):
            start = time.perf_counter()
            parts = [run_batch(denoiser, val.images[i:i + args.batch_size], masks[i:i + args.batch_size],
                               val.brains[i:i + args.batch_size], k=s["k"], steps=int(steps), seed=seed,
                               solver=solver) for i in range(0, len(val), args.batch_size)]
            ano = np.concatenate([p.anomalies for p in parts])
            cf = np.concatenate([p.counterfactuals for p in parts])
            best = choose_threshold(ano[dis], val.lesions[dis])
            row = {"solver": solver, "steps": int(steps), "seed": seed, "calls_per_slice": parts[0].network_calls,
                   "dice_card_threshold": float(scores(ano[dis], val.lesions[dis], thr)[0].mean()),
                   "dice_best_threshold": float(scores(ano[dis], val.lesions[dis], best)[0].mean()),
                   "best_threshold": best,
                   "auprc": float(pixel_scores(ano[dis], val.lesions[dis], val.brains[dis])["auprc"]),
                   "healthy_change": float(identity_change(val.images[~dis], cf[~dis], val.brains[~dis])),
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| solver | steps | calls | Dice, card threshold | Dice, best threshold | AUPRC | healthy change |")
    print("|---|---|---|---|---|---|---|")
    for pair in args.configs.split(","):
        steps, solver = pair.split(":")
        mine = [r for r in rows if r["solver"] == solver and r["steps"] == int(steps)]
        mean = {k: float(np.mean([r[k] for r in mine])) for k in ("dice_card_threshold", "dice_best_threshold",
                                                                    "auprc", "healthy_change")}
        print(f"| {solver} | {steps} | {mine[0]['calls_per_slice']} | {mean['dice_card_threshold']:.3f} | "
              f"{mean['dice_best_threshold']:.3f} | {mean['auprc']:.3f} | {mean['healthy_change']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
