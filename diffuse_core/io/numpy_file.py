"""NumPy arrays (``.npy`` files or in-memory arrays) -> one slice.

``(H, W)`` is one slice. ``(C, H, W)`` with ``C <= 4`` is one slice with C channels. Any other 3-D shape is a
volume ``(H, W, Z)`` whose LAST axis is the slice axis (pass ``slice_index``). ``(C, H, W, Z)`` with ``C <= 4`` is a
multi-channel volume. An ``(H, W, 3)`` RGB array therefore reads as a 3-slice volume: pass
``np.moveaxis(rgb, -1, 0)`` for channels first. The array is taken as already in display orientation; it carries no
spacing: (1.0, 1.0). A ``.npy`` file's shape and dtype are read from its header first
(``np.lib.format.read_array_header_*``): object arrays (pickles) and sizes over
:func:`~diffuse_core.io.loaded.check_pixels` are refused before any value is read, and only the asked slice is read
(memory-mapped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import LoadedImage, check_pixels, describe_source, pick_slice, to_float32

__all__ = ["MAX_ARRAY_CHANNELS", "array_layout", "array_to_image", "load_npy", "npy_header"]

MAX_ARRAY_CHANNELS = 4        # a leading axis this short holds channels, a longer one is part of a volume


def array_layout(shape: tuple[int, ...], source: str) -> tuple[int, int, int, int]:
    """(height, width, slices, channels) of an array shape laid out as in the module docstring; ValueError for
    other ranks."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    if len(shape) == 3 and shape[0] <= MAX_ARRAY_CHANNELS:
        return shape[1], shape[2], 1, shape[0]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2], 1
    if len(shape) == 4 and shape[0] <= MAX_ARRAY_CHANNELS:
        return shape[1], shape[2], shape[3], shape[0]
    raise ValueError(f"{describe_source(source)} has shape {shape} ({len(shape)}-D): expected (H, W), "
                     f"(C, H, W) with C <= 4, a volume (H, W, Z) or (C, H, W, Z) with C <= 4")


def array_to_image(arr: np.ndarray, slice_index, source: str, kind: str = "numpy") -> LoadedImage:
    """One slice of an array laid out as in the module docstring; values unchecked."""
    check_pixels(source, *array_layout(arr.shape, source))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        z = pick_slice(1, slice_index, source)
        data, n = arr[None], 1
    elif arr.ndim == 3 and arr.shape[0] <= MAX_ARRAY_CHANNELS:
        z = pick_slice(1, slice_index, source)
        data, n = arr, 1
    elif arr.ndim == 3:
        n = arr.shape[2]
        z = pick_slice(n, slice_index, source)
        data = arr[None, :, :, z]
    elif arr.ndim == 4 and arr.shape[0] <= MAX_ARRAY_CHANNELS:
        n = arr.shape[3]
        z = pick_slice(n, slice_index, source)
        data = arr[:, :, :, z]
    else:
        raise ValueError(f"{describe_source(source)} has shape {arr.shape} ({arr.ndim}-D): expected (H, W), "
                         f"(C, H, W) with C <= 4, a volume (H, W, Z) or (C, H, W, Z) with C <= 4")
    data = np.ascontiguousarray(to_float32(data, source))
    names = ("intensity",) if data.shape[0] == 1 else tuple(f"ch{i}" for i in range(data.shape[0]))
    return LoadedImage(data=data, kind=kind, spacing=(1.0, 1.0), modality=None, num_slices=int(n),
                       slice_index=z, channel_names=names, source=source)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset in bytes) of a ``.npy`` file from its header alone; ValueError when the header is
    damaged or the dtype holds Python objects (a pickle)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            else:
                shape, _, dtype = fmt.read_array_header_2_0(f)
            offset = f.tell()
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted .npy file (its header cannot be read: "
                         f"{type(exc).__name__}: {exc}): save it again") from None
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects (dtype {dtype}), not a numeric array: save plain numbers "
                         f"with np.save")
    return tuple(int(v) for v in shape), dtype, offset


def load_npy(path: Path, slice_index) -> LoadedImage:
    """One slice of a ``.npy`` file (pickled objects are refused, the size checked from the header); values
    unchecked."""
    shape, dtype, offset = npy_header(path)
    check_pixels(str(path), *array_layout(shape, str(path)))
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size < needed:
        raise ValueError(f"{path} is a truncated .npy file (it holds {path.stat().st_size} of the {needed} bytes "
                         f"its header declares): save it again")
    if dtype.kind not in "biuf":
        raise ValueError(f"{path} holds {dtype} values: expected numbers (integers, floats or booleans)")
    if 0 in shape:
        raise ValueError(f"{path} holds an empty array of shape {shape}: save the image itself")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted .npy file ({type(exc).__name__}: {exc}): save it "
                         f"again") from None
    loaded = array_to_image(arr, slice_index, str(path))
    loaded.data = np.array(loaded.data, dtype=np.float32, copy=True)  # own the slice, not a view on the mapping
    return loaded
