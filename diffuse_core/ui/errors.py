"""Errors as messages: the engine's and the studio's ValueError text becomes a ``gr.Error`` in the page, never a
stack trace; anything unexpected is logged and reported in one line."""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from diffuse_core.studio.model_store import ModelUnavailable

log = logging.getLogger(__name__)

USER_ERRORS = (ValueError, FileNotFoundError, ModelUnavailable)   # their message says what to do


def as_gr_error(err: BaseException) -> gr.Error:
    """``err`` as the gr.Error the page shows: its message, capitalised, for :data:`USER_ERRORS`."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, USER_ERRORS):
        msg = str(err) or type(err).__name__
        return gr.Error(msg[0].upper() + msg[1:], print_exception=False)
    log.exception("unexpected error in the app", exc_info=err)
    return gr.Error(f"Something went wrong ({type(err).__name__}: {err}). Try other settings or another case; if "
                    f"it persists, report it with this message.", print_exception=False)


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
