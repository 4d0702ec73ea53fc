"""Measuring Dif-fuse against its ablations and peers on data with ground truth (paper Table I, Fig. 3, 5, 6).

Protocol:
1. Slices: a SynthBrain validation split (threshold choice) and test split (reporting), diseased and healthy; or real
   BraTS cases (FLAIR, whole tumour) as an out-of-domain check.
2. Saliency (ACAT, Grad-CAM, input gradient) once per slice; masks at the chosen percentile inside the brain.
3. Each method (:data:`diffuse_core.evaluation.methods.METHODS`) makes counterfactuals and anomaly maps for every slice, with
   three sampling seeds.
4. Each method's binarisation threshold is the one that maximises mean Dice on the validation split, then applied
   unchanged to the test split (never tuned on test).
5. Reported: mean Dice / IoU over diseased test slices, the standard error over seeds, per lesion type and size; the
   mean absolute change inside the brain on healthy slices (identity, Fig. 6); network calls and seconds per slice;
   KID between counterfactuals and real healthy slices on features of the project's own classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffuse_core.core.masks import mask_from_saliency
from diffuse_core.evaluation.methods import MASK_SOURCE, METHODS, run_method
from diffuse_core.core.metrics import dice, iou

THRESHOLD_GRID = tuple(np.round(np.arange(0.02, 0.62, 0.02), 3))


@dataclass
class EvalSet:
    """Slices for evaluation: images (N, C, H, W) in [-1, 1]; lesion and brain masks (N, H, W) uint8."""

    images: np.ndarray
    lesions: np.ndarray
    brains: np.ndarray
    lesion_types: list[str]
    lesion_sizes: list[str]
    ids: list[str]
    name: str = ""
    saliency: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def diseased(self) -> np.ndarray:
        return self.lesions.reshape(len(self), -1).any(axis=1)

    def subset(self, idx) -> "EvalSet":
        idx = np.asarray(idx)
        return EvalSet(self.images[idx], self.lesions[idx], self.brains[idx],
                       [self.lesion_types[i] for i in idx], [self.lesion_sizes[i] for i in idx],
                       [self.ids[i] for i in idx], self.name, {k: v[idx] for k, v in self.saliency.items()})


def synthbrain_set(split: str, n: int, base_seed: int = 0, size: int = 128, modalities=("flair",),
                   healthy_fraction: float = 0.25, realism="default") -> EvalSet:
    """``n`` SynthBrain slices of a split; the first ``healthy_fraction`` of them healthy, the rest diseased;
    ``realism``: the generator's (:func:`diffuse_core.data.synthbrain.generate_slice`)."""
    from diffuse_core.data.synthbrain import generate_slice, sample_seed

    n_healthy = int(round(n * healthy_fraction))
    items = [generate_slice(sample_seed(split, base_seed, i), modalities=tuple(modalities), size=size,
                            healthy=i < n_healthy, realism=realism) for i in range(n)]
    return EvalSet(np.stack([s.image for s in items]).astype(np.float32),
                   np.stack([s.lesion_mask for s in items]).astype(np.uint8),
                   np.stack([s.brain_mask for s in items]).astype(np.uint8),
                   [s.lesion_type for s in items], [s.lesion_size for s in items],
                   [f"{split}-{s.seed}" for s in items], f"SynthBrain {split}")


def normalised_set(data: EvalSet, normalisation: str) -> EvalSet:
    """A SynthBrain set on the scale a model was trained on (:func:`diffuse_core.train.data.normalise_slices`):
    "absolute" returns ``data`` itself; "percentile" a copy stretched as the app prepares a real MRI, without
    saliency maps (they depend on the intensities: compute them again)."""
    if normalisation == "absolute":
        return data
    from diffuse_core.train.data import normalise_slices

    return EvalSet(normalise_slices(data.images, normalisation).astype(np.float32), data.lesions, data.brains,
                   list(data.lesion_types), list(data.lesion_sizes), list(data.ids), f"{data.name} ({normalisation})")


def model_scale(denoiser, data: EvalSet) -> EvalSet:
    """A SynthBrain set on the intensity scale the DDPM was trained on (card ``input_normalisation``): as rendered,
    or stretched as the app prepares a real MRI. Every method of an evaluation then sees the same slices."""
    from diffuse_core.run.card import input_normalisation_of

    return normalised_set(data, input_normalisation_of(denoiser))


def app_scale_factors(images: np.ndarray, brains: np.ndarray) -> np.ndarray:
    """Per slice, how much the app's percentile stretch (brain 1st-99th percentile to [-1, 1]) magnifies intensity
    differences: 2 / (p99 - p1) of the brain. A change d on a slice's own scale is about d times this on the scale
    the app shows (clipping aside), which makes healthy changes of models trained on different scales comparable."""
    out = []
    for img, brain in zip(images, brains):
        v = img[0][brain.astype(bool)]
        lo, hi = np.percentile(v, [1.0, 99.0]) if v.size else (0.0, 0.0)
        out.append(2.0 / (hi - lo) if hi > lo else 1.0)
    return np.asarray(out, dtype=np.float64)


def brats_set(folder, size: int = 128, per_case: int = 6, healthy_per_case: int = 0,
              mri_reference: dict | None = None) -> EvalSet:
    """Real BraTS cases (FLAIR, whole tumour = label > 0): ``per_case`` tumour slices spread over each case, and
    ``healthy_per_case`` tumour-free slices of the same case (healthy controls: their brain covers at least half of
    the case's largest brain section, so they are not the sliver at the top or bottom of the head), spread evenly.
    ``mri_reference``: intensities matched to a model's training data instead of the 1st-99th percentile stretch."""
    from pathlib import Path

    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.preprocess import prepare_slice, to_model_grid

    images, lesions, brains, types, sizes, ids = [], [], [], [], [], []
    cases = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not cases:
        raise FileNotFoundError(f"no case folders in {folder}")
    for case_dir in cases:
        case = load_brats_case(case_dir, modalities=("flair",))
        tumour = case.tumour_slices()
        picks = [tumour[int(i)] for i in np.linspace(0, len(tumour) - 1, per_case + 2)[1:-1].round()]
        if healthy_per_case:
            area = case.brain.sum(axis=(0, 1))
            free = [z for z in case.brain_slices() if z not in set(tumour) and area[z] >= 0.5 * area.max()]
            if free:
                n = min(healthy_per_case, len(free))
                picks += [free[int(i)] for i in np.linspace(0, len(free) - 1, n + 2)[1:-1].round()]
        for z in picks:
            raw, label, brain = case.slice(z)
            prep = prepare_slice(raw, size=size, modality="mri", brain_mask=brain, mri_reference=mri_reference)
            lab = (to_model_grid(label, size=size, order=0)[0] > 0).astype(np.uint8) * prep.brain_mask
            images.append(prep.image)
            lesions.append(lab)
            brains.append(prep.brain_mask)
            types.append("glioma" if lab.any() else "none")
            area = int(lab.sum())
            sizes.append("none" if area == 0 else "small" if area < 150 else "medium" if area < 600 else "large")
            ids.append(f"{case_dir.name}-z{z}")
    return EvalSet(np.stack(images).astype(np.float32), np.stack(lesions), np.stack(brains), types, sizes, ids,
                   "BraTS 2015 (FLAIR)")


def bootstrap_ci(values, n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per slice), resampling slices with replacement."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(a, b, n: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` over the same slices, its 95% bootstrap interval (slices resampled in pairs), and a verdict:
    "higher" or "lower" where the interval excludes 0, else "level" (the slices cannot tell them apart)."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    lo, hi = bootstrap_ci(diff, n=n, seed=seed)
    verdict = "higher" if lo > 0 else "lower" if hi < 0 else "level"
    return {"mean": float(diff.mean()) if len(diff) else float("nan"), "ci": (lo, hi), "verdict": verdict,
            "n": int(len(diff))}


def pixel_scores(anomalies: np.ndarray, lesions: np.ndarray, brains: np.ndarray) -> dict:
    """Threshold-free scores over every brain pixel of every slice: AUPRC (average precision) and AUROC."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    inside = brains.astype(bool)
    y, s = lesions[inside].astype(np.uint8).ravel(), anomalies[inside].astype(np.float64).ravel()
    if y.min() == y.max():
        return {"auprc": float("nan"), "auroc": float("nan")}
    return {"auprc": float(average_precision_score(y, s)), "auroc": float(roc_auc_score(y, s))}


def flagged_share(anomalies: np.ndarray, brains: np.ndarray, threshold: float) -> np.ndarray:
    """Per slice: the share of the brain whose anomaly exceeds ``threshold``."""
    return np.array([(a > threshold)[b.astype(bool)].mean() if b.any() else 0.0 for a, b in zip(anomalies, brains)])


def compute_saliency_maps(data: EvalSet, models, sources=("acat", "gradcam", "gradient"), device="cpu") -> None:
    """Fill ``data.saliency[source]`` (N, H, W) for each saliency source."""
    from diffuse_core.saliency.dispatch import compute_saliency

    for src in sources:
        if src in data.saliency:
            continue
        data.saliency[src] = np.stack([np.asarray(compute_saliency(src, data.images[i], models,
                                                                   brain_mask=data.brains[i]), np.float32)
                                       for i in range(len(data))])


def masks_at(data: EvalSet, percentile: float) -> dict[str, np.ndarray]:
    """Binary masks from each saliency source at a percentile (inside the brain), and the oracle mask (the true
    lesion dilated, :func:`~diffuse_core.evaluation.baselines.oracle_masks`)."""
    from diffuse_core.evaluation.baselines import oracle_masks

    out = {src: np.stack([mask_from_saliency(s[i], data.brains[i], percentile) for i in range(len(data))])
           for src, s in data.saliency.items()}
    out["oracle"] = oracle_masks(data.lesions, data.brains)
    return out


def run_on_set(method: str, denoiser, data: EvalSet, masks: dict[str, np.ndarray], k: int, steps: int, seed: int,
               batch_size: int = 8, precision: str = "auto", inversion_cache=None):
    """A method over a whole set in batches: counterfactuals (N, C, H, W), anomalies (N, H, W), calls, seconds.

    With ``inversion_cache`` (:class:`diffuse_core.pipeline.InversionCache`) every walk that starts with Algorithm 1's
    DDIM inversion reuses the x_K an earlier method or seed computed for the same batch, K and steps (the same
    tensor: the inversion has no random draw), so calls and seconds are then those of the walk's second half."""
    cfs, anos, secs, calls = [], [], 0.0, 0.0
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        out = run_method(method, denoiser, data.images[sl], data.brains[sl], {k_: v[sl] for k_, v in masks.items()},
                         k=k, steps=steps, seed=seed * 100003 + start, precision=precision,
                         inversion_cache=inversion_cache)
        cfs.append(out.counterfactuals)
        anos.append(out.anomalies)
        secs += out.seconds_per_slice * (min(len(data), start + batch_size) - start)
        calls = out.calls_per_slice
    return np.concatenate(cfs), np.concatenate(anos), calls, secs / max(len(data), 1)


def run_assembly_on_set(denoiser, saliency_models, data: EvalSet, k: int | None = None, steps: int | None = None,
                        seed: int = 0, batch_size: int = 8, precision: str = "auto", mask_rule: dict | None = None) -> dict:
    """Dif-fuse over a set as the app runs it: :func:`diffuse_core.run.assembly.run_stack` (the one assembly of a run)
    at the model card's settings (mask rule, score, anomaly threshold, verdict), K ``k``, ``steps`` steps (None: the
    card's), sampler seed ``seed``; ``mask_rule`` redraws by another rule than the card's. Returns counterfactuals (N, C, H, W), anomalies (N, H, W), the redrawn masks and the ACAT
    saliency maps it drew them from (N, H, W), the card's threshold, each slice's verdict (True: abnormal; None
    where the card has no verdict or the slice lies outside the denoiser's trained levels), each slice's estimated
    level and why its call was withheld (None: not withheld, or no level estimator), network calls and seconds per slice (saliency included: the app's cost)."""
    import time

    from diffuse_core.run.assembly import run_stack, slices_of
    from diffuse_core.run.models import RunModels, level_estimator_for
    from diffuse_core.run.settings import settings_for

    models = RunModels(denoiser=denoiser, saliency=saliency_models, folder="evaluated model",
                       level=level_estimator_for(denoiser.card, getattr(denoiser, "device", "cpu")))
    settings = settings_for(denoiser.card, k=k, steps=steps, seed=seed, precision=precision, mask_rule=mask_rule)
    start = time.perf_counter()
    out = dict(run_stack(slices_of(data.images, data.brains), models, settings, "acat", batch_size=batch_size))
    seconds = (time.perf_counter() - start) / max(len(data), 1)
    outcomes = [out[i] for i in range(len(data))]
    results = [o.result for o in outcomes]
    return {"counterfactuals": np.stack([r.counterfactual for r in results]),
            "anomalies": np.stack([r.anomaly for r in results]),
            "masks": np.stack([r.mask for r in results]).astype(np.uint8),
            "saliency": np.stack([np.asarray(r.saliency, np.float32) for r in results]),
            "threshold": outcomes[0].threshold if outcomes else float("nan"),
            "abnormal": [None if o.verdict is None else bool(o.verdict.abnormal) for o in outcomes],
            "levels": [o.level for o in outcomes], "withheld": [o.withheld for o in outcomes],
            "rule": outcomes[0].rule if outcomes else None,
            "calls_per_slice": float(results[0].network_calls) if results else 0.0, "seconds_per_slice": seconds}


def choose_threshold(anomalies: np.ndarray, lesions: np.ndarray, grid=THRESHOLD_GRID) -> float:
    """The threshold of ``grid`` that maximises mean Dice over the diseased slices given."""
    best, best_d = float(grid[0]), -1.0
    for t in grid:
        d = np.mean([dice(a > t, l) for a, l in zip(anomalies, lesions)])
        if d > best_d:
            best, best_d = float(t), d
    return best


def identity_change(images: np.ndarray, counterfactuals: np.ndarray, brains: np.ndarray) -> float:
    """Mean absolute change inside the brain (intensity units of [-1, 1] images) - Fig. 6's identity check."""
    vals = [np.abs(images[i] - counterfactuals[i]).mean(axis=0)[brains[i].astype(bool)].mean()
            for i in range(len(images))]
    return float(np.mean(vals))


def classifier_features(classifier, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pooled last-layer features of the project's classifier (stand-in for Inception, which cannot be downloaded)."""
    feats = []
    device = next(classifier.parameters()).device
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(images[s:s + batch_size]).float().to(device)
            _, f = classifier(x, return_features=True)
            feats.append(f.float().mean(dim=(2, 3)).cpu().numpy() if f.dim() == 4 else f.float().cpu().numpy())
    return np.concatenate(feats)


def kid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, on whatever features are given."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    m, n, d = len(a), len(b), a.shape[1]
    if m < 2 or n < 2:
        raise ValueError("KID needs at least two samples on each side")
    kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def scores(anomalies: np.ndarray, lesions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice Dice and IoU of the binarised anomaly maps."""
    d = np.array([dice(a > threshold, l) for a, l in zip(anomalies, lesions)])
    j = np.array([iou(a > threshold, l) for a, l in zip(anomalies, lesions)])
    return d, j


__all__ = ["EvalSet", "synthbrain_set", "brats_set", "bootstrap_ci", "paired_difference", "pixel_scores", "flagged_share", "compute_saliency_maps", "masks_at", "run_on_set", "run_assembly_on_set",
           "choose_threshold", "identity_change", "classifier_features", "kid", "scores", "METHODS", "MASK_SOURCE"]
