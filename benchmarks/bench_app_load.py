"""Users served in parallel: latency and throughput of the running app under ``--users`` concurrent clients, for
each queue concurrency (``DIFFUSE_CONCURRENCY``) in ``--concurrency``.

For each setting it starts the app (shipped models, ``teaching_sets/``) in a subprocess, warms it up with one run,
times one run alone, then lets ``--users`` gradio_client users each run ``--runs-each`` counterfactuals of teaching
cases (``/counterfactual``, K ``--k``, ``--steps`` steps, ACAT mask) at once, while a probe times ``GET /`` (is the
page still responsive?). The torch threads of the app follow its rule (CPU cores / concurrency, at least 1) unless
``--env DIFFUSE_TORCH_THREADS=N`` says otherwise.

    python benchmarks/bench_app_load.py                         # concurrency 1, 2, 4; 8 users x 3 runs; K 500, 5 steps

Prints a markdown table (latency = submit to final result, as a user waits) and the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app_memory import ROOT, free_port, start_server, wait_until_up  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"


def load_run(url: str, users: int, runs_each: int, keys: list[str], k: int, steps: int) -> dict:
    """``users`` clients at once, each ``runs_each`` runs; latencies, wall time, and GET / times meanwhile."""
    import httpx
    from gradio_client import Client

    latencies, errors, page = [], [], []
    stop = threading.Event()
    clients = [Client(f"{url}/", verbose=False) for _ in range(users)]
    start = threading.Barrier(users + 1)

    def user(i):
        start.wait()
        for r in range(runs_each):
            t0 = time.perf_counter()
            try:
                out = clients[i].predict(None, keys[(i + r) % len(keys)], k, steps, 90, r, -1, "", None,
                                         api_name="/counterfactual")
                assert out[1] == "done"
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(err).__name__}: {str(err)[:200]}")
            latencies.append(time.perf_counter() - t0)

    def probe():
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                httpx.get(f"{url}/", timeout=60)
                page.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                pass
            stop.wait(1.0)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    prober = threading.Thread(target=probe)
    start.wait()
    t0 = time.perf_counter()
    prober.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    prober.join()
    return {"latencies": latencies, "errors": errors, "wall_s": wall, "page_s": page}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,2,4", help="queue concurrencies to measure, comma-separated")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--runs-each", type=int, default=3)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server environment")
    args = parser.parse_args(argv)
    from gradio_client import Client

    work = Path(tempfile.mkdtemp(prefix="bench-app-load-"))
    rows = []
    for c in [int(v) for v in args.concurrency.split(",")]:
        env = {"DIFFUSE_CONCURRENCY": str(c), "DIFFUSE_TEACHING_ROOT": str(ROOT / "teaching_sets"),
               "DIFFUSE_CURATED_ROOT": str(work / "curated"), "DIFFUSE_ASSETS": str(ROOT / "assets"),
               **dict(e.split("=", 1) for e in args.env)}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(ROOT, port, env, work / f"server-c{c}.log")
        try:
            wait_until_up(url, proc)
            client = Client(f"{url}/", verbose=False)
            keys = [e["key"] for e in client.predict(api_name="/cases") if not e["healthy"]][:8]
            client.predict(None, keys[0], args.k, args.steps, 90, 0, -1, "", None, api_name="/counterfactual")
            t0 = time.perf_counter()
            client.predict(None, keys[1], args.k, args.steps, 90, 0, -1, "", None, api_name="/counterfactual")
            alone = time.perf_counter() - t0
            res = load_run(url, args.users, args.runs_each, keys, args.k, args.steps)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        lat = res["latencies"]
        rows.append({"concurrency": c, "alone_s": round(alone, 2), "runs": len(lat), "failed": len(res["errors"]),
                     "median_s": round(statistics.median(lat), 1), "p95_s": round(percentile(lat, 95), 1),
                     "runs_per_min": round(60 * len(lat) / res["wall_s"], 1), "wall_s": round(res["wall_s"], 1),
                     "page_median_s": round(statistics.median(res["page_s"]), 2) if res["page_s"] else None,
                     "errors": res["errors"][:3]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    print(f"CPU: {cpu_model()}; {args.users} users x {args.runs_each} runs each, K {args.k}, {args.steps} steps, "
          f"ACAT mask, shipped models\n")
    print("| queue concurrency | one run alone (s) | median latency (s) | p95 latency (s) | runs / min | failed "
          "| GET / median (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['alone_s']} | {r['median_s']} | {r['p95_s']} | {r['runs_per_min']} | "
              f"{r['failed']} | {r['page_median_s']} |")
    print("\n" + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
