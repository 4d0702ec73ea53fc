"""Heavy events run bounded: each request gets a :class:`~diffuse_core.studio.guard.RunGuard` (its wall-time limit
and its cancel flag), and cancelling the request stops its computation.

Left to itself, gradio runs a plain callback in a worker thread and, when the request is cancelled (the Stop button,
``gradio_client``'s ``Job.cancel``), stops waiting for the thread and frees the queue slot while the thread computes
on: more runs compute than the queue's concurrency allows. :func:`bounded` turns a callback into an async one that
runs it in a worker thread of its own with the guard as :func:`~diffuse_core.studio.guard.current_guard`. On a cancel
it raises the guard's flag, which :func:`diffuse_core.studio.runs.run_case` checks before every sampler step, waits
for the thread to stop (within one step) and only then lets gradio free the slot. A closed tab closes a streaming
callback at its next update; that raises the flag too.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor

import gradio as gr

from diffuse_core.studio.guard import RunGuard, using_guard
from diffuse_core.studio.session import session_id

_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="diffuse-run")   # heavy work; the queue limits it
_DONE = object()


def _libc_trim():
    """glibc's ``malloc_trim``: hands freed heap pages back to the OS (None where there is no glibc)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """After a run: return the freed heap to the OS, so a run's large temporary buffers (torch, numpy, PNG
    encoding, spread over many worker threads' malloc arenas) do not stay resident."""
    if _TRIM is not None:
        _TRIM(0)


def _session_of(args, kwargs) -> str | None:
    """The session hash of the gr.Request among a callback's arguments (gradio passes it where it is declared)."""
    return next((session_id(v) for v in (*args, *kwargs.values()) if isinstance(v, gr.Request)), None)


def _call_guarded(guard: RunGuard, fn, *args):
    with using_guard(guard):
        return fn(*args)


def _next(iterator):
    try:
        return next(iterator)
    except StopIteration:
        return _DONE


async def _in_thread(guard: RunGuard, fn, *args):
    """``fn(*args)`` in a worker thread under ``guard``; when this task is cancelled: raise the guard's flag, wait
    for the thread to reach its next check, then let the cancel through."""
    context = contextvars.copy_context()      # gradio's request context (progress bars) reaches the thread
    future = asyncio.get_running_loop().run_in_executor(_THREADS, context.run, _call_guarded, guard, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        guard.cancel()
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()                # retrieved: RunCancelled is the expected end
        raise


def bounded(fn):
    """``fn`` (a plain callback or a generator of updates) as an async event handler under a fresh
    :class:`RunGuard`; same signature, so gradio passes the same inputs (and the gr.Request where declared)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        async def stream(*args, **kwargs):
            guard = RunGuard(session=_session_of(args, kwargs))
            updates = fn(*args, **kwargs)
            try:
                while (update := await _in_thread(guard, _next, updates)) is not _DONE:
                    yield update
            finally:
                guard.cancel()                # a closed tab closes this stream at its yield: stop the work too
                try:
                    updates.close()
                except ValueError:            # still executing after a second cancel: it ends at its next check
                    pass
                release_freed_memory()
        return stream

    @functools.wraps(fn)
    async def call(*args, **kwargs):
        guard = RunGuard(session=_session_of(args, kwargs))
        try:
            return await _in_thread(guard, functools.partial(fn, *args, **kwargs))
        finally:
            release_freed_memory()
    return call
