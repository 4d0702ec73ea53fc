"""BraTS-layout case folders: one NIfTI per modality, a label file and optionally a brain mask.

:func:`load_brats_case` reads the whole case into canonical RAS volumes (:class:`BratsCase`);
:meth:`BratsCase.slice` gives display-oriented slices exactly as :func:`diffuse_core.io.image.load_image` shows them,
and :meth:`BratsCase.slice_affine` the affine of a slice, so exports land where the input was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import DEFAULT_MAX_BYTES, pick_slice
from diffuse_core.io.nifti import read_canonical_volume
from diffuse_core.io.orientation import affine_of_slice, canonical_to_display

__all__ = [
    "BRAINMASK_PATTERN",
    "LABEL_PATTERN",
    "MODALITY_ALIASES",
    "MODALITY_PATTERNS",
    "BratsCase",
    "load_brats_case",
]

MODALITY_PATTERNS = {
    # BraTS 2023 names native T1 "t1n", contrast T1 "t1c", FLAIR "t2f" and T2 "t2w"; earlier years flair/t1/t1ce/t2
    "flair": r"flair|(?<![a-z0-9])t2f(?![a-z0-9])",
    "t1c": r"(?<![a-z0-9])t1[-_]?(?:c|ce|gd|post)(?![a-z0-9])",
    "t1": r"(?<![a-z0-9])t1[nw]?(?![a-z0-9])",
    "t2": r"(?<![a-z0-9])t2w?(?![a-z0-9])",
}
MODALITY_ALIASES = {"flair": "flair", "t2f": "flair", "t2-flair": "flair", "t1": "t1", "t1n": "t1", "t1w": "t1",
                    "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t1-gd": "t1c", "t1post": "t1c", "t2": "t2",
                    "t2w": "t2"}
LABEL_PATTERN = r"(?<![a-z0-9])(?:seg|segmentation|label|labels|otmulticlass|ot|gt|groundtruth)(?![a-z0-9])"
BRAINMASK_PATTERN = r"brain[-_]?mask|(?<![a-z0-9])mask(?![a-z0-9])"
AFFINE_TOLERANCE_MM = 1e-3    # affines closer than this count as one grid


def _stem(p: Path) -> str:
    name = p.name.lower()
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


@dataclass
class BratsCase:
    """A BraTS-layout case: aligned modality volumes, labels and a brain mask, all in canonical RAS (X, Y, Z).

    ``slice(z)`` returns display-oriented (radiological, like :func:`~diffuse_core.io.image.load_image`) 2-D arrays.
    """

    folder: str
    modalities: tuple[str, ...]
    volumes: np.ndarray              # (C, X, Y, Z) float32 raw, canonical RAS
    labels: np.ndarray | None        # (X, Y, Z) uint8 label classes, canonical RAS; None without a label file
    brain: np.ndarray                # (X, Y, Z) uint8 {0, 1}
    affine: np.ndarray               # 4x4 canonical RAS volume affine (mm)
    spacing: tuple[float, float]     # (row, col) in mm of a displayed axial slice
    files: dict[str, str] = field(default_factory=dict)
    slice_index: int | None = None   # default slice for slice() when given to load_brats_case

    @property
    def num_slices(self) -> int:
        return int(self.volumes.shape[3])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) canonical volume shape."""
        return tuple(int(s) for s in self.volumes.shape[1:])  # type: ignore[return-value]

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def slice(self, z: int | None = None, apply_brain_mask: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (C, H, W) float32 raw, whole-tumour mask (H, W) uint8 = label > 0, brain mask (H, W) uint8).

        With ``apply_brain_mask`` the image is multiplied by the brain mask (background 0), which BraTS data
        z-scored inside the brain with a constant negative background needs. Without labels the tumour mask is
        all zeros (see :attr:`has_labels`).
        """
        z = pick_slice(self.num_slices, self.slice_index if z is None else z, self.folder)
        brain = canonical_to_display(self.brain[:, :, z])[0].astype(np.uint8)
        image = canonical_to_display(np.moveaxis(self.volumes[:, :, :, z], 0, -1)).astype(np.float32)
        if apply_brain_mask:
            image = image * brain[None].astype(np.float32)
        if self.labels is None:
            tumour = np.zeros_like(brain)
        else:
            tumour = (canonical_to_display(self.labels[:, :, z])[0] > 0).astype(np.uint8)
        return np.ascontiguousarray(image), np.ascontiguousarray(tumour), np.ascontiguousarray(brain)

    def slice_affine(self, z: int | None = None) -> np.ndarray:
        """4x4 canonical RAS affine (mm) of axial slice ``z`` (default :attr:`slice_index`), for writing a slice of
        this case back with :func:`diffuse_core.io.orientation.display_nifti`."""
        z = pick_slice(self.num_slices, self.slice_index if z is None else z, self.folder)
        return affine_of_slice(self.affine, z)

    def label_slice(self, z: int) -> np.ndarray:
        """The label classes (H, W) uint8 of slice z (0 = background), display-oriented."""
        if self.labels is None:
            raise ValueError(f"{self.folder} has no label file")
        z = pick_slice(self.num_slices, z, self.folder)
        return np.ascontiguousarray(canonical_to_display(self.labels[:, :, z])[0]).astype(np.uint8)

    def tumour_slices(self) -> list[int]:
        """Axial slices z (ascending) holding any tumour label (> 0)."""
        if self.labels is None:
            raise ValueError(f"{self.folder} has no label file (seg / OTMultiClass / label): no tumour slices known")
        return [int(z) for z in np.nonzero((self.labels > 0).any(axis=(0, 1)))[0]]

    def brain_slices(self, min_fraction: float = 0.0) -> list[int]:
        """Axial slices whose brain mask covers more than ``min_fraction`` of the slice."""
        frac = self.brain.mean(axis=(0, 1))
        return [int(z) for z in np.nonzero(frac > min_fraction)[0]]


def _canon_modality(name: str) -> str:
    key = str(name).lower().strip()
    if key not in MODALITY_ALIASES:
        raise ValueError(f"unknown modality {name!r}: use flair, t1, t1c (t1ce) or t2")
    return MODALITY_ALIASES[key]


def load_brats_case(folder, slice_index: int | None = None, modalities=None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> BratsCase:
    """Read a BraTS-layout case folder: one NIfTI per modality, a label file and optionally a brain mask.

    Files are matched by case-insensitive name patterns (:data:`MODALITY_PATTERNS`: ``flair``/``t2f``,
    ``t1c``/``t1ce``/``t1gd``, ``t1``/``t1n`` -- never matching ``t1c``/``t1ce`` --, ``t2``/``t2w``; labels
    ``seg``/``OTMultiClass``/``label``; brain mask ``brainmask``/``mask``). ``modalities`` (e.g. ``("flair",)``)
    sets which channels and in which order; by default every modality found, in the order flair, t1, t1c, t2.
    A requested modality that is missing, or two files matching one modality, give a ``ValueError`` listing what
    was found. Volumes must share one grid. Without a brain-mask file the brain is where any modality differs from
    its value at the volume's corner (the background). ``slice_index`` becomes the default of
    :meth:`BratsCase.slice`. The case's spacing and affine are those of the first modality's NIfTI header.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: load_brats_case expects a case folder of NIfTI files")
    niftis = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz")))
    if not niftis:
        raise ValueError(f"no NIfTI files (.nii, .nii.gz) in {root}: expected one file per modality and a label "
                         f"file")
    label_files = [p for p in niftis if re.search(LABEL_PATTERN, _stem(p))]
    mask_files = [p for p in niftis if p not in label_files and re.search(BRAINMASK_PATTERN, _stem(p))]
    found: dict[str, list[Path]] = {}
    for p in niftis:
        if p in label_files or p in mask_files:
            continue
        for mod, pat in MODALITY_PATTERNS.items():
            if re.search(pat, _stem(p)):
                found.setdefault(mod, []).append(p)
                break

    def listing() -> str:
        parts = [f"{m}: {', '.join(q.name for q in v)}" for m, v in found.items()]
        parts += [f"label: {', '.join(q.name for q in label_files)}"] if label_files else []
        parts += [f"brain mask: {', '.join(q.name for q in mask_files)}"] if mask_files else []
        return "; ".join(parts) or "nothing recognised"

    if modalities is None:
        wanted = [m for m in ("flair", "t1", "t1c", "t2") if m in found]
        if not wanted:
            raise ValueError(f"no modality file recognised in {root} (files: "
                             f"{', '.join(p.name for p in niftis)}): names must contain flair, t1, t1c/t1ce or t2")
    else:
        if isinstance(modalities, str):
            modalities = (modalities,)
        wanted = [_canon_modality(m) for m in modalities]
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"modalities {tuple(modalities)} name one modality twice")
        missing = [m for m in wanted if m not in found]
        if missing:
            raise ValueError(f"{root} has no {', '.join(missing)} file; found {listing()}")
    for m in wanted:
        if len(found[m]) > 1:
            raise ValueError(f"{root}: several files match {m} ({', '.join(p.name for p in found[m])}): keep one")
    if len(label_files) > 1:
        raise ValueError(f"{root}: several label files ({', '.join(p.name for p in label_files)}): keep one")
    if len(mask_files) > 1:
        raise ValueError(f"{root}: several brain-mask files ({', '.join(p.name for p in mask_files)}): keep one")

    vols, affine, spacing, files = [], None, (1.0, 1.0), {}
    for m in wanted:
        vol, aff, sp = read_canonical_volume(found[m][0], max_bytes)
        if vols and vol.shape != vols[0].shape:
            raise ValueError(f"{found[m][0].name} has shape {vol.shape}, {found[wanted[0]][0].name} has "
                             f"{vols[0].shape}: the modalities must share one grid (register/resample them)")
        if affine is not None and not np.allclose(aff, affine, atol=AFFINE_TOLERANCE_MM):
            raise ValueError(f"{found[m][0].name} and {found[wanted[0]][0].name} have different affines: "
                             f"the modalities must share one grid (register/resample them)")
        if not np.isfinite(vol).all():
            raise ValueError(f"{found[m][0]} holds {int((~np.isfinite(vol)).sum())} NaN/inf values")
        vols.append(vol)
        affine, spacing = (aff, sp) if affine is None else (affine, spacing)
        files[m] = str(found[m][0])
    volumes = np.stack(vols)

    def aux(path: Path, what: str) -> np.ndarray:
        vol, aff, _ = read_canonical_volume(path, max_bytes)
        if vol.shape != volumes.shape[1:]:
            raise ValueError(f"the {what} {path.name} has shape {vol.shape}, the images {volumes.shape[1:]}")
        if not np.allclose(aff, affine, atol=AFFINE_TOLERANCE_MM):
            raise ValueError(f"the {what} {path.name} and the images have different affines")
        return np.nan_to_num(vol)

    labels = None
    if label_files:
        labels = np.rint(aux(label_files[0], "label file")).clip(0, 255).astype(np.uint8)
        files["label"] = str(label_files[0])
    if mask_files:
        brain = (aux(mask_files[0], "brain mask") > 0.5).astype(np.uint8)
        files["brain_mask"] = str(mask_files[0])
    else:
        corner = volumes[:, :1, :1, :1]
        brain = (volumes != corner).any(axis=0).astype(np.uint8)
    case = BratsCase(folder=str(root), modalities=tuple(wanted), volumes=volumes, labels=labels, brain=brain,
                     affine=affine, spacing=spacing, files=files)
    if slice_index is not None:
        case.slice_index = pick_slice(case.num_slices, slice_index, str(root))
    return case
