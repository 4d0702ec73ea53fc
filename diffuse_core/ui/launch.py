"""Serve the app: the one demo of this process (:func:`get_demo`), :func:`launch` and the ``diffuse-studio app``
command line (:func:`main`).

What one request may cost is bounded here and below: the queue runs ``DEFAULTS["concurrency"]`` model runs at once
(the rest wait, at most ``DEFAULTS["max_queue"]``), each file is at most ``DEFAULTS["max_upload_mb"]`` MB (gradio's
``max_file_size``), each request's body is bounded by :class:`~diffuse_core.ui.limits.RequestLimits`, and each model
run by its wall-time limit and its cancel (:mod:`diffuse_core.ui.bounded`).

On a Hugging Face Space with ZeroGPU (the ``spaces`` package present) the model work runs under ``spaces.GPU``;
elsewhere it runs as is, on the GPU when there is one.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

import gradio as gr
from starlette.middleware import Middleware

from diffuse_core.studio import runs
from diffuse_core.studio.settings import DEFAULTS, torch_threads
from diffuse_core.ui.layout import build_demo
from diffuse_core.ui.limits import RequestLimits
from diffuse_core.ui.style import CSS, theme

log = logging.getLogger(__name__)


def use_zerogpu() -> bool:
    """Run the model work under ``spaces.GPU`` where that package exists (a Hugging Face Space); whether it does."""
    try:  # pragma: no cover - depends on the host
        import spaces
    except Exception:  # ImportError, or a spaces package that fails outside a Space
        return False
    runs.run_model_work_under(spaces.GPU(duration=DEFAULTS["gpu_seconds"]))  # pragma: no cover
    return True  # pragma: no cover


@functools.lru_cache(maxsize=None)
def get_demo() -> gr.Blocks:
    """The app of this process, built once: ZeroGPU where present, the page, the queue."""
    use_zerogpu()
    demo = build_demo()
    demo.queue(default_concurrency_limit=DEFAULTS["concurrency"], max_size=DEFAULTS["max_queue"])
    return demo


def launch(host: str | None = None, port: int | None = None, share: bool = False, **kwargs):
    """Start the server (blocking unless ``prevent_thread_lock=True``); returns what gr.Blocks.launch returns.
    ``host`` / ``port`` default to ``$DIFFUSE_APP_HOST`` / ``$DIFFUSE_APP_PORT`` (or gradio's own variables), else
    127.0.0.1:7860."""
    host = host or os.environ.get("DIFFUSE_APP_HOST") or os.environ.get("GRADIO_SERVER_NAME") or DEFAULTS["host"]
    port = int(port or os.environ.get("DIFFUSE_APP_PORT") or os.environ.get("GRADIO_SERVER_PORT") or DEFAULTS["port"])
    import torch

    torch.set_num_threads(torch_threads())   # the cores shared among the runs the queue lets go at once
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(RequestLimits)]
    return get_demo().launch(server_name=host, server_port=port, share=share, show_error=True, css=CSS,
                             theme=theme(), max_file_size=f"{int(DEFAULTS['max_upload_mb'])}mb",
                             footer_links=["api"], app_kwargs=app_kwargs,
                             state_session_capacity=DEFAULTS["max_sessions"], **kwargs)


def main(argv=None) -> int:
    """``python app.py [--host H] [--port P] [--share]``."""
    parser = argparse.ArgumentParser(prog="diffuse-studio app", description="Start the Dif-fuse Studio web app.")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a temporary public gradio.live link")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    launch(args.host, args.port, share=args.share)
    return 0
