"""Bounds on one request's work: its wall-time limit and its cancel flag, checked between sampler steps.

A :class:`RunGuard` belongs to one request. The web layer makes one when a heavy request starts
(:func:`diffuse_core.ui.bounded.bounded`) and raises its flag when the request is cancelled (the Stop button, a closed
tab, ``gradio_client``'s ``Job.cancel``); :func:`diffuse_core.studio.runs.run_case` calls :meth:`RunGuard.check`
before every sampler step, so the computation ends within one step (a network call: well under a second on a CPU)
of a cancel, and a request never computes longer than its limit (``DEFAULTS["request_seconds"]``, 300 s unless
``$DIFFUSE_REQUEST_SECONDS`` says otherwise; a run at the largest settings, 250 steps, takes about a minute alone on
2 CPU cores).

The guard of the running request is found through :func:`current_guard` (a context variable the web layer sets in
the worker thread), so the studio's functions need no extra parameter; without one, :func:`request_guard` starts a
fresh guard with the default limit (the tests and scripts that call the studio directly).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time

from diffuse_core.studio.settings import DEFAULTS


class RunCancelled(Exception):
    """The request was cancelled: its computation ends here."""

    def __init__(self, message: str = "the run was stopped (Stop pressed or the request cancelled)"):
        super().__init__(message)


class RunTimeLimit(ValueError):
    """The request ran past the server's wall-time limit; the message says where it stopped and what to do."""


class RunGuard:
    """One request's bounds: ``limit_s`` seconds of wall time from its start, and a cancel flag (thread-safe).

    ``session`` is the gradio session hash of the request (None outside a request): the Stop button of that session
    cancels it (:data:`diffuse_core.studio.session.LIVE_RUNS`)."""

    def __init__(self, limit_s: float | None = None, session: str | None = None):
        self.limit_s = float(DEFAULTS["request_seconds"] if limit_s is None else limit_s)
        self.session = session
        self.started = time.monotonic()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Raise the flag: the next :meth:`check` ends the computation."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def elapsed(self) -> float:
        """Seconds since the request started."""
        return time.monotonic() - self.started

    def check(self, where: str = "") -> None:
        """RunCancelled after a cancel; RunTimeLimit once the request has run longer than its limit."""
        if self.cancelled:
            raise RunCancelled()
        if self.elapsed() > self.limit_s:
            at = f" (stopped {where})" if where else ""
            raise RunTimeLimit(f"this request ran longer than the server's limit of {self.limit_s:g} s per request"
                               f"{at}: use fewer sampling steps, or run `diffuse-studio run` on your own machine")


_CURRENT: contextvars.ContextVar[RunGuard | None] = contextvars.ContextVar("diffuse_run_guard", default=None)


def current_guard() -> RunGuard | None:
    """The guard of the request this thread is working for, if the web layer set one."""
    return _CURRENT.get()


@contextlib.contextmanager
def using_guard(guard: RunGuard):
    """Make ``guard`` the :func:`current_guard` inside the block (of this thread's context)."""
    token = _CURRENT.set(guard)
    try:
        yield guard
    finally:
        _CURRENT.reset(token)


def request_guard(session: str | None = None) -> RunGuard:
    """The current request's guard, else a new one (default limit) for ``session``."""
    guard = current_guard()
    return guard if guard is not None else RunGuard(session=session)
