"""Counterfactual methods compared in the evaluation (paper Sec. IV-B, Table I, Fig. 3, Sec. IV-F), as a registry.

A method is a walk of :data:`diffuse_core.core.walks.WALKS` and the saliency map its mask comes from. Every method
with a walk runs through :func:`diffuse_core.pipeline.run_batch`, the walk the app and ``diffuse-studio run`` use,
with the same denoiser and the same budget of respaced steps over [0, K]. ``dif-fuse`` (``assembly``) is the app's run
itself: in an evaluation it goes through :func:`diffuse_core.run.assembly.run_stack` with the model card's mask rule,
score and anomaly threshold (:func:`diffuse_core.evaluation.protocol.run_assembly_on_set`); given a mask,
:func:`run_method` runs its walk on that mask. ``dif-fuse-percentile`` is the same walk on the paper's mask (the
saliency's top percentile). ``acat`` alone runs no diffusion: its mask is its anomaly map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuse_core.core.defaults import PAPER_K, PAPER_STEPS
from diffuse_core.evaluation.baselines import ZSCORE_GRID, hypodensity_maps, zscore_maps
from diffuse_core.models.denoiser import Denoiser
from diffuse_core.pipeline import run_batch


@dataclass(frozen=True)
class Method:
    """``walk``: a key of ``WALKS`` (None: the mask itself is the anomaly map); ``mask_source``: "acat", "gradcam",
    "gradient" or None (unmasked ablations); ``label``: the name in tables and figures."""

    name: str
    walk: str | None
    mask_source: str | None
    label: str
    threshold_grid: tuple | None = None     # where the validation threshold is sought (None: the protocol's grid)
    modality: str = "any"                   # "ct": only for CT sets (not in the default FLAIR evaluation)
    assembly: bool = False                  # the app's run (card mask rule, score, threshold) in an evaluation


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("dif-fuse", "paper", "acat", "Dif-fuse (the app's run: card mask rule, score, threshold)",
           assembly=True),
    Method("dif-fuse-percentile", "paper", "acat", "Dif-fuse, the paper's percentile mask"),
    Method("dif-fuse-two-chain", "two-chain", "acat", "Dif-fuse (authors' code, 2 chains)"),
    Method("acat", None, "acat", "ACAT saliency alone"),
    Method("flair-threshold", None, None, "FLAIR threshold (z-score in the brain)", ZSCORE_GRID),
    Method("ct-threshold", None, None, "CT threshold (hypodensity z-score in the brain)", ZSCORE_GRID, "ct"),
    Method("dif-fuse-oracle", "paper", "oracle", "Dif-fuse + oracle mask (lesion + 6 px)"),
    Method("ddpm", "ddpm", None, "DDPM (ablation)"),
    Method("ddim-ddpm", "ddim-ddpm", None, "DDIM-DDPM (ablation)"),
    Method("ddpm-ddim", "ddpm-ddim", None, "DDPM-DDIM (ablation)"),
    Method("ddim", "ddim", None, "DDIM (ablation)"),
    Method("mask-at-end", "mask-at-end", "acat", "Mask at the end (Fig. 3)"),
    Method("anoddpm", "anoddpm", None, "AnoDDPM-style (Gaussian, L=100)"),
    Method("repaint", "repaint", "acat", "RePaint + ACAT mask"),
    Method("dif-fuse-gradcam", "paper", "gradcam", "Dif-fuse + Grad-CAM mask"),
    Method("dif-fuse-gradient", "paper", "gradient", "Dif-fuse + gradient mask"),
)}
METHODS = tuple(name for name, m in REGISTRY.items() if m.modality != "ct")   # the default (FLAIR) evaluation
ALL_METHODS = tuple(REGISTRY)
MASK_SOURCE = {name: m.mask_source for name, m in REGISTRY.items() if m.mask_source is not None}
SALIENCY_SOURCES = ("acat", "gradcam", "gradient")      # mask sources computed from a saliency map; "oracle" is not


@dataclass
class MethodOutput:
    """Counterfactuals (B, C, H, W) and anomaly maps (B, H, W); cost per slice, measured."""

    counterfactuals: np.ndarray
    anomalies: np.ndarray
    calls_per_slice: float
    seconds_per_slice: float


def run_method(name: str, denoiser: Denoiser, images: np.ndarray, brains: np.ndarray, masks: dict[str, np.ndarray],
               k: int = PAPER_K, steps: int = PAPER_STEPS, seed: int = 0, precision: str = "auto",
               inversion_cache=None) -> MethodOutput:
    """Run one method on a batch (B, C, H, W). ``masks`` maps a mask source ("acat", "gradcam", "gradient") to
    (B, H, W) masks; ``brains`` are (B, H, W) brain masks; ``inversion_cache``: see
    :func:`diffuse_core.evaluation.protocol.run_on_set`."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(ALL_METHODS)}")
    method = REGISTRY[name]
    if name == "flair-threshold":           # no model: the brightest pixels of the brain
        return MethodOutput(images.copy(), zscore_maps(images, brains), 0.0, 0.0)
    if name == "ct-threshold":              # no model: the darkest pixels of the brain (hypodensity)
        return MethodOutput(images.copy(), hypodensity_maps(images, brains), 0.0, 0.0)
    mask = masks[method.mask_source] if method.mask_source else None
    if method.walk is None:
        return MethodOutput(images.copy(), mask.astype(np.float32) * brains, 0.0, 0.0)
    out = run_batch(denoiser, images, mask, brains, k=k, steps=steps, seed=seed, variant=method.walk,
                    precision=precision, inversion_cache=inversion_cache)
    b = images.shape[0]
    return MethodOutput(out.counterfactuals, out.anomalies, float(out.network_calls), out.seconds / b)
