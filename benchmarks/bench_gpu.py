"""Dif-fuse on a CUDA GPU (issue: performance): latency of one run at the app's defaults, throughput of batched runs
(slices per second) at 128² and 256², and peak GPU memory. One prepared command for whenever a GPU is at hand:

    python benchmarks/bench_gpu.py                       # on the GPU; prints a markdown table and JSON
    python benchmarks/bench_gpu.py --device cpu --quick  # the same code path on a CPU, small batches (a check)

* latency: ACAT saliency + mask + Algorithm 1 (K, steps from the shipped card) for one 128² slice, median of
  ``--repeats`` after a warm-up, synchronised;
* throughput at 128²: the walk alone (masks given) on batches of ``--batches`` slices with the shipped UNet;
* throughput at 256²: the same UNet architecture at 256² with untrained weights (the cost of a call does not depend
  on the weights), as a 256² model would run.
Precision: the project's choice for the device (bf16 autocast where the GPU supports it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _slices(n: int, size: int):
    from diffuse_core.data.synthbrain import generate_slice, sample_seed

    items = [generate_slice(sample_seed("val", 7, i), modalities=("flair",), size=size) for i in range(min(n, 8))]
    reps = int(np.ceil(n / len(items)))
    img = np.concatenate([np.stack([s.image for s in items])] * reps)[:n].astype(np.float32)
    brain = np.concatenate([np.stack([s.brain_mask for s in items])] * reps)[:n]
    yy, xx = np.mgrid[:size, :size]
    mask = (np.hypot(yy - 0.4 * size, xx - 0.45 * size) < 0.15 * size).astype(np.float32)[None].repeat(n, 0) * brain
    return img, mask, brain


def throughput(denoiser, batch: int, k: int, steps: int, device) -> dict:
    """Slices per second of the walk on one batch (after a warm-up batch); peak memory of it."""
    import torch

    from diffuse_core.pipeline import run_batch

    img, mask, brain = _slices(batch, denoiser.config.resolution)
    run_batch(denoiser, img, mask, brain, k=k, steps=max(2, steps // 5), seed=0)        # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    out = run_batch(denoiser, img, mask, brain, k=k, steps=steps, seed=0)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return {"batch": batch, "resolution": denoiser.config.resolution, "seconds": seconds,
            "slices_per_second": batch / seconds, "network_calls": out.network_calls, "peak_mib": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--quick", action="store_true", help="small batches and few repeats (a check of the code path)")
    args = ap.parse_args()

    import torch

    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.region import mask_for_case
    from diffuse_core.run.settings import default_settings
    from diffuse_core.data.synthbrain import generate_slice, sample_seed
    from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser
    from diffuse_core.models.device import pick_device, resolve_precision
    from diffuse_core.cases import case_from_normalized
    from diffuse_core.pipeline import run_counterfactual

    device = pick_device(args.device)
    if args.quick:
        args.repeats, args.batches = 2, "4"
    denoiser, sal = load_default_models(None, None, device)
    s = default_settings(denoiser)
    k, steps, percentile = s["k"], s["steps"], s["percentile"]
    sl = generate_slice(sample_seed("val", 3, 1), modalities=("flair",), size=denoiser.config.resolution)
    case = case_from_normalized(sl.image, size=denoiser.config.resolution)

    def one_run():
        mask, saliency = mask_for_case(case, "acat", percentile, sal, device)
        return run_counterfactual(denoiser, case.image, mask, brain_mask=case.brain_mask, k=k, steps=steps, seed=0)

    one_run()
    times = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        one_run()
        _sync(device)
        times.append(time.perf_counter() - start)
    batches = [int(b) for b in args.batches.split(",")]
    rows = [throughput(denoiser, b, k, steps, device) for b in batches]
    cfg = denoiser.config.to_dict()
    cfg["resolution"] = 256
    big = new_denoiser(DenoiserConfig(**cfg)).to(device)
    big.unet.to(memory_format=torch.channels_last)
    rows += [throughput(big, max(1, b // 4), k, steps, device) for b in batches]
    info = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "precision": str(resolve_precision("auto", device)), "k": k, "steps": steps, "percentile": percentile,
            "latency_median_s": statistics.median(times), "latency_runs": times, "throughput": rows,
            "torch": torch.__version__}
    print(f"**{info['gpu'] or info['device']}**, {info['precision']}, torch {torch.__version__}; K {k}, {steps} "
          f"steps, percentile {percentile:g}.\n")
    print(f"One run at the app's defaults (ACAT + Algorithm 1, 128²): **{info['latency_median_s'] * 1000:.0f} ms** "
          f"median of {args.repeats}.\n")
    print("| resolution | batch | s per batch | slices / s | network calls | peak GPU memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['resolution']}² | {r['batch']} | {r['seconds']:.2f} | {r['slices_per_second']:.1f} | "
              f"{r['network_calls']} | {r['peak_mib']:.0f} |")
    print()
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
