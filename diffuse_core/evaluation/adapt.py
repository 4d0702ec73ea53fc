"""Adapt the healthy model to a scanner: fine-tune it on a user's own normal slices within a time budget.

``diffuse-studio adapt --data DIR --out DIR [--minutes 20]`` (and the app's "Adapt" button beside an educator's
healthy set) does, on the CPU or a GPU:

1. read DIR's normal slices (a folder of images, a teaching/curated set, or BraTS-layout cases whose tumour-free
   slices are taken) prepared as the base model's card says (its ``input_normalisation``), so the model sees them as
   ``run`` and the app will;
2. keep whole groups (cases, or files) apart: ``holdout`` of them (at least one) are never trained on;
3. measure the false flags before: Dif-fuse at the base model's settings (ACAT mask by its rule, its score and
   threshold) on up to ``n_measure`` held-out slices, the share of their brain flagged; and, where the held-out
   cases have labelled lesion slices (BraTS layout, or an ``index.csv`` with masks), the lesion Dice on up to half as
   many of them, so that a model adapted into redrawing lesions too shows it;
4. adapt the ACAT classifier to the scanner (:func:`diffuse_core.train.saliency.adapt_classifier`: the rest's
   normal slices as healthy, the same slices with SynthBrain lesions pasted in as diseased, SynthBrain slices of both
   kinds; a few hundred steps): trained on SynthBrain alone it calls many real normal slices diseased (the skull base
   above all), and the redrawn region it makes is what the walk then changes. Then fine-tune the base DDPM on the
   same normal slices for the rest of ``minutes`` (cosine learning rate over the box, EMA, flips), with a progress
   callback that can stop it;
5. measure again on the same held-out slices with the same seed, and write the new model folder with its card: the
   data, the held-out groups, steps, time, hardware, and the false flags (and lesion Dice) before and after.

The new folder holds everything ``run --model`` and the app need (the base card's settings, the new weights, and
``saliency/`` with the adapted classifier beside the base's autoencoder, which every loader takes with the model:
:func:`diffuse_core.run.models.saliency_model_dirs`). A run stopped early is written to ``out/.partial`` and never
looks like a finished model.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_MINUTES = 0.0          # the DDPM fine-tune's budget: none by default (it made the model keep tumours)
DEFAULT_LR = 2e-5
MIN_LESION_SHARE = 0.01          # a held-out lesion slice is measured when its lesion covers >= 1 % of the slice
KEPT_CARD_KEYS = ("anomaly_kernel", "anomaly_threshold", "recommended_settings", "input_normalisation",
                  "tissue_scale", "intensity_reference", "mask_rule", "score", "verdict")


class AdaptCancelled(RuntimeError):
    """The user stopped the adaptation; nothing was written as a finished model."""


def split_groups(groups, holdout: float = 0.2, seed: int = 0,
                 named: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """A boolean "held out" per slice: whole groups, ``holdout`` of them rounded, at least one (none when there is
    only one group: then every fifth slice is held out instead); ``named``: the groups whose names contain one of
    these (e.g. "pat0002") instead, each matching at least one group and not all of them. Returns (held, held-out
    group names)."""
    g = np.asarray(groups).astype(str)
    names = sorted(set(g.tolist()))
    if named:
        out = sorted(n for n in names if any(str(k) in n for k in named))
        missing = [k for k in named if not any(str(k) in n for n in names)]
        if missing or len(out) == len(names):
            raise ValueError(f"--holdout-cases {','.join(map(str, named))}: "
                             + (f"no case named {', '.join(missing)}" if missing else "that holds out every case"))
        return np.isin(g, out), out
    if len(names) < 2:
        held = np.zeros(len(g), bool)
        held[::5] = True
        return held, []
    rng = np.random.default_rng(seed)
    n = max(1, int(round(holdout * len(names))))
    n = min(n, len(names) - 1)
    out = sorted(rng.choice(names, n, replace=False).tolist())
    return np.isin(g, out), out


def check_new_model_folder(base: Path, out: Path, what: str) -> None:
    """A ValueError unless ``out`` is a new folder for a model made from ``base`` (never the base model's own folder,
    never one that already holds a model: an educator's models are never overwritten)."""
    if out.resolve() == base.resolve():
        raise ValueError(f"--out {out} is the base model's folder: write the {what} model to a new folder")
    if (out / "model.safetensors").exists():
        raise ValueError(f"{out} already holds a model: choose a new folder (an educator's models are never "
                         f"overwritten)")


def held_out_measures(denoiser, saliency_models, normals: np.ndarray, lesions: np.ndarray | None = None,
                      lesion_masks: np.ndarray | None = None, seed: int = 0, batch_size: int = 8,
                      device="cpu") -> tuple[np.ndarray, np.ndarray, dict | None]:
    """Dif-fuse at the model card's settings, through the one assembly of a run
    (:func:`diffuse_core.run.assembly.run_stack`, as the app and ``run`` make it, the level check included), on
    held-out slices: the share of each normal slice's brain flagged, each lesion slice's Dice (flagged brain vs its
    lesion mask), and the slice verdicts on the normal slices (None where the card holds no verdict)."""
    from diffuse_core.core.brain import brain_masks
    from diffuse_core.core.metrics import dice
    from diffuse_core.run.assembly import run_stack, slices_of
    from diffuse_core.run.models import RunModels, level_estimator_for
    from diffuse_core.run.settings import settings_for

    n = len(normals)
    parts = [np.asarray(normals, np.float32)] + ([np.asarray(lesions, np.float32)] if lesions is not None else [])
    imgs = np.concatenate(parts)
    models = RunModels(denoiser=denoiser, saliency=saliency_models, folder="adapted model",
                       level=level_estimator_for(denoiser.card, device))
    settings = settings_for(denoiser.card or {}, seed=seed)
    out = dict(run_stack(slices_of(imgs, brain_masks(imgs)), models, settings, "acat", batch_size=batch_size))

    brains = [out[i].result.brain_mask.astype(bool) for i in range(len(imgs))]
    flagged = [(out[i].result.anomaly > out[i].threshold) & brains[i] for i in range(len(imgs))]
    flags = np.array([float(flagged[i][brains[i]].mean()) for i in range(n)])
    dices = np.array([dice(flagged[i], np.asarray(lesion_masks[i - n], bool) & brains[i]) for i in range(n, len(imgs))])
    if not (denoiser.card or {}).get("verdict"):
        return flags, dices, None
    called = [out[i].verdict for i in range(n) if out[i].verdict is not None]
    return flags, dices, {"measured": n, "called": len(called), "abnormal": sum(bool(v.abnormal) for v in called)}


def adapt(data_dir, out_dir, base_dir=None, minutes: float = DEFAULT_MINUTES, holdout: float = 0.2,
          n_measure: int = 24, batch_size: int = 8, lr: float = DEFAULT_LR, seed: int = 0, device="cpu",
          on_progress: Callable[[str, float], bool | None] | None = None, max_slices: int | None = None,
          classifier: dict | None = None, holdout_cases: list[str] | None = None) -> dict:
    """Adapt ``base_dir`` (default: the installed MRI DDPM) to ``data_dir``'s normal slices: its ACAT classifier, then
    (``minutes`` > 0) the DDPM fine-tuned for ``minutes``; write the model to ``out_dir`` and return its card's
    ``adaptation`` record. ``on_progress(stage, fraction)``
    is called through the run; a true return stops it (:class:`AdaptCancelled`, nothing finished written).
    ``classifier``: the classifier stage's settings (:data:`diffuse_core.train.saliency.ADAPT_CLF`'s keys);
    ``holdout_cases``: the cases to hold out by name (:func:`split_groups`), instead of ``holdout`` of them drawn."""
    from diffuse_core.run.card import mri_reference_for
    from diffuse_core.run.models import SALIENCY_BESIDE, load_default_models, saliency_model_dirs
    from diffuse_core.train.saliency import ADAPT_CLF
    from diffuse_core.data.slice_folder import load_slice_folder
    from diffuse_core.models.checkpoint import atomic_write_json, read_config, update_card
    from diffuse_core.models.denoiser import load_denoiser
    from diffuse_core.models.registry import model_dir_for
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

    if minutes is None or minutes < 0:
        raise ValueError(f"--minutes must be 0 (no DDPM fine-tune) or positive, got {minutes}")
    base = Path(base_dir) if base_dir else Path(model_dir_for("ddpm", None))
    out = Path(out_dir)
    check_new_model_folder(base, out, "adapted")

    def tell(stage: str, fraction: float) -> None:
        if on_progress is not None and on_progress(stage, fraction):
            raise AdaptCancelled(f"adaptation stopped by the user during {stage}; nothing was written to {out}")

    if not Path(data_dir).is_dir():
        raise NotADirectoryError(f"--data {data_dir}: not a folder of normal slices")
    t0 = time.perf_counter()
    tell("reading the slices", 0.0)
    base_cfg = read_config(base, "ddpm")
    base_card = base_cfg.get("card") or {}
    size = int(base_cfg["unet"]["resolution"])
    data = load_slice_folder(data_dir, size=size, healthy_only=False, max_slices=max_slices,
                             mri_reference=mri_reference_for(base_card, "auto"))
    normal = data["labels"] == 0
    if not normal.any():
        raise ValueError(f"--data {data_dir}: no usable slices (no healthy ones)")
    images, groups = data["images"][normal], data["groups"][normal]
    held, held_names = split_groups(groups, holdout, seed, holdout_cases)
    train_images = images[~held]
    if len(train_images) < batch_size:
        raise ValueError(f"{data_dir}: only {len(train_images)} normal slices left to train on after holding "
                         f"{int(held.sum())} out: need at least {batch_size}")
    rng = np.random.default_rng(seed)
    measure_idx = np.sort(rng.choice(np.where(held)[0], min(n_measure, int(held.sum())), replace=False))
    measure_images = images[measure_idx]
    lesions, lesion_masks = held_out_lesions(data, held_names, max(1, n_measure // 2), rng)

    tell("false flags before", 0.02)
    den, sal = load_default_models(base, None, device, True)
    before, dice_before, calls_before = held_out_measures(den, sal, measure_images, lesions, lesion_masks, seed=seed,
                                                          device=device)
    del den

    partial = out / ".partial"
    if partial.exists():
        shutil.rmtree(partial)
    clf_settings = {**ADAPT_CLF, **(classifier or {})}
    base_ae, base_clf = saliency_model_dirs(None, None, base)
    sal_dir = partial / SALIENCY_BESIDE
    t_clf = time.perf_counter()
    if clf_settings["steps"] > 0:
        sal_new = _adapted_classifier(sal_dir, train_images, base_ae, base_clf, clf_settings, base_card, seed, device,
                                      tell)
    else:                                                  # --classifier-steps 0: the base's ACAT pair stays
        sal_new = sal
    clf_seconds = time.perf_counter() - t_clf
    left = max(30.0, 60.0 * float(minutes) - clf_seconds)   # the classifier's time comes out of the DDPM's budget
    cfg = DDPMTrainConfig(steps=None, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=10**9,
                          lr_schedule="cosine", warmup_steps=10, max_seconds=left,
                          schedule=_schedule_of(base_cfg), unet=_unet_of(base_cfg))
    card = {"data": {"source": "folder", "path": str(data_dir), "slices": int(len(train_images)),
                     "fine_tuned_from": base_card.get("data")}}       # the base's levels stay learned (level check)

    if minutes > 0:
        train_ddpm(partial, TensorPool(train_images), cfg, resume=False, progress=False, card=card, init_from=base,
                   device=device, on_step=_stepper(tell, "fine-tuning", 0.12, 0.73))
    else:                                                  # the classifier alone: the base DDPM as it is
        partial.mkdir(parents=True, exist_ok=True)
        for f in base.iterdir():
            if f.is_file() and f.name not in ("checkpoint.pt", "log.csv", "adaptation.json"):
                shutil.copy2(f, partial / f.name)
    if on_progress is not None and on_progress("fine-tuning", 0.85):
        raise AdaptCancelled(f"adaptation stopped by the user; the unfinished weights stay in {partial}")
    tell("false flags after", 0.86)
    new = load_denoiser(partial, device=device)
    for key in KEPT_CARD_KEYS:                   # the base model's settings: the ones false flags are measured with
        if key in base_card:
            new.card[key] = base_card[key]
    after, dice_after, calls_after = held_out_measures(new, sal_new, measure_images, lesions, lesion_masks,
                                                       seed=seed, device=device)
    steps_trained = int((read_config(partial, "ddpm").get("card") or {}).get("training", {}).get("steps_done", 0)
                        - (base_card.get("training") or {}).get("steps_done", 0))
    from diffuse_core.evaluation.provenance import commit_id, hardware_summary

    record = {
        "base_model": str(base), "data": str(data_dir), "normal_slices": int(len(images)),
        "trained_on": int(len(train_images)), "held_out": int(held.sum()), "held_out_groups": held_names,
        "measured_on": int(len(measure_idx)), "minutes_budget": float(minutes),
        "steps": steps_trained, "batch_size": batch_size, "lr": lr, "seed": seed,
        "classifier": None if clf_settings["steps"] <= 0 else {**clf_settings, "seconds": round(clf_seconds, 1),
                                                                "base": str(base_clf)},
        "seconds": round(time.perf_counter() - t0, 1), "hardware": hardware_summary(device),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit_id(),
        "false_flags_before": {"mean": float(before.mean()), "max": float(before.max())},
        "false_flags_after": {"mean": float(after.mean()), "max": float(after.max())},
        "halved": bool(after.mean() <= 0.5 * before.mean()),
        "lesion_dice_before": None if lesions is None else {"mean": float(dice_before.mean()), "n": len(dice_before)},
        "lesion_dice_after": None if lesions is None else {"mean": float(dice_after.mean()), "n": len(dice_after)},
        "normal_called_abnormal_before": calls_before, "normal_called_abnormal_after": calls_after,
        "command": f"diffuse-studio adapt --data {data_dir} --out {out} --minutes {minutes:g}"
                   + ("" if lr == DEFAULT_LR else f" --lr {lr:g}"),
    }
    record["status"] = "adapted to a user's normal slices (diffuse-studio adapt); measured only on their held-out slices"
    update_card(partial, {**{k: base_card[k] for k in KEPT_CARD_KEYS if k in base_card}, "adaptation": record},
                by="adapt", command=record["command"], device=device)
    tell("writing the model", 0.98)
    out.mkdir(parents=True, exist_ok=True)
    for f in partial.iterdir():
        if f.name in ("checkpoint.pt",):
            continue
        shutil.move(str(f), out / f.name)
    shutil.rmtree(partial, ignore_errors=True)
    atomic_write_json(out / "adaptation.json", record)
    tell("done", 1.0)
    return record


def _stepper(tell, stage: str, start: float, span: float):
    """A trainer's ``on_step``: the progress ``start + span * share used`` told as ``stage``; True (stop) once the
    user cancels."""
    def on_step(step: int, used: float) -> bool:
        try:
            tell(stage, start + span * used)
        except AdaptCancelled:
            return True
        return False

    return on_step


def _adapted_classifier(sal_dir: Path, normals, base_ae, base_clf, settings: dict, base_card: dict, seed: int,
                        device, tell):
    """The classifier stage of :func:`adapt`: ``sal_dir``/classifier adapted, the base's autoencoder copied beside it
    (an ACAT pair for the new model folder); returns the pair loaded."""
    from diffuse_core.saliency.dispatch import load_saliency_models
    from diffuse_core.train.saliency import adapt_classifier

    tell("adapting the classifier", 0.08)
    adapt_classifier(sal_dir / "classifier", normals, base_clf, steps=settings["steps"], lr=settings["lr"],
                     per_slice=settings["per_slice"], synthbrain=settings["synthbrain"],
                     normalisation=base_card.get("input_normalisation", "tissue"), scale=base_card.get("tissue_scale"),
                     seed=seed, device=device, on_step=_stepper(tell, "adapting the classifier", 0.08, 0.04))
    tell("adapting the classifier", 0.12)
    (sal_dir / "classifier" / "checkpoint.pt").unlink(missing_ok=True)
    shutil.copytree(base_ae, sal_dir / "autoencoder", ignore=shutil.ignore_patterns("checkpoint.pt"))
    return load_saliency_models(sal_dir / "autoencoder", sal_dir / "classifier", device)


def held_out_lesions(data: dict, held_names: list[str], n: int, rng) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Up to ``n`` labelled lesion slices of the held-out groups (lesion >= 1 % of the slice), or (None, None)."""
    masks = data["masks"]
    ok = ((data["labels"] == 1) & np.isin(data["groups"], held_names)
          & (masks.reshape(len(masks), -1).mean(axis=1) >= MIN_LESION_SHARE))
    if not held_names or not ok.any():
        return None, None
    idx = np.sort(rng.choice(np.where(ok)[0], min(n, int(ok.sum())), replace=False))
    return data["images"][idx], masks[idx]


def _schedule_of(cfg: dict):
    from diffuse_core.core.schedule import ScheduleConfig

    sched = cfg.get("schedule") or {}
    return ScheduleConfig(**{k: v for k, v in sched.items() if k in ScheduleConfig.__dataclass_fields__})


def _unet_of(cfg: dict):
    from diffuse_core.models.denoiser import DenoiserConfig

    u = cfg.get("unet") or {}
    fields = DenoiserConfig.__dataclass_fields__
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in u.items() if k in fields}
    return DenoiserConfig(**kw)
