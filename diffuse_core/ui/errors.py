"""Errors as messages: the engine's and the studio's ValueError text becomes a ``gr.Error`` in the page, never a
stack trace; anything unexpected is logged and reported in one line. No message echoes a large input back:
:func:`short_message` cuts every long word (a pasted key, a file's content) to
:data:`~diffuse_core.studio.settings.MESSAGE_VALUE_CHARS` characters and the whole message to
:data:`MESSAGE_CHARS`."""

from __future__ import annotations

import functools
import inspect
import logging
import re

import gradio as gr

from diffuse_core.studio.guard import RunCancelled
from diffuse_core.studio.model_store import ModelUnavailable
from diffuse_core.studio.settings import MESSAGE_VALUE_CHARS

log = logging.getLogger(__name__)

USER_ERRORS = (ValueError, FileNotFoundError, ModelUnavailable, RunCancelled)   # their message says what to do
MESSAGE_CHARS = 600               # the longest message shown (the longest written in this project is ~250)
_LONG_WORD = re.compile(r"\S{%d,}" % (MESSAGE_VALUE_CHARS + 1))


def short_message(msg: str) -> str:
    """``msg`` with every word over MESSAGE_VALUE_CHARS characters cut (saying how long it was), at most
    MESSAGE_CHARS characters in all."""
    msg = _LONG_WORD.sub(lambda m: f"{m.group()[:MESSAGE_VALUE_CHARS - 1]}… ({len(m.group())} characters)", msg)
    return msg if len(msg) <= MESSAGE_CHARS else msg[:MESSAGE_CHARS - 1] + "…"


def capitalised(msg: str) -> str:
    """``msg`` with its first letter capitalised, unless its first word is a name (a file name such as
    "fake_scan.png", a path, a key): names are shown as given."""
    first = msg.split(maxsplit=1)[0] if msg.strip() else ""
    if not first or not first.isalpha() and not first.rstrip(":,;").isalpha():
        return msg
    return msg[0].upper() + msg[1:]


def as_gr_error(err: BaseException) -> gr.Error:
    """``err`` as the gr.Error the page shows: its message, capitalised, for :data:`USER_ERRORS`."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, USER_ERRORS):
        return gr.Error(capitalised(short_message(str(err) or type(err).__name__)), print_exception=False)
    log.exception("unexpected error in the app: %s", short_message(str(err)))
    return gr.Error(short_message(f"Something went wrong ({type(err).__name__}: {err}). Try other settings or another "
                                  f"case; if it persists, report it with this message."), print_exception=False)


def user_errors(fn):
    """Turn engine errors into gr.Error (for plain functions and generators alike)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (GeneratorExit, KeyboardInterrupt):
                raise
            except Exception as err:
                raise as_gr_error(err) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise as_gr_error(err) from None
    return wrapper
