"""Training the healthy DDPM (paper Sec. III-C): epsilon prediction with the simple loss (eq. 6).

Options beyond the paper, saved with the weights: v-prediction (``schedule.prediction_type``, the network learns
v = sqrt(ab) eps - sqrt(1 - ab) x0; :mod:`diffuse_core.core.schedule`), min-SNR loss weighting (Hang et al. 2023,
"Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV: each timestep's loss weighted by
min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v) and a warm-up + cosine learning rate.

AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.05), an exponential moving average of the weights, and the linear
beta schedule 1e-4..0.02 over T = 1000, on healthy slices only. This module supplies the batches and the loss; the
:class:`~diffuse_core.train.trainer.Trainer` owns the loop, the EMA, mixed precision, multi-GPU, checkpoints
(``checkpoint.pt``, resumed by a re-run), ``log.csv`` and the export of the EMA weights as a loadable denoiser
(``model.safetensors``, ``config.json`` and ``model_card.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from diffuse_core.core.schedule import ScheduleConfig
from diffuse_core.models.denoiser import KIND, DenoiserConfig, new_denoiser
from diffuse_core.train.data import random_flips, scanner_augment
from diffuse_core.train.trainer import Trainer, TrainingRecord, TrainSettings, TrainTask, started_from


@dataclass
class DDPMTrainConfig:
    """Training settings (paper Sec. III-C unless noted)."""

    steps: int | None = 4000           # None: no step limit, the time box (max_seconds) ends the run
    batch_size: int = 16
    lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    ema_decay: float = 0.995       # paper: 0.99 over 60k steps; a little slower here, warmed up from 0
    seed: int = 0
    checkpoint_every: int = 250
    precision: str = "auto"        # auto | bf16 | fp32
    augment: bool = False          # scanner augmentation of the healthy slices (train.data.scanner_augment)
    max_seconds: float | None = None   # a time box (see TrainSettings.max_seconds)
    lr_schedule: str = "constant"      # constant | cosine (warm-up, then cosine to lr_floor * lr; follows the box)
    warmup_steps: int = 50
    lr_floor: float = 0.05
    min_snr_gamma: float | None = None   # min-SNR loss weighting (None: the paper's unweighted L_simple)
    batch_device: str | None = None    # "cuda": the pool sits on the GPU and t, eps and the augmentation are drawn
                                       # there from a GPU generator (seeded from ``seed``), so the CPU does not
                                       # hold the GPU up; None: every draw from the trainer's CPU generator
    unet: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def settings(self) -> TrainSettings:
        """The trainer's settings: the learning rate schedule, the EMA, gradients clipped at norm 1."""
        return TrainSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                             adam_betas=self.adam_betas, lr_schedule=self.lr_schedule, warmup_steps=self.warmup_steps,
                             lr_floor=self.lr_floor, ema_decay=self.ema_decay,
                             seed=self.seed, checkpoint_every=self.checkpoint_every, precision=self.precision,
                             max_seconds=self.max_seconds)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "adam_betas": list(self.adam_betas),
                "weight_decay": self.weight_decay, "ema_decay": self.ema_decay, "seed": self.seed,
                "precision": self.precision, "augment": self.augment, "batch_device": self.batch_device,
                "lr_schedule": self.lr_schedule, "warmup_steps": self.warmup_steps, "lr_floor": self.lr_floor,
                "min_snr_gamma": self.min_snr_gamma, "max_seconds": self.max_seconds,
                "unet": self.unet.to_dict(), "schedule": self.schedule.to_dict()}


class TensorPool(Dataset):
    """Pre-generated images (N, C, H, W) in [-1, 1] in memory (float16 storage), with random left-right flips."""

    def __init__(self, images: np.ndarray | torch.Tensor, flip: bool = True):
        self.images = torch.as_tensor(images).to(torch.float16)
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i].float()
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` images drawn uniformly with replacement, flipped at random: (B, C, H, W) float32."""
        idx = torch.randint(0, len(self.images), (batch_size,), generator=generator)
        x = self.images[idx.to(self.images.device)].float()
        return random_flips(x, generator) if self.flip else x


class ShardPool(TensorPool):
    """A :class:`TensorPool` that grows while it trains: it takes in every ``*.npz`` shard (``images`` (N, C, H, W)
    float16) that appears in ``folder``, looking again every ``every`` batches. Shards are written whole and renamed
    into place by their producer, so a shard is never read half-written."""

    def __init__(self, folder: str | Path, flip: bool = True, every: int = 100):
        self.folder, self.every, self._seen, self._draws = Path(folder), every, set(), 0
        super().__init__(np.zeros((0, 1, 1, 1), np.float16), flip)
        self.refresh()

    def refresh(self) -> int:
        """Take in the shards written since the last look; returns the pool's size."""
        # names starting with "." are shards being written (pathlib's glob matches them too)
        new = sorted(p for p in self.folder.glob("*.npz") if p.name not in self._seen and not p.name.startswith("."))
        if new:
            parts = [] if len(self.images) == 0 else [self.images]
            for p in new:
                with np.load(p) as z:
                    parts.append(torch.from_numpy(z["images"]).to(torch.float16).to(self.images.device))
                self._seen.add(p.name)
            self.images = torch.cat(parts)
        return len(self.images)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        self._draws += 1
        if self._draws % self.every == 0:
            self.refresh()
        return super().sample(batch_size, generator)


def _draw_images(data: Dataset, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    if isinstance(data, TensorPool):
        return data.sample(batch_size, generator)
    idx = torch.randint(0, len(data), (batch_size,), generator=generator)
    return torch.stack([torch.as_tensor(data[int(i)]).float() for i in idx])


def ddpm_task(data: Dataset, cfg: DDPMTrainConfig, card: dict | None = None) -> TrainTask:
    """The DDPM's part of training: batches (x0, t, eps) and the simple loss (eq. 6)."""
    if len(data) < 1:
        raise ValueError("no training slices: the DDPM needs at least one healthy slice")
    if cfg.min_snr_gamma is not None and cfg.min_snr_gamma <= 0:
        raise ValueError(f"min_snr_gamma must be positive (Hang et al. use 5), got {cfg.min_snr_gamma}")
    denoiser = new_denoiser(cfg.unet, cfg.schedule, seed=cfg.seed)
    # channels-last weights, as load_denoiser gives them for sampling: one bf16 training step at batch 32 of the
    # shipped UNet 7.23 -> 6.23 s on one thread of the 2-core Intel Xeon (AMX; benchmarks/bench_train_step.py);
    # the exported weights are contiguous (write_model)
    denoiser.unet.to(memory_format=torch.channels_last)
    schedule = denoiser.schedule
    T = denoiser.schedule.num_train_timesteps
    dev_gen = None
    if cfg.batch_device is not None:
        dev_gen = torch.Generator(device=cfg.batch_device).manual_seed(cfg.seed)
        if isinstance(data, TensorPool):
            data.images = data.images.to(cfg.batch_device)

    def make_batch(gen: torch.Generator):
        # Ho et al. 2020, Algorithm 1: x0 ~ q(x0), t ~ Uniform({0..T-1}), eps ~ N(0, I)
        x0 = _draw_images(data, cfg.batch_size, gen)
        g = gen if dev_gen is None else dev_gen
        if dev_gen is not None:
            x0 = x0.to(cfg.batch_device, non_blocking=True)
        if cfg.augment:
            x0 = scanner_augment(x0, g)
        t = torch.randint(0, T, (x0.shape[0],), generator=g, device=g.device)
        eps = torch.randn(x0.shape, generator=g, device=g.device)
        return x0, t, eps

    def loss(unet, batch) -> torch.Tensor:
        x0, t, eps = batch
        x_t = schedule.q_sample(x0, t, eps)                                 # eq. 5, q(x_t | x_0)
        target = schedule.training_target(x0, eps, t)                       # eps (eq. 6) or v
        out = unet(x_t, t).sample.float()
        if cfg.min_snr_gamma is None:
            return F.mse_loss(out, target)                                  # eq. 6, L_simple
        snr = schedule.snr(t).float()
        weight = snr.clamp(max=cfg.min_snr_gamma) / (snr + 1 if schedule.prediction_type == "v_prediction" else snr)
        return (weight * ((out - target) ** 2).mean(dim=(1, 2, 3))).mean()

    def make_card(r: TrainingRecord) -> dict:
        pred = "v-prediction" if schedule.prediction_type == "v_prediction" else "epsilon prediction"
        out = {"model": f"healthy DDPM (diffusers UNet2DModel, {pred})",
               "training": {**cfg.to_dict(), "steps_done": r.steps_done, "wall_seconds": r.wall_seconds,
                            "final_loss_ema": None if r.loss_ema is None else round(r.loss_ema, 5),
                            "hardware": r.hardware, "mixed_precision": "bf16" if r.precision == "bf16" else "no"},
               "parameters": r.parameters}
        out.update(card or {})
        return out

    return TrainTask(kind=KIND, model=denoiser.unet,
                     architecture={"unet": cfg.unet.to_dict(), "schedule": denoiser.schedule.to_dict()},
                     make_batch=make_batch, loss=loss, card=make_card)


INHERITED_CARD_KEYS = ("anomaly_kernel",)   # settings tied to the data's resolution, not to these weights


def inherited_card(init_from: str | Path | None, card: dict | None = None) -> dict:
    """The card settings a model trained on from ``init_from`` keeps: the anomaly map's kernel (chosen for the
    128-px grid and the modality, core.anomaly), where the new run's data (``card["data"]["modalities"]``) is of the
    same modalities as the old weights' (a CT model warm-started from the FLAIR weights keeps none). The threshold
    and the measured numbers are never kept: they belong to the old weights and are measured again (``evaluate
    --write-cards``, ``evaluation.candidates``)."""
    if init_from is None:
        return {}
    from diffuse_core.models.checkpoint import read_config

    old = read_config(init_from, KIND).get("card") or {}
    old_modalities = (old.get("data") or {}).get("modalities")
    new_modalities = ((card or {}).get("data") or {}).get("modalities")
    if old_modalities is None or new_modalities is None or list(old_modalities) != list(new_modalities):
        return {}
    return {k: old[k] for k in INHERITED_CARD_KEYS if k in old}


def train_ddpm(out_dir: str | Path, data: Dataset, config: DDPMTrainConfig | None = None, resume: bool = True,
               progress: bool = True, card: dict | None = None,
               on_checkpoint: Callable[[int, float], None] | None = None, init_from: str | Path | None = None,
               device: torch.device | str | None = None,
               on_step: Callable[[int, float], bool | None] | None = None) -> Path:
    """Train (or resume training) a healthy DDPM on ``data`` (items: (C, H, W) tensors in [-1, 1]).

    Returns ``out_dir``, holding the EMA denoiser. ``card`` is merged into the model card (data description).
    Without a checkpoint in ``out_dir``, ``init_from`` (a saved denoiser folder, e.g. the shipped ``assets/ddpm``)
    starts both the model and its EMA from those weights and continues its step count (the optimiser starts afresh).
    ``device`` None lets accelerate choose (the GPU where there is one; every GPU under ``accelerate launch``).
    """
    cfg = config or DDPMTrainConfig()
    card = {**inherited_card(init_from, card), **started_from(init_from, KIND), **(card or {})}
    trainer = Trainer(ddpm_task(data, cfg, card), cfg.settings(), out_dir, device=device, progress=progress,
                      on_checkpoint=on_checkpoint, on_step=on_step)
    return trainer.fit(resume=resume, init_from=init_from)
