"""Screenshot of the app with the shipped models, for the README: ``python docs/take_screenshot.py [--case N]``.

Starts the app on a free local port (shipped ``assets/``, the default teaching set, default settings), opens it in
Debian's headless Chromium through Playwright, picks a teaching case, runs it and saves a full-page PNG
(``docs/app_screenshot.png`` unless ``--out``). Needs ``/usr/bin/chromium``; never downloads a browser.
"""

import argparse
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=int, default=0, help="index of the teaching case in the gallery")
    parser.add_argument("--out", default=str(ROOT / "docs" / "app_screenshot.png"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from diffuse_core.ui.launch import get_demo, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    start = time.monotonic()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#df-gallery img", timeout=60_000)
            page.locator("#df-gallery img").nth(args.case).click()
            page.wait_for_function("document.body.innerText.includes('ground-truth') || "
                                   "document.body.innerText.includes('healthy')", timeout=30_000)
            page.locator("#df-run").click()
            page.wait_for_function("document.body.innerText.includes('Done in')", timeout=args.timeout * 1000)
            page.wait_for_timeout(1_500)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        get_demo().close()
    print(f"wrote {args.out} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
