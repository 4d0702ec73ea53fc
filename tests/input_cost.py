"""What one input file costs through the CLI or the app's upload path, measured in a fresh interpreter (issue 35).

    python tests/input_cost.py cli FILE --model DIR --mask MASK --out DIR [--slice Z]
    python tests/input_cost.py app FILE [--slice Z]          # $DIFFUSE_ASSETS names the app's models

``cli`` runs ``diffuse-studio run`` (its ``main``) on the file; ``app`` does what the app does with an upload (a
folder: its files uploaded together, as a DICOM series): the probe when it arrives (``inspect_upload``), the
preview and the run's load (``load_upload_case`` twice). Prints one JSON object: the outcome ("result" or "error") and the one-line message, the seconds the call took, the resident
memory before it, its peak during the call over that (``peak_mb``: the high-water mark reset through
``/proc/self/clear_refs`` just before) and the peak of the decode workers the app path starts (``worker_peak_mb``,
their VmHWM sampled every few milliseconds). Imports and a first small load happen before the measured call, as in
a server that is already up; torch runs one thread, as the tests run it.

``tests/test_bad_inputs.py`` holds the compressed bombs to 5 s and 1 GB with it; ``benchmarks/bench_bombs.py``
writes its figures for every input kind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER = "diffuse_core.studio.decoding"        # the app's decode worker, as its command line names it


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset this process's resident high-water mark (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _WorkerPeak(threading.Thread):
    """Samples the resident high-water mark (VmHWM) of this process's decode workers every few milliseconds (only
    once they run the worker: before its exec a forked child shows its parent's pages)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid in _children():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if WORKER.encode() not in f.read():
                            continue
                    with open(f"/proc/{pid}/status") as f:
                        hwm = next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), 0)
                except (OSError, ValueError):
                    continue
                self.peak_kb = max(self.peak_kb, hwm)
            self.stop.wait(0.003)


def _children() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            pass
    return pids


def decode_workers() -> list[int]:
    """The pids of this process's app decode workers that are running now."""
    pids = []
    for pid in _children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if WORKER.encode() in f.read():
                    pids.append(pid)
        except OSError:
            pass
    return pids


def _cli(args) -> tuple[str, str]:
    from diffuse_core.cli import main

    argv = ["run", args.file, "--mask-from", args.mask, "--model", args.model, "--k", "50", "--steps", "2",
            "--device", "cpu", "--precision", "fp32", "--out", args.out]
    if args.slice is not None:
        argv += ["--slice", str(args.slice)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("diffuse-studio run: error:")]
    if code == 0:
        return "result", ""
    return "error", lines[0] if len(lines) == 1 else err.getvalue()


def _app(args) -> tuple[str, str]:
    from diffuse_core.studio.uploads import inspect_upload, load_upload_case

    src = Path(args.file)
    files = [str(p) for p in sorted(src.iterdir())] if src.is_dir() else [str(src)]   # a series: its files
    try:
        info = inspect_upload(files)                                        # the upload arrives: the probe
        z = args.slice if args.slice is not None else info["slice"]
        load_upload_case(files, z)                                          # the preview
        load_upload_case(files, z)                                          # the run
    except (ValueError, FileNotFoundError) as exc:
        return "error", str(exc)
    return "result", ""


def _warm_up(path: str, args) -> None:
    """Imports and one small run, so that the measured call starts from a program that is up (the CLI's models
    and imports loaded, as after its first file)."""
    import torch

    torch.set_num_threads(1)              # as the tests run it: the CPU is shared
    if path == "app":
        from diffuse_core.studio.uploads import inspect_upload

        inspect_upload([args.warm])
    else:
        warm = argparse.Namespace(**{**vars(args), "file": args.warm, "slice": None, "mask": args.warm_mask,
                                     "out": str(Path(args.out) / "warm-up")})
        _cli(warm)


def measure(path: str, args) -> dict:
    _warm_up(path, args)
    before_kb = _status_kb("VmRSS")
    workers = _WorkerPeak()
    workers.start()
    exact = _reset_peak()
    start = time.perf_counter()
    outcome, message = (_cli if path == "cli" else _app)(args)
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers.stop.set()
    workers.join()
    workers_kb = workers.peak_kb
    return {"path": path, "file": Path(args.file).name, "outcome": outcome, "message": message,
            "seconds": round(seconds, 3), "rss_before_mb": round(before_kb / 1024, 1),
            "peak_mb": round(max(0, peak_kb - before_kb) / 1024, 1), "peak_exact": exact,
            "worker_peak_mb": round(workers_kb / 1024, 1)}


def run(path: str, file, *, slice_index=None, model=None, mask=None, out=None, warm=None, warm_mask=None, env=None,
        timeout: float = 300) -> dict:
    """:func:`measure` in a fresh interpreter; its JSON as a dict."""
    cmd = [sys.executable, str(Path(__file__).resolve()), path, str(file), "--warm", str(warm)]
    for flag, value in (("--slice", slice_index), ("--model", model), ("--mask", mask), ("--out", out),
                        ("--warm-mask", warm_mask)):
        if value is not None:
            cmd += [flag, str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"input_cost {path} {file} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", choices=("cli", "app"))
    p.add_argument("file")
    p.add_argument("--slice", type=int, default=None)
    p.add_argument("--model")
    p.add_argument("--mask")
    p.add_argument("--out")
    p.add_argument("--warm", required=True, help="a small valid 2-D image run before the measured call")
    p.add_argument("--warm-mask", help="cli: a mask for --warm")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.path, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
