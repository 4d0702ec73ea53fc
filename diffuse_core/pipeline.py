"""Dif-fuse end to end on one prepared slice: invert, walk back with the mask, take the difference (Algorithm 1).

This is the plain Python API that the CLI and the app format. It takes an image already on the model's grid
((C, H, W) in [-1, 1], background -1; see :mod:`diffuse_core.io.preprocess` for files) and a binary mask, and returns a
:class:`CounterfactualResult`. :func:`iter_counterfactual` yields every sampler step first, for live views.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from diffuse_core.core.anomaly import anomaly_map
from diffuse_core.models.denoiser import Denoiser
from diffuse_core.models.device import resolve_precision
from diffuse_core.core.sampler import (VARIANTS, CallCounter, SamplerStep, iter_ddim_inversion, iter_sampler, unet_eps_model)
from diffuse_core.core.schedule import validate_noise_level

BRAIN_THRESHOLD = 0.02  # a pixel is brain when some channel rises this far above the background value -1


@dataclass
class CounterfactualResult:
    """A healthy counterfactual and its anomaly map. Images (C, H, W) float32 in [-1, 1]; maps (H, W)."""

    image: np.ndarray
    counterfactual: np.ndarray
    mask: np.ndarray
    anomaly: np.ndarray
    brain_mask: np.ndarray
    k: int
    steps: int
    variant: str
    seed: int
    network_calls: int
    seconds: float
    device: str
    saliency: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The run's settings and measurements as plain JSON-able values."""
        inside = self.brain_mask.astype(bool)
        change = np.abs(self.image - self.counterfactual).mean(axis=0)
        return {
            "k": self.k, "steps": self.steps, "variant": self.variant, "seed": self.seed,
            "network_calls": self.network_calls, "seconds": round(self.seconds, 3), "device": self.device,
            "mask_fraction_of_brain": float(self.mask[inside].mean()) if inside.any() else 0.0,
            "mean_abs_change_in_brain": float(change[inside].mean()) if inside.any() else 0.0,
            **self.extras,
        }


def brain_mask_from_image(image: np.ndarray) -> np.ndarray:
    """Brain = pixels above the background in any channel, holes filled (images in [-1, 1], background -1)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    fg = (img > -1.0 + BRAIN_THRESHOLD).any(axis=0).astype(np.uint8)
    # fill interior holes (dark CSF in a ventricle is still brain): flood the background from the border
    filled = fg.copy()
    h, w = fg.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    inv = (1 - fg).astype(np.uint8)
    cv2.floodFill(inv, flood, (0, 0), 0)
    filled[inv.astype(bool)] = 1
    return filled


def _validate(denoiser: Denoiser, image: np.ndarray, mask: np.ndarray, variant: str, k: int, steps: int) -> tuple:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"expected a 2-D slice (H, W) or (C, H, W), got shape {np.shape(image)}: "
                         f"pick an axial slice of a volume first (--slice Z)")
    c, r = denoiser.config.channels, denoiser.config.resolution
    if img.shape[0] != c:
        raise ValueError(f"the model expects {c} channel(s), the image has {img.shape[0]}")
    if img.shape[1:] != (r, r):
        raise ValueError(f"the model works on {r}x{r} slices, got {img.shape[1]}x{img.shape[2]}: "
                         f"resize with diffuse_core.io.preprocess.prepare_slice")
    n_bad = int((~np.isfinite(img)).sum())
    if n_bad:
        raise ValueError(f"the image holds {n_bad} NaN/inf values")
    if img.min() < -1.05 or img.max() > 1.05:
        raise ValueError(f"intensities must lie in [-1, 1] (got {img.min():.3g}..{img.max():.3g}): "
                         f"normalise with diffuse_core.io.preprocess.prepare_slice")
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != img.shape[1:]:
        raise ValueError(f"mask {m.shape} and image {img.shape[1:]} differ in size")
    if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ValueError("the mask must hold values in {0, 1} (1 = region to redraw)")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    validate_noise_level(k, steps, denoiser.schedule.num_train_timesteps)
    return img, m


def iter_counterfactual(denoiser: Denoiser, image: np.ndarray, mask: np.ndarray, *, brain_mask=None,
                        k: int = 500, steps: int = 50, seed: int = 0, variant: str = "paper",
                        precision: str = "auto", paste_background: bool = True,
                        saliency: np.ndarray | None = None) -> Iterator[SamplerStep | CounterfactualResult]:
    """Run Dif-fuse on one slice, yielding each :class:`SamplerStep` (inversion, then sampling) and finally the
    :class:`CounterfactualResult`.

    ``k`` is the noise level K in [1, T] (paper: 500); ``steps`` the number of respaced steps spanning [0, K] (one
    network call each way per step in the paper variant). ``seed`` fixes every random draw. With
    ``paste_background`` the counterfactual keeps the input outside the brain, which the method never edits (only
    reconstruction noise lives there). The device is the denoiser's.
    """
    img, m = _validate(denoiser, image, mask, variant, k, steps)
    brain = brain_mask_from_image(img) if brain_mask is None else np.asarray(brain_mask).astype(np.uint8)
    if brain.shape != img.shape[1:]:
        raise ValueError(f"brain mask {brain.shape} and image {img.shape[1:]} differ in size")
    device = denoiser.device
    counter = CallCounter(unet_eps_model(denoiser.unet, resolve_precision(precision, device)))
    generator = torch.Generator().manual_seed(int(seed))
    timesteps = denoiser.schedule.respaced_timesteps(k, steps)

    start = time.perf_counter()
    x0 = torch.from_numpy(img)[None].to(device)
    mt = torch.from_numpy(m)[None, None].to(device)
    x = x0
    for step in iter_ddim_inversion(counter, denoiser.schedule, x0, timesteps):   # Algorithm 1, first loop
        x = step.x_t
        yield step
    x_k = x
    for step in iter_sampler(variant, counter, denoiser.schedule, x_k, mt, timesteps, generator):  # second loop
        x = step.x_t
        yield step
    counterfactual = x[0].float().clamp(-1, 1).cpu().numpy()
    if paste_background:
        counterfactual = np.where(brain[None].astype(bool), counterfactual, img)
    seconds = time.perf_counter() - start
    yield CounterfactualResult(
        image=img, counterfactual=counterfactual.astype(np.float32), mask=m.astype(np.uint8),
        anomaly=anomaly_map(img, counterfactual, brain), brain_mask=brain, k=k, steps=len(timesteps),
        variant=variant, seed=int(seed), network_calls=counter.calls, seconds=seconds, device=str(device),
        saliency=saliency)


def run_counterfactual(denoiser: Denoiser, image: np.ndarray, mask: np.ndarray,
                       callback: Callable[[SamplerStep], None] | None = None, **kwargs) -> CounterfactualResult:
    """:func:`iter_counterfactual` run to the end; ``callback`` sees every sampler step."""
    for item in iter_counterfactual(denoiser, image, mask, **kwargs):
        if isinstance(item, CounterfactualResult):
            return item
        if callback is not None:
            callback(item)
    raise RuntimeError("the sampler ended without a result")  # pragma: no cover
