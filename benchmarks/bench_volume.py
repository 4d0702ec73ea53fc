"""Volume runs (issue 34, item 5): batched slices per second against the one-slice path at equal results, and the peak
memory of a whole 512 x 512 x 200 volume.

    python benchmarks/bench_volume.py throughput [--slices 8] [--batch 8]   -> benchmarks/results/volume_throughput.json
    python benchmarks/bench_volume.py memory [--side 512 --depth 200]       -> benchmarks/results/volume_memory.json

**throughput** runs the same brain slices of a real BraTS FLAIR volume (``../shared/real_cases/brats2015``, else a
synthetic phantom) at the model card's settings (K, steps, the ACAT mask and its rule) three ways:

* ``one_slice_cli``: the one-slice path as ``diffuse-studio run FILE --slice Z`` takes it, once per slice (models
  loaded and the file read each time; the Python start-up of a new process is NOT counted, so this favours it);
* ``one_slice_engine``: the models loaded once, slices through the network one at a time (batch size 1);
* ``batched``: the volume run's batches (``--batch`` slices at a time; the saliency and the walk batched).

"Equal results": the settings and prepared slices are the same; the batched walk draws its DDPM noise for the whole
batch, so a slice's pixels inside the redrawn region differ by the noise, as two seeds of the one-slice path differ.
Reported: the redrawn masks' agreement (batched vs alone), and the flagged maps' Dice batched vs alone beside the Dice
between two seeds of the one-slice path (the noise floor).

**memory** runs ``diffuse-studio run VOLUME --slices all`` in a child process on a synthetic head phantom of
``side x side x depth`` int16 voxels (every slice holds brain) with K 40 and 2 steps (the arrays of a volume run do
not depend on the steps) and reports the child's peak resident memory, the models' share (measured alone), and the
time. No timing here is asserted by a test; the hardware is stated in the results file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"


def hardware() -> dict:
    from bench_app_load import cpu_model

    import torch

    return {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_at_start": list(os.getloadavg()),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def throughput(n_slices: int, batch: int, device: str) -> dict:
    from diffuse_core.cases import prepare_case
    from diffuse_core.volumes.batch import engine_for
    from diffuse_core.volumes.prepare import brain_slices, slice_case
    from diffuse_core.volumes.read import read_volume
    from volume_data import BRATS, write_nifti, head_phantom

    if BRATS.is_dir():
        source = sorted(BRATS.iterdir())[0]
    else:
        source = write_nifti(Path("/tmp/bench_volume_phantom.nii.gz"), head_phantom(n=40, rows=240, cols=240))
    vol = read_volume(source)
    brain = brain_slices(vol)
    mid = brain[len(brain) // 2]
    zs = [z for z in brain if z >= mid - n_slices // 2][:n_slices]
    engine = engine_for({"device": device}, "mri")
    settings = engine.settings
    ref = engine.mri_reference
    from diffuse_core.cli import main as cli

    # warm-up (first-call costs of torch and the allocator), not timed
    engine.run_slices([slice_case(vol, zs[0], mri_reference=ref)], seed=0)

    out = {}
    t = time.perf_counter()
    for z in zs:
        assert cli(["run", str(source), "--slice", str(z), "--device", device, "--out", f"/tmp/bench_volume_one/{z}"]) == 0
    out["one_slice_cli"] = time.perf_counter() - t

    t = time.perf_counter()
    alone = [engine.run_slices([prepare_case(source, z, mri_reference=ref)], seed=0)[0] for z in zs]
    out["one_slice_engine"] = time.perf_counter() - t
    alone_seed1 = [engine.run_slices([prepare_case(source, z, mri_reference=ref)], seed=1)[0] for z in zs[:2]]

    t = time.perf_counter()
    batched = []
    for i in range(0, len(zs), batch):
        batched += engine.run_slices([slice_case(vol, z, mri_reference=ref) for z in zs[i:i + batch]], seed=zs[i])
    out["batched"] = time.perf_counter() - t

    per_second = {k: len(zs) / v for k, v in out.items()}
    return {
        "source": str(source.name if hasattr(source, "name") else source), "slices": zs, "batch": batch,
        "settings": {k: settings[k] for k in ("k", "steps", "mask_from", "mask_rule", "solver", "threshold")},
        "seconds": {k: round(v, 2) for k, v in out.items()},
        "slices_per_second": {k: round(v, 4) for k, v in per_second.items()},
        "speedup_batched_vs_one_slice_cli": round(per_second["batched"] / per_second["one_slice_cli"], 2),
        "speedup_batched_vs_one_slice_engine": round(per_second["batched"] / per_second["one_slice_engine"], 2),
        "equal_results": {
            "redrawn_mask_agreement": round(float(np.mean([(a.redrawn == b.redrawn).mean()
                                                           for a, b in zip(batched, alone)])), 5),
            "flagged_dice_batched_vs_alone": round(float(np.mean([_dice(a.flagged, b.flagged)
                                                                  for a, b in zip(batched, alone)])), 4),
            "flagged_dice_seed0_vs_seed1_alone": round(float(np.mean([_dice(a.flagged, b.flagged)
                                                                       for a, b in zip(alone, alone_seed1)])), 4),
            "mean_abs_anomaly_diff_batched_vs_alone": round(float(np.mean([np.abs(a.anomaly - b.anomaly).mean()
                                                                           for a, b in zip(batched, alone)])), 6),
            "mean_abs_anomaly_diff_seed0_vs_seed1": round(float(np.mean([np.abs(a.anomaly - b.anomaly).mean()
                                                                         for a, b in zip(alone, alone_seed1)])), 6),
        },
    }


def memory(side: int, depth: int, batch: int, device: str) -> dict:
    import nibabel as nib

    from volume_data import head_phantom

    path = Path(f"/tmp/bench_volume_{side}x{side}x{depth}.nii.gz")
    if not path.exists():
        vol = head_phantom(n=depth + 2, rows=side, cols=side)[1:-1]       # every slice holds brain
        nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0))[::-1, ::-1].copy(), np.diag([0.5, 0.5, 1.0, 1])),
                 str(path))
    child = [sys.executable, __file__, "memory-child", str(path), "--batch", str(batch), "--device", device]
    base = subprocess.run(child + ["--models-only"], capture_output=True, text=True, check=True)
    run = subprocess.run(child, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-2000:])
    models_only, measured = json.loads(base.stdout.splitlines()[-1]), json.loads(run.stdout.splitlines()[-1])
    per_slice = {}
    for b in (1, 8):                # one network batch of b slices at 128 x 128 with ACAT (autograd) and the walk
        got = subprocess.run(child + ["--per-slice", str(b)], capture_output=True, text=True, check=True)
        per_slice[b] = json.loads(got.stdout.splitlines()[-1])["peak_rss_mib"]
    return {"volume": f"{side} x {side} x {depth} int16 NIfTI (synthetic head phantom, every slice brain)",
            "input_float32_mib": round(side * side * depth * 4 / 2**20, 1), "batch": batch,
            "peak_rss_mib": measured["peak_rss_mib"], "peak_rss_models_only_mib": models_only["peak_rss_mib"],
            "peak_rss_of_the_volume_mib": round(measured["peak_rss_mib"] - models_only["peak_rss_mib"], 1),
            "seconds": measured["seconds"], "slices_processed": measured["slices_processed"],
            "settings": "K 40, 2 steps, Grad-CAM mask (the arrays do not depend on the steps)",
            "one_batch_peak_rss_mib": per_slice,
            "per_slice_in_a_batch_mib": round((per_slice[8] - per_slice[1]) / 7, 1),
            "per_slice_note": "peak RSS of one batch (ACAT mask + card K, 2 steps) of 1 and of 8 slices at 128 x 128; "
                              "the difference / 7 is what a slice adds to a batch (CPU memory; the GPU budget of "
                              "diffuse_core/volumes/throughput.py keeps a margin over it)"}


def memory_child(path: str, batch: int, device: str, models_only: bool, per_slice: int = 0) -> None:
    from diffuse_core.volumes.batch import engine_for
    from diffuse_core.volumes.run import run_volume

    options = {"device": device, "k": 40, "steps": 2, "mask_from": "gradcam"}
    if per_slice:
        from diffuse_core.volumes.prepare import slice_case
        from diffuse_core.volumes.read import read_volume

        engine = engine_for({"device": device, "steps": 2}, "mri")              # the card's K and ACAT mask
        vol = read_volume(path)
        engine.run_slices([slice_case(vol, z, mri_reference=engine.mri_reference)
                           for z in range(vol.num_slices // 2, vol.num_slices // 2 + per_slice)], seed=0)
        print(json.dumps({"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
        return
    engine = engine_for(options, "mri")
    out = {}
    if not models_only:
        t = time.perf_counter()
        summary = run_volume(path, "/tmp/bench_volume_memory_out", engine, batch_size=batch)
        out = {"seconds": round(time.perf_counter() - t, 1), "slices_processed": summary["slices_processed"]}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("throughput", "memory", "memory-child"))
    p.add_argument("path", nargs="?")
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models-only", action="store_true")
    p.add_argument("--per-slice", type=int, default=0)
    a = p.parse_args(argv)
    if a.what == "memory-child":
        memory_child(a.path, a.batch, a.device, a.models_only, a.per_slice)
        return 0
    RESULTS.mkdir(exist_ok=True)
    hw = hardware()
    res = throughput(a.slices, a.batch, a.device) if a.what == "throughput" else memory(a.side, a.depth, a.batch,
                                                                                          a.device)
    res["hardware"] = {**hw, "load_average_at_end": list(os.getloadavg())}
    res["command"] = "python benchmarks/bench_volume.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from diffuse_core.evaluation.provenance import commit_id

    res["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["commit"] = commit_id()
    out = RESULTS / f"volume_{a.what}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
