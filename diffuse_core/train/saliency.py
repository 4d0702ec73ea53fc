"""Training ACAT's two models: their batches and losses; :class:`~diffuse_core.train.trainer.Trainer` does the rest.

* autoencoder: all slices (healthy and diseased), loss L1 + MSE of the reconstruction, random left-right flips.
* classifier: balanced batches (half healthy, half diseased), cross-entropy, random left-right flips; ``paired``:
  each diseased slice of a batch comes with its own healthy counterpart, so that nothing but the lesion tells the
  two halves apart (no level, anatomy, scanner or scale cue to learn instead).

Both: an in-memory pool of slices (SynthBrain's train split generated once, by default), AdamW with a 50-step warm-up
and a cosine decay, no EMA; the run folder holds ``checkpoint.pt`` (a re-run resumes), ``log.csv`` and the weights as
a loadable model folder (``model.safetensors``, ``config.json`` and ``model_card.json``, the card: data, steps, wall time,
hardware, seed, final loss). Their quality is measured by :mod:`diffuse_core.evaluation.saliency_quality`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder
from diffuse_core.models.classifier import ClassifierConfig, new_classifier
from diffuse_core.train.data import labelled_training_data, paired_training_data, random_flips
from diffuse_core.train.trainer import Trainer, TrainSettings, TrainTask, small_model_card, started_from

DEFAULT_POOL = 4000
AE_DEFAULTS = {"steps": 1000, "lr": 2e-3, "weight_decay": 0.0}
CLF_DEFAULTS = {"steps": 1500, "lr": 1e-3, "weight_decay": 1e-4}


def _settings(defaults: dict, steps: int, batch_size: int, lr: float, seed: int, checkpoint_every: int) -> TrainSettings:
    return TrainSettings(steps=steps, batch_size=batch_size, lr=lr, weight_decay=defaults["weight_decay"],
                         lr_schedule="cosine", warmup_steps=50, seed=seed, checkpoint_every=checkpoint_every)


def _run(task: TrainTask, settings: TrainSettings, out_dir, resume: bool, progress: bool, device,
         init_from, on_step=None) -> Path:
    return Trainer(task, settings, out_dir, device=device, progress=progress,
                   on_step=on_step).fit(resume=resume, init_from=init_from)


def train_autoencoder(out_dir, steps: int = AE_DEFAULTS["steps"], batch_size: int = 32, lr: float = AE_DEFAULTS["lr"],
                      seed: int = 0, size: int = 128, modalities=("flair",), data=None, resume: bool = True,
                      checkpoint_every: int = 100, progress: bool = True, device="cpu",
                      config: AutoencoderConfig | None = None, pool_size: int = DEFAULT_POOL,
                      init_from: str | Path | None = None, realism="default", normalise: str = "absolute") -> Path:
    """Train ACAT's autoencoder on all slices (L1 + MSE reconstruction loss); return ``out_dir``.

    ``data``: None (SynthBrain train split, ``pool_size`` slices generated once) or a dict of arrays /
    (images, labels) / Dataset of dicts (see :func:`diffuse_core.train.data.as_arrays`). Re-running with
    ``resume=True`` continues from ``out_dir/checkpoint.pt``; ``steps`` is the total, so a larger value trains further.
    ``init_from``: without a checkpoint, start from a saved autoencoder's weights and step count. ``normalise``:
    the SynthBrain slices' scale (:func:`diffuse_core.train.data.normalise_slices`), recorded in the card's data.
    """
    arrays, data_card = labelled_training_data(data, pool_size, seed, size, modalities, realism, normalise)
    images = torch.as_tensor(arrays["images"]).to(torch.float16)
    n, c, h, w = images.shape
    config = config or AutoencoderConfig(channels=c, resolution=h)
    if config.channels != c or config.resolution != h or h != w:
        raise ValueError(f"data of shape {(c, h, w)} does not fit the autoencoder config {config}")

    def make_batch(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        return random_flips(images[idx].float(), gen)

    def loss(model, x: torch.Tensor) -> torch.Tensor:
        rec = model(x).float()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x)

    description = {"model": "ACAT autoencoder (spatial latent)", "latent_shape": list(config.latent_shape),
                   "loss": "L1 + MSE", "augmentation": "left-right flip", "data": data_card,
                   **started_from(init_from, "autoencoder")}
    task = TrainTask(kind="autoencoder", model=new_autoencoder(config, seed=seed),
                     architecture={"config": config.to_dict()}, make_batch=make_batch, loss=loss,
                     card=lambda r: small_model_card(description, r))
    return _run(task, _settings(AE_DEFAULTS, steps, batch_size, lr, seed, checkpoint_every), out_dir, resume,
                progress, device, init_from)


def paired_batch(images: torch.Tensor, labels: torch.Tensor, pairs: torch.Tensor, n_pairs: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` pairs drawn from ``pairs`` (P, 2: healthy and diseased index), their first slices then their
    second ones, each pair flipped left-right alike: (2 n_pairs, C, H, W) float and the labels."""
    chosen = pairs[torch.randint(0, len(pairs), (n_pairs,), generator=gen)]
    c = images.shape[1]
    x = random_flips(torch.cat([images[chosen[:, 0]], images[chosen[:, 1]]], dim=1).float(), gen)
    return torch.cat([x[:, :c], x[:, c:]]), torch.cat([labels[chosen[:, 0]], labels[chosen[:, 1]]])


def train_classifier(out_dir, steps: int = CLF_DEFAULTS["steps"], batch_size: int = 32, lr: float = CLF_DEFAULTS["lr"],
                     seed: int = 0, size: int = 128, modalities=("flair",), data=None, resume: bool = True,
                     checkpoint_every: int = 100, progress: bool = True, device="cpu",
                     config: ClassifierConfig | None = None, pool_size: int = DEFAULT_POOL,
                     init_from: str | Path | None = None, realism="default", normalise: str = "absolute",
                     on_step=None, paired: bool = False) -> Path:
    """Train the healthy (0) / diseased (1) classifier on balanced batches with left-right flips; return
    ``out_dir``. Same data, resume and ``init_from`` rules as :func:`train_autoencoder`; ``on_step(step, share)``
    after each step (a true return stops it there). ``paired``: SynthBrain slices in pairs
    (:func:`~diffuse_core.train.data.paired_training_data`, ``pool_size`` slices in all), each batch half diseased
    slices and half their own healthy counterparts, flipped together."""
    if paired:
        if data is not None:
            raise ValueError("paired batches are made from SynthBrain's healthy counterparts, not from given data")
        arrays, data_card = paired_training_data(pool_size, seed, size, modalities, realism, normalise)
    else:
        arrays, data_card = labelled_training_data(data, pool_size, seed, size, modalities, realism, normalise)
    if arrays.get("labels") is None:
        raise ValueError("the classifier needs labels (0 healthy, 1 diseased) with the images")
    images = torch.as_tensor(arrays["images"]).to(torch.float16)
    labels = torch.as_tensor((arrays["labels"] > 0).astype(np.int64))
    _, c, h, _ = images.shape
    pos, neg = torch.nonzero(labels == 1)[:, 0], torch.nonzero(labels == 0)[:, 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"the classifier needs both classes: {len(neg)} healthy and {len(pos)} diseased slices")
    config = config or ClassifierConfig(channels=c, resolution=h)
    if config.channels != c:
        raise ValueError(f"data has {c} channels, the classifier config {config.channels}")
    half = batch_size // 2

    pairs = torch.as_tensor(arrays["pairs"]) if paired else None

    def make_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if pairs is not None:
            return paired_batch(images, labels, pairs, half, gen)
        ip = pos[torch.randint(0, len(pos), (batch_size - half,), generator=gen)]
        ineg = neg[torch.randint(0, len(neg), (half,), generator=gen)]
        idx = torch.cat([ineg, ip])
        return random_flips(images[idx].float(), gen), labels[idx]

    def loss(model, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y)

    batches = "cross-entropy, paired batches (each diseased slice beside its healthy counterpart)" if paired else \
        "cross-entropy, balanced batches"
    description = {"model": "ACAT classifier (healthy 0 / diseased 1)", "loss": batches,
                   "augmentation": "left-right flip", "data": data_card, **started_from(init_from, "classifier")}
    task = TrainTask(kind="classifier", model=new_classifier(config, seed=seed),
                     architecture={"config": config.to_dict()}, make_batch=make_batch, loss=loss,
                     card=lambda r: small_model_card(description, r))
    return _run(task, _settings(CLF_DEFAULTS, steps, batch_size, lr, seed, checkpoint_every), out_dir, resume,
                progress, device, init_from, on_step)


ADAPT_CLF = {"steps": 600, "lr": 3e-4, "per_slice": 4, "synthbrain": 2000}


def adapt_classifier(out_dir, normals: np.ndarray, base_dir, steps: int = ADAPT_CLF["steps"],
                     lr: float = ADAPT_CLF["lr"], per_slice: int = ADAPT_CLF["per_slice"],
                     synthbrain: int = ADAPT_CLF["synthbrain"], normalisation: str = "tissue",
                     scale: dict | None = None, seed: int = 0, device="cpu", on_step=None) -> Path:
    """The ACAT classifier ``base_dir`` fine-tuned to a scanner: ``normals`` (a user's real normal slices, on the
    model's scale) as healthy, the same slices with SynthBrain lesions pasted in
    (:func:`diffuse_core.train.pasted_lesions.paste_lesions`, ``per_slice`` each) as diseased, and ``synthbrain``
    SynthBrain training slices of both kinds (put on the same scale) so that it keeps what it knew. The real normal
    slices are repeated until they are half of the healthy side. ``steps`` more steps from the base's at ``lr``
    (balanced batches, cosine); returns ``out_dir`` (a loadable classifier folder)."""
    from diffuse_core.models.card import read_card
    from diffuse_core.models.checkpoint import read_config
    from diffuse_core.train.data import as_arrays, normalise_slices, synthbrain_pool
    from diffuse_core.train.pasted_lesions import paste_lesions

    real = np.asarray(normals, np.float32)
    pasted, _ = paste_lesions(real, per_slice, seed, normalisation, scale)
    pool = as_arrays(synthbrain_pool(synthbrain, "train", seed, real.shape[-1], ("flair",), healthy=None))
    syn = normalise_slices(pool["images"].astype(np.float32), normalisation, scale).astype(np.float32)
    syn_labels = (pool["labels"] > 0).astype(np.int64)
    repeats = max(1, int(round((syn_labels == 0).sum() / len(real))))
    images = np.concatenate([syn, pasted] + [real] * repeats)
    labels = np.concatenate([syn_labels, np.ones(len(pasted), np.int64), np.zeros(len(real) * repeats, np.int64)])
    done = int((read_card(base_dir).get("training") or {}).get("steps_done") or 0)
    config = ClassifierConfig(**read_config(base_dir, "classifier")["config"])       # the base's own architecture
    data = {"images": images, "labels": labels,
            "source": f"{len(real)} of the user's normal slices (x{repeats}), {len(pasted)} with SynthBrain lesions "
                      f"pasted in, {synthbrain} SynthBrain training slices ({normalisation} scale)"}
    return train_classifier(out_dir, steps=done + steps, lr=lr, seed=seed, size=real.shape[-1], data=data,
                            resume=False, checkpoint_every=10**9, progress=False, device=device, init_from=base_dir,
                            config=config, on_step=on_step)
