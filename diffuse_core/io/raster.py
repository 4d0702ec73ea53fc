"""PNG, JPEG and TIFF pictures -> one grey slice (1, H, W) float32.

The pixel grid is taken as already in display orientation (JPEG EXIF rotation is applied). A brain slice is grey:
RGB(A) pictures whose channels agree become their channel mean, true colour becomes luminance and a note says so
(:func:`diffuse_core.io.loaded.colour_to_grey`). 16-bit colour PNGs are read with OpenCV (Pillow truncates them to
8 bits); a multi-page TIFF is a stack whose page is the slice index; TIFFs Pillow cannot decode go to tifffile.
Pictures carry no spacing: (1.0, 1.0). The size is read from the header (PNG IHDR, JPEG SOF, TIFF IFDs) and checked
against :func:`~diffuse_core.io.loaded.check_pixels` before any pixel is decoded.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import (LoadedImage, TooLargeError, check_pixels, colour_to_grey, pick_slice,
                                    to_float32)

__all__ = ["load_picture", "picture_size", "picture_to_slice"]

PNG_BIT_DEPTH_OFFSET = 24     # IHDR: bit depth at byte 24, colour type at byte 25 of the file
PNG_COLOUR_RGB, PNG_COLOUR_RGBA = 2, 6
PNG_SIZE_OFFSET = 16          # IHDR: width then height, big-endian uint32, at bytes 16..24 of the file
# JPEG start-of-frame markers (baseline, progressive, lossless, ...): every 0xC0..0xCF but DHT, JPG and DAC
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


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


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the first start-of-frame segment, walking the marker segments; None if not found."""
    with open(path, "rb") as f:
        f.seek(2)                                   # after SOI (FF D8)
        while True:
            b = f.read(2)
            if len(b) < 2 or b[0] != 0xFF:
                return None
            marker = b[1]
            while marker == 0xFF:                   # fill bytes
                nxt = f.read(1)
                if not nxt:
                    return None
                marker = nxt[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
                continue
            if marker in (0xD9, 0xDA):               # end of image / start of scan before any frame header
                return None
            seg = f.read(2)
            if len(seg) < 2:
                return None
            length = struct.unpack(">H", seg)[0]
            if marker in JPEG_SOF_MARKERS:
                frame = f.read(5)
                if len(frame) < 5:
                    return None
                _, h, w = struct.unpack(">BHH", frame)
                return int(h), int(w)
            f.seek(max(0, length - 2), 1)


def _tiff_size(path: Path) -> tuple[int, int, int, int] | None:
    """(height, width, pages, samples) of a TIFF's first series, from its IFDs (no pixel read); None when tifffile
    cannot parse them (Pillow, which checks the size on opening, gets to try)."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            shape, axes = tuple(int(v) for v in series.shape), series.axes
    except Exception:
        return None
    dims = dict(zip(axes, shape))
    h, w = dims.get("Y", 1), dims.get("X", 1)
    samples = dims.get("S", 1)
    rest = int(np.prod(shape, dtype=np.int64)) // max(1, h * w * samples)
    return h, w, rest, samples


def picture_size(path: Path, kind: str) -> tuple[int, int, int, int] | None:
    """(height, width, pages, samples) as a PNG / JPEG / TIFF header declares them, before decoding; None when
    the header cannot be read (the decoder then says what is wrong)."""
    if kind == "png":
        with open(path, "rb") as f:
            head = f.read(PNG_SIZE_OFFSET + 8)
        if len(head) < PNG_SIZE_OFFSET + 8:
            return None
        w, h = struct.unpack(">II", head[PNG_SIZE_OFFSET:PNG_SIZE_OFFSET + 8])
        return int(h), int(w), 1, 1
    if kind == "jpeg":
        hw = _jpeg_size(path)
        return None if hw is None else (hw[0], hw[1], 1, 1)
    return _tiff_size(path) if kind == "tiff" else None


def _read_with_pillow(path: Path, kind: str, slice_index) -> tuple[np.ndarray, int, int]:
    """Pixels (H, W[, S]) of one frame, the number of frames and the frame taken."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        n_frames = int(getattr(im, "n_frames", 1) or 1) if kind == "tiff" else 1
        check_pixels(str(path), im.height, im.width, n_frames)
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
    size = picture_size(path, kind)
    if size is not None:
        h, w, pages, samples = size
        check_pixels(source, h, w, pages, samples)
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
            if isinstance(exc, TooLargeError) or (isinstance(exc, ValueError) and "slice index" in str(exc)):
                raise
            if isinstance(exc, Image.DecompressionBombError):  # a header the size readers above could not parse
                raise TooLargeError(f"{path} declares too many pixels to decode safely ({exc}): crop or "
                                    f"downsample it first") from None
            if kind != "tiff":
                raise ValueError(f"{path} is a damaged or unsupported {kind.upper()} image "
                                 f"({type(exc).__name__}: {exc}): export it again") from None
            arr = None
        if arr is None or (kind == "tiff" and arr.dtype == object):  # TIFF Pillow cannot read: tifffile
            arr, n, z = _read_with_tifffile(path, slice_index)
    data = picture_to_slice(np.asarray(arr), source, notes)
    return LoadedImage(data=np.ascontiguousarray(data), kind=kind, spacing=(1.0, 1.0), modality=None,
                       num_slices=n, slice_index=z, channel_names=("grey",), source=source, notes=tuple(notes))
