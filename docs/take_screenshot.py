"""Screenshots of the app with the shipped models, for the README:
``python docs/take_screenshot.py [--case N] [--view explore|quiz|uncertainty]``.

Starts the app on a free local port (shipped ``assets/``, the default teaching set, default settings), opens it in
Debian's headless Chromium through Playwright and saves a PNG: ``explore`` picks a teaching case, runs it and takes
the page down to the anomaly map, the verdict line included (``docs/app_screenshot.png``); ``quiz`` draws a packet (``--seed``, default 2), clicks the first slice where its
lesion is (or calls it normal) and takes the reveal (``docs/quiz_reveal.png``); ``uncertainty`` runs 4 draws of a
teaching case and takes the uncertainty panels (``docs/uncertainty.png``). ``--out`` overrides the file. Needs
``/usr/bin/chromium``; never downloads a browser.
"""

import argparse
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=int, default=0, help="index of the teaching case in the gallery")
    parser.add_argument("--view", choices=["explore", "quiz", "uncertainty"], default="explore")
    parser.add_argument("--seed", type=int, default=2, help="quiz: the packet's seed (2: an abnormal first slice)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "docs" / {"explore": "app_screenshot.png", "quiz": "quiz_reveal.png",
                                                "uncertainty": "uncertainty.png"}[args.view])
    if not chromium_found():
        return 2
    start = time.monotonic()
    with app_page(1400, 900) as page:
        page.wait_for_selector("#df-gallery img", timeout=60_000)
        if args.view == "quiz":
            _quiz(page, args)
        else:
            page.locator("#df-gallery img").nth(args.case).click()
            page.wait_for_function("document.body.innerText.includes('ground-truth') || "
                                   "document.body.innerText.includes('healthy')", timeout=30_000)
            if args.view == "uncertainty":
                page.locator("#df-uncertainty").click()
                page.locator("#df-unc-run").click()
                page.wait_for_function("document.querySelector('#df-unc-md') && "
                                       "document.querySelector('#df-unc-md').innerText.includes('draws')",
                                       timeout=args.timeout * 1000)
                page.wait_for_timeout(1_500)
                page.locator("#df-uncertainty").screenshot(path=args.out)
            else:
                page.locator("#df-run").click()
                page.wait_for_function("document.body.innerText.includes('Done in')", timeout=args.timeout * 1000)
                page.wait_for_selector("#df-verdict", state="visible", timeout=30_000)   # the slice verdict
                page.wait_for_timeout(1_500)
                # the page down to the anomaly map's row: the verdict line and the panels at a readable scale
                # (the whole page is too tall to read in the README)
                bottom = page.evaluate("() => { const r = document.querySelector('#df-out-overlay')"
                                       ".getBoundingClientRect(); return r.bottom + window.scrollY + 12; }")
                page.screenshot(path=args.out, full_page=True,
                                clip={"x": 0, "y": 0, "width": 1400, "height": bottom})
    print(f"wrote {args.out} ({time.monotonic() - start:.0f} s)")
    return 0


def chromium_found() -> bool:
    """Whether Debian's Chromium is there (said on stderr when not)."""
    if Path(CHROMIUM).exists():
        return True
    print(f"no Chromium at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
    return False


@contextmanager
def app_page(width: int, height: int):
    """The app (shipped ``assets/``, default settings) started on a free local port and opened in headless Chromium
    at ``width`` x ``height``: yields the page; closes the browser and the app after."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from diffuse_core.ui.launch import get_demo, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(f"http://127.0.0.1:{port}/")
                yield page
            finally:
                browser.close()
    finally:
        get_demo().close()


def _quiz(page, args) -> None:
    """Draw a packet (seed 1), answer its first slice as a trainee would (a click on the lesion and Abnormal, or
    Normal) and keep the reveal."""
    from diffuse_core.studio import rapids
    from diffuse_core.ui import rapids as ui

    page.get_by_role("tab", name="Quiz").click()
    # "Repeat this packet" with no packet played yet uses the seed box: a fixed packet of 10 for the picture
    box = page.locator("#df-rp-seed input")
    box.fill(str(args.seed))
    box.press("Enter")
    page.wait_for_timeout(500)
    page.locator("#df-rp-repeat").click()
    page.wait_for_function("document.body.innerText.includes('Slice 1 of 10')", timeout=args.timeout * 1000)
    first = rapids.draw_packet(ui._packet_cases([ui.DEFAULT_SET]), 10, args.seed)[0]
    if first.healthy:
        page.locator("#df-rp-normal").click()
    else:
        import numpy as np

        _, d = ui._view(first.key)
        ys, xs = np.nonzero(d.truth)
        scale = page.locator("#df-rp-image img").bounding_box()["width"] / d.truth.shape[0]
        page.locator("#df-rp-image img").click(position={"x": float(xs[len(xs) // 2]) * scale,
                                                          "y": float(ys[len(ys) // 2]) * scale})
        page.wait_for_timeout(700)
        page.locator("#df-rp-abnormal").click()
    page.wait_for_function("document.querySelector('#df-rp-feedback') && "
                           "document.querySelector('#df-rp-feedback').innerText.includes('—')", timeout=60_000)
    page.wait_for_timeout(1_500)
    page.locator("#df-rp-header").scroll_into_view_if_needed()
    box = page.locator("#df-rp-image").bounding_box()
    fb = page.locator("#df-rp-feedback").bounding_box()
    top = page.locator("#df-rp-sets").bounding_box()["y"] - 40
    bottom = max(box["y"] + box["height"], fb["y"] + fb["height"]) + 140
    page.screenshot(path=args.out, full_page=True, clip={"x": 0, "y": top, "width": 1400, "height": bottom - top})


if __name__ == "__main__":
    sys.exit(main())
