"""The app in headless Chromium through Playwright, for the browser tests: the marks they carry, the app served on a
free local port, and a page opened on it. Imported by the tests (``from browser import ...``); no tests here. The
tests never download a browser: without Debian's ``/usr/bin/chromium`` they are skipped."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

BROWSER_MARKS = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); the test never downloads one"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server():
    """The app launched on a free local port (as the environment sets it up): yields its URL, closes it after."""
    from diffuse_core.ui.launch import get_demo, launch

    port = free_port()
    launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        get_demo().close()


def open_app(p, server: str, width: int = 1440, height: int = 900, ready: str | None = "#df-gallery img"):
    """(browser, page): the app at ``server`` open at ``width`` x ``height`` once ``ready`` (a selector) is there;
    ``p`` is Playwright's; the caller closes the browser."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server)
    if ready:
        page.wait_for_selector(ready, timeout=30_000)
    return browser, page


def wait_text(page, elem_id: str, text: str, timeout: int) -> None:
    """Wait until the element ``#elem_id`` shows ``text``."""
    page.wait_for_function(f"document.querySelector('#{elem_id}').innerText.includes({text!r})", timeout=timeout)


def upload_in_explore(page, path) -> None:
    """Explore: switch the case source to Upload and give it the file at ``path``."""
    page.locator("#df-source label:has-text('Upload')").click()
    page.locator("#df-upload input[type=file]").set_input_files(str(path))
