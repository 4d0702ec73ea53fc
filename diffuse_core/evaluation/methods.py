"""Counterfactual methods compared in the evaluation (paper Sec. IV-B, Table I, Fig. 3, Sec. IV-F).

Each method maps a batch of diseased slices to healthy counterfactuals with the same denoiser and the same budget of
respaced steps over [0, K]:

- ``dif-fuse``: DDIM inversion to K, then the Dif-fuse walk with the ACAT mask, one call per step (Algorithm 1).
- ``dif-fuse-two-chain``: the authors' code, a separate DDIM chain supplies the outside (two calls per step).
- ``dif-fuse-gradcam`` / ``dif-fuse-gradient``: Dif-fuse with Grad-CAM / input-gradient masks (Sec. IV-E ablation).
- ``acat``: the ACAT mask itself as the anomaly map (no diffusion).
- the unmasked ablations of Sec. IV-B: ``ddpm`` (forward noising + DDPM sampling), ``ddim-ddpm`` (DDIM inversion +
  DDPM sampling), ``ddpm-ddim`` (forward noising + DDIM sampling), ``ddim`` (DDIM inversion + DDIM sampling).
- ``mask-at-end``: DDIM inversion, a DDPM chain and a DDIM chain run separately and fused by the mask only at the end
  (Fig. 3b).
- ``anoddpm``: AnoDDPM-style partial noising (Gaussian, not simplex noise) to a low level (paper: 100 steps) and
  DDPM reconstruction of the whole image.
- ``repaint``: RePaint inpainting of the ACAT mask from pure noise, with resampling (Sec. IV-F).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from diffuse_core.core.anomaly import anomaly_map
from diffuse_core.models.denoiser import Denoiser
from diffuse_core.models.device import resolve_precision
from diffuse_core.core.sampler import (CallCounter, iter_ddim_inversion, iter_ddim_sampling, iter_ddpm_sampling, iter_dif_fuse,
                      iter_repaint, iter_two_chain, run_to_end, unet_eps_model)

METHODS = ("dif-fuse", "dif-fuse-two-chain", "acat", "ddpm", "ddim-ddpm", "ddpm-ddim", "ddim", "mask-at-end",
           "anoddpm", "repaint", "dif-fuse-gradcam", "dif-fuse-gradient")
MASK_SOURCE = {"dif-fuse": "acat", "dif-fuse-two-chain": "acat", "acat": "acat", "mask-at-end": "acat",
               "repaint": "acat", "dif-fuse-gradcam": "gradcam", "dif-fuse-gradient": "gradient"}
ANODDPM_LEVEL = 100       # paper Sec. IV-B: "employing 100 noising steps achieves the best results" for AnoDDPM
REPAINT_JUMP, REPAINT_RESAMPLINGS = 5, 3


@dataclass
class MethodOutput:
    """Counterfactuals (B, C, H, W) and anomaly maps (B, H, W); cost per slice, measured."""

    counterfactuals: np.ndarray
    anomalies: np.ndarray
    calls_per_slice: float
    seconds_per_slice: float


def _forward_noise(schedule, x0: torch.Tensor, t: int, generator: torch.Generator) -> torch.Tensor:
    ab = schedule.alpha_bar(t)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise


def run_method(name: str, denoiser: Denoiser, images: np.ndarray, brains: np.ndarray, masks: dict[str, np.ndarray],
               k: int = 500, steps: int = 50, seed: int = 0, precision: str = "auto") -> MethodOutput:
    """Run one method on a batch. ``masks`` maps a mask source ("acat", "gradcam", "gradient") to (B, H, W) masks."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    b = images.shape[0]
    if name == "acat":
        m = masks["acat"].astype(np.float32)
        return MethodOutput(images.copy(), m * brains, 0.0, 0.0)
    device = denoiser.device
    counter = CallCounter(unet_eps_model(denoiser.unet, resolve_precision(precision, device)))
    sched = denoiser.schedule
    gen = torch.Generator().manual_seed(int(seed))
    x0 = torch.from_numpy(images.astype(np.float32)).to(device)
    src = MASK_SOURCE.get(name)
    m = torch.from_numpy(masks[src].astype(np.float32))[:, None].to(device) if src else None
    ts = sched.respaced_timesteps(k, steps)
    start = time.perf_counter()
    if name in ("dif-fuse", "dif-fuse-gradcam", "dif-fuse-gradient"):
        out = run_to_end(iter_dif_fuse(counter, sched, run_to_end(iter_ddim_inversion(counter, sched, x0, ts)), m, ts,
                                       gen))
    elif name == "dif-fuse-two-chain":
        out = run_to_end(iter_two_chain(counter, sched, run_to_end(iter_ddim_inversion(counter, sched, x0, ts)), m,
                                        ts, gen))
    elif name in ("ddpm", "ddpm-ddim"):
        x_k = _forward_noise(sched, x0, ts[-1], gen)
        walk = iter_ddpm_sampling(counter, sched, x_k, ts, gen) if name == "ddpm" else \
            iter_ddim_sampling(counter, sched, x_k, ts)
        out = run_to_end(walk)
    elif name in ("ddim-ddpm", "ddim"):
        x_k = run_to_end(iter_ddim_inversion(counter, sched, x0, ts))
        walk = iter_ddpm_sampling(counter, sched, x_k, ts, gen) if name == "ddim-ddpm" else \
            iter_ddim_sampling(counter, sched, x_k, ts)
        out = run_to_end(walk)
    elif name == "mask-at-end":
        x_k = run_to_end(iter_ddim_inversion(counter, sched, x0, ts))
        ddpm = run_to_end(iter_ddpm_sampling(counter, sched, x_k, ts, gen))
        ddim = run_to_end(iter_ddim_sampling(counter, sched, x_k, ts))
        out = m * ddpm + (1 - m) * ddim
    elif name == "anoddpm":
        level = min(ANODDPM_LEVEL, k)
        ts_low = sched.respaced_timesteps(level, max(1, round(steps * level / k)))
        out = run_to_end(iter_ddpm_sampling(counter, sched, _forward_noise(sched, x0, ts_low[-1], gen), ts_low, gen))
    elif name == "repaint":
        ts_full = sched.respaced_timesteps(sched.num_train_timesteps, steps)
        out = run_to_end(iter_repaint(counter, sched, x0, m, ts_full, gen, REPAINT_JUMP, REPAINT_RESAMPLINGS))
    else:  # pragma: no cover - METHODS and the branches above are kept in step
        raise AssertionError(name)
    seconds = time.perf_counter() - start
    cf = out.float().clamp(-1, 1).cpu().numpy()
    cf = np.where(brains[:, None].astype(bool), cf, images)  # the background is never edited
    anomalies = np.stack([anomaly_map(images[i], cf[i], brains[i]) for i in range(b)])
    return MethodOutput(cf.astype(np.float32), anomalies, counter.calls / 1.0, seconds / b)
