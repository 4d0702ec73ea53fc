"""SynthBrain on disk: NIfTI images and masks with their true pixel spacing, PNG previews, split folders.

A slice is written through :mod:`diffuse_core.io.orientation` in canonical RAS orientation with an affine of
``FOV_MM / size`` mm per pixel (1.72 mm at 128), so :func:`diffuse_core.io.image.load_image` shows it exactly as
generated (anterior at the top, the patient's left on the image right) and reports its true spacing. Same arguments,
byte-identical files (gzip without a timestamp).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import cv2
import numpy as np

from diffuse_core.data.synthbrain.dataset import (SEED_FIELD, SPLITS, SynthSlice, check_size, generate_slice,
                                                  sample_seed)
from diffuse_core.data.synthbrain.render import preset_modalities
from diffuse_core.io.orientation import display_nifti, nifti_gz_bytes, read_display_slice

INDEX_COLUMNS = ("id", "image", "mask", "modality", "lesion_type", "healthy", "seed", "spacing_mm")
_OUTLINE = (255, 70, 40)


# -------------------------------------------------------------------------------------------------------- previews
def to_uint8(image2d: np.ndarray) -> np.ndarray:
    """Map an image in [-1, 1] to uint8 0..255 (values outside are clipped)."""
    a = np.asarray(image2d, dtype=np.float32)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def preview_tile(s: SynthSlice, label: str | None = None, outline: bool = True) -> np.ndarray:
    """RGB uint8 tile: the channels side by side, the lesion outlined."""
    tiles = []
    m = s.lesion_mask.astype(np.uint8)
    edge = (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0 if m.any() and outline else np.zeros(m.shape, bool)
    for ch in s.image:
        g = to_uint8(ch)
        rgb = np.repeat(g[..., None], 3, axis=-1)
        rgb[edge] = _OUTLINE
        tiles.append(rgb)
    tile = np.concatenate(tiles, axis=1)
    if label:
        from PIL import Image, ImageDraw

        im = Image.fromarray(tile)
        ImageDraw.Draw(im).text((2, 1), label, fill=(255, 255, 90))
        tile = np.asarray(im)
    return tile


def render_grid(slices: list[SynthSlice], path, ncols: int = 6, labels: bool = True, outline=True) -> Path:
    """PNG grid of ``slices`` (channels side by side, lesion outlined, a short caption each); returns the path.

    ``outline``: draw lesion outlines, one bool for all slices or one per slice.
    """
    from PIL import Image

    if not slices:
        raise ValueError("render_grid needs at least one slice")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    caps = []
    for s in slices:
        cap = "+".join(s.modalities) + (" healthy" if s.lesion_type == "none" else f" {s.lesion_type} {s.lesion_size}")
        caps.append(cap if labels else None)
    outlines = [bool(outline)] * len(slices) if isinstance(outline, (bool, int)) else [bool(o) for o in outline]
    if len(outlines) != len(slices):
        raise ValueError(f"outline has {len(outlines)} entries for {len(slices)} slices")
    tiles = [preview_tile(s, c, o) for s, c, o in zip(slices, caps, outlines)]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    pad = 2
    grid = np.zeros((nrows * (h + pad) - pad, ncols * (w + pad) - pad, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + t.shape[0], c * (w + pad):c * (w + pad) + t.shape[1]] = t
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, optimize=True)
    return path


def pairs_grid(split: str, path, preset: str = "flair", seed: int = 0, n_pairs: int = 6, size: int = 128,
               ncols: int = 4) -> Path:
    """PNG of ``n_pairs`` SynthBrain slices of a split (the seeds of its indices 0, 1, ..., as ``write_split`` uses
    them, each drawn with a lesion), each beside its healthy counterpart (same seed: same level, anatomy and noise, no lesion), the lesion outlined: what the
    generator draws, as ``diffuse-studio synth --grid`` shows it. Returns the path."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    if ncols < 2 or ncols % 2:
        raise ValueError(f"ncols must be even (a pair per two columns), got {ncols}")
    mods, size = preset_modalities(preset), check_size(size)
    tiles: list[SynthSlice] = []
    outlines: list[bool] = []
    i = 0
    while len(tiles) < 2 * n_pairs:
        s = generate_slice(sample_seed(split, int(seed), i), mods, size, healthy=False)
        tiles += [s, generate_slice(s.seed, mods, size, healthy=True, lesion_type=s.lesion_type)]
        outlines += [True, False]
        i += 1
    return render_grid(tiles, path, ncols=ncols, outline=outlines)


# ----------------------------------------------------------------------------------------------------------- NIfTI
def read_nifti_slice(path) -> np.ndarray:
    """Read a slice written by :func:`save_case` back in display orientation: (H, W) or (C, H, W).

    Its spacing is in the header: :func:`diffuse_core.io.orientation.read_display_slice` returns both."""
    import nibabel as nib

    try:
        data, _spacing = read_display_slice(nib.load(str(path)))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return data


def save_case(s: SynthSlice, out_dir, case_id: str) -> dict[str, str]:
    """Write ``{id}_image.nii.gz``, ``{id}_mask.nii.gz`` (both with the slice's spacing, ``FOV_MM / size`` mm) and
    ``{id}.png`` for one slice; returns the file names (relative to ``out_dir``)."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {"image": f"{case_id}_image.nii.gz", "mask": f"{case_id}_mask.nii.gz", "preview": f"{case_id}.png"}
    img = s.image[0] if s.image.shape[0] == 1 else s.image
    (out_dir / names["image"]).write_bytes(nifti_gz_bytes(display_nifti(img.astype(np.float32), s.spacing)))
    (out_dir / names["mask"]).write_bytes(nifti_gz_bytes(display_nifti(s.lesion_mask.astype(np.uint8), s.spacing)))
    Image.fromarray(preview_tile(s)).save(out_dir / names["preview"])
    return names


def write_split(out_dir, preset: str = "flair", n: int = 100, seed: int = 0, split: str = "test", size: int = 128,
                healthy_fraction: float = 0.5) -> Path:
    """Write ``n`` slices of ``split`` to ``out_dir``: NIfTI images and masks, PNG previews and ``index.csv``.

    Same arguments, byte-identical files. ``preset``: a modality name or ``mri4`` (flair, t1, t1c, t2 stacked).
    Healthy slices are spread evenly (slice i is healthy when floor((i+1)f) > floor(i f), f = healthy_fraction).
    ``index.csv`` columns: id,image,mask,modality,lesion_type,healthy,seed,spacing_mm (paths relative to
    ``out_dir``; healthy is 1 or 0; modality is the channels joined by ``+``; spacing_mm is the side of a square pixel,
    ``FOV_MM / size``). Returns the path of ``index.csv``.
    """
    mods = preset_modalities(preset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n < SEED_FIELD:
        raise ValueError(f"n must be a positive integer (number of slices), got {n!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_FIELD:
        raise ValueError(f"seed must be an integer in [0, {SEED_FIELD}), got {seed!r}")
    size = check_size(size)
    try:
        hf = float(healthy_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"healthy_fraction must be a number in [0, 1], got {healthy_fraction!r}") from None
    if not 0.0 <= hf <= 1.0:
        raise ValueError(f"healthy_fraction must be in [0, 1], got {healthy_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(int(n)):
        s_seed = sample_seed(split, int(seed), i)
        healthy = math.floor((i + 1) * hf + 1e-9) > math.floor(i * hf + 1e-9)
        s = generate_slice(s_seed, mods, size, healthy=healthy)
        cid = f"{split}_{i:05d}"
        names = save_case(s, out, cid)
        rows.append([cid, names["image"], names["mask"], "+".join(mods), s.lesion_type, int(healthy), s_seed,
                     f"{s.spacing[1]:.6g}"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INDEX_COLUMNS)
    w.writerows(rows)
    index = out / "index.csv"
    index.write_text(buf.getvalue(), encoding="utf-8")
    return index
