"""Training data as arrays in memory: SynthBrain pools (generated once, cached on disk), the data forms the trainers
accept, and the one augmentation (random left-right flips) drawn from the trainer's generator.

A pool is generated once (in parallel) and cached under ``~/.cache/diffuse-studio`` (``DIFFUSE_CACHE`` overrides it)
keyed by generator version and source, split, seeds, size and modalities, so that a resumed run does not regenerate
it. Images are (N, C, H, W) in [-1, 1]; labels 0 healthy, 1 diseased; masks (N, H, W) in {0, 1}.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch


def cache_dir() -> Path:
    root = Path(os.environ.get("DIFFUSE_CACHE", Path.home() / ".cache" / "diffuse-studio"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def make_one(task: tuple) -> tuple[np.ndarray, int, np.ndarray, int]:
    """One SynthBrain slice for a pool: task = (seed, modalities, size, healthy[, realism]) -> (image f16, label,
    lesion mask, template level)."""
    from diffuse_core.data.synthbrain import generate_slice

    seed, modalities, size, healthy = task[:4]
    realism = task[4] if len(task) > 4 else "default"
    if healthy == "counterpart":                 # the healthy counterpart of this seed's diseased slice
        kind = generate_slice(seed, modalities=modalities, size=size, healthy=False, realism=realism).lesion_type
        s = generate_slice(seed, modalities=modalities, size=size, healthy=True, lesion_type=kind, realism=realism)
    else:
        s = generate_slice(seed, modalities=modalities, size=size, healthy=healthy, realism=realism)
    return s.image.astype(np.float16), int(s.lesion_type != "none"), s.lesion_mask.astype(np.uint8), int(s.level)


def synthbrain_pool(n: int, split: str = "train", base_seed: int = 0, size: int = 128,
                    modalities: tuple[str, ...] = ("flair",), healthy: bool | None = True,
                    workers: int | None = None, realism="default") -> dict[str, np.ndarray]:
    """``n`` SynthBrain slices as arrays: images (N, C, H, W) float16, labels (N,), lesion masks (N, H, W), seeds,
    template levels (N,).

    ``healthy``: True healthy slices only, None SynthBrain's own mix of healthy and diseased, False diseased only,
    "counterpart" the healthy counterpart of each seed's diseased slice (same level, anatomy, scanner and noise;
    labelled 0). ``realism``: the
    generator's (:func:`diffuse_core.data.synthbrain.generate_slice`; "scanner" for scanner effects and lesion shapes).
    """
    from diffuse_core.data.synthbrain import SYNTHBRAIN_VERSION, check_realism, sample_seed

    effects = ",".join(sorted(check_realism(realism)))
    pkg = Path(__file__).resolve().parents[1] / "data" / "synthbrain"          # every module of the generator
    source = hashlib.sha1(b"".join(f.name.encode() + f.read_bytes() for f in sorted(pkg.glob("*.py")))).hexdigest()[:12]
    key = f"{SYNTHBRAIN_VERSION}|{source}|{split}|{base_seed}|{n}|{size}|{','.join(modalities)}|{healthy}"
    key += f"|{effects}" if effects else ""
    path = cache_dir() / f"pool_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as z:
            if "levels" in z.files:              # pools cached before levels were kept are made again
                return {k: z[k] for k in z.files}
    seeds = [sample_seed(split, base_seed, i) for i in range(n)]
    tasks = [(s, tuple(modalities), size, healthy, realism) for s in seeds]
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as ex:
        results = list(ex.map(make_one, tasks, chunksize=64))
    pool = {"images": np.stack([r[0] for r in results]), "labels": np.array([r[1] for r in results], np.int64),
            "masks": np.stack([r[2] for r in results]), "seeds": np.array(seeds, np.int64),
            "levels": np.array([r[3] for r in results], np.int64)}
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **pool)
    os.replace(tmp, path)
    return pool


def synthbrain_card(n: int, split: str, base_seed: int, size: int, modalities: tuple[str, ...],
                    healthy_only: bool, realism="default") -> dict:
    """The ``data`` block of a model card for a SynthBrain pool."""
    from diffuse_core.data.synthbrain import SYNTHBRAIN_VERSION, sample_seed

    return {"generator": "SynthBrain", "version": SYNTHBRAIN_VERSION, "split": split, "modalities": list(modalities),
            "size": size, "healthy_only": healthy_only, "n_slices": n,
            "seed_range": [sample_seed(split, base_seed, 0), sample_seed(split, base_seed, n - 1)],
            "realism": realism_name(realism)}


def realism_name(realism) -> str:
    """SynthBrain's realism as a card records it: "default", or its effects sorted and joined by commas."""
    from diffuse_core.data.synthbrain import check_realism

    effects = sorted(check_realism(realism))
    return ",".join(effects) if effects else "default"


# ---------------------------------------------------------------------------------------------- data forms
def _stack_dataset(ds) -> dict:
    """A torch Dataset of dict items (image, label, [lesion_mask, brain_mask, lesion_type, seed]) -> arrays."""
    images, labels, masks, brains, types, seeds = [], [], [], [], [], []
    for i in range(len(ds)):
        it = ds[i]
        images.append(np.asarray(it["image"], dtype=np.float32))
        labels.append(int(it["label"]))
        if "lesion_mask" in it:
            masks.append(np.asarray(it["lesion_mask"]).reshape(images[-1].shape[-2:]).astype(np.uint8))
        if "brain_mask" in it:
            brains.append(np.asarray(it["brain_mask"]).reshape(images[-1].shape[-2:]).astype(np.uint8))
        types.append(str(it.get("lesion_type", "diseased" if labels[-1] else "none")))
        if "seed" in it:
            seeds.append(int(it["seed"]))
    out = {"images": np.stack(images), "labels": np.asarray(labels, np.int64), "lesion_types": np.asarray(types)}
    if len(masks) == len(images):
        out["masks"] = np.stack(masks)
    if len(brains) == len(images):
        out["brain_masks"] = np.stack(brains)
    if len(seeds) == len(images):
        out["seeds"] = np.asarray(seeds, np.int64)
    return out


def as_arrays(data) -> dict:
    """Normalise the accepted data forms to a dict of arrays with at least ``images`` (N, C, H, W) and ``labels``.

    Accepted: a dict with ``images`` and ``labels`` (optionally ``masks`` (N, H, W) lesion masks, ``brain_masks``,
    ``lesion_types``, ``seeds``), e.g. from :func:`synthbrain_pool` or ``slice_folder.load_slice_folder``; a
    tuple/list ``(images, labels)``; or any torch Dataset whose items are SynthBrain-style dicts.
    """
    if isinstance(data, dict):
        if "images" not in data:
            raise ValueError("a data dict needs an 'images' array (N, C, H, W) and a 'labels' array (N,)")
        out = dict(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], dict):
        out = {"images": data[0], "labels": data[1]}
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        out = _stack_dataset(data)
    else:
        raise TypeError(f"cannot use {type(data).__name__} as training data: pass a dict of arrays, "
                        f"(images, labels) or a Dataset of dicts")
    images = out["images"]
    images = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    out["images"] = images
    if "labels" in out and out["labels"] is not None:
        lab = out["labels"]
        out["labels"] = np.asarray(lab.cpu().numpy() if isinstance(lab, torch.Tensor) else lab, np.int64)
        if len(out["labels"]) != len(images):
            raise ValueError(f"{len(images)} images but {len(out['labels'])} labels")
    return out


def labelled_training_data(data, pool_size: int, seed: int, size: int, modalities,
                           realism="default", normalise: str = "absolute") -> tuple[dict, dict]:
    """Arrays (:func:`as_arrays`) and the card's ``data`` block for the ACAT trainers: ``data`` as given, or, where it
    is None, ``pool_size`` SynthBrain train slices (healthy and diseased) of the generator's ``realism``, scaled by
    ``normalise`` (:func:`normalise_slices`: "tissue" is the scale the app gives a real MRI, and so the classifier
    and autoencoder see in use when the DDPM's card says "tissue")."""
    if data is None:
        arrays = as_arrays(synthbrain_pool(pool_size, "train", seed, size, tuple(modalities), healthy=None,
                                           realism=realism))
        if normalise != "absolute":
            arrays["images"] = normalise_slices(arrays["images"], normalise).astype(np.float32)
        return arrays, _train_pool_card(arrays, seed, size, modalities, realism, normalise)
    arrays = as_arrays(data)
    card = {"source": str(data.get("source", "caller")) if isinstance(data, dict) else "caller",
            "n_slices": int(len(arrays["images"]))}
    if "labels" in arrays:
        card["diseased_fraction"] = float(np.mean(arrays["labels"] > 0))
    return arrays, card


def paired_training_data(pool_size: int, seed: int, size: int, modalities, realism="default",
                         normalise: str = "absolute") -> tuple[dict, dict]:
    """SynthBrain train slices in pairs, for the classifier's paired batches: ``pool_size // 2`` diseased slices
    and, at the same seeds, their healthy counterparts (same level, anatomy, scanner and noise; pixel-identical away
    from the lesion). Arrays as :func:`labelled_training_data` returns them, healthy first, plus ``pairs`` (P, 2):
    the healthy and the diseased index of each pair; and the card's ``data`` block."""
    n = max(1, int(pool_size) // 2)
    healthy = as_arrays(synthbrain_pool(n, "train", seed, size, tuple(modalities), healthy="counterpart",
                                        realism=realism))
    diseased = as_arrays(synthbrain_pool(n, "train", seed, size, tuple(modalities), healthy=False, realism=realism))
    if not np.array_equal(healthy.get("seeds"), diseased.get("seeds")):          # pragma: no cover - same seed list
        raise RuntimeError("the healthy and diseased pools were drawn at different seeds")
    images = np.concatenate([healthy["images"], diseased["images"]])
    if normalise != "absolute":
        images = normalise_slices(images, normalise).astype(np.float32)
    arrays = {"images": images, "labels": np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)]),
              "pairs": np.stack([np.arange(n), n + np.arange(n)], axis=1)}
    card = _train_pool_card({**arrays, "seeds": healthy["seeds"]}, seed, size, modalities, realism, normalise)
    return arrays, {**card, "pairing": f"{n} diseased slices, each with its healthy counterpart (same seed)"}


def _train_pool_card(arrays: dict, seed: int, size: int, modalities, realism, normalise: str) -> dict:
    """The card's ``data`` block of a SynthBrain train pool held as ``arrays`` (images, labels, seeds)."""
    from diffuse_core.data.synthbrain import SYNTHBRAIN_VERSION

    seeds = arrays.get("seeds")
    return {"generator": "SynthBrain", "version": SYNTHBRAIN_VERSION, "split": "train", "base_seed": seed,
            "n_slices": int(len(arrays["images"])), "size": size, "modalities": list(modalities),
            "seed_range": [int(np.min(seeds)), int(np.max(seeds))] if seeds is not None and len(seeds) else None,
            "diseased_fraction": float(np.mean(arrays["labels"] > 0)), "realism": realism_name(realism),
            "input_normalisation": normalise}


# -------------------------------------------------------------------------------------------- augmentation
def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of a batch (N, C, H, W) left-right with probability 1/2, drawn from ``generator``.

    A fair augmentation for brain slices only because the left-right asymmetry of normal anatomy is small next to
    what the models have to learn here.
    """
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    if flip.any():
        x = x.clone()
        x[flip] = x[flip].flip(-1)
    return x


def scanner_augment(x: torch.Tensor, generator: torch.Generator, p: float = 0.8) -> torch.Tensor:
    """What differs between scanners, drawn per image with probability ``p`` (issue: models v2): a gamma change of
    contrast (0.78..1.28), a smooth multiplicative bias field (a 4 x 4 grid of log-gains, s.d. 0.08, upsampled
    bilinearly), a Gaussian blur (sigma 0.3..1.0 px, half of them) and Gaussian noise inside the head (s.d. 0..0.03 of
    the range, half of them). Images (N, C, H, W) in [-1, 1]; air (-1) stays air. Every draw comes from ``generator``.
    """
    from torch.nn import functional as F

    n, c, h, w = x.shape
    dev = generator.device                       # draws where the generator lives (a GPU's for a GPU batch)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=dev).to(x.device)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=dev).to(x.device)

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * rand(*shape)

    on = (rand(n) < p).float().view(n, 1, 1, 1)
    u = (x.clamp(-1, 1) + 1) / 2                                             # [0, 1], air 0
    head = (u > 0.02).float()
    gamma = torch.exp(uniform((n, 1, 1, 1), -0.25, 0.25))
    v = u.clamp_min(1e-6) ** gamma
    field = F.interpolate(randn(n, 1, 4, 4) * 0.08, size=(h, w), mode="bilinear", align_corners=True)
    v = v * torch.exp(field)
    sigma = uniform((n,), 0.3, 1.0)
    blur_on = rand(n) < 0.5
    if blur_on.any():
        r = torch.arange(-2, 3, dtype=torch.float32, device=x.device)
        k1 = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
        k1 = k1 / k1.sum(1, keepdim=True)                                       # (N, 5)
        k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None]  # (N*C, 1, 5, 5)
        blurred = F.conv2d(F.pad(v.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="replicate"), k2,
                           groups=n * c).reshape(n, c, h, w)
        v = torch.where(blur_on.view(n, 1, 1, 1), blurred, v)
    noise_sd = uniform((n, 1, 1, 1), 0.0, 0.03)
    noise_sd = noise_sd * (rand(n, 1, 1, 1) < 0.5).float()
    v = v + head * noise_sd * randn(*x.shape)
    v = (v * head).clamp(0, 1)
    return on * (v * 2 - 1) + (1 - on) * x


# ---------------------------------------------------------------------------------------------- input normalisation
NORMALISATIONS = ("absolute", "percentile", "tissue")


def percentile_stretch(images, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """SynthBrain slices (N, C, H, W) put through the app's own MRI preparation: per slice and channel the brain's
    ``low_pct`` / ``high_pct`` percentiles to -1 / 1, background -1 (:func:`diffuse_core.io.preprocess.normalize_mri`).

    SynthBrain renders FLAIR on an absolute scale (white matter near -0.3); a real slice prepared by the app spans
    the whole [-1, 1] inside the brain. A model trained on stretched slices sees healthy brain as the app shows it
    real ones (docs/real_scans.md: the intensity histogram alone tells the absolute scale from real slices with
    AUROC 1.00, the stretched one with 0.77). The brain is the slice's non-background (:func:`brain_masks`)."""
    from diffuse_core.io.preprocess import normalize_mri

    return _per_slice(images, lambda img, brain: normalize_mri(img, brain, low_pct, high_pct), min_brain=1)


def _per_slice(images, prepare, min_brain: int) -> np.ndarray:
    """``prepare(slice, brain)`` over slices (N, C, H, W) whose brain (their non-background, :func:`brain_masks`)
    holds at least ``min_brain`` pixels; the others stay background (-1)."""
    from diffuse_core.core.brain import brain_masks

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"expected slices (N, C, H, W), got shape {x.shape}")
    out = np.full_like(x, -1.0)
    for i, (img, brain) in enumerate(zip(x, brain_masks(x))):
        if brain.sum() >= min_brain:
            out[i] = prepare(img, brain)
    return out


def tissue_scaled(images, scale: dict | None = None) -> np.ndarray:
    """SynthBrain slices (N, C, H, W) put on the tissue scale (:func:`diffuse_core.core.intensity.tissue_scale`), the
    same preparation a real MRI gets in ``run`` and the app when the model's card says ``input_normalisation:
    tissue``. The brain is the slice's non-background (:func:`brain_masks`)."""
    from diffuse_core.core.intensity import tissue_scale

    return _per_slice(images, lambda img, brain: tissue_scale(img, brain, scale)[0], min_brain=16)


def normalise_slices(images, normalisation: str, scale: dict | None = None) -> np.ndarray:
    """Slices as a model trained with ``normalisation`` (a card's ``input_normalisation``) expects them;
    ``scale``: the card's ``tissue_scale`` for "tissue" (default :data:`diffuse_core.core.intensity.TISSUE_SCALE`)."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}: choose one of {', '.join(NORMALISATIONS)}")
    if normalisation == "percentile":
        return percentile_stretch(images)
    if normalisation == "tissue":
        return tissue_scaled(images, scale)
    return np.asarray(images)


# ---------------------------------------------------------------------------------------------- intensity reference
def write_intensity_reference(folder, n: int = 1000) -> dict:
    """Put the intensity reference of a saved SynthBrain-trained model (where its training slices have the brain's
    percentiles, :func:`diffuse_core.io.preprocess.intensity_reference`) into its card, from ``n`` slices of the
    pool its card names. Returns the reference."""
    from diffuse_core.io.preprocess import intensity_reference
    from diffuse_core.models.checkpoint import read_config, update_card

    card = read_config(folder).get("card") or {}
    data = card.get("data") or {}
    if data.get("generator") != "SynthBrain":
        raise ValueError(f"{folder}: its card names no SynthBrain training pool; a model trained on real slices "
                         f"gets its reference from its own data when trained")
    seeds = data.get("seed_range") or [0]
    from diffuse_core.data.synthbrain import sample_seed

    base_seed = next((b for b in range(64) if sample_seed(data.get("split", "train"), b, 0) == seeds[0]), 0)
    pool = synthbrain_pool(n, data.get("split", "train"), base_seed, int(data.get("size", 128)),
                           tuple(data.get("modalities", ("flair",))), healthy=bool(data.get("healthy_only", True)))
    ref = intensity_reference(pool["images"].astype(np.float32))
    ref["source"] = f"{n} slices of the training pool (SynthBrain {data.get('split', 'train')}, healthy)"
    update_card(folder, intensity_reference=ref, by="intensity-reference")
    return ref


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a SynthBrain-trained model's intensity reference into its card")
    ap.add_argument("--reference", required=True, metavar="MODEL_DIR")
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args(argv)
    ref = write_intensity_reference(args.reference, args.n)
    print(f"{args.reference}: brain percentiles {ref['percentiles']} at {ref['values']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
