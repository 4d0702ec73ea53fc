"""PNG, JPEG and TIFF pictures -> one grey slice (1, H, W) float32.

The pixel grid is taken as already in display orientation (JPEG EXIF rotation is applied). A brain slice is grey:
RGB(A) pictures whose channels agree become their channel mean, true colour becomes luminance and a note says so
(:func:`diffuse_core.io.loaded.colour_to_grey`). 16-bit colour PNGs are read with OpenCV (Pillow truncates them to
8 bits); a multi-page TIFF is a stack whose page is the slice index; TIFFs Pillow cannot decode go to tifffile.
Pictures carry no spacing: (1.0, 1.0).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import LoadedImage, colour_to_grey, pick_slice, to_float32

__all__ = ["load_picture", "picture_to_slice"]

PNG_BIT_DEPTH_OFFSET = 24     # IHDR: bit depth at byte 24, colour type at byte 25 of the file
PNG_COLOUR_RGB, PNG_COLOUR_RGBA = 2, 6


def _full_scale(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "iu" else 1.0


def picture_to_slice(arr: np.ndarray, source: str, notes: list[str]) -> np.ndarray:
    """(H, W) or (H, W, S) picture array -> (1, H, W) float32; a colour conversion appends to ``notes``."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        return to_float32(arr, source)[None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        full = _full_scale(arr.dtype) if arr.dtype.kind in "iu" else float(np.nanmax(np.abs(arr)) or 1.0)
        grey, note = colour_to_grey(to_float32(arr, source), full)
        if note:
            notes.append(note)
        return grey[None]
    raise ValueError(f"{source}: unexpected picture shape {arr.shape}: expected a grey or RGB(A) picture")


def _png_header(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(PNG_BIT_DEPTH_OFFSET + 2)
    if len(head) < PNG_BIT_DEPTH_OFFSET + 2:
        return 8, 0
    return head[PNG_BIT_DEPTH_OFFSET], head[PNG_BIT_DEPTH_OFFSET + 1]  # bit depth, colour type


def _read_with_pillow(path: Path, kind: str, slice_index) -> tuple[np.ndarray, int, int]:
    """Pixels (H, W[, S]) of one frame, the number of frames and the frame taken."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        n_frames = int(getattr(im, "n_frames", 1) or 1) if kind == "tiff" else 1
        z = pick_slice(n_frames, slice_index, str(path))
        if n_frames > 1:
            im.seek(z)
        if kind == "jpeg":
            im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("P", "PA"):
            im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "1":
            im = im.convert("L")
        arr = np.array(im)
    return arr, n_frames, z


def _read_with_tifffile(path: Path, slice_index) -> tuple[np.ndarray, int, int]:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            arr = series.asarray()
            axes = series.axes
    except Exception as exc:
        raise ValueError(f"{path} is a damaged or unsupported TIFF image ({type(exc).__name__}: {exc}): "
                         f"export it again") from None
    arr = np.squeeze(arr) if arr.ndim > 2 and 1 in arr.shape[:-2] else arr
    has_samples = "S" in axes and arr.ndim >= 3 and arr.shape[-1] in (1, 2, 3, 4)
    plane_dims = 3 if has_samples else 2
    if arr.ndim == plane_dims:
        return arr, 1, pick_slice(1, slice_index, str(path))
    if arr.ndim == plane_dims + 1:
        n = int(arr.shape[0])
        z = pick_slice(n, slice_index, str(path))
        return arr[z], n, z
    raise ValueError(f"{path}: TIFF with axes {axes} and shape {arr.shape} is not a 2-D picture or a stack of "
                     f"pages")


def load_picture(path: Path, kind: str, slice_index, max_bytes: int) -> LoadedImage:
    """One grey slice of a ``kind`` ("png" | "jpeg" | "tiff") picture; values unchecked."""
    from PIL import Image, UnidentifiedImageError

    source = str(path)
    notes: list[str] = []
    arr = None
    if kind == "png":
        depth, ctype = _png_header(path)
        if depth == 16 and ctype in (PNG_COLOUR_RGB, PNG_COLOUR_RGBA):  # Pillow truncates to 8 bits: use OpenCV
            import cv2

            n, z = 1, pick_slice(1, slice_index, source)
            arr = cv2.imread(source, cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError(f"{path} is a damaged PNG image: export it again")
            arr = np.ascontiguousarray(arr[..., [2, 1, 0, 3]] if arr.shape[-1] == 4 else arr[..., ::-1])
    if arr is None:
        try:
            arr, n, z = _read_with_pillow(path, kind, slice_index)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, EOFError,
                struct.error, ValueError) as exc:
            if isinstance(exc, ValueError) and "slice index" in str(exc):
                raise
            if kind != "tiff":
                raise ValueError(f"{path} is a damaged or unsupported {kind.upper()} image "
                                 f"({type(exc).__name__}: {exc}): export it again") from None
            arr = None
        if arr is None or (kind == "tiff" and arr.dtype == object):  # TIFF Pillow cannot read: tifffile
            arr, n, z = _read_with_tifffile(path, slice_index)
    data = picture_to_slice(np.asarray(arr), source, notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind=kind, spacing=(1.0, 1.0), modality=None,
                       num_slices=n, slice_index=z, channel_names=("grey",), source=source, notes=tuple(notes))
