"""The one training loop: every model (DDPM, ACAT autoencoder, classifier) is trained by :class:`Trainer`.

A model's training module supplies a :class:`TrainTask`: the network, how to draw a batch from the trainer's
generator, the loss of one batch, and its model card. The trainer owns the rest, the same for every model:

1. AdamW, with a constant learning rate or a linear warm-up then a cosine decay (``TrainSettings.lr_schedule``);
2. mixed precision decided once (``precision``: auto = bf16 where the hardware has it natively) and one autocast;
3. multi-GPU through ``accelerate launch`` (no code change; each process draws its own batches);
4. an exponential moving average of the weights where ``ema_decay`` is set (the DDPM), exported instead of the
   raw weights;
5. a run folder: ``checkpoint.pt`` (model, EMA, optimiser, step, wall time, the loss history and every random
   state; written atomically every ``checkpoint_every`` steps, so a killed run resumes and, on one process, ends
   with the same weights as an uninterrupted one), ``log.csv`` (step, loss, seconds at the first step and every
   ``log_every`` steps) and the (EMA) weights as a loadable model folder, written at each checkpoint in the one
   model format (:func:`diffuse_core.models.checkpoint.write_model`: ``model.safetensors``, ``config.json`` and
   ``model_card.json``, the card's fields stamped as written by ``train``).

Without a checkpoint, ``init_from`` (a saved model folder of the same kind and architecture, e.g. ``assets/ddpm``)
starts the model and its EMA from those weights and continues the step count its card records; the optimiser starts
afresh.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuse_core.models.checkpoint import (ARCHITECTURE_KEY, atomic_write, load_weights_into, read_config, read_weights, steps_done,
                                            write_model)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"


@dataclass
class TrainSettings:
    """How long and how to optimise; saved in the checkpoint and the model card."""

    steps: int | None = 1000            # total optimiser steps (a resumed run trains up to this count); None: no
                                        # step limit, a run bounded by its time box (max_seconds) only
    batch_size: int = 16
    lr: float = 1e-4                    # peak learning rate
    weight_decay: float = 0.0           # AdamW's decoupled weight decay
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"       # constant | cosine (linear warm-up, then cosine down to lr_floor * lr)
    warmup_steps: int = 50              # cosine only
    lr_floor: float = 0.05              # cosine only: the last step's lr as a fraction of lr
    ema_decay: float | None = None      # EMA of the weights (warmed up from 0); None: no EMA, export the raw weights
    grad_clip: float = 1.0              # max global gradient norm
    seed: int = 0                       # seeds the batch generator and the global torch/numpy RNGs of a fresh run
    checkpoint_every: int = 250         # steps between checkpoints (and weight exports)
    log_every: int = 10                 # steps between log.csv rows and loss-curve points (plus the first, last)
    precision: str = "auto"             # auto | bf16 | fp32
    max_seconds: float | None = None    # a time box: stop (and export) once this run has trained this long

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.steps is None and not self.max_seconds:
            raise ValueError("steps None (no step limit) needs a time box (max_seconds)")
        if (self.steps is not None and self.steps < 1) or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"steps, batch_size and checkpoint_every must be >= 1, got {self.steps}, "
                             f"{self.batch_size}, {self.checkpoint_every}")

    def lr_at(self, step: int, box_fraction: float = 0.0) -> float:
        """The learning rate of optimiser step ``step`` (0-based). Under a time box (``max_seconds``) the cosine
        follows whichever is further along, the steps or ``box_fraction`` (the share of the box spent), so a
        time-boxed run ends at the floor however many steps it reached."""
        if self.lr_schedule == "constant":
            return self.lr
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        by_steps = 0.0 if self.steps is None else (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        t = min(1.0, max(by_steps, box_fraction))
        return self.lr * (self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * t)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


@dataclass
class TrainingRecord:
    """What a run did, for its model card."""

    steps_done: int
    wall_seconds: float
    loss_ema: float | None              # the loss smoothed over ~50 steps (EMA 0.98)
    loss_curve: list                    # [step, smoothed loss] every log_every steps
    precision: str                      # "bf16" | "fp32"
    hardware: dict
    parameters: int
    settings: TrainSettings


@dataclass
class TrainTask:
    """What one model's training module supplies to the :class:`Trainer`."""

    kind: str                                        # "ddpm" | "autoencoder" | "classifier" (config.json's kind)
    model: torch.nn.Module                           # the network, freshly initialised
    architecture: dict                               # config.json's entries beside kind and card
    make_batch: Callable[[torch.Generator], Any]     # one batch (tensors on the CPU), every draw from the generator
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]  # scalar loss of the model on a batch (runs in autocast)
    card: Callable[[TrainingRecord], dict]           # the model card from what the run did

    @property
    def arch_key(self) -> str:
        """The entry of ``architecture`` that must match to resume or to start from saved weights."""
        return ARCHITECTURE_KEY[self.kind]


class _OneDevice:
    """The part of ``accelerate.Accelerator`` the trainer uses, for one process on a device the caller chose."""

    num_processes, process_index, is_main_process = 1, 0, True

    def __init__(self, device: torch.device):
        self.device = device

    def prepare(self, *objs):
        return objs

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params, max_norm: float):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def unwrap_model(self, model):
        return model


def _accelerator(device: torch.device | str | None):
    """accelerate's Accelerator where the device is left to it (``None``: the GPU when there is one; all GPUs under
    ``accelerate launch``), else the caller's one device. accelerate keeps its device in a process-wide singleton, so
    a pinned device (e.g. the CPU for the small ACAT models on a GPU machine) does not go through it."""
    if device is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        return Accelerator(cpu=not torch.cuda.is_available())
    return _OneDevice(torch.device(device))


def hardware(device: torch.device, processes: int = 1) -> dict:
    hw = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": str(device),
          "processes": processes}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


class Trainer:
    """Train ``task.model`` into ``out_dir`` with ``settings`` (see the module docstring for what it owns)."""

    def __init__(self, task: TrainTask, settings: TrainSettings, out_dir: str | Path,
                 device: torch.device | str | None = None, progress: bool = True,
                 on_checkpoint: Callable[[int, float], None] | None = None,
                 on_step: Callable[[int, float], bool | None] | None = None):
        self.task, self.settings, self.out = task, settings, Path(out_dir)
        self.device, self.progress, self.on_checkpoint = device, progress, on_checkpoint
        self.on_step = on_step          # called after every step with (step, share of the time box used); a true
        self.stopped = False            # return stops the run there (it is then exported as at a time box's end)

    # ----------------------------------------------------------------------------------------------- state
    def _resume(self, ck: dict, model, ema, opt, gen: torch.Generator) -> None:
        kind = ck.get("kind", "ddpm")   # checkpoints of the DDPM's earlier trainer carry no kind
        arch = ck.get("architecture", ck.get("config"))
        if isinstance(arch, dict) and "unet" in arch and self.task.kind == "ddpm":
            arch = arch["unet"]          # ... and their architecture inside the training config
        if kind != self.task.kind or arch != self.task.architecture[self.task.arch_key]:
            raise ValueError(f"{self.out / CHECKPOINT_NAME} belongs to another {kind} run (architecture {arch}); "
                             f"delete it, pass another --out or --no-resume to start over")
        model.load_state_dict(ck["model"])
        if ema is not None:
            ema.load_state_dict(ck.get("ema") or ck["model"])
        opt.load_state_dict(ck["optimizer"])
        self.step, self.seconds = int(ck["step"]), float(ck.get("seconds", ck.get("elapsed", 0.0)))
        self.loss_ema, self.losses = ck.get("loss_ema"), list(ck.get("losses", []))
        rng = ck.get("batch_rng", ck.get("sampler_rng"))
        if rng is not None:
            gen.set_state(rng)
        else:
            gen.manual_seed(self.settings.seed + self.step)
        torch.set_rng_state(ck["torch_rng"])
        if "numpy_rng" in ck:
            np.random.set_state(ck["numpy_rng"])

    def _init_from(self, folder: str | Path, model, ema) -> None:
        kind = self.task.kind
        meta = read_config(folder, kind)
        if meta[self.task.arch_key] != self.task.architecture[self.task.arch_key]:
            raise ValueError(f"--init-from {folder}: its architecture {meta[self.task.arch_key]} differs from this "
                             f"run's {self.task.architecture[self.task.arch_key]}")
        state = read_weights(folder, kind)
        load_weights_into(model, state, folder, kind)
        if ema is not None:
            ema.load_state_dict(model.state_dict())
        self.step, self.seconds = steps_done(meta.get("card") or {})

    # ------------------------------------------------------------------------------------------------- fit
    def fit(self, resume: bool = True, init_from: str | Path | None = None) -> Path:
        """Train up to ``settings.steps`` (resuming ``out_dir/checkpoint.pt`` where ``resume``); return ``out_dir``."""
        from diffuse_core.models.device import resolve_precision

        s, task = self.settings, self.task
        self.out.mkdir(parents=True, exist_ok=True)
        acc = _accelerator(self.device)
        amp_dtype = resolve_precision(s.precision, acc.device)
        model = task.model.to(acc.device).train()
        ema = copy.deepcopy(model).requires_grad_(False) if s.ema_decay is not None else None
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=tuple(s.adam_betas), weight_decay=s.weight_decay)
        gen = torch.Generator().manual_seed(s.seed)
        self.step, self.seconds, self.loss_ema, self.losses = 0, 0.0, None, []
        ckpt_path = self.out / CHECKPOINT_NAME
        if resume and ckpt_path.is_file():
            self._resume(torch.load(ckpt_path, map_location="cpu", weights_only=False), model, ema, opt, gen)
        else:
            torch.manual_seed(s.seed)
            np.random.seed(s.seed)
            if init_from is not None:
                self._init_from(init_from, model, ema)
        if acc.process_index:   # other processes of a multi-GPU run: their own batches
            gen.manual_seed(s.seed + 1_000_003 * acc.process_index + self.step)
        model, opt = acc.prepare(model, opt)
        raw = acc.unwrap_model(model)
        autocast = torch.autocast(acc.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)
        self._precision = "fp32" if amp_dtype is None else "bf16"
        self._hardware = hardware(acc.device, acc.num_processes)
        self._device_name = str(acc.device.type)

        def checkpoint() -> None:
            if not acc.is_main_process:
                return
            atomic_write(ckpt_path, lambda p: torch.save({
                "kind": task.kind, "architecture": task.architecture[task.arch_key], "model": raw.state_dict(),
                "ema": None if ema is None else ema.state_dict(), "optimizer": opt.state_dict(), "step": self.step,
                "seconds": self.seconds, "loss_ema": self.loss_ema, "losses": self.losses,
                "batch_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(), "settings": s.to_dict()}, p))
            self._export(ema if ema is not None else raw)
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.step, self.loss_ema if self.loss_ema is not None else float("nan"))

        if acc.is_main_process and not (self.out / LOG_NAME).exists():
            self._log_row(["step", "loss", "seconds"])
        bar = None
        if self.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=s.steps, initial=min(self.step, s.steps or self.step), desc=f"train {task.kind}", unit="step",
                       dynamic_ncols=True)
        t_start = time.perf_counter() - self.seconds
        t_box = time.perf_counter() + s.max_seconds if s.max_seconds else math.inf
        interrupted = _StopOnSignal()      # Ctrl-C / SIGTERM: finish the step, save, export, return (twice: abort)
        try:
            t_fit = time.perf_counter()
            while (s.steps is None or self.step < s.steps) and time.perf_counter() < t_box and not interrupted.asked:
                box = (time.perf_counter() - t_fit) / s.max_seconds if s.max_seconds else 0.0
                for g in opt.param_groups:
                    g["lr"] = s.lr_at(self.step, box)
                batch = _to(task.make_batch(gen), acc.device)
                with autocast:
                    loss = task.loss(model, batch)
                opt.zero_grad(set_to_none=True)
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), s.grad_clip)
                opt.step()
                self.step += 1
                if ema is not None:                       # EMA with a warm-up: decay (1 + n) / (10 + n) early on
                    decay = min(s.ema_decay, (1 + self.step) / (10 + self.step))
                    with torch.no_grad():
                        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in raw.parameters()],
                                             1 - decay)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"{task.kind} training diverged at step {self.step} (loss {value}); "
                                             f"lower the lr (--lr)")
                self.loss_ema = value if self.loss_ema is None else 0.98 * self.loss_ema + 0.02 * value
                self.seconds = time.perf_counter() - t_start
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.loss_ema:.4f}")
                if self.step % s.log_every == 0 or self.step in (1, s.steps):
                    self.losses.append([self.step, round(self.loss_ema, 6)])
                    if acc.is_main_process:
                        self._log_row([self.step, f"{value:.5f}", f"{self.seconds:.1f}"])
                if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                    checkpoint()
                if self.on_step is not None:
                    used = (time.perf_counter() - t_fit) / s.max_seconds if s.max_seconds else self.step / s.steps
                    if self.on_step(self.step, min(1.0, used)):
                        self.stopped = True
                        break
        finally:
            interrupted.restore()
            if bar is not None:
                bar.close()
        self.stopped = self.stopped or interrupted.asked
        if acc.is_main_process and (self.step % s.checkpoint_every != 0 and self.step != s.steps
                                    or not (ckpt_path.is_file() and (self.out / "model.safetensors").is_file())):
            checkpoint()    # a time box ended it between checkpoints, or nothing was left to train: still export
        raw.eval()
        return self.out

    def _log_row(self, row: list) -> None:
        with open(self.out / LOG_NAME, "a", newline="") as f:
            csv.writer(f).writerow(row)

    def _export(self, net: torch.nn.Module) -> None:
        """The (EMA) weights and the card as a loadable model folder in ``out_dir``."""
        record = TrainingRecord(steps_done=self.step, wall_seconds=round(self.seconds, 1), loss_ema=self.loss_ema,
                                loss_curve=self.losses[:: max(1, len(self.losses) // 50)], precision=self._precision,
                                hardware=self._hardware, parameters=sum(p.numel() for p in net.parameters()),
                                settings=self.settings)
        card = self.task.card(record)
        write_model(self.out, self.task.kind, net.state_dict(), self.task.architecture, card, by="train",
                    device=self._device_name)


class _StopOnSignal:
    """While a training loop runs: the first SIGINT (Ctrl-C) or SIGTERM asks it to stop after the step in hand (it
    then saves a checkpoint and exports the weights, as at a time box's end); a second one interrupts at once."""

    def __init__(self):
        import signal
        import threading

        self.asked, self._previous = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._ask)

    def _ask(self, signum, frame) -> None:
        import signal

        self.asked = True
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))   # the next one is not caught

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def started_from(init_from, kind: str) -> dict:
    """The card's ``init_from`` where a run started from saved weights: their folder and the steps they had."""
    if init_from is None:
        return {}
    from diffuse_core.models.checkpoint import read_config, steps_done

    steps, _ = steps_done(read_config(init_from, kind).get("card") or {})
    return {"init_from": f"{init_from} ({steps:,} steps); the step count continues from there"}


def small_model_card(description: dict, r: TrainingRecord) -> dict:
    """The card of a small model (the ACAT pair, the level estimator): the description, then the run's facts under
    ``training`` (as the DDPM's card)."""
    s = r.settings
    return {**description, "parameters": r.parameters,
            "training": {"steps": s.steps, "steps_done": r.steps_done, "batch_size": s.batch_size, "lr": s.lr,
                         "weight_decay": s.weight_decay, "wall_seconds": r.wall_seconds, "hardware": r.hardware,
                         "seed": s.seed, "precision": "bfloat16" if r.precision == "bf16" else "float32",
                         "final_loss_ema": None if r.loss_ema is None else round(r.loss_ema, 6),
                         "loss_curve": r.loss_curve}}
