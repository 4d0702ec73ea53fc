"""Uploaded files: PNG, JPEG, TIFF, DICOM (one file, or every file of a series), NIfTI, NumPy.

:func:`upload_source` stages an upload (size-checked; a series becomes one folder), :func:`inspect_upload` says what
the controls need (slice count, channels, CT or not) and :func:`load_upload_case` puts the chosen slice on the
model's grid with :func:`diffuse_core.cases.prepare_case`. Error messages name the files the user knows, never the
server's temporary paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from diffuse_core.data import curation
from diffuse_core.studio.library import LoadedCase
from diffuse_core.studio.model_store import MODELS
from diffuse_core.studio.settings import CT_WINDOW_CHOICES, DEFAULTS, max_upload_bytes, whole_number

SERIES_PREFIX = "diffuse-series-"     # staged DICOM series: <tmp>/diffuse-series-<hash of the file paths>


def upload_paths(files) -> list[str]:
    """The local paths of an upload: None, one path, or a list of paths / gradio file objects."""
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [str(files)]
    return [str(getattr(f, "name", None) or getattr(f, "path", None) or f) for f in files]


def series_uid(path) -> str | None:
    """The SeriesInstanceUID of a DICOM file (its header only), None for anything else."""
    from diffuse_core.io.dicom import is_dicom_candidate

    p = Path(path)
    if not is_dicom_candidate(p):
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        return str(ds.SeriesInstanceUID) if "SeriesInstanceUID" in ds else None
    except Exception:
        return None


def replacing_upload(previous, current) -> list[str]:
    """What an upload box should hold after an upload: ``current`` is the box's value (the browser adds new files
    to those it held, ``previous``). The files just added replace the earlier ones, unless all of them, old and new,
    are DICOM files of one series (the user adding the files of a series in several goes)."""
    before, now = upload_paths(previous), upload_paths(current)
    added = [p for p in now if p not in set(before)]
    kept = [p for p in now if p in set(before)]
    if not added or not kept:
        return now
    uids = {series_uid(p) for p in kept + added}
    return now if len(uids) == 1 and None not in uids else added


def upload_source(files) -> str:
    """One uploaded file -> its path; several (a DICOM series) -> a folder holding copies. Checked: the number of
    files, each file's size and their total (``DEFAULTS["max_upload_files"]``, ``DEFAULTS["max_upload_mb"]``)."""
    paths = upload_paths(files)
    if not paths:
        raise ValueError("no file uploaded: upload a PNG, JPEG, TIFF, DICOM or NIfTI slice or volume")
    if len(paths) > DEFAULTS["max_upload_files"]:
        raise ValueError(f"{len(paths)} files uploaded together: at most {DEFAULTS['max_upload_files']} per request "
                         f"(one slice, one volume, or the files of one DICOM series)")
    limit = max_upload_bytes()
    total = sum(curation.check_upload_size(p, limit) for p in paths)
    if total > limit:
        raise ValueError(f"the uploaded files total {total / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit")
    if len(paths) == 1:
        return paths[0]
    digest = hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"{SERIES_PREFIX}{digest}"
    if not folder.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".series-", dir=folder.parent))
        for i, p in enumerate(paths):
            shutil.copy(p, tmp / f"{i:04d}_{Path(p).name}")
        try:
            os.rename(tmp, folder)
        except OSError:  # another request made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def is_ct(loaded) -> bool:
    """Whether a loaded slice is CT: so tagged (DICOM), or holding air in Hounsfield units."""
    from diffuse_core.io.preprocess import HU_AIR_THRESHOLD

    return (loaded.modality or "").upper() == "CT" or float(loaded.data.min()) < HU_AIR_THRESHOLD


def checked_slice(src, slice_index):
    """Slice ``slice_index`` (an int, or MIDDLE: the middle one) of the staged upload ``src``, decoded once in a
    worker that Stop reaches (:func:`diffuse_core.studio.decoding.decoded_slice`) and checked as
    :func:`~diffuse_core.io.image.load_image` checks it."""
    from diffuse_core.io.loaded import check_values
    from diffuse_core.studio.decoding import decoded_slice

    loaded = decoded_slice(src, slice_index)
    hint = (f", slice {loaded.slice_index} of {loaded.num_slices}: pick a slice through the brain"
            if loaded.num_slices > 1 else "")
    check_values(loaded.data, loaded.source, hint=hint)
    return loaded


def short_paths(err: Exception, files) -> Exception:
    """The error with the server's temporary upload paths replaced by the file names the user knows."""
    msg = str(err)
    for p in sorted(upload_paths(files), key=len, reverse=True):
        msg = msg.replace(p, Path(p).name)
    msg = msg.replace(str(Path(tempfile.gettempdir()) / SERIES_PREFIX), "series-")
    return type(err)(msg) if isinstance(err, (ValueError, FileNotFoundError)) else err


def inspect_upload(files) -> dict:
    """What the controls need to know about an upload: {"num_slices", "slice", "channels", "ct", "kind", "shape",
    "notes"}; "slice" is the middle one, read with the slice count in one decode that the preview and the run
    reuse."""
    from diffuse_core.io.loaded import MIDDLE

    try:
        src = upload_source(files)
        loaded = checked_slice(src, MIDDLE)
        n, middle = int(loaded.num_slices), int(loaded.slice_index)
    except (ValueError, FileNotFoundError) as err:
        raise short_paths(err, files) from None
    return {"num_slices": n, "slice": middle, "channels": list(loaded.channel_names), "ct": is_ct(loaded),
            "kind": loaded.kind, "shape": list(loaded.shape), "notes": list(loaded.notes)}


def load_upload_case(files, slice_index=None, channel=None, window=None, gt_file=None) -> LoadedCase:
    """The uploaded slice on the model's grid; ``channel`` picks which of several channels a 1-channel model sees;
    ``window`` is the CT preset (ignored for MRI); ``gt_file`` an optional lesion mask of the same slice grid."""
    try:
        return _load_upload_case(files, slice_index, channel, window, gt_file)
    except (ValueError, FileNotFoundError) as err:
        raise short_paths(err, upload_paths(files) + upload_paths(gt_file)) from None


def _load_upload_case(files, slice_index, channel, window, gt_file) -> LoadedCase:
    from diffuse_core.cases import prepare_case
    from diffuse_core.io.loaded import MIDDLE

    src = upload_source(files)
    size, channels = MODELS.grid()
    z = whole_number(slice_index, "slice index") if slice_index not in (None, "") else MIDDLE
    loaded = checked_slice(src, z)
    notes = []
    if loaded.data.shape[0] > 1 and channels == 1:
        names = list(loaded.channel_names)
        pick = names.index(channel) if channel in names else 0
        if channel not in (None, "") and channel not in names:
            raise ValueError(f"channel {channel!r} is not in this file (it has {', '.join(names)})")
        loaded.data = loaded.data[pick:pick + 1]
        loaded.channel_names = (names[pick],)
        notes.append(f"channel {names[pick]} used")
    ct = is_ct(loaded)
    if window not in (None, "") and ct and window not in CT_WINDOW_CHOICES + ["stroke_narrow"]:
        raise ValueError(f"unknown CT window {window!r}: choose one of {', '.join(CT_WINDOW_CHOICES)}")
    gt_paths = upload_paths(gt_file)
    gt = gt_paths[0] if gt_paths else None
    if gt is not None:
        curation.check_upload_size(gt, max_upload_bytes())
    case = prepare_case(loaded, slice_index=loaded.slice_index, size=size, channels=channels, gt=gt,
                        window=(window or DEFAULTS["window"]) if ct else None,
                        mri_reference=None if ct else MODELS.mri_reference())
    case.source = src
    paths = upload_paths(files)
    name = Path(paths[0]).name if len(paths) == 1 else f"DICOM series ({len(paths)} files)"
    where = f", slice {case.slice_index} of {case.num_slices}" if case.num_slices > 1 else ""
    key = f"upload:{src}:{case.slice_index}:{loaded.channel_names[0]}:{window if ct else ''}:{gt or ''}"
    origin = {"kind": "upload", "files": paths, "slice": case.slice_index, "channel": loaded.channel_names[0],
              "window": window if ct else None, "gt": gt}
    return LoadedCase(case=case, key=key, title=f"{name}{where} — {case.modality.upper()}",
                      notes=tuple(notes) + tuple(case.notes), origin=origin)
