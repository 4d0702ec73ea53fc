"""Time and peak memory per input kind through the CLI and the app's upload path: compressed bombs (issue 35) and
ordinary files of every format, each in a fresh interpreter.

Every input is generated here (``tests/bad_inputs.py``'s writers: nothing is downloaded or committed) and measured
with ``tests/input_cost.py``: the CLI's ``diffuse-studio run`` on the file, and the app's upload path (the probe when
the file arrives, the preview and the run's load). Both have run a small file first, so the figures are what one
more file costs a program that is up: the seconds of the call, the peak resident memory over what the program held
before, and the peak of the app's decode worker. The model is a tiny untrained 32 x 32 DDPM with 2 sampling steps,
so the figures are the loading's and the full-resolution outputs', not a model's.

    python benchmarks/bench_bombs.py                          # writes benchmarks/results/bombs.json and bombs.md
    python benchmarks/bench_bombs.py --only deflate --paths app

The markdown table is generated from the results file; the machine it ran on is stated with it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import bad_inputs as bi  # noqa: E402
import input_cost  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_app_load import cpu_model  # noqa: E402  (one CPU description for every benchmark's results file)

RESULTS = ROOT / "benchmarks" / "results" / "bombs.json"
REPORT = ROOT / "benchmarks" / "bombs.md"


def inputs(folder: Path) -> list[dict]:
    """Every measured input: name, kind, what it is, the slice asked for (volumes) and whether it is a bomb."""
    from PIL import Image

    items = []

    def add(name, write, kind, what, slice_index=None, bomb=False):
        path = folder / name
        write(path) if callable(write) else path.write_bytes(write)
        items.append({"name": name, "kind": kind, "what": what, "slice": slice_index, "bomb": bomb})

    img = bi.brain()
    (folder / "warm.png").write_bytes(bi._png_bytes(bi.brain(40, 48)))     # run first, so not a measured file
    add("ok.png", bi._png_bytes(img), "PNG", "48 x 40 grey")
    big = np.kron(img, np.ones((43, 51), np.uint8))[:2048, :2040]
    add("2048.png", lambda p: Image.fromarray(big).save(p), "PNG", "2048 x 2040 grey")
    vol = np.stack([img.T.astype(np.float32)] * 4, axis=-1)
    add("ok.nii.gz", lambda p: bi._save_nifti(p, vol), "NIfTI .gz", "48 x 40 x 4 float32", 2)
    add("ok.dcm", bi._dicom(bi._ct()), "DICOM", "48 x 40 CT", None)
    add("ok_deflated.dcm", bi.deflated_dicom(bi._dicom_dataset(bi._ct())), "DICOM deflated", "48 x 40 CT")
    add("heavy.nii.gz", bi.gzip_nifti_bomb((512, 512, 1024), np.int16), "NIfTI .gz",
        "0.5 MB inflating to 512 MiB (512 x 512 x 1024 int16, at the limits)", 512)
    add("bomb_deflate_1g.dcm", bi.deflated_dicom(bi._dicom_dataset(bi._ct()), private_bytes=2**30),
        "DICOM deflated", "1 MB, a 1 GiB private element", bomb=True)
    add("bomb_deflate_2g.dcm", bi.deflated_dicom(bi._dicom_dataset(bi._ct()), private_bytes=2**31),
        "DICOM deflated", "2 MB, a 2 GiB private element", bomb=True)
    add("bomb_deflate_pixels.dcm", bi.deflated_dicom(bi._dicom_dataset(bi._ct()), zero_pixels=2**30),
        "DICOM deflated", "48 x 40 whose Pixel Data inflates to 1 GiB", bomb=True)
    add("bomb_rle_4096.dcm", bi.rle_dicom(bi.rle_frame(4096), 16), "DICOM RLE",
        "16 frames of 4096 x 4096 (4 MB; 256 MiB decoded)", 1, bomb=True)
    add("bomb_rle_2048.dcm", bi.rle_dicom(bi.rle_frame(2048), 64), "DICOM RLE",
        "64 frames of 2048 x 2048 (4 MB; 256 MiB decoded)", 1, bomb=True)
    add("bomb_gz.nii.gz", bi.gzip_nifti_bomb((512, 512, 512)), "NIfTI .gz", "1 MB inflating to 1 GiB (float64)", 1,
        bomb=True)
    add("bomb_series", lambda p: bi.deflated_series(p, 80, 2048), "DICOM series",
        "80 deflated 2048 x 2048 slices (640 MiB declared)", 1, bomb=True)
    add("bomb_10k.png", bi.png_bomb(10_000), "PNG", "10,000 x 10,000 zlib", bomb=True)
    add("bomb_20k.tif", bi.tiff_bytes(20_000, 20_000), "TIFF", "20,000 x 20,000 deflate", bomb=True)
    return items


def measure(items: list[dict], folder: Path, paths: list[str]) -> list[dict]:
    from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser
    from PIL import Image

    assets = folder / "assets"
    save_denoiser(new_denoiser(DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32),
                                              attention_levels=(False, True), norm_num_groups=8,
                                              attention_head_dim=8), seed=0), assets / "ddpm",
                  card={"anomaly_threshold": 0.1})
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 10:20] = 255
    Image.fromarray(mask).save(folder / "mask2d.png")
    np.save(folder / "mask3d.npy", np.repeat((mask > 0)[:, :, None], 1024, axis=2).astype(np.uint8))
    rows = []
    for item in items:
        for path in paths:
            cost = input_cost.run(path, folder / item["name"], slice_index=item["slice"], model=assets / "ddpm",
                                  mask=folder / ("mask3d.npy" if item["slice"] is not None else "mask2d.png"),
                                  out=folder / "out" / f"{path}-{item['name']}", warm=folder / "warm.png",
                                  warm_mask=folder / "mask2d.png",
                                  env={"DIFFUSE_ASSETS": str(assets), "DIFFUSE_DEVICE": "cpu"})
            row = {**item, **cost}
            rows.append(row)
            print(f"{path:3} {item['name']:24} {cost['outcome']:6} {cost['seconds']:6.2f} s  +{cost['peak_mb']:7.1f} MB"
                  f"  worker {cost['worker_peak_mb']:6.1f} MB  {cost['message'][:90]}", flush=True)
    return rows


def report(results: dict) -> str:
    lines = [f"# Time and peak memory per input kind (issue 35)", "",
             f"Generated by `python benchmarks/bench_bombs.py` from `benchmarks/results/bombs.json` on "
             f"{results['date']}: measured on {results['cpu']} (load average {results.get('load_average', '?')} at "
             f"the start), Python "
             f"{results['python']}; a tiny untrained 32 x 32 DDPM, 2 steps, one torch thread. Each row is one file "
             f"in a fresh interpreter that has run a small file first: the seconds of the call, the peak resident "
             f"memory over what the program held before (`+MB`), and the app's decode worker's own peak. The app "
             f"path is the probe on upload, the preview and the run's load (the run's load reuses the decode).", "",
             "| input | kind | what | path | outcome | seconds | +MB | worker MB | message |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for r in results["rows"]:
        msg = r["message"].replace("|", "/")
        msg = msg[:110] + "…" if len(msg) > 110 else msg
        lines.append(f"| {r['name']} | {r['kind']} | {r['what']} | {r['path']} | {r['outcome']} | {r['seconds']:.2f} "
                     f"| {r['peak_mb']:.0f} | {r['worker_peak_mb']:.0f} | {msg} |")
    lines += ["", "The per-file bounds the tests hold these to: under 5 s and under 1 GB (`+MB` plus worker MB), "
              "`tests/test_bad_inputs.py::test_a_compressed_bomb_costs_under_5_s_and_1_gb_in_the_cli_and_the_app`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", default="cli,app", help="cli, app or both (default)")
    p.add_argument("--only", default="", help="measure only the inputs whose name contains this")
    p.add_argument("--out", default=str(RESULTS), help="results file (the markdown goes next to this script)")
    args = p.parse_args(argv)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench-bombs-") as tmp:
        folder = Path(tmp)
        items = [i for i in inputs(folder) if args.only in i["name"]]
        rows = measure(items, folder, args.paths.split(","))
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "cpu": cpu_model(), "python": platform.python_version(), "load_average": load_before, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if not args.only and out == RESULTS:
        REPORT.write_text(report(results))
    print(f"wrote {out}" + ("" if args.only or out != RESULTS else f" and {REPORT}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
