"""Training and evaluation of ACAT's autoencoder and classifier.

Both trainers share one loop: an in-memory pool of slices (SynthBrain's train split generated once, by default),
AdamW with a short warm-up and a cosine decay, bf16 autocast on CPUs with native bf16 (AMX) and on CUDA, a tqdm bar,
``checkpoint.pt`` in ``out_dir`` every ``checkpoint_every`` steps (model, optimiser, step, random states; written
atomically, so a killed run resumes where it stopped), and at the end the weights as a loadable model folder
(``model.safetensors`` + ``config.json`` with a card: data, steps, wall time, hardware, seed, final loss).

* autoencoder: all slices (healthy and diseased), loss L1 + MSE, random left-right flips.
* classifier: balanced batches (half healthy, half diseased), cross-entropy, random left-right flips.

``evaluate_classifier`` (accuracy, AUROC overall, per lesion type, per lesion size) and ``evaluate_acat`` (share of
lesion pixels inside the 90th-percentile saliency mask, and that mask's Dice) measure the models for their cards.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from diffuse_core.models.autoencoder import Autoencoder, AutoencoderConfig, new_autoencoder
from diffuse_core.models.classifier import DISEASED, Classifier, ClassifierConfig, new_classifier
from diffuse_core.models.checkpoint import save as save_model

CHECKPOINT_NAME = "checkpoint.pt"
DEFAULT_POOL = 4000
SIZE_BINS = (60, 300)  # lesion area in pixels at 128 x 128 (scaled by (side / 128) ** 2): SynthBrain's classes,
#                       small <= 60 < medium <= 300 < large

AE_DEFAULTS = {"steps": 1000, "lr": 2e-3}
CLF_DEFAULTS = {"steps": 1500, "lr": 1e-3}


# --------------------------------------------------------------------------------------------------------- data
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
    ``lesion_types``, ``seeds``), e.g. from ``training.synthbrain_pool`` or ``slice_folder.load_slice_folder``; a
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


def _synthbrain_arrays(n: int, seed: int, size: int, modalities: tuple[str, ...], split: str = "train"
                       ) -> tuple[dict, dict]:
    """``n`` SynthBrain slices of ``split`` (healthy and diseased) and the card's data block.

    Uses the cached, parallel pool of :mod:`diffuse_core.train.commands` when it is there, else the Dataset class.
    """
    from diffuse_core.data import synthbrain

    version = getattr(synthbrain, "SYNTHBRAIN_VERSION", None)
    try:
        from diffuse_core.train.commands import synthbrain_pool

        data = synthbrain_pool(n, split, seed, size, tuple(modalities), healthy=None)
    except (ImportError, AttributeError):
        data = _stack_dataset(synthbrain.SynthBrainDataset(split, n, base_seed=seed, modalities=tuple(modalities),
                                                           size=size))
    seeds = data.get("seeds")
    card = {"generator": "SynthBrain", "version": version, "split": split, "base_seed": seed, "n_slices": int(n),
            "size": size, "modalities": list(modalities),
            "seed_range": [int(np.min(seeds)), int(np.max(seeds))] if seeds is not None and len(seeds) else None,
            "diseased_fraction": float(np.mean(np.asarray(data["labels"]) > 0))}
    return data, card


def _load_training_data(data, pool_size: int, seed: int, size: int, modalities) -> tuple[dict, dict]:
    if data is None:
        arrays, card = _synthbrain_arrays(pool_size, seed, size, tuple(modalities))
        return as_arrays(arrays), card
    arrays = as_arrays(data)
    card = {"source": str(data.get("source", "caller")) if isinstance(data, dict) else "caller",
            "n_slices": int(len(arrays["images"]))}
    if "labels" in arrays:
        card["diseased_fraction"] = float(np.mean(arrays["labels"] > 0))
    return arrays, card


# ------------------------------------------------------------------------------------------------------ helpers
def _autocast(device: torch.device):
    from diffuse_core.models.device import default_autocast

    dtype = default_autocast(device)
    if dtype is None:
        return torch.autocast(device.type, enabled=False), None
    return torch.autocast(device.type, dtype=dtype), dtype


def _lr_at(step: int, total: int, lr: float, warmup: int = 50, floor: float = 0.05) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _hardware(device: torch.device) -> dict:
    hw = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    if flip.any():
        x = x.clone()
        x[flip] = x[flip].flip(-1)
    return x


def _train_loop(kind: str, model: torch.nn.Module, out_dir: Path, steps: int, batch_size: int, lr: float, seed: int,
                make_batch: Callable, loss_fn: Callable, resume: bool, checkpoint_every: int, progress: bool,
                device: torch.device, card_base: dict, weight_decay: float) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    step, elapsed, loss_ema, losses = 0, 0.0, None, []
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("kind") != kind or ck.get("config") != model.config.to_dict():
            raise ValueError(f"{ckpt_path} belongs to a different {ck.get('kind')} run (architecture "
                             f"{ck.get('config')}); delete it or pass resume=False (--no-resume) to start over")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, elapsed, loss_ema, losses = ck["step"], ck.get("elapsed", 0.0), ck.get("loss_ema"), ck.get("losses", [])
        gen.set_state(ck["sampler_rng"])
        torch.set_rng_state(ck["torch_rng"])
    else:
        torch.manual_seed(seed)
    autocast, amp_dtype = _autocast(device)

    def checkpoint():
        _atomic_torch_save({"kind": kind, "config": model.config.to_dict(), "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed, "loss_ema": loss_ema,
                            "losses": losses, "sampler_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                            "seed": seed, "total_steps": steps}, ckpt_path)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=min(step, steps), desc=f"train {kind}", unit="step", dynamic_ncols=True)
    t_start = time.time() - elapsed
    try:
        while step < steps:
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr)
            batch = make_batch(gen)
            with autocast:
                loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{kind} training diverged at step {step} (loss {value}); lower the lr")
            loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value
            if step % 10 == 0 or step == steps:
                losses.append((step, round(loss_ema, 6)))
            elapsed = time.time() - t_start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.4f}")
            if step % checkpoint_every == 0 or step == steps:
                checkpoint()
    finally:
        if bar is not None:
            bar.close()
    if not ckpt_path.is_file():  # resumed a finished run: make sure a checkpoint exists
        checkpoint()
    model.eval()
    card = dict(card_base)
    card.update({"steps": int(step), "batch_size": int(batch_size), "lr": lr, "weight_decay": weight_decay,
                 "wall_time_s": round(elapsed, 1), "hardware": _hardware(device), "seed": seed,
                 "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
                 "final_loss": None if loss_ema is None else round(loss_ema, 6),
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "loss_curve": losses[:: max(1, len(losses) // 50)]})
    model.cpu()
    save_model(model, out_dir, card=card)
    model.card = card
    model.to(device)
    return out_dir


# ------------------------------------------------------------------------------------------------------ trainers
def train_autoencoder(out_dir, steps: int = AE_DEFAULTS["steps"], batch_size: int = 32, lr: float = AE_DEFAULTS["lr"],
                      seed: int = 0, size: int = 128, modalities=("flair",), data=None, resume: bool = True,
                      checkpoint_every: int = 100, progress: bool = True, device="cpu",
                      config: AutoencoderConfig | None = None, pool_size: int = DEFAULT_POOL) -> Path:
    """Train ACAT's autoencoder on all slices (L1 + MSE reconstruction loss); return ``out_dir``.

    ``data``: None (SynthBrain train split, ``pool_size`` slices generated once) or a dict of arrays /
    (images, labels) / Dataset of dicts (see :func:`as_arrays`). Re-running with ``resume=True`` continues from
    ``out_dir/checkpoint.pt``; ``steps`` is the total, so a larger value trains further.
    """
    device = torch.device(device)
    arrays, data_card = _load_training_data(data, pool_size, seed, size, modalities)
    images = torch.as_tensor(arrays["images"]).to(torch.float16)
    n, c, h, w = images.shape
    config = config or AutoencoderConfig(channels=c, resolution=h)
    if config.channels != c or config.resolution != h or h != w:
        raise ValueError(f"data of shape {(c, h, w)} does not fit the autoencoder config {config}")
    model = new_autoencoder(config, seed=seed)

    def make_batch(gen):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        return _flip(images[idx].float(), gen).to(device)

    def loss_fn(m, x):
        rec = m(x).float()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x)

    card = {"model": "ACAT autoencoder (spatial latent)", "latent_shape": list(config.latent_shape),
            "loss": "L1 + MSE", "augmentation": "left-right flip", "data": data_card}
    return _train_loop("autoencoder", model, Path(out_dir), steps, batch_size, lr, seed, make_batch, loss_fn, resume,
                       checkpoint_every, progress, device, card, weight_decay=0.0)


def train_classifier(out_dir, steps: int = CLF_DEFAULTS["steps"], batch_size: int = 32, lr: float = CLF_DEFAULTS["lr"],
                     seed: int = 0, size: int = 128, modalities=("flair",), data=None, resume: bool = True,
                     checkpoint_every: int = 100, progress: bool = True, device="cpu",
                     config: ClassifierConfig | None = None, pool_size: int = DEFAULT_POOL) -> Path:
    """Train the healthy (0) / diseased (1) classifier on balanced batches with left-right flips; return
    ``out_dir``. Same data and resume rules as :func:`train_autoencoder`."""
    device = torch.device(device)
    arrays, data_card = _load_training_data(data, pool_size, seed, size, modalities)
    if arrays.get("labels") is None:
        raise ValueError("the classifier needs labels (0 healthy, 1 diseased) with the images")
    images = torch.as_tensor(arrays["images"]).to(torch.float16)
    labels = torch.as_tensor((arrays["labels"] > 0).astype(np.int64))
    n, c, h, w = images.shape
    pos, neg = torch.nonzero(labels == 1)[:, 0], torch.nonzero(labels == 0)[:, 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"the classifier needs both classes: {len(neg)} healthy and {len(pos)} diseased slices")
    config = config or ClassifierConfig(channels=c, resolution=h)
    if config.channels != c:
        raise ValueError(f"data has {c} channels, the classifier config {config.channels}")
    model = new_classifier(config, seed=seed)
    half = batch_size // 2

    def make_batch(gen):
        ip = pos[torch.randint(0, len(pos), (batch_size - half,), generator=gen)]
        ineg = neg[torch.randint(0, len(neg), (half,), generator=gen)]
        idx = torch.cat([ineg, ip])
        return _flip(images[idx].float(), gen).to(device), labels[idx].to(device)

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x).float(), y)

    card = {"model": "ACAT classifier (healthy 0 / diseased 1)", "loss": "cross-entropy, balanced batches",
            "augmentation": "left-right flip", "data": data_card}
    return _train_loop("classifier", model, Path(out_dir), steps, batch_size, lr, seed, make_batch, loss_fn, resume,
                       checkpoint_every, progress, device, card, weight_decay=1e-4)


# ------------------------------------------------------------------------------------------------------ metrics
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
    size (lesion pixels at 128 x 128: small <= 60, medium <= 300, large; SynthBrain's classes). Per group, ``sensitivity`` is the accuracy
    on its diseased slices."""
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
