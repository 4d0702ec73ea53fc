"""Resident memory of the running app over many runs: does it grow, and with what?

Starts the app (the shipped models, ``teaching_sets/``) in a subprocess, drives it with ``gradio_client`` from
``--clients`` threads, and samples the server's RSS (psutil) every ``--every`` runs after ``--warmup`` runs. The runs
mix what users do: a teaching case by key and an uploaded NIfTI through ``/counterfactual``, and an Explore run
(``/explore``, whose result the app keeps in the session's state) from a new session each time, as new visitors
would. With ``--tracemalloc`` the server also reports the Python allocations that grew most between the end of the
warm-up and the end (traced allocations only: torch's and numpy's C buffers show through their Python owners).

    python benchmarks/bench_app_memory.py                      # 200 runs after 20 warm-up runs, 4 clients
    python benchmarks/bench_app_memory.py --tracemalloc --runs 100
    python benchmarks/bench_app_memory.py --root /tmp/old-checkout   # the same load against another checkout

Prints one JSON object (RSS series in MB, growth after warm-up, runs per minute, the top allocation diffs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import os, signal, sys, tracemalloc
if os.environ.get("BENCH_TRACEMALLOC"):
    tracemalloc.start(int(os.environ["BENCH_TRACEMALLOC"]))
    snaps = []
    def report(signum, frame):
        snaps.append(tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]))
        if len(snaps) >= 2:
            top = snaps[-1].compare_to(snaps[0], "traceback")[:15]
            out = []
            for s in top:
                frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in s.traceback[-6:]]
                out.append({"kb": round(s.size_diff / 1024, 1), "count": s.count_diff, "where": frames})
            with open(os.environ["BENCH_REPORT"], "w") as fh:
                fh.write(__import__("json").dumps(out))
    signal.signal(signal.SIGUSR1, report)
import diffuse_core
print("serving", diffuse_core.__file__, file=sys.stderr, flush=True)
from diffuse_core.ui.launch import launch
launch("127.0.0.1", int(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, env_extra: dict, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(root), "DIFFUSE_DEVICE": "cpu",
           **env_extra}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc


def wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    import httpx

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/gradio_api/info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("the server did not come up")


def run_mix(url: str, n: int, clients: int, args, upload: Path, keys: list[str], offset: int) -> list[float]:
    """``n`` runs from ``clients`` threads; returns each run's seconds."""
    from gradio_client import Client, handle_file

    todo = list(range(offset, offset + n))
    lock = threading.Lock()
    times, errors = [], []

    def worker():
        client = Client(f"{url}/", verbose=False)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            t0 = time.perf_counter()
            try:
                kind = i % 3
                if kind == 0:        # a teaching case by key
                    client.predict(None, keys[i % len(keys)], args.k, args.steps, 90, i, -1, "", None,
                                   api_name="/counterfactual")
                elif kind == 1:      # an upload
                    client.predict(handle_file(str(upload)), "", args.k, args.steps, 90, i, -1, "", None,
                                   api_name="/counterfactual")
                else:                # Explore from a new visitor: the result stays in that session's state
                    client.reset_session()
                    client.predict("upload", [handle_file(str(upload))], 0, None, "brain", None, "acat", None,
                                   None, args.k, 90, args.steps, i, 0.6, api_name="/explore")
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(err).__name__}: {str(err)[:200]}")
            with lock:
                times.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} runs failed, e.g. {errors[0]}")
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs measured after the warm-up")
    parser.add_argument("--warmup", type=int, default=20, help="runs before the first measurement")
    parser.add_argument("--every", type=int, default=20, help="sample RSS every this many runs")
    parser.add_argument("--clients", type=int, default=4, help="concurrent gradio_client users")
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="trace Python allocations with this many frames (slows the server)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server environment")
    args = parser.parse_args(argv)
    import psutil

    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-app-memory-"))
    report = work / "tracemalloc.json"
    env = dict(e.split("=", 1) for e in args.env)
    env.setdefault("DIFFUSE_TEACHING_ROOT", str(ROOT / "teaching_sets"))
    env.setdefault("DIFFUSE_CURATED_ROOT", str(work / "curated"))
    env.setdefault("DIFFUSE_ASSETS", str(ROOT / "assets"))
    if args.tracemalloc:
        env.update(BENCH_TRACEMALLOC=str(args.tracemalloc), BENCH_REPORT=str(report))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(root, port, env, work / "server.log")
    try:
        wait_until_up(url, proc)
        server = psutil.Process(proc.pid)
        from gradio_client import Client

        keys = [c["key"] for c in Client(f"{url}/", verbose=False).predict(api_name="/cases")][:6]
        upload = ROOT / "teaching_sets" / "default" / "case01_flair_glioma_image.nii.gz"
        t0 = time.perf_counter()
        run_mix(url, args.warmup, args.clients, args, upload, keys, 0)
        if args.tracemalloc:
            os.kill(proc.pid, signal.SIGUSR1)
        series = [{"runs": 0, "rss_mb": round(server.memory_info().rss / 2**20, 1)}]
        done, times = 0, []
        t1 = time.perf_counter()
        while done < args.runs:
            n = min(args.every, args.runs - done)
            times += run_mix(url, n, args.clients, args, upload, keys, args.warmup + done)
            done += n
            series.append({"runs": done, "rss_mb": round(server.memory_info().rss / 2**20, 1)})
            print(json.dumps(series[-1]), file=sys.stderr, flush=True)      # progress
        measured_s = time.perf_counter() - t1
        top = None
        if args.tracemalloc:
            os.kill(proc.pid, signal.SIGUSR1)
            for _ in range(120):
                if report.exists():
                    break
                time.sleep(1)
            top = json.loads(report.read_text()) if report.exists() else None
        rss = [s["rss_mb"] for s in series]
        print(json.dumps({
            "root": str(root), "runs": args.runs, "warmup": args.warmup, "clients": args.clients, "k": args.k,
            "steps": args.steps, "env": {k: v for k, v in env.items() if not k.startswith("BENCH")},
            "rss_after_warmup_mb": rss[0], "rss_end_mb": rss[-1], "rss_max_mb": max(rss),
            "growth_mb": round(rss[-1] - rss[0], 1), "series": series,
            "runs_per_minute": round(60 * args.runs / measured_s, 1), "warmup_and_runs_s": round(
                time.perf_counter() - t0, 1), "median_run_s": round(sorted(times)[len(times) // 2], 2),
            "tracemalloc_top": top}, indent=1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
