"""Training the level estimator (:mod:`diffuse_core.models.level`): its batches, its loss and its measured error.

Data: a pool of SynthBrain train slices of every level (:data:`~diffuse_core.models.level.TRAINING_REALISM`: skull
base to vertex, healthy and diseased, scanner effects), scaled as a run scales a real MRI for the denoiser
(``normalise``, "tissue" for the shipped FLAIR model). Loss: smooth L1 on the scaled level; random left-right flips
(a level has no side). AdamW with a warm-up and a cosine decay, no EMA, through the one
:class:`~diffuse_core.train.trainer.Trainer` (checkpoints, resume, ``init_from``, the card).

At the end :func:`measure_levels` (also ``python -m diffuse_core.train.level FOLDER`` on saved weights) chooses the
estimator's margin on held-out SynthBrain validation slices and writes into its card (``quality.levels``,
``level_margin``) the mean and 90th-percentile absolute error in template levels (1 mm) and, against the default
trained levels, how many in-range slices it puts outside them and how many outside slices it catches, on validation
and on test slices.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from diffuse_core.models.classifier import ClassifierConfig
from diffuse_core.models.level import LEVEL_CENTRE, LEVEL_SPAN, TRAINING_REALISM, new_level_estimator
from diffuse_core.train.data import normalise_slices, random_flips, synthbrain_card, synthbrain_pool
from diffuse_core.train.trainer import Trainer, TrainSettings, TrainTask, small_model_card, started_from

LEVEL_DEFAULTS = {"steps": 1500, "lr": 1e-3, "weight_decay": 1e-4, "pool": 3000, "batch_size": 32}
VALIDATION_SLICES = 400


def _pool(n: int, split: str, seed: int, size: int, modalities, normalise: str) -> tuple[np.ndarray, np.ndarray]:
    pool = synthbrain_pool(n, split, seed, size, tuple(modalities), healthy=None, realism=TRAINING_REALISM)
    images = normalise_slices(pool["images"].astype(np.float32), normalise).astype(np.float32)
    return images, pool["levels"].astype(np.float32)


def train_level(out_dir: str | Path, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
                seed: int = 0, size: int = 128, modalities=("flair",), pool_size: int | None = None,
                normalise: str = "tissue", checkpoint_every: int = 250, resume: bool = True, progress: bool = True,
                device=None, init_from: str | Path | None = None, measure: bool = True) -> Path:
    """Train (or resume) a level estimator into ``out_dir`` on SynthBrain slices of every level; with ``measure``,
    write its validation error into its card (:func:`measure_levels`)."""
    steps = steps or LEVEL_DEFAULTS["steps"]
    batch_size = batch_size or LEVEL_DEFAULTS["batch_size"]
    n = pool_size or LEVEL_DEFAULTS["pool"]
    images, levels = _pool(n, "train", seed, size, modalities, normalise)
    x = torch.as_tensor(images).to(torch.float16)
    y = torch.as_tensor((levels - LEVEL_CENTRE) / LEVEL_SPAN)
    config = ClassifierConfig(channels=x.shape[1], resolution=x.shape[-1], num_classes=1)

    def make_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        return random_flips(x[idx].float(), gen), y[idx]

    def loss(model, batch) -> torch.Tensor:
        xb, yb = batch
        return F.smooth_l1_loss(model.scaled(xb), yb)

    data = synthbrain_card(n, "train", seed, size, tuple(modalities), healthy_only=False, realism=TRAINING_REALISM)
    data["input_normalisation"] = normalise
    description = {"model": "slice level estimator (ICBM152 template level, 1 mm; MNI z = level - 72)",
                   "loss": "smooth L1 on (level - 80) / 40", "augmentation": "left-right flip", "data": data,
                   **started_from(init_from, "level")}

    task = TrainTask(kind="level", model=new_level_estimator(config, seed=seed),
                     architecture={"config": config.to_dict()},
                     make_batch=make_batch, loss=loss, card=lambda r: small_model_card(description, r))
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr or LEVEL_DEFAULTS["lr"],
                             weight_decay=LEVEL_DEFAULTS["weight_decay"], lr_schedule="cosine", warmup_steps=50,
                             seed=seed, checkpoint_every=checkpoint_every)
    out = Trainer(task, settings, out_dir, device=device, progress=progress).fit(resume=resume, init_from=init_from)
    if measure:
        measure_levels(out, n_val=VALIDATION_SLICES, seed=seed, write=True)
    return Path(out)


MAX_INSIDE_OUTSIDE = 0.01     # the margin: the smallest keeping at most this share of in-range slices "outside"
MARGINS = range(0, 11)        # margins tried (template levels, 1 mm)


def _split_figures(est, split: str, n: int, seed: int, margin: int | None = None) -> dict:
    """Error of ``est`` on ``n`` SynthBrain slices of ``split`` (every level) against the default trained levels:
    mean / 90th-percentile absolute error, and per margin the share of in-range slices put outside and of outside
    slices caught (all margins of :data:`MARGINS`, or the one given)."""
    from diffuse_core.data.synthbrain.anatomy import LEVEL_RANGE

    data = est.card.get("data") or {}
    images, levels = _pool(n, split, seed, int(est.config.resolution), tuple(data.get("modalities") or ("flair",)),
                           data.get("input_normalisation", "tissue"))
    pred = est.levels(images)
    err = np.abs(pred - levels)
    lo, hi = LEVEL_RANGE
    inside = (levels >= lo) & (levels <= hi)

    def at(m: int) -> dict:
        kept = (pred >= lo - m) & (pred <= hi + m)
        return {"inside_called_outside": round(float(np.mean(~kept[inside])), 4) if inside.any() else None,
                "outside_caught": round(float(np.mean(~kept[~inside])), 4) if (~inside).any() else None}

    out = {"split": split, "n": int(n), "outside_slices": int((~inside).sum()),
           "mean_abs_error_levels": round(float(err.mean()), 2),
           "p90_abs_error_levels": round(float(np.percentile(err, 90)), 2)}
    if margin is None:
        out["by_margin"] = {str(m): at(m) for m in MARGINS}
    else:
        out.update(margin=int(margin), **at(margin))
    return out


def measure_levels(folder: str | Path, n_val: int = VALIDATION_SLICES, seed: int = 0, write: bool = False) -> dict:
    """A level estimator's error on held-out SynthBrain slices of every level, and its margin: on ``n_val``
    validation slices, the smallest margin (:data:`MARGINS`) that puts at most :data:`MAX_INSIDE_OUTSIDE` of the
    slices inside the trained levels outside them; then, at that margin, the figures on ``n_val`` test slices (not
    used to choose). ``write`` puts them in the card (``quality.levels``) and the margin as ``level_margin``, the
    setting a run reads (:func:`diffuse_core.run.level_check.outside_trained_levels`)."""
    from diffuse_core.data.synthbrain.anatomy import LEVEL_RANGE
    from diffuse_core.models.card import commit_id, hardware_summary
    from diffuse_core.models.checkpoint import load_level_estimator, update_card

    est = load_level_estimator(folder)
    val = _split_figures(est, "val", n_val, seed)
    fits = [m for m in MARGINS if (val["by_margin"][str(m)]["inside_called_outside"] or 0.0) <= MAX_INSIDE_OUTSIDE]
    margin = fits[0] if fits else MARGINS[-1]
    res = {"realism": TRAINING_REALISM, "against_levels": list(LEVEL_RANGE),
           "margin_rule": f"the smallest margin keeping at most {100 * MAX_INSIDE_OUTSIDE:g} % of in-range validation "
                          f"slices outside", "margin": margin,
           "validation": {**val, **{"margin": margin}, **val["by_margin"][str(margin)]},
           "test": _split_figures(est, "test", n_val, seed, margin),
           "measured_on": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), "commit": commit_id(),
           "hardware": hardware_summary("cpu")}
    if write:
        update_card(folder, {"quality": {"levels": res}, "level_margin": margin}, by="level-check")
    return res


def main(argv=None) -> int:
    """``python -m diffuse_core.train.level FOLDER [N]``: measure a saved level estimator again into its card."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) > 2:
        print("usage: python -m diffuse_core.train.level FOLDER [N_VALIDATION_SLICES]", file=sys.stderr)
        return 2
    res = measure_levels(args[0], n_val=int(args[1]) if len(args) > 1 else VALIDATION_SLICES, write=True)
    t = res["test"]
    print(f"margin {res['margin']} levels (chosen on validation); test: mean error {t['mean_abs_error_levels']} "
          f"levels (90th percentile {t['p90_abs_error_levels']}), in-range slices put outside "
          f"{100 * t['inside_called_outside']:.1f} %, outside slices caught {100 * t['outside_caught']:.1f} % "
          f"({t['n']} test slices)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
