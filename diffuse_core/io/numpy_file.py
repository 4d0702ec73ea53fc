"""NumPy arrays (``.npy`` files or in-memory arrays) -> one slice.

``(H, W)`` is one slice. ``(C, H, W)`` with ``C <= 4`` is one slice with C channels. Any other 3-D shape is a
volume ``(H, W, Z)`` whose LAST axis is the slice axis (pass ``slice_index``). ``(C, H, W, Z)`` with ``C <= 4`` is a
multi-channel volume. An ``(H, W, 3)`` RGB array therefore reads as a 3-slice volume: pass
``np.moveaxis(rgb, -1, 0)`` for channels first. The array is taken as already in display orientation; it carries no
spacing: (1.0, 1.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse_core.io.loaded import LoadedImage, describe_source, pick_slice, to_float32

__all__ = ["MAX_ARRAY_CHANNELS", "array_to_image", "load_npy"]

MAX_ARRAY_CHANNELS = 4        # a leading axis this short holds channels, a longer one is part of a volume


def array_to_image(arr: np.ndarray, slice_index, source: str, kind: str = "numpy") -> LoadedImage:
    """One slice of an array laid out as in the module docstring; values unchecked."""
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


def load_npy(path: Path, slice_index) -> LoadedImage:
    """One slice of a ``.npy`` file (pickled objects are refused); values unchecked."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} holds Python objects, not a numeric array ({exc}): save plain numbers with "
                         f"np.save") from None
    except Exception as exc:
        raise ValueError(f"{path} is a truncated or corrupted .npy file ({type(exc).__name__}: {exc}): save it "
                         f"again") from None
    return array_to_image(np.asarray(arr), slice_index, str(path))
