"""Our default Dif-fuse against the authors' schedule, side by side on the same UNet and the same validation slices
(issue: performance): wall time, network calls and Dice.

* **ours**: the app's defaults (the model card's K, percentile and steps): Algorithm 1, one network call per step,
  ``steps`` respaced steps over [0, K];
* **authors' schedule**: as the authors' code runs it, a 1,000-step schedule walked at every timestep up to K (so K
  inversion steps) and two chains back (a DDPM chain on the fused image and a separate DDIM chain outside the mask):
  3K network calls per slice.

Both get the same ACAT masks (computed once, timed once and added to each) and run in batches of ``--batch-size``.
Dice is given at the shipped card's threshold and at each method's best threshold on these slices (an oracle, the
same for both, so the comparison is fair).

    python benchmarks/bench_authors_schedule.py               # 8 diseased SynthBrain validation slices
    python benchmarks/bench_authors_schedule.py --n 16 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_profile import cpu_name, fp32_call_seconds  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="diseased validation slices")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from diffuse_core.run.card import anomaly_threshold_of
    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.settings import default_settings
    from diffuse_core.evaluation.protocol import (choose_threshold, compute_saliency_maps, masks_at, run_on_set,
                                                  scores, synthbrain_set)
    from diffuse_core.models.device import pick_device

    device = pick_device(args.device)
    denoiser, sal = load_default_models(None, None, device)
    s = default_settings(denoiser)
    k, steps, percentile = s["k"], s["steps"], s["percentile"]
    n_total = int(np.ceil(args.n / 0.75))
    val = synthbrain_set("val", n_total, size=denoiser.config.resolution)
    val = val.subset(np.where(val.diseased)[0][:args.n])
    start = time.perf_counter()
    compute_saliency_maps(val, sal, sources=("acat",))
    acat_s = (time.perf_counter() - start) / len(val)
    masks = masks_at(val, percentile)
    card_thr = anomaly_threshold_of(denoiser)
    unit = fp32_call_seconds(denoiser)
    rows = {}
    for name, method, n_steps in (("ours", "dif-fuse", steps), ("authors' schedule", "dif-fuse-two-chain", k)):
        start = time.perf_counter()
        _, ano, calls, _ = run_on_set(method, denoiser, val, masks, k, n_steps, seed=0, batch_size=args.batch_size)
        walk_s = (time.perf_counter() - start) / len(val)
        best = choose_threshold(ano, val.lesions)
        rows[name] = {"method": method, "steps": n_steps, "calls_per_slice": calls, "walk_s_per_slice": walk_s,
                      "s_per_slice": walk_s + acat_s, "dice_card_threshold": float(scores(ano, val.lesions,
                                                                                         card_thr)[0].mean()),
                      "dice_best_threshold": float(scores(ano, val.lesions, best)[0].mean()), "best_threshold": best}
    ours, theirs = rows["ours"], rows["authors' schedule"]
    ratio = theirs["s_per_slice"] / ours["s_per_slice"]
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "k": k, "percentile": percentile, "n_slices": len(val), "batch_size": args.batch_size,
            "acat_s_per_slice": acat_s, "fp32_call_seconds": unit, "card_threshold": card_thr, "rows": rows,
            "wall_time_ratio": ratio, "calls_ratio": theirs["calls_per_slice"] / ours["calls_per_slice"]}
    print(f"**{info['cpu']}**, {info['cores']} cores, {info['device']}; {len(val)} diseased SynthBrain validation "
          f"slices, K {k}, percentile {percentile:g}, batches of {args.batch_size}; one fp32 call {unit * 1000:.0f} "
          f"ms.\n")
    print("| | steps | network calls / slice | s / slice (incl. ACAT) | Dice at the card's threshold | "
          "Dice at its best threshold (oracle) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['steps']} | {r['calls_per_slice']:.0f} | {r['s_per_slice']:.2f} | "
              f"{r['dice_card_threshold']:.3f} | {r['dice_best_threshold']:.3f} |")
    print(f"\nOurs is **{ratio:.0f}x** faster ({info['calls_ratio']:.0f}x fewer network calls).\n")
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
