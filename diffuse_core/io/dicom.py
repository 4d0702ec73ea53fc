"""DICOM (a file, a multi-frame file or a series folder) -> one slice of raw values (HU for CT).

Pixel data is kept as stored (rows x columns as the scanner wrote them). Axial acquisitions with the usual Image
Orientation (1, 0, 0, 0, 1, 0) are then already radiological (anterior top, patient's right on the left), matching
the NIfTI display. A series folder is sorted along the slice normal (Image Position Patient projected on Image
Orientation's normal; else Image Position z; else Instance Number), so ``z = 0`` is the most inferior slice for
axial series, as for NIfTI. Rescale Slope/Intercept are applied, MONOCHROME1 is inverted, colour becomes grey.
Spacing is Pixel Spacing (row, col) in mm, else Imager Pixel Spacing, else (1.0, 1.0).

Rows x Columns x frames are checked from the header (:func:`~diffuse_core.io.loaded.check_pixels`) before the pixel
data is read or decoded; a deflated file is inflated through a capped stream that refuses any element declaring more
than the limits before inflating it (:mod:`~diffuse_core.io.dicom_deflate`); only the frame asked for is decoded
(an RLE / JPEG file of many frames costs one frame); a series folder is refused from its files' declared total.
Values no scanner produces (|HU| > :data:`MAX_ABS_HU` for CT, |value| > :data:`MAX_ABS_VALUE` otherwise: a wrong
Rescale Slope) are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse_core.io.dicom_deflate import is_deflated, read_deflated
from diffuse_core.io.loaded import (LoadedImage, check_decoded_bytes, check_pixels, colour_to_grey, pick_slice,
                                    to_float32)

__all__ = ["MAX_ABS_HU", "MAX_ABS_VALUE", "dicom_spacing", "is_dicom_candidate", "load_dicom_file",
           "load_dicom_folder"]

_DICOM_EXTENSIONS = ("", ".dcm", ".ima", ".dicom")
# Plausible value ranges after Rescale Slope/Intercept. CT stores 12-16 bits: -1024 HU (air) to ~ +30,000 HU with
# extended-range metal reconstructions; MR and other modalities stay within 32-bit detector counts far below 1e7.
MAX_ABS_HU = 1e5
MAX_ABS_VALUE = 1e7


def _read(path: Path, *, header_only: bool, force: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not force and is_deflated(path):
        return read_deflated(path, str(path), header_only=header_only)
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only, force=force)
    except InvalidDicomError:
        if not force:
            return _read(path, header_only=header_only, force=True)
        raise ValueError(f"{path} is not a valid DICOM file") from None
    except Exception as exc:
        raise ValueError(f"{path} is a corrupted DICOM file ({type(exc).__name__}: {exc}): export it "
                         f"again") from None


def _first(ds, keyword: str, functional: str | None = None, frame: int | None = None):
    """A value from the top level, else the per-frame / shared functional groups (enhanced multi-frame)."""
    value = ds.get(keyword)
    if value is not None:
        return value
    if functional is None:
        return None
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        pf = ds.PerFrameFunctionalGroupsSequence
        if frame < len(pf):
            groups.append(pf[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for g in groups:
        seq = g.get(functional)
        if seq is not None and len(seq) and seq[0].get(keyword) is not None:
            return seq[0].get(keyword)
    return None


def _rescale(ds, frame: int | None) -> tuple[float, float]:
    slope = _first(ds, "RescaleSlope", "PixelValueTransformationSequence", frame)
    inter = _first(ds, "RescaleIntercept", "PixelValueTransformationSequence", frame)
    try:
        slope = float(slope) if slope is not None else 1.0
        inter = float(inter) if inter is not None else 0.0
    except (TypeError, ValueError):
        slope, inter = 1.0, 0.0
    if not (np.isfinite(slope) and np.isfinite(inter)):
        raise ValueError(f"Rescale Slope {slope} / Intercept {inter} are not finite numbers: fix the header (slope "
                         f"1, intercept 0 for raw values) and export it again")
    return (slope if slope != 0 else 1.0), inter


def _check_range(arr: np.ndarray, ds, source: str) -> None:
    """Refuse values outside any scanner's range (a corrupt Rescale Slope / Intercept, or garbage pixels)."""
    if arr.size == 0 or np.isnan(arr).all():
        return  # empty or NaN slices get their own message from check_values
    ct = str(ds.get("Modality", "")).upper() == "CT"
    limit, unit = (MAX_ABS_HU, " HU") if ct else (MAX_ABS_VALUE, "")
    peak = float(np.nanmax(np.abs(arr)))
    if peak > limit:
        slope, inter = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
        raise ValueError(f"{source} holds values up to {peak:.3g}{unit}, far outside any scanner's range "
                         f"(|value| <= {limit:.0e}{unit}): check its Rescale Slope ({slope}) and Intercept "
                         f"({inter}) and export it again")


def _check_header_size(ds, source: str) -> None:
    """Rows x Columns x frames (x samples) as the header declares them, before the pixel data is read."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise ValueError(f"{source} has an unreadable Rows / Columns / Number of Frames header: export it "
                         f"again") from None
    if ("Rows" in ds or "Columns" in ds) and (rows < 1 or cols < 1 or frames < 1):
        raise ValueError(f"{source} declares {rows} rows x {cols} columns x {frames} frames: an empty image; "
                         f"export it again")
    check_pixels(source, rows, cols, frames, samples)


def dicom_spacing(ds) -> tuple[float, float]:
    """(row, col) pixel spacing in mm of a pydicom dataset: Pixel Spacing, else Imager Pixel Spacing, else 1 mm."""
    for kw, fg in (("PixelSpacing", "PixelMeasuresSequence"), ("ImagerPixelSpacing", None)):
        v = _first(ds, kw, fg, 0)
        if v is not None:
            try:
                r, c = float(v[0]), float(v[1])
                if r > 0 and c > 0:
                    return r, c
            except (TypeError, ValueError, IndexError):
                pass
    return 1.0, 1.0


def _position(ds, frame: int | None = None) -> float | None:
    """Slice position along the normal of the image plane (None when the header lacks it)."""
    pos = _first(ds, "ImagePositionPatient", "PlanePositionSequence", frame)
    ori = _first(ds, "ImageOrientationPatient", "PlaneOrientationSequence", frame)
    try:
        p = np.array([float(v) for v in pos], dtype=float)
    except (TypeError, ValueError):
        return None
    try:
        o = np.array([float(v) for v in ori], dtype=float)
        normal = np.cross(o[:3], o[3:6])
        if np.linalg.norm(normal) > 0.5:
            return float(p @ normal)
    except (TypeError, ValueError, IndexError):
        pass
    return float(p[2])


def _declared_pixel_bytes(ds) -> int:
    """Bytes of pixel data Rows x Columns x frames x samples x Bits Allocated declare (uncompressed)."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    return (max(0, rows) * max(0, cols) * max(1, frames) * max(1, samples) * max(1, bits) + 7) // 8


def _frame_pixels(ds, frame: int, source: str) -> np.ndarray:
    """One frame (H, W[, 3]) as stored, decoding only that frame (RLE / JPEG frames are counted, not decoded)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"{source} is a DICOM file without pixel data (a DICOMDIR, report or "
                         f"presentation state?): pass an image file or a series folder")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(getattr(ts, "is_compressed", False)) and str(ts) != "1.2.840.10008.1.2.1.99"
    if not compressed and "PixelData" in ds:
        have = len(ds.PixelData)
        if have < _declared_pixel_bytes(ds) - 1:       # odd lengths are padded to even
            raise ValueError(f"{source} is a truncated DICOM file (its pixel data is shorter than Rows x Columns x "
                             f"frames declare): export it again")
    from pydicom.pixels import pixel_array

    try:
        arr = pixel_array(ds, index=frame)
    except MemoryError:
        raise                                  # the caller's memory cap: not a broken file
    except Exception as exc:
        if "less than expected" in str(exc) or "shorter than" in str(exc) or "insufficient" in str(exc).lower():
            raise ValueError(f"{source} is a truncated DICOM file (its pixel data is shorter than Rows x Columns x "
                             f"frames declare): export it again") from None
        ts_name = getattr(ts, "name", str(ts)) if ts is not None else "unknown"
        raise ValueError(f"cannot decode the pixel data of {source} (transfer syntax {ts_name}: "
                         f"{type(exc).__name__}: {exc}); for compressed DICOM install pylibjpeg/gdcm or "
                         f"decompress it (e.g. `gdcmconv --raw`)") from None
    arr = np.asarray(arr)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if arr.ndim != (3 if spp > 1 else 2):
        raise ValueError(f"{source}: unexpected DICOM pixel array shape {arr.shape}")
    return arr


def _frame_order(ds) -> list[int]:
    """The frames of a multi-frame file in their order along the slice normal (header only)."""
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    positions = [_position(ds, f) if nframes > 1 else None for f in range(nframes)]
    if nframes > 1 and all(p is not None for p in positions) and len(set(positions)) == nframes:
        return [int(i) for i in np.argsort(positions, kind="stable")]
    return list(range(nframes))


def _to_slice(ds, frame_pixels: np.ndarray, frame: int | None, source: str,
              notes: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Stored frame -> (C, H, W) float32 raw values: rescale, MONOCHROME1 inversion, colour -> grey."""
    arr = to_float32(frame_pixels, source)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour: pydicom returns RGB (YBR converted)
        grey, note = colour_to_grey(arr, 255.0 if frame_pixels.dtype.itemsize == 1 else float(arr.max() or 1))
        if note:
            notes.append(note)
        return grey[None], ("grey",)
    slope, inter = _rescale(ds, frame)
    if slope != 1.0 or inter != 0.0:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is refused just below
            arr = arr * np.float32(slope) + np.float32(inter)
    _check_range(arr, ds, source)
    if photometric == "MONOCHROME1":
        # MONOCHROME1: the minimum value displays white; invert within the stored range so that bright = dense
        bits = int(ds.get("BitsStored", 0) or 0)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        if bits and not signed:
            lo = inter
            hi = (2**bits - 1) * slope + inter
        else:
            lo, hi = float(arr.min()), float(arr.max())
        arr = np.float32(lo + hi) - arr
        notes.append("MONOCHROME1 DICOM: intensities inverted so that bright means dense")
    name = "HU" if str(ds.get("Modality", "")).upper() == "CT" else "intensity"
    return arr[None], (name,)


def _modality(ds) -> str | None:
    m = str(ds.get("Modality", "") or "").upper().strip()
    return m or None


def is_dicom_candidate(path: Path) -> bool:
    """True when the file may be DICOM: the b"DICM" marker, or a bare group 0002/0008 tag with a DICOM-like name."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return head[:2] in (b"\x02\x00", b"\x08\x00") and path.suffix.lower() in _DICOM_EXTENSIONS


def load_dicom_file(path: Path, slice_index, max_bytes: int) -> LoadedImage:
    """One slice (one frame of a multi-frame file, sorted along the slice normal) of a DICOM file; values
    unchecked."""
    source = str(path)
    if is_deflated(path):
        ds = read_deflated(path, source)      # inflated once; sizes checked from each header on the way
    else:
        _check_header_size(_read(path, header_only=True), source)
        ds = _read(path, header_only=False)
    _check_header_size(ds, source)
    order = _frame_order(ds)
    n = len(order)
    z = pick_slice(n, slice_index, source)
    notes: list[str] = []
    data, names = _to_slice(ds, _frame_pixels(ds, order[z], source), order[z] if n > 1 else None, source, notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind="dicom", spacing=dicom_spacing(ds),
                       modality=_modality(ds), num_slices=n, slice_index=z, channel_names=names,
                       source=source, notes=tuple(notes))


def load_dicom_folder(folder: Path, slice_index, max_bytes: int) -> LoadedImage:
    """One slice of the single DICOM series in ``folder`` (subfolders are not searched); values unchecked."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    headers = []
    declared = 0
    for p in files:
        if not is_dicom_candidate(p):
            continue
        size = p.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{p} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit")
        try:
            ds = _read(p, header_only=True)
        except ValueError:
            continue  # junk that happened to look like DICOM
        if "Rows" not in ds or "Columns" not in ds:
            continue  # DICOMDIR, structured reports, ...
        _check_header_size(ds, str(p))
        declared += _declared_pixel_bytes(ds)
        check_decoded_bytes(str(folder), declared, f"pixel data in its first {len(headers) + 1} DICOM files",
                            fix="export fewer or smaller slices (one series, cropped) and retry")
        headers.append((p, ds))
    if not headers:
        raise ValueError(f"no DICOM images found in folder {folder} ({len(files)} file(s) looked at; "
                         f"subfolders are not searched): point to the folder that holds the series' .dcm files, "
                         f"or to one file")
    series: dict[str, list] = {}
    for p, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if len(series) > 1:
        desc = "; ".join(f"{len(v)} file(s) '{v[0][1].get('SeriesDescription', '?')}' "
                         f"(series {uid[-12:] or '?'})" for uid, v in series.items())
        raise ValueError(f"folder {folder} holds {len(series)} DICOM series ({desc}): point to a folder with "
                         f"one series, or to one file")
    items = next(iter(series.values()))
    if len(items) == 1:
        return load_dicom_file(items[0][0], slice_index, max_bytes)
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        raise ValueError(f"folder {folder} mixes several multi-frame DICOM files: pass one file")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(sizes) > 1:
        raise ValueError(f"the DICOM files in {folder} have different sizes {sorted(sizes)}: not one series")
    check_pixels(str(folder), *next(iter(sizes)), len(items))
    positions = [_position(ds) for _, ds in items]
    if all(p is not None for p in positions) and len(set(positions)) == len(items):
        keys = positions
    else:
        keys = []
        for i, (_, ds) in enumerate(items):
            try:
                keys.append(float(ds.get("InstanceNumber")))
            except (TypeError, ValueError):
                keys.append(float(i))  # file-name order
    order = [int(i) for i in np.argsort(keys, kind="stable")]
    n = len(items)
    z = pick_slice(n, slice_index, str(folder))
    path = items[order[z]][0]
    ds = _read(path, header_only=False)
    _check_header_size(ds, str(path))
    notes: list[str] = []
    data, names = _to_slice(ds, _frame_pixels(ds, 0, str(path)), None, str(path), notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind="dicom", spacing=dicom_spacing(ds),
                       modality=_modality(ds), num_slices=n, slice_index=z, channel_names=names,
                       source=str(folder), notes=tuple(notes))
