"""A DICOM series (the files of one folder, or of a zip) -> a whole volume of display slices with its geometry.

Every file's header is read first and the series is checked before any pixel is decoded: one series of one study,
one orientation, one size, not multi-frame, no two slices at one position and no slice missing (a gap along the
slice normal over 1.5 times the usual spacing, or a hole in the Instance Numbers where the positions are absent),
and the whole series within :func:`diffuse_core.io.loaded.check_pixels` and
:func:`~diffuse_core.io.loaded.check_decoded_bytes` (the limits of issue 35). Each slice is then decoded by
:func:`diffuse_core.io.dicom.load_dicom_file` (rescale, MONOCHROME1, value range: as a one-slice run reads it).
Every refusal is a one-line ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse_core.io.dicom import dicom_spacing, is_dicom_candidate, load_dicom_file
from diffuse_core.io.loaded import DEFAULT_MAX_BYTES, check_decoded_bytes, check_pixels
from diffuse_core.volumes.grid import DicomGrid, dicom_affine

__all__ = ["GAP_FACTOR", "ORIENTATION_TOLERANCE", "read_dicom_series", "series_headers"]

ORIENTATION_TOLERANCE = 1e-3      # direction cosines closer than this are one orientation
GAP_FACTOR = 1.5                  # a step along the normal over this times the median step: slices are missing


def series_headers(files: list[Path], where: str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[tuple[Path, object]]:
    """(file, header) of every DICOM image among ``files`` (other files are skipped); ValueError when none."""
    import pydicom

    found, declared = [], 0
    for p in files:
        if not p.is_file() or p.name.startswith(".") or not is_dicom_candidate(p):
            continue
        if p.stat().st_size > max_bytes:
            raise ValueError(f"{p} is {p.stat().st_size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=True)
        except Exception:
            continue                                   # junk that looked like DICOM
        if "Rows" not in ds or "Columns" not in ds:
            continue                                   # DICOMDIR, reports, presentation states
        rows, cols = int(ds.Rows or 0), int(ds.Columns or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        declared += rows * cols * frames * max(1, int(ds.get("BitsAllocated", 16) or 16)) // 8
        check_decoded_bytes(where, declared, f"pixel data in its first {len(found) + 1} DICOM files",
                            fix="export fewer or smaller slices (one series, cropped) and retry")
        found.append((p, ds))
    if not found:
        raise ValueError(f"no DICOM images found in {where} ({len(files)} file(s) looked at): point to the folder or "
                         f"zip that holds one series' .dcm files")
    return found


def _one(headers, keyword: str, where: str, what: str) -> None:
    values = {str(ds.get(keyword, "")) for _, ds in headers}
    if len(values) > 1:
        raise ValueError(f"{where} mixes {len(values)} {what} ({keyword} differs): a volume run needs one series of "
                         f"one study; put each series in its own folder")


def _check_consistent(headers, where: str) -> tuple[int, int]:
    _one(headers, "StudyInstanceUID", where, "studies")
    _one(headers, "SeriesInstanceUID", where, "series")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in headers):
        raise ValueError(f"{where} holds multi-frame DICOM: volume runs read one file per slice; export the series "
                         f"as single-frame files")
    sizes = sorted({(int(ds.Rows), int(ds.Columns)) for _, ds in headers})
    if len(sizes) > 1:
        raise ValueError(f"{where} has slices of different sizes ({', '.join(f'{r}x{c}' for r, c in sizes)}): not "
                         f"one series")
    orientations = [ds.get("ImageOrientationPatient") for _, ds in headers]
    if all(o is not None for o in orientations):
        arr = np.array([[float(v) for v in o] for o in orientations])
        if np.abs(arr - arr[0]).max() > ORIENTATION_TOLERANCE:
            raise ValueError(f"{where} mixes slice orientations ({len(np.unique(arr.round(3), axis=0))} different "
                             f"Image Orientation values): a volume run needs one stack of parallel slices")
    return sizes[0]


def _order(headers, where: str) -> tuple[list[int], float | None, np.ndarray | None]:
    """Slice order along the normal, the step between slices (mm, None when unknown) and the LPS step vector."""
    ds0 = headers[0][1]
    ori = ds0.get("ImageOrientationPatient")
    positions = [ds.get("ImagePositionPatient") for _, ds in headers]
    n = len(headers)
    if ori is not None and all(p is not None for p in positions):
        o = np.array([float(v) for v in ori])
        normal = np.cross(o[:3], o[3:6])
        pos = np.array([[float(v) for v in p] for p in positions])
        along = pos @ normal
        order = [int(i) for i in np.argsort(along, kind="stable")]
        steps = np.diff(along[order])
        if n > 1:
            if (np.abs(steps) < 1e-3).any():
                raise ValueError(f"{where} has two slices at one position ({int((np.abs(steps) < 1e-3).sum())} "
                                 f"duplicate(s)): export the series again without repeats")
            usual = float(np.median(steps))
            gaps = np.nonzero(steps > GAP_FACTOR * usual)[0]
            if len(gaps):
                g = int(gaps[0])
                raise ValueError(f"{where} is missing slices: a {steps[g]:.1f} mm gap after slice {g} where the "
                                 f"slices are {usual:.1f} mm apart ({len(gaps)} gap(s)); export the whole series")
            step_vec = (pos[order[-1]] - pos[order[0]]) / (n - 1)
            return order, usual, step_vec
        return order, None, normal * float(ds0.get("SliceThickness", 1.0) or 1.0)
    numbers = []
    for i, (_, ds) in enumerate(headers):
        try:
            numbers.append(int(ds.get("InstanceNumber")))
        except (TypeError, ValueError):
            numbers.append(i)
    order = [int(i) for i in np.argsort(numbers, kind="stable")]
    ranked = sorted(numbers)
    if len(set(ranked)) != n:
        raise ValueError(f"{where} has repeated Instance Numbers and no Image Position: cannot order its slices")
    if ranked[-1] - ranked[0] + 1 != n:
        raise ValueError(f"{where} is missing slices: Instance Numbers {ranked[0]}..{ranked[-1]} hold only {n} "
                         f"files; export the whole series")
    return order, None, None


def read_dicom_series(files: list[Path], where: str, max_bytes: int = DEFAULT_MAX_BYTES):
    """The single series among ``files`` as (display slices (Z, 1, H, W) float32 raw values, spacing (row, col),
    slice step in mm or None, Modality, :class:`~diffuse_core.volumes.grid.DicomGrid`)."""
    headers = series_headers(files, where, max_bytes)
    rows, cols = _check_consistent(headers, where)
    check_pixels(where, rows, cols, len(headers))
    order, step, step_vec = _order(headers, where)
    ordered = [headers[i] for i in order]
    slices = np.empty((len(ordered), 1, rows, cols), np.float32)
    modality = None
    for z, (p, _) in enumerate(ordered):
        loaded = load_dicom_file(p, None, max_bytes)
        if loaded.data.shape[1:] != (rows, cols):
            raise ValueError(f"{p} decodes to {loaded.data.shape[1:]} pixels, its header says {rows}x{cols}")
        slices[z] = loaded.data[:1]
        modality = modality or loaded.modality
    ds0 = ordered[0][1]
    spacing = dicom_spacing(ds0)
    ori = ds0.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0]
    pos0 = ds0.get("ImagePositionPatient") or [0, 0, 0]
    if step_vec is None:
        step_vec = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:6], float)) * \
            float(ds0.get("SliceThickness", 1.0) or 1.0)
    affine = dicom_affine([float(v) for v in pos0], [float(v) for v in ori], spacing, step_vec)
    grid = DicomGrid(affine=affine, shape=(cols, rows, len(ordered)), headers=[ds for _, ds in ordered])
    return slices, spacing, step, modality, grid
