"""Heavy events run bounded: each request gets a :class:`~diffuse_core.studio.guard.RunGuard` (its wall-time limit
and its cancel flag), and cancelling the request stops its computation.

Left to itself, gradio runs a plain callback in a worker thread and, when the request is cancelled (the Stop button,
``gradio_client``'s ``Job.cancel``), stops waiting for the thread and frees the queue slot while the thread computes
on: more runs compute than the queue's concurrency allows. :func:`bounded` turns a callback into an async one that
runs it in a worker thread of its own with the guard as :func:`~diffuse_core.studio.guard.current_guard`. On a cancel
it raises the guard's flag, which :func:`diffuse_core.studio.runs.run_case` checks before every sampler step, waits
for the thread to stop (within one step) and only then lets gradio free the slot. A closed tab closes a streaming
callback at its next update; that raises the flag too. A plain callback is not told of a closed tab, so every guard
is held in :data:`~diffuse_core.studio.session.OPEN_REQUESTS` while it runs and the app's ``unload`` event
(:func:`close_session`, when the tab's heartbeat ends) raises the flags of its session's requests: an upload's decode
then ends within its poll (:mod:`diffuse_core.studio.decoding`).
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import gradio as gr

from diffuse_core.studio.guard import RunGuard, using_guard
from diffuse_core.studio.session import OPEN_REQUESTS, session_id

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


_REQUEST = "_df_request"       # the gr.Request a bounded callback is given when it declares none of its own


def _declares_request(fn) -> bool:
    hints = gr.utils.get_type_hints(fn)
    return any(h in (gr.Request, Optional[gr.Request]) for h in hints.values())


def _asking_for_the_request(wrapper, fn):
    """``wrapper`` with ``fn``'s signature plus a last parameter typed gr.Request, so that gradio passes the
    request (its session is what a closed tab cancels) to callbacks that do not ask for it themselves."""
    if _declares_request(fn):
        return wrapper
    sig = inspect.signature(fn)
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in sig.parameters.values()):
        return wrapper                                    # *args or keyword-only: leave the signature alone
    extra = inspect.Parameter(_REQUEST, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                              annotation=Optional[gr.Request])
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), _REQUEST: Optional[gr.Request]}
    return wrapper


def _split_request(fn, fn_has_request: bool, args, kwargs):
    """(the args and kwargs for ``fn``, the gr.Request among them or None): a request added by
    :func:`_asking_for_the_request` is taken out (gradio passes it after ``fn``'s own inputs, or None)."""
    request = kwargs.pop(_REQUEST, None)
    if not fn_has_request and args:
        n = len(inspect.signature(fn).parameters)
        if len(args) > n and (args[-1] is None or isinstance(args[-1], gr.Request)):
            request, args = request or args[-1], args[:-1]
        elif any(isinstance(a, gr.Request) for a in args):   # fewer inputs than parameters: it came in early
            request = next(a for a in args if isinstance(a, gr.Request))
            args = tuple(a for a in args if not isinstance(a, gr.Request))
    return args, kwargs, request


def bounded(fn):
    """``fn`` (a plain callback or a generator of updates) as an async event handler under a fresh
    :class:`RunGuard`; same inputs, so gradio passes the same values (and the gr.Request, which the wrapper asks
    for when ``fn`` does not: the guard's session is what the tab's closing cancels)."""
    own = _declares_request(fn)
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        async def stream(*args, **kwargs):
            args, kwargs, request = _split_request(fn, own, args, kwargs)
            guard = RunGuard(session=session_id(request) or _session_of(args, kwargs))
            updates = fn(*args, **kwargs)
            try:
                with OPEN_REQUESTS.holding(guard):
                    while (update := await _in_thread(guard, _next, updates)) is not _DONE:
                        yield update
            finally:
                guard.cancel()                # a closed tab closes this stream at its yield: stop the work too
                try:
                    updates.close()
                except ValueError:            # still executing after a second cancel: it ends at its next check
                    pass
                release_freed_memory()
        return _asking_for_the_request(stream, fn)

    @functools.wraps(fn)
    async def call(*args, **kwargs):
        args, kwargs, request = _split_request(fn, own, args, kwargs)
        guard = RunGuard(session=session_id(request) or _session_of(args, kwargs))
        try:
            with OPEN_REQUESTS.holding(guard):
                return await _in_thread(guard, functools.partial(fn, *args, **kwargs))
        finally:
            release_freed_memory()
    return _asking_for_the_request(call, fn)


def close_session(request: gr.Request):
    """The app's ``unload`` event (the tab closed): cancel the session's requests still computing."""
    OPEN_REQUESTS.close_session(session_id(request))
