"""A whole scan on disk -> :class:`Volume`: every axial slice, display-oriented as a one-slice run shows it, with the
geometry to write results back in the input's space.

:func:`read_volume` takes a NIfTI file (3-D; a 4-D file holding several volumes is refused), a DICOM series (a
folder of its files, or a ``.zip`` of them: :mod:`.dicom_series`) or a BraTS-layout case folder (its FLAIR, brain
mask and labels: :func:`diffuse_core.io.brats.load_brats_case`). Slice ``z`` of a NIfTI volume equals
``load_image(path, z).data`` and slice ``z`` of a series equals the one-slice reader's, so a volume run and a
one-slice run of the same slice see the same pixels. The voxel and byte limits are :mod:`diffuse_core.io.loaded`'s
(issue 35), checked from headers before voxels are read. Every refusal is a one-line ``ValueError``.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import DEFAULT_MAX_BYTES, MIN_SIDE, check_decoded_bytes, check_size
from diffuse_core.volumes.grid import DicomGrid, NiftiGrid

__all__ = ["MAX_ZIP_MEMBERS", "Volume", "is_brats_folder", "read_volume", "volume_kind"]

MAX_ZIP_MEMBERS = 5000            # files in a zipped series (a series holds at most ~1000 slices)


@dataclass
class Volume:
    """A scan as display slices. ``slices`` (Z, C, H, W) float32 raw values (HU for CT DICOM), ``z = 0`` the most
    inferior (NIfTI, BraTS) or the first along the slice normal (DICOM)."""

    slices: np.ndarray
    kind: str                                   # "nifti" | "dicom" | "brats"
    source: str
    spacing: tuple[float, float]                # (row, col) pixel spacing in mm
    slice_step: float | None                    # mm between slices (None when unknown)
    modality: str | None                        # DICOM Modality ("CT", "MR"), else None
    channel_names: tuple[str, ...]
    grid: NiftiGrid | DicomGrid
    brain: np.ndarray | None = None             # (Z, H, W) uint8: a given brain mask (BraTS), else None
    truth: np.ndarray | None = None             # (Z, H, W) uint8: expert labels > 0 (BraTS), else None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_slices(self) -> int:
        return int(self.slices.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, H, W)."""
        return int(self.slices.shape[0]), int(self.slices.shape[2]), int(self.slices.shape[3])

    def canonical_affine(self) -> np.ndarray | None:
        """The canonical RAS affine the one-slice reader gives a NIfTI slice (None for DICOM)."""
        return self.grid.canonical_affine() if isinstance(self.grid, NiftiGrid) else None


def is_brats_folder(path: Path) -> bool:
    """A folder of NIfTI files, one of them FLAIR (as :mod:`diffuse_core.cases` recognises a case folder)."""
    if not path.is_dir():
        return False
    names = [p.name.lower() for p in path.iterdir() if p.is_file()]
    return any(".nii" in n for n in names) and any("flair" in n for n in names)


def volume_kind(path: Path) -> str | None:
    """"brats", "dicom" (a folder or zip of DICOM files), "nifti", or None for what a volume run cannot read."""
    from diffuse_core.io.dicom import is_dicom_candidate
    from diffuse_core.io.sniff import sniff

    if path.is_dir():
        if is_brats_folder(path):
            return "brats"
        return "dicom" if any(p.is_file() and is_dicom_candidate(p) for p in path.iterdir()) else None
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        return "dicom"
    try:
        return "nifti" if sniff(path) == "nifti" else None
    except ValueError:
        return None


def read_volume(path, max_bytes: int = DEFAULT_MAX_BYTES) -> Volume:
    """Read a whole scan (see the module docstring); ``FileNotFoundError`` for a missing path."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    kind = volume_kind(path)
    if kind == "brats":
        return _read_brats(path, max_bytes)
    if kind == "nifti":
        return _read_nifti(path, max_bytes)
    if kind == "dicom":
        return _read_zip(path, max_bytes) if path.is_file() else _read_series(sorted(path.iterdir()), str(path),
                                                                              max_bytes)
    raise ValueError(f"{path}: a volume run reads a NIfTI volume, a DICOM series (a folder or a .zip of its files) or "
                     f"a BraTS case folder; for a picture or one DICOM file run it without --slices")


def _check_side(h: int, w: int, where: str) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{where} has {h}x{w} pixel slices: each side needs at least {MIN_SIDE} pixels")


def _read_nifti(path: Path, max_bytes: int) -> Volume:
    import nibabel as nib

    from diffuse_core.io.nifti import open_nifti

    check_size(path, max_bytes)
    img = open_nifti(path, max_bytes)                # voxel and byte limits from the header, truncation
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        raise ValueError(f"{path} is a 4-D file ({' x '.join(map(str, shape))}): a volume run needs one 3-D volume; "
                         f"extract one (e.g. `fslroi` or nibabel's index_img) and retry")
    if len(shape) < 3 or min(shape[:3]) == 1:
        raise ValueError(f"{path} holds a single slice ({' x '.join(map(str, shape))}): run it without --slices")
    grid = NiftiGrid.of_image(img)
    try:
        raw = img.dataobj.get_unscaled() if nib.is_proxy(img.dataobj) else np.asarray(img.dataobj)
        slope = getattr(img.dataobj, "slope", 1.0)
        inter = getattr(img.dataobj, "inter", 0.0)
    except MemoryError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted NIfTI file (reading its voxels failed: "
                         f"{type(exc).__name__}: {exc}): download or export it again") from None
    if np.asarray(raw).dtype.kind not in "biuf":
        raise ValueError(f"{path} holds {np.asarray(raw).dtype} voxels: expected numbers")
    canon = nib.orientations.apply_orientation(np.asarray(raw).reshape(grid.shape), grid.ornt)   # views, no copy
    nx, ny, nz = canon.shape
    _check_side(ny, nx, str(path))
    slices = np.empty((nz, 1, ny, nx), np.float32)
    for z in range(nz):                              # one slice at a time: the float copy never doubles the volume
        sl = canon[:, :, z]
        if slope not in (None, 1.0) or inter not in (None, 0.0):   # as nibabel scales a slice it reads
            sl = np.asarray(sl, np.float64) * (1.0 if slope is None else slope) + (0.0 if inter is None else inter)
        slices[z, 0] = sl.T[::-1, ::-1]              # canonical_to_display of one slice
    bad = int((~np.isfinite(slices)).sum())
    if bad:
        raise ValueError(f"{path} holds {bad} NaN/infinite voxels: replace them with the background value and retry")
    zooms = grid.zooms
    kz = int(np.where(grid.ornt[:, 0] == 2)[0][0])
    kx = int(np.where(grid.ornt[:, 0] == 0)[0][0])
    ky = int(np.where(grid.ornt[:, 0] == 1)[0][0])
    spacing = tuple(v if np.isfinite(v) and v > 0 else 1.0 for v in (zooms[ky], zooms[kx]))
    return Volume(slices=slices, kind="nifti", source=str(path), spacing=spacing, slice_step=float(zooms[kz]),
                  modality=None, channel_names=("intensity",), grid=grid)  # type: ignore[arg-type]


def _read_brats(path: Path, max_bytes: int) -> Volume:
    import nibabel as nib

    from diffuse_core.io.brats import load_brats_case

    case = load_brats_case(path, modalities=("flair",), max_bytes=max_bytes)
    grid = NiftiGrid.of_image(nib.load(case.files["flair"]))
    n = case.num_slices
    first = case.slice(0)
    z_shape = first[0].shape
    slices = np.empty((n, 1) + z_shape[1:], np.float32)
    brain = np.empty((n,) + z_shape[1:], np.uint8)
    truth = np.empty((n,) + z_shape[1:], np.uint8) if case.has_labels else None
    for z in range(n):
        image, tumour, b = case.slice(z)
        slices[z], brain[z] = image[:1], b
        if truth is not None:
            truth[z] = tumour
    kz = int(np.where(grid.ornt[:, 0] == 2)[0][0])
    return Volume(slices=slices, kind="brats", source=str(path), spacing=case.spacing, slice_step=grid.zooms[kz],
                  modality=None, channel_names=("flair",), grid=grid, brain=brain, truth=truth)


def _read_series(files: list[Path], where: str, max_bytes: int) -> Volume:
    from diffuse_core.volumes.dicom_series import read_dicom_series

    slices, spacing, step, modality, grid = read_dicom_series(files, where, max_bytes)
    _check_side(slices.shape[2], slices.shape[3], where)
    names = ("HU",) if (modality or "").upper() == "CT" else ("intensity",)
    return Volume(slices=slices, kind="dicom", source=where, spacing=spacing, slice_step=step, modality=modality,
                  channel_names=names, grid=grid)


def _read_zip(path: Path, max_bytes: int) -> Volume:
    """A zipped series: members are extracted flat (their own names never become paths) into a temporary folder,
    after their declared sizes were checked against the limits."""
    check_size(path, max_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise ValueError(f"{path} holds {len(members)} files: a series zip holds at most {MAX_ZIP_MEMBERS}")
            check_decoded_bytes(str(path), sum(m.file_size for m in members), "files",
                                fix="zip one series, or fewer slices, and retry")
            with tempfile.TemporaryDirectory(prefix="diffuse-series-") as tmp:
                files = []
                for i, m in enumerate(members):
                    target = Path(tmp) / f"{i:05d}.dcm"
                    with zf.open(m) as src, open(target, "wb") as dst:
                        dst.write(src.read(m.file_size + 1))
                    files.append(target)
                vol = _read_series(files, str(path), max_bytes)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is a damaged zip file ({exc}): zip the series again") from None
    return vol
