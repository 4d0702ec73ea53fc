"""Measured quality of the shipped models, written into their model cards (``config.json`` -> ``card.quality``).

What is measured (issue: trained models), always on a held-out SynthBrain split the models never saw in training:

- classifier: accuracy and AUROC, overall, per lesion type and per lesion size (:func:`evaluate_classifier`);
- ACAT (and, for the ablations, Grad-CAM and input gradient): the share of lesion pixels inside the mask binarised at
  the 90th percentile inside the brain, and the Dice of that mask alone (:func:`evaluate_acat`);
- DDPM: grids of samples generated from pure noise, ancestral (DDPM) and deterministic (DDIM), each counted against
  held-out real slices for grain and grey backgrounds (:func:`measure_samples`); the identity check of paper Fig. 6 and the
  end-to-end Dice/IoU come from ``diffuse-studio evaluate`` (:mod:`diffuse_core.evaluation.report`), which writes them into the
  DDPM card with the binarisation threshold it chose on the validation split.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import torch

from diffuse_core.models.checkpoint import update_card, weights_digest  # noqa: F401  (re-exported: the CLI uses them)
from diffuse_core.models.denoiser import Denoiser
from diffuse_core.models.device import default_autocast


def synthbrain_labelled(split: str, n: int, size: int = 128, modalities=("flair",), healthy_fraction: float = 0.5,
                        base_seed: int = 0) -> dict:
    """``n`` SynthBrain slices of ``split`` as the arrays :func:`evaluate_classifier` / :func:`evaluate_acat` take."""
    from diffuse_core.evaluation.protocol import synthbrain_set

    s = synthbrain_set(split, n, base_seed=base_seed, size=size, modalities=modalities,
                       healthy_fraction=healthy_fraction)
    labels = s.lesions.reshape(len(s), -1).any(axis=1).astype(np.int64)
    return {"images": s.images, "labels": labels, "masks": s.lesions, "brain_masks": s.brains,
            "lesion_types": np.asarray(s.lesion_types)}


def measure_saliency_models(models, n: int = 200, split: str = "test", percentile: float = 90.0,
                            methods=("acat", "gradcam", "gradient"), modalities=("flair",)) -> dict:
    """Classifier accuracy/AUROC and each saliency method's localisation on ``n`` held-out slices (half healthy) of
    the SynthBrain ``modalities`` the models were trained on."""
    from diffuse_core.evaluation.saliency_quality import evaluate_acat, evaluate_classifier

    size = models.classifier.config.resolution if hasattr(models.classifier, "config") else 128
    data = synthbrain_labelled(split, n, size=size, modalities=tuple(modalities))
    out = {"data": {"generator": "SynthBrain", "split": split, "n": n, "healthy_fraction": 0.5,
                    "modalities": list(modalities)},
           "classifier": evaluate_classifier(models.classifier, data)}
    for method in methods:
        out[method] = evaluate_acat(models, data, percentile=percentile, method=method)
    return out


SAMPLERS_FROM_NOISE = {
    "ddpm": "DDPM ancestral sampling (eq. 7, sigma = DDPM posterior std), {steps} respaced steps from T",
    "ddim": "DDIM (eq. 7, sigma = 0, deterministic), {steps} respaced steps from T",
}


@torch.no_grad()
def sample_from_noise(denoiser: Denoiser, n: int = 16, steps: int = 100, seed: int = 0,
                      sampler: str = "ddpm") -> np.ndarray:
    """``n`` images generated from pure noise x_T ~ N(0, I) over ``steps`` respaced steps (N, C, H, W), [-1, 1].

    ``ddpm`` is the model's own generative process (Ho et al. 2020; the walk Dif-fuse takes inside the mask): the
    fresh noise of every step lets later steps correct what earlier ones got wrong. ``ddim`` is deterministic: every
    error of the first, nearly signal-free steps (the slice's brightness, speckle read as texture) is carried to the
    end, so an imperfect model shows its faults there first.
    """
    from diffuse_core.core.sampler import denoiser_eps_model, iter_ddim_sampling, iter_ddpm_sampling, run_to_end

    if sampler not in SAMPLERS_FROM_NOISE:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS_FROM_NOISE)}, got {sampler!r}")
    cfg = denoiser.config
    dev = next(denoiser.unet.parameters()).device
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, cfg.channels, cfg.resolution, cfg.resolution, generator=g).to(dev)
    t_max = denoiser.schedule.num_train_timesteps
    timesteps = denoiser.schedule.respaced_timesteps(t_max, steps)
    eps = denoiser_eps_model(denoiser, default_autocast(dev))
    if sampler == "ddpm":
        walk = iter_ddpm_sampling(eps, denoiser.schedule, x_t, timesteps, generator=g)
    else:
        walk = iter_ddim_sampling(eps, denoiser.schedule, x_t, timesteps)
    return run_to_end(walk).clamp(-1, 1).float().cpu().numpy()


def write_grid(images: np.ndarray, path: str | Path, columns: int = 8) -> Path:
    """Write a PNG grid of images (N, H, W) in [-1, 1] with 2 px black gutters."""
    import cv2

    from diffuse_core.io.export import to_uint8

    n, h, w = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + 2) - 2, columns * (w + 2) - 2), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = to_uint8(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)
    return path


def sample_grid(denoiser: Denoiser, path: str | Path, n: int = 16, steps: int = 100, seed: int = 0,
                columns: int = 8, sampler: str = "ddpm") -> Path:
    """Write a PNG grid of ``n`` samples from pure noise (first channel)."""
    return write_grid(sample_from_noise(denoiser, n, steps, seed, sampler)[:, 0], path, columns)


def graininess(image: np.ndarray) -> float:
    """Mean absolute Laplacian of a 2-D image in [-1, 1]: pixel-scale speckle (left-over noise) drives it up."""
    import cv2

    return float(np.abs(cv2.Laplacian(np.ascontiguousarray(image, np.float32), cv2.CV_32F)).mean())


def border_level(image: np.ndarray) -> float:
    """Median intensity of the image's outer frame (1/16 of its side; 8 px at 128): the air around the head, -1
    (black) on every real slice."""
    width = max(1, image.shape[0] // 16)
    frame = np.concatenate([image[:width].ravel(), image[-width:].ravel(), image[:, :width].ravel(),
                            image[:, -width:].ravel()])
    return float(np.median(frame))


GREY_BACKGROUND = -0.9      # border median above this: visibly grey instead of black


def realism_reference(n: int = 200, split: str = "test", size: int = 128, normalisation: str = "absolute",
                      modality: str = "flair") -> dict:
    """Graininess and border level of ``n`` held-out healthy SynthBrain slices of ``modality``: what a real slice
    looks like. ``normalisation``: the scale the model was trained on (card ``input_normalisation``), which grain
    scales with."""
    from diffuse_core.train.data import normalise_slices

    x = synthbrain_labelled(split, n, size=size, modalities=(modality,), healthy_fraction=1.0)["images"]
    x = normalise_slices(x.astype(np.float32), normalisation)[:, 0].astype(np.float32)
    grain = np.array([graininess(im) for im in x])
    border = np.array([border_level(im) for im in x])
    return {"n": n, "split": split, "modality": modality, "normalisation": normalisation,
            "graininess_p99": float(np.percentile(grain, 99)), "graininess_max": float(grain.max()),
            "grey_background": int((border > GREY_BACKGROUND).sum())}


def model_modality(denoiser: Denoiser) -> str:
    """The SynthBrain modality a single-channel DDPM was trained on (its card's ``data.modalities``; "flair" where
    the card does not say, e.g. older FLAIR models)."""
    mods = ((getattr(denoiser, "card", None) or {}).get("data") or {}).get("modalities") or ["flair"]
    return str(mods[0])


def judge_samples(samples: np.ndarray, reference: dict) -> dict:
    """Count samples (N, H, W) that a real slice would not produce: grainy (graininess above twice the reference's
    99th percentile) or with a grey background (border median above ``GREY_BACKGROUND``; real slices: -1)."""
    limit = 2.0 * reference["graininess_p99"]
    grain = np.array([graininess(im) for im in samples])
    grey = np.array([border_level(im) > GREY_BACKGROUND for im in samples])
    grainy = grain > limit
    return {"n": len(samples), "grainy": int(grainy.sum()), "grey_background": int(grey.sum()),
            "clean": int((~grainy & ~grey).sum()), "graininess_limit": round(limit, 4),
            "graininess": [round(float(v), 4) for v in grain]}


def measure_samples(denoiser: Denoiser, docs_dir: str | Path, n: int = 16, seed: int = 0, ddpm_steps: int = 100,
                    ddim_steps: int = 50, n_reference: int = 200) -> dict:
    """Samples from pure noise with both samplers, as PNG grids in ``docs_dir`` and judged against held-out slices
    of the model's modality (:func:`judge_samples`); returns the ``samples_from_noise`` block of the DDPM card. The
    grids are ``ddpm_samples.png`` / ``ddpm_samples_ddim.png``, prefixed ``ct_`` for a CT model."""
    from diffuse_core.run.card import input_normalisation_of

    docs = Path(docs_dir)
    modality = model_modality(denoiser)
    reference = realism_reference(n_reference, size=denoiser.config.resolution,
                                  normalisation=input_normalisation_of(denoiser), modality=modality)
    prefix = "" if modality == "flair" else f"{modality}_"
    out = {"reference": reference}
    for sampler, steps, name in (("ddpm", ddpm_steps, f"{prefix}ddpm_samples.png"),
                                 ("ddim", ddim_steps, f"{prefix}ddpm_samples_ddim.png")):
        x = sample_from_noise(denoiser, n, steps, seed, sampler)[:, 0]
        out[sampler] = {"png": str(write_grid(x, docs / name)), "sampler": SAMPLERS_FROM_NOISE[sampler].format(steps=steps),
                        "seed": seed, **judge_samples(x, reference)}
    out["png"], out["sampler"] = out["ddpm"]["png"], out["ddpm"]["sampler"]
    return out


def recommended_settings(result: dict, tolerance: float = 0.01, z: float = 2.0) -> dict | None:
    """The app's defaults from ``diffuse-studio evaluate``'s validation sweeps (never the test split).

    K and the percentile: the evaluation's own setting (the paper's K = 500 and 90th percentile unless told
    otherwise) stays unless another cell of the K x percentile grid (paper Fig. 5) beats it on the same validation
    slices by more than ``z`` standard errors of the paired per-slice Dice difference. A dozen validation slices
    cannot tell cells apart by their means alone: the best mean cell moved from K = 500 to K = 250 between two
    training checkpoints, and at K = 250 the large glioma of the teaching set kept its lesion (Dice 0.36 against 0.84
    at K = 500). Steps: the fewest whose validation Dice is within ``tolerance`` of the best, since every step costs
    a network call.
    """
    sweeps, s = result.get("sweeps") or {}, result["settings"]
    if "k_percentile" not in sweeps or "steps" not in sweeps:
        return None
    ks, ps = list(s["sweep_k"]), [float(p) for p in s["sweep_percentiles"]]
    grid = np.asarray(sweeps["k_percentile"], float)
    per_slice = sweeps.get("k_percentile_per_slice")
    home = (ks.index(s["k"]), ps.index(float(s["percentile"]))) if (
        s.get("k") in ks and float(s.get("percentile", -1)) in ps) else None
    if per_slice is None or home is None:
        return None                                   # no paired evidence: keep the evaluation's own setting
    per_slice = np.asarray(per_slice, float)
    a, b = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
    diff = per_slice[a, b] - per_slice[home]
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    better = (a, b) != home and float(diff.mean()) > z * se
    pick = (a, b) if better else home
    dice_steps = np.asarray(sweeps["steps"]["dice"], float)
    ok = [n for n, d in zip(sweeps["steps"]["steps"], dice_steps) if d >= np.nanmax(dice_steps) - tolerance]
    return {"k": int(ks[pick[0]]), "percentile": float(ps[pick[1]]), "steps": int(min(ok)),
            "validation_dice": float(grid[pick]),
            "best_mean_cell": {"k": int(ks[a]), "percentile": float(ps[b]), "validation_dice": float(grid[a, b]),
                               "paired_gain": round(float(diff.mean()), 4), "paired_gain_se": round(se, 4),
                               "n_slices": int(len(diff))},
            "rule": f"K = {s['k']}, {float(s['percentile']):g}th percentile unless the best K x percentile cell on "
                    f"validation beats it by more than {z:g} paired standard errors; fewest steps within "
                    f"{tolerance} Dice of the best"}


CALIBRATED_K = ("the K and steps given to diffuse_core.evaluation.calibrate (see written_by.calibration.command), "
                "chosen for the card's mask rule")


def merged_recommendation(previous: dict | None, swept: dict | None) -> dict | None:
    """What ``evaluate --write-cards`` stores as ``recommended_settings``: the sweeps' recommendation
    (:func:`recommended_settings`), except where ``calibrate`` chose K and steps for the card's mask rule (marked
    ``k_chosen_by``): the sweeps walk the paper's percentile mask, not the rule the app runs, so the card's K, steps
    and percentile stay as they are and the sweeps' whole recommendation (its settings, validation Dice, best cell and
    rule, all about the cell it names) is stored beside them as ``sweeps_recommend``. Without a calibrated K, no sweep
    evidence (None) clears an older recommendation (the app then uses the paper's settings)."""
    previous = previous or {}
    if not previous.get("k_chosen_by"):
        return swept
    swept = swept or {}
    # the setting itself; an older sweep's Dice, best cell and rule described another home cell: not kept
    kept = {key: previous[key] for key in ("k", "steps", "percentile", "solver") if key in previous}
    for key in ("k", "steps", "percentile"):           # a calibrated block lacking one takes the sweeps' value
        if kept.get(key) is None and swept.get(key) is not None:
            kept[key] = swept[key]
    kept["k_chosen_by"] = CALIBRATED_K
    if swept:
        kept["sweeps_recommend"] = dict(swept)
    return kept


def stamp() -> str:
    """Today's date (UTC) for a card's ``measured_on``."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()
