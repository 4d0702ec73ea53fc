"""The slice verdict calibrated on a user's own scans: ``diffuse-studio calibrate-verdict``.

The shipped FLAIR verdict's threshold was chosen on healthy SynthBrain slices; real normal slices, the inferior ones
above all, change more under the walk than SynthBrain's, so that threshold calls many of them abnormal (measured:
docs/results.md, real-data section). Chosen on real normal slices of other cases instead, the same score separates
real tumour from tumour-free slices far better (the real-data section's leave-one-case-out verdict). This module
makes that a user's step, on their own scanner's slices:

1. read DIR (a folder of normal images, an ``index.csv`` with a ``healthy`` column, or BraTS-layout cases) prepared
   as the model's card says; at most ``per_group`` normal and ``per_group`` lesion slices of each case or file,
   evenly spaced through it;
2. keep whole groups (cases, or files) apart: ``holdout`` of them (at least one) choose nothing;
3. score every slice at the model card's settings through the one assembly of a run (its peak anomaly,
   :func:`diffuse_core.core.verdict.slice_score`);
4. the threshold: the (1 - ``false_abnormal``) quantile of the peaks of the other groups' normal slices;
5. measure it on the held-out groups: the false-abnormal rate on their normal slices, and the sensitivity on their
   labelled lesion slices where DIR has some, else on SynthBrain validation lesions (a floor: real lesions are
   seldom as subtle). A sensitivity under :data:`~diffuse_core.core.verdict.MIN_SENSITIVITY` makes the app withhold
   the verdict, as for any card;
6. write OUT: a model folder (the weights copied, never the base model's folder changed) whose card holds the new
   ``verdict`` block and its record, and ``verdict_calibration.json``; the app lists it beside adapted models.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_HOLDOUT = 0.34
DEFAULT_PER_GROUP = 8
MIN_NORMAL_SLICES = 5             # normal slices outside the held-out groups that a threshold is chosen on, at least
RECORD_FILE = "verdict_calibration.json"


def spaced(indices: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``indices`` (sorted), evenly spaced through them."""
    idx = np.asarray(indices)
    if len(idx) <= n:
        return idx
    return idx[np.unique(np.round(np.linspace(0, len(idx) - 1, n)).astype(int))]


def peak_scores(denoiser, saliency_models, images: np.ndarray, seed: int = 0, batch_size: int = 8) -> np.ndarray:
    """Each slice's peak anomaly at the model card's settings, through the one assembly of a run."""
    from diffuse_core.core.brain import brain_masks
    from diffuse_core.core.verdict import slice_score
    from diffuse_core.run.assembly import run_stack, slices_of
    from diffuse_core.run.models import RunModels
    from diffuse_core.run.settings import settings_for

    imgs = np.asarray(images, np.float32)
    if not len(imgs):
        return np.zeros(0)
    card = denoiser.card or {}
    percentile = float((card.get("verdict") or {}).get("percentile", 99.5))
    models = RunModels(denoiser=denoiser, saliency=saliency_models, folder="model")
    out = dict(run_stack(slices_of(imgs, brain_masks(imgs)), models, settings_for(card, seed=seed), "acat",
                         batch_size=batch_size))
    return np.array([slice_score(out[i].result.anomaly, out[i].result.brain_mask, percentile)
                     for i in range(len(imgs))])


def calibrate_on_scans(data_dir, out_dir, base_dir=None, holdout: float = DEFAULT_HOLDOUT,
                       false_abnormal: float = 0.05, per_group: int = DEFAULT_PER_GROUP, seed: int = 0,
                       device="cpu", batch_size: int = 8,
                       on_progress: Callable[[str, float], bool | None] | None = None) -> dict:
    """Choose the verdict threshold on ``data_dir``'s normal slices, measure it on held-out groups and write the
    model folder ``out_dir``; returns the record (see the module docstring). ``on_progress(stage, fraction)`` is
    told each stage and each scored batch; where it returns True the calibration stops
    (:class:`~diffuse_core.evaluation.adapt.AdaptCancelled`) and writes nothing."""
    from diffuse_core.core.verdict import MIN_SENSITIVITY
    from diffuse_core.data.slice_folder import load_slice_folder
    from diffuse_core.evaluation.adapt import AdaptCancelled, check_new_model_folder, split_groups
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary
    from diffuse_core.models.checkpoint import atomic_write_json, read_config, update_card
    from diffuse_core.run.models import SALIENCY_BESIDE
    from diffuse_core.models.registry import model_dir_for
    from diffuse_core.run.card import mri_reference_for
    from diffuse_core.run.models import load_default_models

    def tell(stage: str, fraction: float) -> None:
        if on_progress is not None and on_progress(stage, fraction) is True:
            raise AdaptCancelled("stopped: no model was written")

    def scored(images_, stage: str, start: float, end: float) -> np.ndarray:
        """Peaks of ``images_`` a batch at a time, telling the progress between ``start`` and ``end``."""
        out = []
        for i in range(0, len(images_), batch_size):
            tell(stage, start + (end - start) * i / max(1, len(images_)))
            out.append(peak_scores(den, sal, images_[i:i + batch_size], seed=seed, batch_size=batch_size))
        return np.concatenate(out) if out else np.zeros(0)

    if not 0.0 < false_abnormal < 0.5:
        raise ValueError(f"--false-abnormal must lie between 0 and 0.5, got {false_abnormal}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"--holdout must lie between 0 and 1, got {holdout}")
    if per_group < 1:
        raise ValueError(f"--per-group must be at least 1, got {per_group}")
    base = Path(base_dir) if base_dir else Path(model_dir_for("ddpm", None))
    out = Path(out_dir)
    check_new_model_folder(base, out, "calibrated")
    if not Path(data_dir).is_dir():
        raise NotADirectoryError(f"--data {data_dir}: not a folder of slices")
    t0 = time.perf_counter()
    base_card = read_config(base, "ddpm").get("card") or {}
    from diffuse_core.evaluation.calibrate import modality_of

    if modality_of(base_card) == "ct":
        raise ValueError("calibrate-verdict is for the MRI model: CT scans are not read from a slice folder here")
    tell("reading the slices", 0.0)
    size = int(read_config(base, "ddpm")["unet"]["resolution"])
    data = load_slice_folder(data_dir, size=size, healthy_only=False, mri_reference=mri_reference_for(base_card,
                                                                                                      "auto"))
    labels, groups = data["labels"].astype(bool), np.asarray(data["groups"]).astype(str)
    keep = []
    for g in sorted(set(groups.tolist())):
        for lesion in (False, True):
            keep += spaced(np.where((groups == g) & (labels == lesion))[0], per_group).tolist()
    keep = np.sort(np.asarray(keep, int))
    images, labels, groups = data["images"][keep], labels[keep], groups[keep]
    held, held_names = split_groups(groups, holdout, seed)
    choose = ~held & ~labels
    if choose.sum() < MIN_NORMAL_SLICES:
        raise ValueError(f"{data_dir}: only {int(choose.sum())} normal slices outside the held-out groups to choose "
                         f"the threshold on: need at least {MIN_NORMAL_SLICES} (more cases, or a smaller --holdout)")
    if not (held & ~labels).any():
        raise ValueError(f"{data_dir}: the held-out groups have no normal slice to measure the threshold on")

    tell("scoring the slices", 0.05)
    den, sal = load_default_models(base, None, device, True)
    peaks = scored(images, "scoring the slices", 0.05, 0.7)
    threshold = float(np.quantile(peaks[choose], 1.0 - false_abnormal))
    fa_held = float((peaks[held & ~labels] > threshold).mean())
    lesion_held = held & labels
    if lesion_held.any():
        sensitivity = float((peaks[lesion_held] > threshold).mean())
        sens_source = {"source": "labelled lesion slices of the held-out cases", "n": int(lesion_held.sum())}
    else:
        tell("scoring SynthBrain validation lesions", 0.7)
        from diffuse_core.evaluation.protocol import model_scale, synthbrain_set

        val = model_scale(den, synthbrain_set("val", 32, size=den.config.resolution, healthy_fraction=0.25,
                                              modalities=("flair",)))
        sick = val.images[val.diseased]
        sensitivity = float((scored(sick, "scoring SynthBrain validation lesions", 0.7, 0.95) > threshold).mean())
        sens_source = {"source": "SynthBrain validation lesions (the data has no labelled lesion slice held out)",
                       "n": int(len(sick))}
    record = {
        "base_model": str(base), "data": str(data_dir), "seed": seed, "holdout": holdout, "per_group": per_group,
        "chosen_on": {"normal_slices": int(choose.sum()),
                      "groups": sorted(set(groups[~held].tolist()))},
        "held_out": {"groups": held_names, "normal_slices": int((held & ~labels).sum()),
                     "lesion_slices": int(lesion_held.sum())},
        "threshold": threshold, "false_abnormal_rate_chosen": false_abnormal,
        "false_abnormal_rate_held_out": fa_held,
        "sensitivity": sensitivity, "sensitivity_measured_on": sens_source,
        "base_threshold": (base_card.get("verdict") or {}).get("threshold"),
        "base_false_abnormal_rate_held_out": (None if (base_card.get("verdict") or {}).get("threshold") is None else
                                              float((peaks[held & ~labels] > float(base_card["verdict"]["threshold"]))
                                                    .mean())),
        "verdict_used": sensitivity >= MIN_SENSITIVITY,
        "peaks": [{"group": str(g), "lesion": bool(lb), "held_out": bool(h), "peak": round(float(p), 4)}
                  for g, lb, h, p in zip(groups, labels, held, peaks)],
        "seconds": round(time.perf_counter() - t0, 1), "hardware": hardware_summary(str(device)),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit_id(),
        "command": f"diffuse-studio calibrate-verdict --data {data_dir} --out {out}"
                   + (f" --model {base_dir}" if base_dir else ""),
    }
    tell("writing the model", 0.95)
    partial = out / ".partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for f in base.iterdir():
        if f.is_file() and f.name not in ("checkpoint.pt", "log.csv", RECORD_FILE, "adaptation.json"):
            shutil.copy2(f, partial / f.name)
    if (base / SALIENCY_BESIDE).is_dir():          # an adapted model's classifier: the one the threshold was chosen with
        shutil.copytree(base / SALIENCY_BESIDE, partial / SALIENCY_BESIDE,
                        ignore=shutil.ignore_patterns("checkpoint.pt", "log.csv"))
    n_chosen = int(choose.sum())
    calibration = dict(base_card.get("calibration") or {})
    calibration["verdict"] = {"sensitivity_on_validation": sensitivity, "diseased": sens_source["n"],
                              "healthy_called_abnormal": fa_held, "measured_on": sens_source["source"],
                              "command": record["command"]}
    update_card(partial, {"verdict": {"percentile": float((base_card.get("verdict") or {}).get("percentile", 99.5)),
                                      "threshold": threshold, "false_abnormal_rate": false_abnormal,
                                      "chosen_on": f"{n_chosen} normal slices of your scans"},
                          "calibration": calibration, "verdict_calibration": {k: v for k, v in record.items()
                                                                              if k != "peaks"}},
                by="calibrate-verdict", command=record["command"], device=str(device))
    atomic_write_json(partial / RECORD_FILE, record)
    for f in partial.iterdir():
        shutil.move(str(f), out / f.name)
    shutil.rmtree(partial, ignore_errors=True)
    if on_progress is not None:
        on_progress("done", 1.0)                # written: too late to stop
    return record
