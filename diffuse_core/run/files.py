"""A file on disk to a written Dif-fuse result: what ``diffuse-studio run`` does.

Load and check the file (before any model is loaded), prepare the slice as the model's card says, load the models
for the case's modality once, run :func:`diffuse_core.run.assembly.run_one`, and write every output at the input's
size (:func:`diffuse_core.io.export.write_result`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffuse_core.run.card import INTENSITY_CHOICES


def _prepared(source, slice_index, gt, window, card: dict, intensity: str):
    """The slice of ``source`` on the grid of the model whose ``card`` (:func:`diffuse_core.run.models.read_card`)
    is given, its MRI intensities prepared as that card says."""
    from diffuse_core.cases import prepare_case
    from diffuse_core.run.card import mri_reference_for

    size, channels = card.get("_grid", (128, 1))
    return prepare_case(source, slice_index, size=size, channels=channels, gt=gt, window=window,
                        mri_reference=mri_reference_for(card, intensity))


def run_file(source, out_dir, *, slice_index=None, gt=None, mask_from="acat", k: int | None = None,
             percentile: float | None = None, steps: int | None = None, seed: int = 0, variant: str = "paper",
             device="auto", precision: str = "auto", window=None, threshold: float | None = None,
             model_dir=None, saliency_dir=None, callback: Callable | None = None, intensity: str = "auto",
             solver: str | None = None) -> dict:
    """Dif-fuse on one file, written to ``out_dir`` (see :func:`diffuse_core.io.export.write_result`); returns the
    summary written beside it.

    Settings left None come from the model card (:func:`diffuse_core.run.settings.settings_for`); a ``percentile``
    asks for the paper's region rule at that percentile. ``intensity`` (:data:`INTENSITY_CHOICES`) says how MRI
    intensities are normalised. The summary's ``timings`` split the run in seconds (``saliency``, ``inversion``,
    ``sampling``, ``post``, ``total``: from the loaded slice to the written result, model and file loading
    excluded). ``callback`` sees every step item of the run."""
    import time

    from diffuse_core.cases import is_brats_folder
    from diffuse_core.io.image import load_image
    from diffuse_core.models.device import pick_device
    from diffuse_core.run.assembly import run_one
    from diffuse_core.run.models import denoiser_dir, load_run_models, read_card
    from diffuse_core.run.region import SALIENCY_CHOICES
    from diffuse_core.run.settings import check_percentile, settings_for

    if isinstance(source, (str, Path)) and not is_brats_folder(Path(source)):
        source = load_image(source, slice_index=slice_index)  # refuse a bad or oversized file before loading models
    if percentile is not None:
        check_percentile(percentile)
    if intensity not in INTENSITY_CHOICES:
        raise ValueError(f"unknown intensity {intensity!r}: choose one of {', '.join(INTENSITY_CHOICES)}")
    given = {"k": k, "steps": steps, "seed": seed, "percentile": percentile, "solver": solver, "variant": variant,
             "precision": precision, "threshold": threshold,
             "rule": "percentile" if percentile is not None else "card"}
    mri_card = read_card(denoiser_dir(None, model_dir)[0])
    settings_for(mri_card, **given)                       # wrong settings: said before any model is loaded
    case = _prepared(source, slice_index, gt, window, mri_card, intensity)
    need_saliency = isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES
    models = load_run_models(case.modality, model_dir=model_dir, saliency_dir=saliency_dir,
                             device=pick_device(device), need_saliency=need_saliency)
    grid = (models.denoiser.config.resolution, models.denoiser.config.channels)
    if grid != mri_card.get("_grid"):                     # a CT case through the CT model: its own grid
        case = _prepared(source, slice_index, gt, window, {**models.card, "_grid": grid}, intensity)
    settings = settings_for(models.card, num_train_timesteps=models.denoiser.schedule.num_train_timesteps, **given)
    start = time.perf_counter()
    outcome = run_one(case, models, settings, mask_from, callback=callback)
    walked = time.perf_counter()
    summary = write_outcome(case, outcome, out_dir, mask_from=mask_from, intensity=intensity)
    timings = dict(outcome.timings)                       # writing the files belongs to "post"
    timings["post"] += time.perf_counter() - walked
    timings["total"] = time.perf_counter() - start
    summary["timings"] = {name: round(float(s), 4) for name, s in timings.items()}
    from diffuse_core.io.export import write_summary

    write_summary(summary, Path(out_dir))
    return summary


def write_outcome(case, outcome, out_dir, *, mask_from="acat", intensity: str = "auto") -> dict:
    """A finished run of ``case`` written to ``out_dir`` at the input's size; returns the summary."""
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.core.metrics import dice, iou
    from diffuse_core.io.export import write_result
    from diffuse_core.run.card import resolve_intensity

    result, thr = outcome.result, outcome.threshold
    full = case.full_resolution(result)                 # every output at the input's size
    predicted = binarize(full.anomaly, thr)
    truth = case.truth_at_input_size
    extra = {
        "input": case.source, "slice": case.slice_index, "num_slices": case.num_slices, "modality": case.modality,
        "channels": list(case.channel_names), "spacing_mm": list(case.spacing),
        "mask_from": str(mask_from) if isinstance(mask_from, (str, Path)) else "array",
        **outcome.record(),
        "intensity": resolve_intensity(outcome.card, intensity) if case.modality == "mri" else None,
        "anomaly_pixels": int(predicted.sum()),
        "dice": None if truth is None else dice(predicted, truth),
        "iou": None if truth is None else iou(predicted, truth),
        "dice_model_grid": None if case.ground_truth is None else dice(binarize(result.anomaly, thr),
                                                                       case.ground_truth),
        "output_size": list(full.shape), "notes": list(outcome.notes),
    }
    return write_result(result, Path(out_dir), extra=extra, ground_truth=truth, spacing=case.spacing,
                        affine=case.affine, full=full)
