"""One run, three callers: ``diffuse-studio run`` (:func:`diffuse_core.run.files.run_file`), the app's Run button
(:func:`diffuse_core.studio.runs.run_case`, frames streamed) and the bare assembly
(:func:`diffuse_core.run.assembly.run_one`) on the same real-sized slice with the same settings, each as a ratio to
one UNet call measured in the same process (so that a busy or a faster machine reads the same).

    python benchmarks/bench_one_run.py                  # K 700, 25 steps (the FLAIR card's), 3 repeats each
    python benchmarks/bench_one_run.py --k 100 --steps 5 --repeats 2 --out benchmarks/results/one_run.json

Models are loaded before timing; each caller's first run is a warm-up. The target (issue 32): the app's run costs
no more than the CLI's plus the streaming of its frames.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app_load import cpu_model  # noqa: E402


def unet_call_seconds(denoiser, repeats: int = 5) -> float:
    """Median seconds of one network call on one slice, with the run's precision."""
    import torch

    from diffuse_core.core.sampler import denoiser_eps_model
    from diffuse_core.models.device import resolve_precision

    eps = denoiser_eps_model(denoiser, resolve_precision("auto", denoiser.device))
    r, c = denoiser.config.resolution, denoiser.config.channels
    x = torch.zeros(1, c, r, r, device=denoiser.device)
    t = torch.tensor([500], device=denoiser.device)
    eps(x, t)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        eps(x, t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def slice_file(folder: Path) -> Path:
    """A 240 x 240 SynthBrain FLAIR slice with a glioma (BraTS's in-plane size), as NIfTI."""
    import nibabel as nib

    from diffuse_core.data.synthbrain import generate_slice

    s = generate_slice(seed=7, size=240, lesion_type="glioma")
    path = folder / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(s.image[0], np.float32)[:, :, None], np.eye(4)), str(path))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=None, help="noise level (default: the card's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the card's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)

    import torch

    from diffuse_core.evaluation.provenance import commit_id, hardware_summary
    from diffuse_core.run.assembly import run_one
    from diffuse_core.run.files import run_file
    from diffuse_core.run.models import load_run_models
    from diffuse_core.run.settings import settings_for
    from diffuse_core.studio.guard import RunGuard
    from diffuse_core.studio.runs import run_case
    from diffuse_core.studio.saliency_cache import SALIENCY_CACHE
    from diffuse_core.studio.uploads import load_upload_case

    load_at_start = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="bench_one_run_"))
    path = slice_file(tmp)
    models = load_run_models("mri", device="cpu")
    settings = settings_for(models.card, k=args.k, steps=args.steps)
    lc = load_upload_case([str(path)])

    def cli():
        run_file(path, tmp / "out", k=settings.k, steps=settings.steps, device="cpu")

    def app():                          # the first run of a slice: nothing kept from an earlier run
        SALIENCY_CACHE.clear()
        for _ in run_case(lc, k=settings.k, steps=settings.steps, guard=RunGuard(3600), reuse_inversion=False):
            pass

    def app_rerun():                    # a rerun of the same slice (another seed): saliency and x_K kept
        for _ in run_case(lc, k=settings.k, steps=settings.steps, seed=1, guard=RunGuard(3600)):
            pass

    def assembly():
        run_one(lc.case, models, settings)

    rows = {}
    for name, fn in (("assembly", assembly), ("cli", cli), ("app", app), ("app_rerun", app_rerun)):
        fn()                                                    # warm-up: models and caches loaded
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rows[name] = statistics.median(times)
    call = unet_call_seconds(models.denoiser)
    out = {"k": settings.k, "steps": settings.steps, "repeats": args.repeats, "unet_call_s": call,
           "seconds": rows, "in_unet_calls": {n: s / call for n, s in rows.items()},
           "app_over_cli": rows["app"] / rows["cli"], "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
           "commit": commit_id(), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": "python benchmarks/bench_one_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "hardware": {"summary": hardware_summary("cpu"), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "load_average_at_start": load_at_start,
                        "load_average_at_end": round(os.getloadavg()[0], 2)},
           "note": "cli includes reading the file and writing the results; app includes "
                                          "the step frames it streams and starts with no saliency map kept; "
                                          "app_rerun is the same slice again with another seed (saliency map and "
                                          "inversion kept); none includes loading the models"}
    print(f"| caller | seconds | UNet calls |\n|---|---:|---:|")
    for n, s in rows.items():
        print(f"| {n} | {s:.2f} | {s / call:.0f} |")
    print(f"app / cli = {out['app_over_cli']:.2f} ({out['cpu']}, {out['torch_threads']} threads)")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
