"""Where the time of one app run goes (issue: performance): ACAT saliency, inversion, sampling, post-processing and
the result panels, at the app's defaults (the model card's K, percentile and steps), on the shipped models.

    python benchmarks/bench_profile.py                    # 5 cold runs + 5 reruns of a teaching case, CPU
    python benchmarks/bench_profile.py --repeats 3 --case teaching/default/case13_ct_stroke

A *cold* run is a slice seen for the first time (no kept saliency map, no kept inversion); a *rerun* is the same
slice with another percentile, as when a trainee moves the slider (the app keeps the saliency map and x_K). Every
figure is also given in *call equivalents*: seconds divided by one float32 network call of the shipped UNet at batch
1, measured in the same process, which compares across machines. Prints a markdown table and the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PARTS = ("saliency", "inversion", "sampling", "post", "panels", "total")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fp32_call_seconds(denoiser, repeats: int = 7) -> float:
    """Median seconds of one float32 call of the UNet at batch 1 (after two warm-up calls)."""
    import torch

    from diffuse_core.core.sampler import denoiser_eps_model

    r, c = denoiser.config.resolution, denoiser.config.channels
    model = denoiser_eps_model(denoiser, None)
    x = torch.zeros(1, c, r, r, device=denoiser.device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            start = time.perf_counter()
            model(x, 250)
            if denoiser.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_run(lc, percentile: float) -> dict:
    """One Explore run of ``lc`` as the app makes it (run_case, then the result panels); its split in seconds."""
    from diffuse_core.studio.runs import run_case
    from diffuse_core.studio.settings import DEFAULTS
    from diffuse_core.ui.explore import explore_outputs

    start = time.perf_counter()
    item = None
    for item in run_case(lc, "acat", None, None, DEFAULTS["k"], DEFAULTS["steps"], DEFAULTS["seed"], percentile):
        pass
    walked = time.perf_counter()
    explore_outputs(lc, item, DEFAULTS["opacity"])
    end = time.perf_counter()
    t = dict(item["timings"])
    t["panels"] = end - walked
    t["total"] = end - start
    t["calls"] = item["result"].network_calls
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="teaching/default/case01_flair_glioma")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=os.environ.get("DIFFUSE_DEVICE", "cpu"))
    args = ap.parse_args()
    os.environ["DIFFUSE_DEVICE"] = args.device

    import torch

    from diffuse_core.studio.library import load_library_case
    from diffuse_core.studio.model_store import MODELS, apply_recommended_defaults, model_device
    from diffuse_core.studio.runs import INVERSION_CACHE
    from diffuse_core.studio.saliency_cache import SALIENCY_CACHE
    from diffuse_core.studio.settings import DEFAULTS, torch_threads

    torch.set_num_threads(torch_threads())
    apply_recommended_defaults()
    lc = load_library_case(args.case)
    denoiser = MODELS.denoiser(model_device(), lc.case.modality)
    unit = fp32_call_seconds(denoiser)
    one_run(lc, DEFAULTS["percentile"])                      # warm-up: first-call costs, lazy imports
    cold, warm = [], []
    for i in range(args.repeats):
        SALIENCY_CACHE._items.clear()
        INVERSION_CACHE._items.clear()
        cold.append(one_run(lc, DEFAULTS["percentile"]))
        warm.append(one_run(lc, DEFAULTS["percentile"] - 5))   # the slider moved: saliency and x_K kept
    med = {name: {p: statistics.median(r[p] for r in runs) for p in PARTS + ("calls",)}
           for name, runs in (("cold", cold), ("rerun", warm))}
    from diffuse_core.models.device import resolve_precision

    dtype = resolve_precision("auto", denoiser.device)
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(denoiser.device), "precision": "bf16 autocast" if dtype is not None else "fp32",
            "gpu": torch.cuda.get_device_name(0) if denoiser.device.type == "cuda" else None,
            "case": args.case, "k": DEFAULTS["k"], "steps": DEFAULTS["steps"], "percentile": DEFAULTS["percentile"],
            "fp32_call_seconds": unit, "repeats": args.repeats, "median": med, "runs": {"cold": cold, "rerun": warm}}
    print(f"**{info['cpu']}**, {info['cores']} cores, {info['torch_threads']} torch threads, {info['device']}, "
          f"{info['precision']}; K {info['k']}, {info['steps']} steps, percentile {info['percentile']:g}; "
          f"one fp32 UNet call at batch 1: {unit * 1000:.0f} ms; median of {args.repeats}.\n")
    print("| part | cold run (s) | share | call equivalents | rerun, slider moved (s) | call equivalents |")
    print("|---|---|---|---|---|---|")
    for p in PARTS:
        c, w = med["cold"][p], med["rerun"][p]
        share = f"{100 * c / med['cold']['total']:.0f} %" if p != "total" else "100 %"
        print(f"| {p} | {c:.2f} | {share} | {c / unit:.1f} | {w:.2f} | {w / unit:.1f} |")
    print(f"| network calls | {med['cold']['calls']:.0f} | | | {med['rerun']['calls']:.0f} | |")
    print()
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
