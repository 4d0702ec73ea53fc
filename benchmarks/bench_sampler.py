"""Speed and memory of one Dif-fuse run (invert + sample) at the app's settings.

    python benchmarks/bench_sampler.py [--model assets/ddpm] [--steps 50] [--k 500] [--device auto] [--repeats 3]

Prints seconds per run, network calls per second and peak memory (RSS on CPU, allocator peak on CUDA), as JSON.
Targets (what "interactive" means here): one 128x128 run at 50 steps under 15 s on a 2-core CPU, under 2 s on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from diffuse_core.models.denoiser import DenoiserConfig, load_denoiser, new_denoiser
from diffuse_core.models.device import pick_device, resolve_precision
from diffuse_core.pipeline import run_counterfactual


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="denoiser folder (default: an untrained model of the default size)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    den = load_denoiser(args.model, device) if args.model else new_denoiser(DenoiserConfig()).to(device)
    r = den.config.resolution
    yy, xx = np.mgrid[:r, :r]
    image = np.where(np.hypot(yy - r / 2, xx - r / 2) < r * 0.4, 0.1, -1.0).astype(np.float32)[None]
    image = np.repeat(image, den.config.channels, axis=0)
    mask = np.zeros((r, r), np.uint8)
    mask[r // 3: r // 2, r // 3: r // 2] = 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run_counterfactual(den, image, mask, k=args.k, steps=2, precision=args.precision)  # warm-up
    times = []
    for i in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = run_counterfactual(den, image, mask, k=args.k, steps=args.steps, seed=i, precision=args.precision)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        "device": str(device), "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "precision": str(resolve_precision(args.precision, device)),
        "resolution": r, "parameters": den.num_parameters(), "k": args.k, "steps": args.steps,
        "network_calls": res.network_calls, "seconds_median": round(float(np.median(times)), 3),
        "calls_per_second": round(res.network_calls / float(np.median(times)), 1),
        "peak_memory_mb": round(peak, 1)}, indent=2))


if __name__ == "__main__":
    main()
