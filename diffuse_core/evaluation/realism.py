"""How far SynthBrain is from real scans, measured (issue: models v2): can a small classifier tell them apart?

A healthy model trained on SynthBrain can only be as healthy-looking on real scans as SynthBrain is real. This module
puts a number on that gap: real tumour-free FLAIR slices of BraTS cases against healthy SynthBrain slices, both
prepared exactly as the app prepares an input (128², [-1, 1], background -1), and a small CNN trained to tell which is
which. Its out-of-fold pixel-free score is the **AUROC**: 0.5 means the classifier cannot tell them apart (SynthBrain
is as real as this test can see), 1.0 that every slice gives itself away.

Protocol (:func:`realism_auroc`):

1. real: every tumour-free slice of each BraTS case whose brain covers at least half of the case's largest brain
   section (not the slivers at the top and bottom of the head);
2. synthetic: the same number of healthy SynthBrain test slices (optionally through
   :func:`diffuse_core.train.data.scanner_augment`, the augmentation aimed at real scanners);
3. grouped cross-validation: one fold per BraTS case (its slices are never seen in training), the SynthBrain slices
   dealt round-robin over the folds; a fresh small CNN per fold (seeded), left-right flips, balanced batches;
4. AUROC of the held-out scores over all folds (scikit-learn), with a bootstrap 95 % interval over slices; beside it
   the same protocol with a logistic regression on the brain's intensity histogram alone, which says how much of the
   gap is plain intensity statistics.

    python -m diffuse_core.evaluation.realism --brats ../shared/real_cases/brats2015 [--augment] [--synthetic percentile]
        [--out realism.json]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HIST_BINS = 32


@dataclass
class RealismSet:
    """Slices (N, 1, H, W) in [-1, 1] with 1 = real, 0 = SynthBrain, and the cross-validation fold of each."""

    images: np.ndarray
    is_real: np.ndarray
    folds: np.ndarray
    brains: np.ndarray


def real_healthy_slices(folder, size: int = 128, mri_reference: dict | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tumour-free FLAIR slices of every BraTS case in ``folder``: images (N, 1, size, size), brain masks (N, H, W),
    and the case index of each slice. ``mri_reference``: prepared with the intensity matched to a model's training
    data (:func:`diffuse_core.io.preprocess.standardize_mri`) instead of the default percentile stretch."""
    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.preprocess import prepare_slice

    cases = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not cases:
        raise FileNotFoundError(f"no case folders in {folder}")
    images, brains, groups = [], [], []
    for i, case_dir in enumerate(cases):
        case = load_brats_case(case_dir, modalities=("flair",))
        tumour = set(case.tumour_slices())
        area = case.brain.sum(axis=(0, 1))
        for z in case.brain_slices():
            if z in tumour or area[z] < 0.5 * area.max():
                continue
            raw, _, brain = case.slice(z)
            prep = prepare_slice(raw, size=size, modality="mri", brain_mask=brain, mri_reference=mri_reference)
            images.append(prep.image)
            brains.append(prep.brain_mask)
            groups.append(i)
    if not images:
        raise ValueError(f"no tumour-free slices with a large enough brain in {folder}")
    return np.stack(images).astype(np.float32), np.stack(brains).astype(np.uint8), np.asarray(groups)


def synthbrain_healthy(n: int, size: int = 128, augment: bool = False, seed: int = 0,
                       normalisation: str = "absolute", realism="default") -> np.ndarray:
    """``n`` healthy SynthBrain FLAIR test slices (N, 1, size, size); ``augment`` passes them through the scanner
    augmentation (every slice augmented); ``normalisation`` "percentile" then stretches them as the app prepares a
    real MRI (what a model trained with ``train ddpm --normalise percentile`` sees). ``realism``: the generator's
    (:func:`diffuse_core.data.synthbrain.generate_slice`); the same seeds whatever it is, stored as float16 as a
    training pool stores them, so two realisms give paired slices."""
    from diffuse_core.data.synthbrain import check_realism, generate_slice, sample_seed
    from diffuse_core.train.data import normalise_slices, scanner_augment, synthbrain_pool

    if check_realism(realism):
        images = np.stack([generate_slice(sample_seed("test", seed, i), ("flair",), size, healthy=True,
                                          realism=realism).image.astype(np.float16) for i in range(n)])
        images = images.astype(np.float32)
    else:
        images = synthbrain_pool(n, "test", seed, size, ("flair",), healthy=True, workers=1)["images"]
        images = images.astype(np.float32)
    if augment:
        images = scanner_augment(torch.from_numpy(images), torch.Generator().manual_seed(seed), p=1.0).numpy()
    return normalise_slices(images, normalisation).astype(np.float32)


def build_set(real: np.ndarray, real_groups: np.ndarray, synthetic: np.ndarray) -> RealismSet:
    """Real slices keep their case as fold; the synthetic ones are dealt round-robin over the same folds."""
    n_folds = int(real_groups.max()) + 1
    from diffuse_core.core.brain import brain_masks

    images = np.concatenate([real, synthetic]).astype(np.float32)
    return RealismSet(images=images, is_real=np.r_[np.ones(len(real)), np.zeros(len(synthetic))].astype(np.int64),
                      folds=np.r_[real_groups, np.arange(len(synthetic)) % n_folds].astype(np.int64),
                      brains=brain_masks(images))


class _SmallCNN(nn.Module):
    """Four strided conv blocks and a linear read-out: small enough to train in seconds, able to see texture."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, c = [], 1
        for w in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GroupNorm(4, w), nn.SiLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))[:, 0]


def _cnn_scores(data: RealismSet, steps: int, batch: int, seed: int) -> np.ndarray:
    """Held-out logits of a fresh CNN per fold."""
    scores = np.zeros(len(data.images), dtype=np.float64)
    x_all = torch.from_numpy(data.images)
    y_all = torch.from_numpy(data.is_real).float()
    for fold in np.unique(data.folds):
        test = data.folds == fold
        tr_real = np.where(~test & (data.is_real == 1))[0]
        tr_syn = np.where(~test & (data.is_real == 0))[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + int(fold))
            net = _SmallCNN()
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        gen = np.random.default_rng(seed + int(fold))
        net.train()
        for _ in range(steps):
            idx = np.r_[gen.choice(tr_real, batch // 2), gen.choice(tr_syn, batch // 2)]
            x = x_all[idx]
            flip = torch.from_numpy(gen.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.binary_cross_entropy_with_logits(net(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            scores[test] = net(x_all[torch.from_numpy(np.where(test)[0])]).numpy()
    return scores


def _histogram_features(data: RealismSet) -> np.ndarray:
    edges = np.linspace(-1, 1, HIST_BINS + 1)
    feats = []
    for img, brain in zip(data.images, data.brains):
        v = img[0][brain.astype(bool)]
        h, _ = np.histogram(v, bins=edges)
        feats.append(h / max(h.sum(), 1))
    return np.asarray(feats)


def _histogram_scores(data: RealismSet) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    feats = _histogram_features(data)
    scores = np.zeros(len(feats))
    for fold in np.unique(data.folds):
        test = data.folds == fold
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(feats[~test], data.is_real[~test])
        scores[test] = clf.decision_function(feats[test])
    return scores


def auroc_with_ci(labels: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    point = float(roc_auc_score(labels, scores))
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() != labels[idx].max():
            boots.append(roc_auc_score(labels[idx], scores[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"auroc": point, "ci95": [float(lo), float(hi)]}


def realism_auroc(data: RealismSet, steps: int = 300, batch: int = 32, seed: int = 0) -> dict:
    """The CNN's and the intensity histogram's held-out AUROC at telling real (1) from SynthBrain (0) slices;
    ``steps`` 0: the histogram's alone (seconds instead of minutes; "cnn" None)."""
    cnn = _cnn_scores(data, steps, batch, seed) if steps > 0 else None
    hist = _histogram_scores(data)
    return {"cnn": auroc_with_ci(data.is_real, cnn, seed=seed) if cnn is not None else None,
            "histogram": auroc_with_ci(data.is_real, hist, seed=seed),
            "n_real": int(data.is_real.sum()), "n_synthetic": int((data.is_real == 0).sum()),
            "folds": int(len(np.unique(data.folds))), "steps": int(steps), "batch": int(batch)}


def measure(brats: str | Path, augment: bool = False, size: int = 128, steps: int = 300, seed: int = 0,
            mri_reference: dict | None = None, synthetic_normalisation: str = "absolute", realism="default",
            real: tuple | None = None) -> dict:
    """The realism AUROC of (optionally scanner-augmented) SynthBrain, of the generator's ``realism``, against the
    BraTS cases in ``brats``, the real slices prepared as the app prepares them (with ``mri_reference``: matched to
    the model's training data). ``real``: the output of :func:`real_healthy_slices` when already loaded."""
    images, _, groups = real if real is not None else real_healthy_slices(brats, size, mri_reference)
    synthetic = synthbrain_healthy(len(images), size, augment=augment, seed=seed,
                                   normalisation=synthetic_normalisation, realism=realism)
    out = realism_auroc(build_set(images, groups, synthetic), steps=steps, seed=seed)
    out.update({"synthetic": "SynthBrain FLAIR, healthy, test split" + (" + scanner augmentation" if augment else "")
                + (f", {synthetic_normalisation} scale" if synthetic_normalisation != "absolute" else ""),
                "realism": realism if isinstance(realism, str) else ",".join(realism),
                "real": f"tumour-free BraTS FLAIR slices of {groups.max() + 1} cases",
                "intensity": ("tissue" if mri_reference.get("method") == "tissue" else "model") if mri_reference
                else "percentile", "size": size})
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brats", required=True, help="folder of BraTS cases (real tumour-free slices are taken)")
    ap.add_argument("--augment", action="store_true", help="pass SynthBrain through the scanner augmentation")
    ap.add_argument("--intensity", choices=("percentile", "model", "tissue"), default="percentile",
                    help="how the real slices are normalised (as diffuse-studio run --intensity)")
    ap.add_argument("--synthetic", choices=("absolute", "percentile", "tissue"), default="absolute",
                    help="SynthBrain as rendered, or stretched as the app prepares a real MRI (train ddpm --normalise)")
    ap.add_argument("--realism", action="append", metavar="REALISM",
                    help="SynthBrain's realism: default, scanner, or effects joined by commas (e.g. bias,noise); "
                         "repeat to measure several on the same real slices (default: default)")
    ap.add_argument("--steps", type=int, default=300, help="CNN training steps per fold (0: the histogram alone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ref = None
    if args.intensity == "model":
        from diffuse_core.run.card import intensity_reference_of
        from diffuse_core.models.denoiser import load_denoiser
        from diffuse_core.models.registry import model_dir_for

        ref = intensity_reference_of(load_denoiser(model_dir_for("ddpm", None), device="cpu"))
    elif args.intensity == "tissue":
        from diffuse_core.core.intensity import TISSUE_SCALE

        ref = dict(TISSUE_SCALE)
    realisms = args.realism or ["default"]
    real = real_healthy_slices(args.brats, 128, ref)
    results = []
    for realism in realisms:
        res = measure(args.brats, augment=args.augment, steps=args.steps, seed=args.seed, mri_reference=ref,
                      synthetic_normalisation=args.synthetic, realism=realism, real=real)
        cnn = res["cnn"]
        print(f"{res['synthetic']}, realism {res['realism']} vs {res['real']}, intensity {res['intensity']} "
              f"({res['n_real']} real, {res['n_synthetic']} synthetic slices): "
              + (f"CNN AUROC {cnn['auroc']:.3f} ({cnn['ci95'][0]:.3f}-{cnn['ci95'][1]:.3f}), " if cnn else "") +
              f"intensity histogram AUROC {res['histogram']['auroc']:.3f} "
              f"({res['histogram']['ci95'][0]:.3f}-{res['histogram']['ci95'][1]:.3f}); 0.5 = indistinguishable",
              flush=True)
        results.append(res)
        if args.out:                                  # written after each, so a long list keeps what it measured
            from diffuse_core.evaluation.provenance import commit_id, hardware_summary

            Path(args.out).write_text(json.dumps(results[0] if len(realisms) == 1 else
                                                 {"results": results, "commit": commit_id(),
                                                  "hardware": hardware_summary("cpu"),
                                                  "threads": torch.get_num_threads()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
