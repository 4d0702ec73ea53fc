"""The picture a reader looks at before the tables: real BraTS slices (rows) x the main methods (columns), each
method's counterfactual and anomaly map, the expert's tumour outline in green on every tile."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from diffuse_core.io.export import LESION_OUTLINE_RGB, outline, overlay, to_uint8

GRID_METHODS = ("dif-fuse", "dif-fuse-oracle", "flair-threshold")   # the main methods, in column order
GRID_LABELS = {"dif-fuse": "Dif-fuse, ACAT mask", "dif-fuse-oracle": "Dif-fuse, oracle mask",
               "flair-threshold": "FLAIR z-score threshold"}
TILE = 192                                                          # pixels a side of one tile
HEADER = 44                                                         # pixels of column titles


def _tile(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_CUBIC)


def _title(text: str, width: int) -> np.ndarray:
    bar = np.full((HEADER, width, 3), 255, np.uint8)
    for i, line in enumerate(text.split("\n")[:2]):
        cv2.putText(bar, line, (6, 18 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return bar


def real_data_grid(data, outputs: dict, path: str | Path, labels: dict | None = None, rows: int = 6) -> Path:
    """Write the grid to ``path``: one row per case (its first tumour slice in ``data``, up to ``rows``), columns the
    input and, per method of ``outputs`` ({method: (counterfactuals (N, C, H, W), anomalies (N, H, W),
    threshold)}), its counterfactual (methods that redraw) and its anomaly map, the expert outline in green."""
    labels = {**GRID_LABELS, **(labels or {})}
    picked, seen = [], set()
    for i, sid in enumerate(data.ids):
        case = sid.rsplit("-z", 1)[0]
        if data.lesions[i].any() and case not in seen:
            seen.add(case)
            picked.append(i)
    picked = picked[:rows]
    columns = [("Input (expert outline)", lambda i: outline(np.repeat(to_uint8(data.images[i, 0])[..., None], 3, 2),
                                                           data.lesions[i], LESION_OUTLINE_RGB))]
    for m, (cf, ano, thr) in outputs.items():
        name = labels.get(m, m)
        if not np.array_equal(cf, data.images):
            columns.append((f"{name}\ncounterfactual", lambda i, cf=cf: outline(
                np.repeat(to_uint8(cf[i, 0])[..., None], 3, 2), data.lesions[i], LESION_OUTLINE_RGB)))
        columns.append((f"{name}\nanomaly > {thr:.2g}", lambda i, ano=ano, thr=thr: outline(
            overlay(data.images[i, 0], ano[i] * (ano[i] > thr), vmax=max(float(ano[i].max()), 1e-3)),
            data.lesions[i], LESION_OUTLINE_RGB)))
    gap = 4
    width = len(columns) * TILE + (len(columns) - 1) * gap
    header = np.concatenate([np.concatenate([_title(t, TILE), np.full((HEADER, gap, 3), 255, np.uint8)], 1)
                             for t, _ in columns], 1)[:, :width]
    body = []
    for i in picked:
        tiles = []
        for _, make in columns:
            tiles += [_tile(make(i)), np.full((TILE, gap, 3), 255, np.uint8)]
        body += [np.concatenate(tiles, 1)[:, :width], np.full((gap, width, 3), 255, np.uint8)]
    grid = np.concatenate([header] + body, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path
