"""The model runs in progress, by session: what a session's Stop button cancels, and counters a host can watch.

Nothing is kept for a finished run: :data:`LIVE_RUNS` holds a run's :class:`~diffuse_core.studio.guard.RunGuard`
only while it computes, plus a few integer counters. Gradio's own cancel (a separate HTTP request) can land after the
Stop handler has already written "Stopped."; Stop therefore also raises the run's flag directly, so the run ends
itself at its next step and the page always ends on "Stopped.".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter

from diffuse_core.studio.guard import RunCancelled, RunGuard, RunTimeLimit


def session_id(request) -> str | None:
    """The session hash of a gradio request (None outside a request, e.g. when a test calls a callback)."""
    return getattr(request, "session_hash", None) if request is not None else None


class _GuardsBySession:
    """Guards held while their work runs, found by session."""

    def __init__(self):
        self._lock = threading.Lock()
        self._live: dict[int, RunGuard] = {}

    def cancel_session(self, sid: str | None) -> int:
        """Cancel the held guards of session ``sid`` (none without a session); how many there were."""
        if sid is None:
            return 0
        with self._lock:
            guards = [g for g in self._live.values() if g.session == sid]
        for g in guards:
            g.cancel()
        return len(guards)


class LiveRuns(_GuardsBySession):
    """The guards of the runs computing now, and counters: "started", "finished", "stopped" (cancelled),
    "timed_out", "failed" and "steps" (sampler steps done, all runs together)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    @contextlib.contextmanager
    def running(self, guard: RunGuard):
        """Count the block as one run under ``guard``; how it ended goes into :attr:`counts`."""
        with self._lock:
            self._live[id(guard)] = guard
            self.counts["started"] += 1
        outcome = "failed"
        try:
            yield guard
            outcome = "finished"
        except (RunCancelled, GeneratorExit):
            outcome = "stopped"
            raise
        except RunTimeLimit:
            outcome = "timed_out"
            raise
        finally:
            with self._lock:
                self._live.pop(id(guard), None)
                self.counts[outcome] += 1

    def step(self) -> None:
        """One sampler step done (by any run)."""
        with self._lock:
            self.counts["steps"] += 1

    def running_now(self) -> int:
        """How many runs are computing now."""
        with self._lock:
            return len(self._live)

    def stop_session(self, sid: str | None) -> int:
        """Cancel the running runs of session ``sid`` (the Stop button); how many there were."""
        return self.cancel_session(sid)

    def wait_idle(self, sid: str | None, timeout_s: float = 5.0) -> bool:
        """Wait until session ``sid`` has no run computing (at most ``timeout_s``); True when it has none."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                busy = any(g.session == sid for g in self._live.values())
            if not busy or time.monotonic() >= deadline:
                return not busy
            time.sleep(0.02)

    def snapshot(self) -> dict:
        """The counters and the number running now, as a plain dict."""
        with self._lock:
            return {**self.counts, "running": len(self._live)}


LIVE_RUNS = LiveRuns()


class OpenRequests(_GuardsBySession):
    """The guards of every heavy request in progress (a run, an upload's decode, a preview), by session: what a
    closed tab cancels. Gradio stops a streaming callback when its tab closes, but a plain callback (an upload's
    probe, which may be decoding a large file in a worker process) computes on; the app's ``unload`` event calls
    :meth:`close_session`, which raises the flag of each, and the decode's waiting thread kills its worker."""

    @contextlib.contextmanager
    def holding(self, guard: RunGuard):
        """Keep ``guard`` while the block runs."""
        with self._lock:
            self._live[id(guard)] = guard
        try:
            yield guard
        finally:
            with self._lock:
                self._live.pop(id(guard), None)

    def close_session(self, sid: str | None) -> int:
        """The tab of session ``sid`` closed: cancel its open requests; how many there were."""
        return self.cancel_session(sid)

    def open_now(self) -> int:
        with self._lock:
            return len(self._live)


OPEN_REQUESTS = OpenRequests()
