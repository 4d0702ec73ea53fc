"""A screenshot of the app's Volume tab with the shipped models, for docs/app.md:
``python docs/take_volume_screenshot.py VOLUME.nii.gz [--slices A-B] [--every N] [--out docs/volume_tab.png]``.

Starts the app on a free local port (shipped ``assets/``, default settings), opens the Volume tab in Debian's headless
Chromium through Playwright, uploads ``VOLUME`` (``--slices A-B``: a copy holding only those axial slices, to keep
the CPU time short), waits until every brain slice is computed, jumps to the most abnormal slice and saves the page.
Needs ``/usr/bin/chromium``; never downloads a browser.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from take_screenshot import ROOT, app_page, chromium_found


def cropped(path: Path, slices: str, every: int, folder: Path) -> Path:
    """A copy of the NIfTI ``path`` holding every ``every``-th axial slice of ``A-B`` only (its affine to match)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    a, b = (int(v) for v in slices.split("-"))
    out = folder / path.name
    nib.save(img.slicer[:, :, a:b + 1:every], str(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volume")
    parser.add_argument("--slices", default=None, help="A-B: only these axial slices (canonical order)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th of those slices")
    parser.add_argument("--out", default=str(ROOT / "docs" / "volume_tab.png"))
    parser.add_argument("--timeout", type=float, default=3000, help="seconds to wait for every slice")
    args = parser.parse_args()
    if not chromium_found():
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="diffuse-shot-"))
    volume = cropped(Path(args.volume), args.slices, args.every, tmp) if args.slices else Path(args.volume)
    start = time.monotonic()
    with app_page(1440, 900) as page:
        page.get_by_role("tab", name="Volume").click()
        page.locator("#df-vol-upload input[type=file]").set_input_files(str(volume))
        page.wait_for_selector("#df-vol-input img", timeout=300_000)
        page.wait_for_function("document.querySelector('#df-vol-progress').innerText.includes('brain slices "
                               "computed')", timeout=args.timeout * 1000, polling=2000)
        page.locator("#df-vol-worst").click()
        page.wait_for_timeout(4_000)
        page.locator("#df-vol-reformat-of label:has-text('Anomaly overlay')").click()
        page.wait_for_timeout(4_000)
        page.screenshot(path=args.out, full_page=True)
    print(f"{args.out} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
