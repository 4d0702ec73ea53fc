"""Writing a Dif-fuse result to disk: PNG views, a NIfTI counterfactual and a JSON summary.

Images are (C, H, W) in [-1, 1]; views show the first channel (FLAIR in a multi-modal stack). Heat maps use the
perceptually uniform "inferno" colour map. Every file is written to a temporary name and renamed, so an interrupted
run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from diffuse_core.io.orientation import display_nifti, nifti_gz_bytes

if TYPE_CHECKING:  # the writer reads a result's fields; it does not run the pipeline
    from diffuse_core.io.full_resolution import FullResolution
    from diffuse_core.pipeline import CounterfactualResult

LESION_OUTLINE_RGB = (60, 220, 60)   # ground truth: green
MASK_OUTLINE_RGB = (0, 200, 255)     # Dif-fuse mask: cyan


def to_uint8(image2d: np.ndarray) -> np.ndarray:
    """[-1, 1] -> 0..255 grey."""
    return np.clip((np.asarray(image2d, np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def heat_map(values: np.ndarray, vmax: float | None = None, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """A (H, W) map of non-negative values as an RGB heat map (uint8); zero stays black, ``vmax`` is white-hot."""
    v = np.asarray(values, np.float32)
    top = float(vmax if vmax is not None else (v.max() if v.size and v.max() > 0 else 1.0))
    scaled = np.multiply(v, np.float32(255.0 / max(top, 1e-8)))      # one float plane, scaled and clipped in place
    np.clip(scaled, 0, 255, out=scaled)
    rgb = cv2.cvtColor(cv2.applyColorMap(scaled.astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    if brain_mask is not None:
        rgb *= (np.asarray(brain_mask) > 0)[..., None]                  # a multiply, not a boolean gather (16 MP)
    return rgb


def outline(rgb: np.ndarray, mask: np.ndarray, color_rgb: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """Draw the contour of a binary mask onto an RGB image (in place, returned)."""
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, color_rgb, thickness)
    return rgb


def overlay(image2d: np.ndarray, anomaly: np.ndarray, alpha: float = 0.6, mask: np.ndarray | None = None,
            ground_truth: np.ndarray | None = None, vmax: float | None = None, thickness: int = 1) -> np.ndarray:
    """The slice in grey with the anomaly heat map blended on top (weight ``alpha`` where the map is non-zero),
    the Dif-fuse mask outlined in cyan and the ground truth, if any, in green."""
    heat = heat_map(anomaly, vmax)
    weight = np.multiply(np.asarray(anomaly, np.float32), np.float32(1.0 / max(float(vmax or anomaly.max() or 1.0),
                                                                             1e-8)))
    np.clip(weight, 0, 1, out=weight)
    weight *= np.float32(alpha)
    grey = cv2.cvtColor(to_uint8(image2d), cv2.COLOR_GRAY2RGB)
    # grey x (1 - weight) + heat x weight per pixel, in one pass of OpenCV's blend (a 16 MP slice: issue 35)
    out = cv2.blendLinear(heat, grey, weight, np.float32(1.0) - weight)
    if mask is not None:
        outline(out, mask, MASK_OUTLINE_RGB, thickness)
    if ground_truth is not None:
        outline(out, ground_truth, LESION_OUTLINE_RGB, thickness)
    return out


def _write_png(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    a = np.asarray(array)
    ok = cv2.imwrite(str(tmp), cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a)
    if not ok:
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)


def _write_nifti(path: Path, array_chw: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0),
                 affine: np.ndarray | None = None) -> None:
    """A display-oriented (C, H, W) slice as a canonical NIfTI (see :func:`~diffuse_core.io.orientation.display_nifti`)
    with ``affine`` (the input's slice affine) when given, else a ``(row, col)`` spacing in mm."""
    img = display_nifti(np.asarray(array_chw, np.float32), spacing, affine)
    tmp = path.with_name(path.name.replace(".nii.gz", ".tmp.nii.gz"))
    tmp.write_bytes(nifti_gz_bytes(img, compresslevel=1))   # a result file: fast over small (16 MP: 4x)
    os.replace(tmp, path)


def write_result(result: CounterfactualResult, out_dir: str | Path, extra: dict | None = None,
                 ground_truth: np.ndarray | None = None, original_counterfactual: np.ndarray | None = None,
                 spacing: tuple[float, float] = (1.0, 1.0), affine: np.ndarray | None = None,
                 full: FullResolution | None = None) -> dict:
    """Write counterfactual.png, saliency.png, mask.png, anomaly.png, overlay.png, counterfactual.nii.gz and
    result.json into ``out_dir``; return the JSON summary.

    ``original_counterfactual`` is the counterfactual mapped back to the input's grid (for the NIfTI); without it
    the model-grid counterfactual is written. The NIfTI carries ``affine`` (the input's 4x4 canonical slice affine
    in mm, e.g. :meth:`LoadedImage.slice_affine <diffuse_core.io.loaded.LoadedImage.slice_affine>`) when it is at
    the input's size, else the input's ``(row, col)`` pixel ``spacing`` in mm.

    ``full`` (:class:`~diffuse_core.io.full_resolution.FullResolution`) writes every view and the NIfTI at the
    input's size (``ground_truth`` then on that grid too); without it the views are the model grid's.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if full is not None:
        image, cf, ano, mask, brain = full.image, full.counterfactual, full.anomaly, full.mask, full.brain
        sal = full.saliency
        nifti, at_input = full.counterfactual, True
    else:
        image, cf, ano, mask, brain = (result.image, result.counterfactual, result.anomaly, result.mask,
                                       result.brain_mask)
        sal = result.saliency
        nifti = original_counterfactual if original_counterfactual is not None else result.counterfactual
        at_input = original_counterfactual is not None
    vmax = max(float(ano.max()), 1e-3)
    thick = max(1, round(max(ano.shape) / 256))           # outlines stay visible on a 512 or 1024 view
    _write_png(out / "counterfactual.png", to_uint8(cf[0]))
    sal = sal if sal is not None else mask.astype(np.float32)
    _write_png(out / "saliency.png", heat_map(sal, brain_mask=brain))
    _write_png(out / "mask.png", (mask > 0).astype(np.uint8) * 255)
    _write_png(out / "anomaly.png", heat_map(ano, vmax))
    _write_png(out / "overlay.png", overlay(image[0], ano, mask=mask, ground_truth=ground_truth, vmax=vmax,
                                            thickness=thick))
    _write_nifti(out / "counterfactual.nii.gz", nifti, spacing, affine if at_input else None)
    summary = {**result.summary(), **(extra or {})}
    write_summary(summary, out)
    return summary


def write_summary(summary: dict, out_dir: str | Path) -> Path:
    """``result.json`` in ``out_dir``, written atomically (a temporary name, then renamed)."""
    path = Path(out_dir) / "result.json"
    tmp = path.with_name("result.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=json_default))
    os.replace(tmp, path)
    return path


def json_default(o):
    """``json.dump(..., default=json_default)``: numpy scalars and arrays, and paths, as plain JSON values."""
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
