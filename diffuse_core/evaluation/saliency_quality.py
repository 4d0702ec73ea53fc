"""How good ACAT's models are: the classifier's accuracy and AUROC, and a saliency method's localisation of lesions.

Measured on labelled slices (the data forms of :func:`diffuse_core.train.data.as_arrays`, e.g. a held-out SynthBrain
split from :func:`diffuse_core.evaluation.cards.synthbrain_labelled`) for the model cards and the report:

- :func:`evaluate_classifier`: accuracy and AUROC overall, per lesion type and per lesion size;
- :func:`evaluate_acat`: the share of lesion pixels inside the saliency mask binarised at the 90th percentile inside
  the brain, and that mask's Dice, for ACAT, Grad-CAM or the input gradient.

Labels: 0 healthy, 1 diseased. Lesion size classes are pixel areas at 128 x 128 (scaled by (side / 128) ** 2).
"""

from __future__ import annotations

import numpy as np
import torch

from diffuse_core.data.synthbrain import LESION_MEDIUM_MAX_PX, LESION_SMALL_MAX_PX
from diffuse_core.models.classifier import DISEASED, Classifier
from diffuse_core.train.data import as_arrays

# lesion area in pixels at 128 x 128, SynthBrain's size classes: small <= 60 < medium <= 300 < large
SIZE_BINS = (LESION_SMALL_MAX_PX, LESION_MEDIUM_MAX_PX)


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve by the rank (Mann-Whitney U) formula, ties given average ranks; None where a class
    is missing."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _size_bin(arrays: dict, i: int, bins=SIZE_BINS) -> str:
    """"small" | "medium" | "large" by the lesion's pixel area, thresholds scaled from 128 x 128 to the image."""
    mask = np.asarray(arrays["masks"][i]).astype(bool)
    area = float(mask.sum()) * (128 * 128) / mask.size
    return "small" if area <= bins[0] else ("medium" if area <= bins[1] else "large")


@torch.no_grad()
def classifier_probabilities(classifier: Classifier, images, batch_size: int = 64) -> np.ndarray:
    """P(diseased) for (N, C, H, W) images, in eval mode, float32."""
    was_training = classifier.training
    classifier.eval()
    dev = next(classifier.parameters()).device
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[i:i + batch_size], dtype=np.float32)).to(dev)
            out.append(torch.softmax(classifier(x).float(), 1)[:, DISEASED].cpu().numpy())
    finally:
        classifier.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate_classifier(classifier: Classifier, dataset, threshold: float = 0.5, size_bins=SIZE_BINS) -> dict:
    """Accuracy and AUROC overall, per lesion type (that type's diseased slices vs all healthy ones) and per lesion
    size (lesion pixels at 128 x 128: small <= 60, medium <= 300, large; SynthBrain's classes). Per group,
    ``sensitivity`` is the accuracy on its diseased slices."""
    arrays = as_arrays(dataset)
    probs = classifier_probabilities(classifier, arrays["images"])
    y = arrays["labels"] > 0
    pred = probs >= threshold
    res = {"n": int(len(y)), "n_healthy": int((~y).sum()), "n_diseased": int(y.sum()),
           "accuracy": float((pred == y).mean()), "auroc": auroc(probs, y),
           "sensitivity": float(pred[y].mean()) if y.any() else None,
           "specificity": float((~pred[~y]).mean()) if (~y).any() else None, "threshold": threshold}
    healthy = ~y

    def group(sel: np.ndarray) -> dict:
        both = sel | healthy
        return {"n": int(sel.sum()), "sensitivity": float(pred[sel].mean()),
                "accuracy": float((pred[both] == y[both]).mean()), "auroc": auroc(probs[both], y[both])}

    types = np.asarray(arrays.get("lesion_types", np.where(y, "diseased", "none")))
    res["per_lesion_type"] = {str(t): group(y & (types == t)) for t in sorted(set(types[y].tolist()))}
    if "masks" in arrays:
        bins = np.array([_size_bin(arrays, i, size_bins) if y[i] else "" for i in range(len(y))])
        res["per_lesion_size"] = {b: group(y & (bins == b)) for b in ("small", "medium", "large") if (bins == b).any()}
        res["size_bins"] = {"small": f"<= {size_bins[0]} px at 128x128", "medium": f"<= {size_bins[1]} px",
                            "large": f"> {size_bins[1]} px"}
    return res


def evaluate_acat(models, dataset, percentile: float = 90.0, method: str = "acat", batch_size: int = 16,
                  size_bins=SIZE_BINS, **saliency_kwargs) -> dict:
    """Localisation quality of a saliency method on the diseased slices of ``dataset``.

    For each slice the map is smoothed (5x5 Gaussian) and binarised at its ``percentile`` inside the brain, exactly
    as Dif-fuse builds its mask (:func:`diffuse_core.core.masks.mask_from_saliency`). Reported (means over slices):
    ``lesion_share`` = |mask & lesion| / |lesion| (share of lesion pixels inside the mask), ``dice`` of the mask
    alone against the lesion, ``mass_in_lesion`` = share of the saliency mass on lesion pixels, ``pointing`` =
    share of slices whose smoothed saliency peaks on the lesion; overall, per lesion type and per lesion size.
    """
    from diffuse_core.core.masks import mask_from_saliency, smooth_saliency
    from diffuse_core.saliency.dispatch import compute_saliency

    arrays = as_arrays(dataset)
    if "masks" not in arrays:
        raise ValueError("evaluate_acat needs lesion masks with the images")
    y = arrays["labels"] > 0
    idx = np.nonzero(y & (np.asarray(arrays["masks"]).reshape(len(y), -1).sum(1) > 0))[0]
    types = np.asarray(arrays.get("lesion_types", np.where(y, "diseased", "none")))
    rows = []
    for start in range(0, len(idx), batch_size):
        sel = idx[start:start + batch_size]
        x = torch.as_tensor(np.asarray(arrays["images"][sel], dtype=np.float32))
        brain = np.asarray(arrays["brain_masks"][sel]).astype(bool) if "brain_masks" in arrays else None
        sal = compute_saliency(method, x, models, brain_mask=brain, **saliency_kwargs)
        for j, i in enumerate(sel):
            b = brain[j] if brain is not None else (np.asarray(arrays["images"][i]) > -1 + 1e-3).any(axis=0)
            lesion = np.asarray(arrays["masks"][i]).astype(bool).reshape(sal.shape[-2:])
            m = mask_from_saliency(sal[j], b, percentile).astype(bool)
            s = smooth_saliency(sal[j]) * b
            inter = float((m & lesion).sum())
            rows.append({"type": str(types[i]), "size": _size_bin(arrays, i, size_bins),
                         "lesion_share": inter / lesion.sum(), "dice": 2 * inter / (m.sum() + lesion.sum()),
                         "mass_in_lesion": float(sal[j][lesion].sum() / max(sal[j].sum(), 1e-12)),
                         "pointing": float(lesion.flat[int(np.argmax(s))])})

    def summary(rs) -> dict:
        if not rs:
            return {"n": 0}
        return {"n": len(rs), **{k: float(np.mean([r[k] for r in rs]))
                                 for k in ("lesion_share", "dice", "mass_in_lesion", "pointing")}}

    res = {"method": method, "percentile": percentile, **summary(rows)}
    if saliency_kwargs:
        res["params"] = {k: v for k, v in saliency_kwargs.items() if isinstance(v, (int, float, bool, str))}
    res["per_lesion_type"] = {t: summary([r for r in rows if r["type"] == t]) for t in sorted({r["type"] for r in rows})}
    res["per_lesion_size"] = {s: summary([r for r in rows if r["size"] == s]) for s in ("small", "medium", "large")
                              if any(r["size"] == s for r in rows)}
    return res
