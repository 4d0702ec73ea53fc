"""One DDPM training step of the shipped FLAIR architecture on this machine: the trainer's own batch and loss
(:func:`diffuse_core.train.ddpm.ddpm_task`), forward and backward under the trainer's precision, one AdamW step,
with the UNet's weights in the default (contiguous) layout and channels-last, as the trainer now keeps them.

    python benchmarks/bench_train_step.py --threads 1 --batch-size 32 --out benchmarks/results/train_step.json

The two layouts alternate (A B A B ...) so that a machine busy with something else slows both alike; each
layout's first step is a warm-up. Reported: median seconds per step and the ratio contiguous / channels-last.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app_load import cpu_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=4, help="timed steps per layout")
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)

    import torch

    from diffuse_core.evaluation.provenance import commit_id
    from diffuse_core.models.device import resolve_precision
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, ddpm_task

    torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)
    cfg = DDPMTrainConfig(batch_size=args.batch_size, augment=True)
    images = np.random.default_rng(0).uniform(-1, 1, (64, 1, 128, 128)).astype(np.float32)
    task = ddpm_task(TensorPool(images), cfg)
    unet = task.model
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-6)
    amp = resolve_precision("auto", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)

    def step():
        batch = task.make_batch(gen)
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = task.loss(unet, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    times = {name: [] for name in layouts}
    for name, fmt in layouts.items():        # warm-up of each layout
        unet.to(memory_format=fmt)
        step()
    for _ in range(args.repeats):
        for name, fmt in layouts.items():
            unet.to(memory_format=fmt)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    out = {"date": _dt.date.today().isoformat(), "commit": commit_id(), "hardware": cpu_model(),
           "threads": args.threads, "precision": "bf16 autocast" if amp is not None else "fp32",
           "batch_size": args.batch_size, "repeats": args.repeats, "load_at_start": load_at_start,
           "seconds_per_step": {k: round(v, 3) for k, v in med.items()},
           "contiguous_over_channels_last": round(med["contiguous"] / med["channels_last"], 3),
           "command": "python benchmarks/bench_train_step.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
