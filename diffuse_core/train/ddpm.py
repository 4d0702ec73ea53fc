"""Training the healthy DDPM (paper Sec. III-C): epsilon prediction with the simple loss (eq. 6).

AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.05), an exponential moving average of the weights, and the linear
beta schedule 1e-4..0.02 over T = 1000, on healthy slices only. Multi-GPU through ``accelerate launch`` with no code
change; on the CPU bf16 autocast where the processor supports it natively.

A run lives in one folder: ``checkpoint.pt`` (model, EMA, optimiser, step, random states; written atomically every
``checkpoint_every`` steps, so a killed run resumes), ``log.csv`` (step, loss, seconds) and the EMA weights exported as
a loadable denoiser (``model.safetensors`` + ``config.json`` with the model card).
"""

from __future__ import annotations

import copy
import csv
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffuse_core.models.denoiser import Denoiser, DenoiserConfig, build_unet, save_denoiser
from diffuse_core.core.schedule import NoiseSchedule, ScheduleConfig


@dataclass
class DDPMTrainConfig:
    """Training settings (paper Sec. III-C unless noted)."""

    steps: int = 4000
    batch_size: int = 16
    lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    ema_decay: float = 0.995       # paper: 0.99 over 60k steps; a little slower here, warmed up from 0
    seed: int = 0
    checkpoint_every: int = 250
    precision: str = "auto"        # auto | bf16 | fp32
    unet: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


class TensorPool(Dataset):
    """Pre-generated images (N, C, H, W) in memory (float16 storage), with random left-right flips.

    Flipping is a fair augmentation for brain slices only because the left-right asymmetry of normal anatomy is small
    next to what the model has to learn here.
    """

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


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_ddpm(out_dir: str | Path, data: Dataset, config: DDPMTrainConfig | None = None, resume: bool = True,
               progress: bool = True, card: dict | None = None,
               on_checkpoint: Callable[[int, float], None] | None = None, init_from: str | Path | None = None) -> Path:
    """Train (or resume training) a healthy DDPM on ``data`` (items: (C, H, W) tensors in [-1, 1]).

    Returns ``out_dir``, holding the EMA denoiser. ``card`` is merged into the model card (data description).
    Without a checkpoint in ``out_dir``, ``init_from`` (a saved denoiser folder, e.g. the shipped ``assets/ddpm``)
    starts both the model and its EMA from those weights and continues its step count (the optimiser starts afresh).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from diffuse_core.models.device import cpu_has_fast_bf16

    cfg = config or DDPMTrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.precision == "auto":
        mixed = "bf16" if (torch.cuda.is_available() or cpu_has_fast_bf16()) else "no"
    else:
        mixed = {"bf16": "bf16", "fp32": "no"}[cfg.precision]
    # Autocast is applied here rather than through Accelerator(mixed_precision=...): accelerate keeps that setting in a
    # process-wide singleton, so a second run with another precision in the same process (a notebook) would fail.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    unet = build_unet(cfg.unet)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    schedule = NoiseSchedule(cfg.schedule)
    step, seconds_before = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step, seconds_before = state["step"], state.get("seconds", 0.0)
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
    elif init_from is not None:
        from diffuse_core.models.denoiser import load_denoiser

        start_from = load_denoiser(init_from)
        if start_from.config.to_dict() != cfg.unet.to_dict():
            raise ValueError(f"--init-from {init_from}: its architecture {start_from.config.to_dict()} differs from "
                             f"this run's {cfg.unet.to_dict()}")
        unet.load_state_dict(start_from.unet.state_dict())
        ema.load_state_dict(start_from.unet.state_dict())
        done = start_from.card.get("training", {})
        step, seconds_before = int(done.get("steps_done", 0)), float(done.get("wall_seconds", 0.0))
    if step >= cfg.steps:
        return out

    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(cfg.seed + step))
    unet, opt, loader = accelerator.prepare(unet, opt, loader)
    ema.to(accelerator.device)
    alphas_cumprod = schedule.alphas_cumprod.float().to(accelerator.device)

    log_path = out / "log.csv"
    new_log = not log_path.exists()
    log_f = open(log_path, "a", newline="")
    log = csv.writer(log_f)
    if new_log:
        log.writerow(["step", "loss", "seconds"])

    bar = tqdm(total=cfg.steps, initial=step, desc="ddpm", disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    running = None
    unet.train()

    def save(step_now: int) -> None:
        if not accelerator.is_main_process:
            return
        seconds = seconds_before + time.perf_counter() - start
        raw = accelerator.unwrap_model(unet)
        _atomic_torch_save({"model": raw.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "step": step_now, "seconds": seconds, "torch_rng": torch.get_rng_state(),
                            "numpy_rng": np.random.get_state(), "config": _config_dict(cfg)}, ckpt_path)
        den = Denoiser(unet=ema, config=cfg.unet, schedule=schedule)
        save_denoiser(den, out, card=_card(cfg, step_now, seconds, running, accelerator, card, mixed))
        if on_checkpoint is not None:
            on_checkpoint(step_now, running if running is not None else float("nan"))

    while step < cfg.steps:
        for x0 in loader:
            if step >= cfg.steps:
                break
            noise = torch.randn_like(x0)
            t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), device=x0.device)
            ab = alphas_cumprod[t].view(-1, 1, 1, 1)
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise                       # eq. 5
            with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=mixed == "bf16"):
                pred = unet(x_t, t).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)              # eq. 6, L_simple
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            step += 1
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), accelerator.unwrap_model(unet).parameters()):
                    pe.lerp_(pm.detach(), 1 - decay)
            lv = float(loss.detach())
            running = lv if running is None else 0.98 * running + 0.02 * lv
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if step % 10 == 0:
                log.writerow([step, f"{lv:.5f}", f"{seconds_before + time.perf_counter() - start:.1f}"])
                log_f.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
    bar.close()
    log_f.close()
    return out


def _config_dict(cfg: DDPMTrainConfig) -> dict:
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "adam_betas": list(cfg.adam_betas),
            "weight_decay": cfg.weight_decay, "ema_decay": cfg.ema_decay, "seed": cfg.seed,
            "precision": cfg.precision, "unet": cfg.unet.to_dict(), "schedule": cfg.schedule.to_dict()}


def _card(cfg: DDPMTrainConfig, step: int, seconds: float, loss: float | None, accelerator, extra: dict | None,
          mixed: str) -> dict:
    card = {
        "model": "healthy DDPM (diffusers UNet2DModel, epsilon prediction)",
        "training": {**_config_dict(cfg), "steps_done": step, "wall_seconds": round(seconds, 1),
                     "final_loss_ema": None if loss is None else round(loss, 5),
                     "hardware": f"{accelerator.device.type}: {platform.processor() or platform.machine()}, "
                                 f"{accelerator.num_processes} process(es), {torch.get_num_threads()} threads",
                     "mixed_precision": mixed},
        "parameters": sum(p.numel() for p in build_unet(cfg.unet).parameters()),
    }
    card.update(extra or {})
    return card
