"""What a person reads of a volume run and of an archive: the per-slice table (``slices.csv``), the worst slice's
overlay, and for ``diffuse-studio batch`` the summary table (``summary.csv``, ``summary.md``) and the gallery page
(``gallery.html``: each study's worst slice, its anomaly volume and top slices, linked to its folder)."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np

from diffuse_core.volumes.write import atomic_write_bytes

__all__ = ["SUMMARY_COLUMNS", "display_grey", "slice_rows", "slice_scores", "write_gallery", "write_slices_csv",
           "write_summary_table", "write_worst_png"]

SUMMARY_COLUMNS = ("study", "status", "slices", "slices_processed", "anomaly_volume_ml", "top_slices", "seconds",
                   "folder", "error")


def slice_scores(flagged: np.ndarray, anomaly: np.ndarray, spacing: tuple[float, float]) -> list[dict]:
    """Per slice of ``flagged`` / ``anomaly`` (Z, H, W): flagged pixels, flagged area in mm^2 and peak anomaly.
    The flagged area is the per-slice anomaly score the scroller's curve plots."""
    px_mm2 = float(spacing[0]) * float(spacing[1])
    n = flagged.reshape(len(flagged), -1).sum(axis=1)
    peak = anomaly.reshape(len(anomaly), -1).max(axis=1) if anomaly.size else np.zeros(len(anomaly))
    return [{"z": z, "flagged_px": int(n[z]), "flagged_mm2": round(float(n[z]) * px_mm2, 2),
             "peak": round(float(peak[z]), 5)} for z in range(len(flagged))]


def slice_rows(volume, flagged: np.ndarray, anomaly: np.ndarray, processed: set[int],
               outside: set[int] = frozenset()) -> list[dict]:
    """:func:`slice_scores` of a volume run, with whether each slice was processed (a brain slice in range) and
    whether it lies outside the levels the model learned (``outside``: its map may mark normal anatomy)."""
    rows = slice_scores(flagged, anomaly, volume.spacing)
    for r in rows:
        r["processed"] = r["z"] in processed
        r["outside_levels"] = r["z"] in outside
    return rows


def write_slices_csv(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["z", "processed", "flagged_px", "flagged_mm2", "peak", "outside_levels"])
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in w.fieldnames})
    return atomic_write_bytes(path, buf.getvalue().encode())


def display_grey(raw: np.ndarray) -> np.ndarray:
    """A raw slice stretched to [-1, 1] between the 1st and 99th percentiles of its non-background pixels; the
    background (the most frequent value where it fills over a fifth of the slice, e.g. a skull-stripped scan's 0 amid
    z-scored tissue, else the minimum) is black."""
    raw = np.asarray(raw, np.float32)
    values, counts = np.unique(raw, return_counts=True)
    background = values[np.argmax(counts)] if counts.max() > raw.size / 5 else raw.min()
    fg = raw != background
    vals = raw[fg] if fg.any() else raw.ravel()
    lo, hi = np.percentile(vals, [1, 99])
    return np.where(fg, np.clip((raw - lo) / max(float(hi - lo), 1e-6) * 2 - 1, -1, 1), -1.0).astype(np.float32)


def write_worst_png(path: Path, volume, done: dict, z: int) -> Path:
    """The input's slice ``z`` with its anomaly map over it (:func:`diffuse_core.io.export.overlay`) as a PNG."""
    import cv2

    from diffuse_core.io.export import overlay

    anomaly = np.zeros(volume.shape[1:], np.float32)
    flagged = np.zeros(volume.shape[1:], np.uint8)
    if z in done:
        with np.load(done[z]) as f:
            anomaly, flagged = f[f"anomaly_{z}"], f[f"flagged_{z}"]
    rgb = overlay(display_grey(volume.slices[z, 0]), anomaly, mask=flagged,
                  vmax=max(float(anomaly.max()), 1e-3), thickness=max(1, round(max(anomaly.shape) / 256)))
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:                                   # pragma: no cover
        raise ValueError(f"could not encode {path}")
    return atomic_write_bytes(path, png.tobytes())


def write_summary_table(out_dir: Path, rows: list[dict]) -> tuple[Path, Path]:
    """``summary.csv`` and ``summary.md`` of an archive (one row per study, :data:`SUMMARY_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in SUMMARY_COLUMNS})
    csv_path = atomic_write_bytes(Path(out_dir) / "summary.csv", buf.getvalue().encode())
    lines = ["| study | status | slices (processed) | anomaly volume (mL) | top slices | seconds |",
             "|---|---|---:|---:|---|---:|"]
    for r in rows:
        vol = "" if r.get("anomaly_volume_ml") is None else f"{r['anomaly_volume_ml']:.2f}"
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error']}"
        slices = "" if r.get("slices") is None else f"{r['slices']} ({_cell(r.get('slices_processed'))})"
        lines.append(f"| {r['study']} | {status} | {slices} | "
                     f"{vol} | {_cell(r.get('top_slices'))} | {_cell(r.get('seconds'))} |")
    md_path = atomic_write_bytes(Path(out_dir) / "summary.md", ("\n".join(lines) + "\n").encode())
    return csv_path, md_path


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)


def write_gallery(out_dir: Path, rows: list[dict]) -> Path:
    """``gallery.html``: one card per study, its worst slice (the study folder's ``worst_slice.png``)."""
    cards = []
    for r in rows:
        name = html.escape(str(r["study"]))
        folder = html.escape(str(r.get("folder") or ""))
        if r["status"] == "done":
            body = (f'<img src="{folder}/worst_slice.png" alt="worst slice of {name}">'
                    f"<p>{r.get('anomaly_volume_ml', 0):.2f} mL flagged; top slices {html.escape(_cell(r.get('top_slices')))}"
                    f"</p>")
        else:
            body = f"<p>{html.escape(str(r['status']))}: {html.escape(str(r.get('error') or ''))}</p>"
        cards.append(f'<div class="card"><h3><a href="{folder}/">{name}</a></h3>{body}</div>')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Dif-fuse batch gallery</title><style>"
            "body{font-family:sans-serif;background:#111;color:#eee}.card{display:inline-block;margin:8px;"
            "vertical-align:top;width:260px}.card img{width:256px;image-rendering:pixelated}a{color:#8cf}</style>"
            "</head><body><h1>Dif-fuse batch: worst slice of each study</h1>"
            "<p>Research use only: the anomaly map flags where the scan departs from the model's healthy brain; it "
            "is not a diagnosis.</p>" + "".join(cards) + "</body></html>")
    return atomic_write_bytes(Path(out_dir) / "gallery.html", page.encode())
