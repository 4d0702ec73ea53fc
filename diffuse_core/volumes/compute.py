"""The per-slice compute of a volume run: a stack of prepared slices (:class:`~diffuse_core.cases.CaseInput`) ->
full-resolution results, batched through the network. The ONE place a volume run calls the engine.

:class:`VolumeEngine` holds the models and the settings resolved once, as ``diffuse-studio run`` resolves them
(the model card's K, steps, solver, mask rule and threshold unless given); :meth:`VolumeEngine.run_slices` makes each
slice's Dif-fuse mask (:func:`diffuse_core.cases.mask_for_case`), runs the batch through
:func:`diffuse_core.pipeline.run_batch` and brings every result back to the input's pixels
(:meth:`CaseInput.full_resolution <diffuse_core.cases.CaseInput.full_resolution>`). The noise of a batch comes from
one generator seeded with ``seed``: a slice's result depends on the seed and the batch it ran in, which
:mod:`.run` keeps fixed (same seed, same batches, same bytes, resumed or not).
"""

from __future__ import annotations

from collections.abc import Callable
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from diffuse_core.cases import CaseInput

__all__ = ["SliceResult", "VolumeEngine", "load_engine"]


@dataclass
class SliceResult:
    """One slice's result at the input's size (H0, W0)."""

    z: int
    counterfactual: np.ndarray        # float32 in [-1, 1], normalised as the model saw the input
    image: np.ndarray                 # float32 in [-1, 1]: the input as the model saw it, at full size
    anomaly: np.ndarray               # float32 >= 0 (intensity units of [-1, 1] images), zero outside the brain
    redrawn: np.ndarray               # uint8: the Dif-fuse mask m (the region redrawn)
    brain: np.ndarray                 # uint8
    flagged: np.ndarray               # uint8: anomaly above the threshold
    peak: float                       # the slice's largest anomaly value
    truth: np.ndarray | None = None   # uint8 ground truth at full size, where the input had one


@dataclass
class VolumeEngine:
    """Models and resolved settings of a volume run; :attr:`settings` is JSON-able (a run's fingerprint)."""

    denoiser: object
    saliency_models: object
    device: object
    settings: dict
    mri_reference: dict | None
    rule: dict
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.denoiser.config.resolution)

    @property
    def channels(self) -> int:
        return int(self.denoiser.config.channels)

    @property
    def threshold(self) -> float:
        return float(self.settings["threshold"])

    def run_slices(self, cases: list[CaseInput], seed: int,
                   callback: Callable | None = None) -> list[SliceResult]:
        """Dif-fuse on a batch of prepared slices (one network batch), each result at its input's size."""
        with self.lock:                  # one batch at a time through the models (workers may share an engine)
            return self._run(cases, seed, callback)

    def _run(self, cases: list[CaseInput], seed: int, callback: Callable | None) -> list[SliceResult]:
        from diffuse_core.core.anomaly import binarize
        from diffuse_core.pipeline import run_batch

        s = self.settings
        masks, saliencies = regions_of(cases, s["mask_from"], self.saliency_models, self.rule)
        batch = run_batch(self.denoiser, np.stack([c.image for c in cases]), masks,
                          np.stack([c.brain_mask for c in cases]), callback=callback, k=s["k"], steps=s["steps"],
                          seed=seed, variant=s["variant"], precision=s["precision"], solver=s["solver"])
        out = []
        for i, case in enumerate(cases):
            one = SimpleNamespace(counterfactual=batch.counterfactuals[i], anomaly=batch.anomalies[i],
                                  mask=batch.masks[i], saliency=saliencies[i])
            full = case.full_resolution(one)
            case.last_full = None                       # the stack's results are kept by the caller, not twice
            out.append(SliceResult(z=case.slice_index, counterfactual=full.counterfactual[0], image=full.image[0],
                                   anomaly=full.anomaly, redrawn=full.mask, brain=full.brain,
                                   flagged=binarize(full.anomaly, self.threshold), peak=float(full.anomaly.max()),
                                   truth=case.truth_at_input_size))
        return out


def regions_of(cases: list[CaseInput], method: str, saliency_models, rule: dict) -> tuple[np.ndarray, np.ndarray]:
    """The Dif-fuse masks m (B, R, R) uint8 of prepared slices and their saliency maps (B, R, R) float32:
    ``method``'s maps inside the brain (one batch through the saliency models; each map is its slice's own, as
    alone: ACAT normalises per sample), thresholded by ``rule`` (:func:`diffuse_core.core.redraw.mask_rule_of`)
    slice by slice, as ``diffuse-studio run`` thresholds one."""
    from diffuse_core.core.masks import mask_from_saliency
    from diffuse_core.core.redraw import needs_probability, redrawn_mask
    from diffuse_core.saliency.dispatch import compute_saliency, diseased_probabilities

    images = np.stack([c.image for c in cases])
    brains = np.stack([c.brain_mask for c in cases])
    saliency = np.asarray(compute_saliency(method, images, saliency_models, brain_mask=brains), np.float32)
    saliency = saliency.reshape(brains.shape) * brains
    if rule.get("kind") == "percentile":
        masks = [mask_from_saliency(saliency[i], brains[i], rule["percentile"]) for i in range(len(cases))]
    else:
        ps = diseased_probabilities(images, saliency_models) if needs_probability(rule) else [None] * len(cases)
        masks = [redrawn_mask(saliency[i], brains[i], rule, ps[i]) for i in range(len(cases))]
    return np.stack(masks).astype(np.uint8), saliency


def load_engine(*, model_dir=None, saliency_dir=None, device="auto", k=None, steps=None, percentile=None,
                mask_from: str = "acat", solver=None, threshold=None, intensity: str = "auto",
                precision: str = "auto", variant: str = "paper", modality: str | None = None) -> VolumeEngine:
    """The models for ``modality`` ("mri"/"ct"; CT models where installed) and the settings a one-slice
    ``diffuse-studio run`` with the same options would use."""
    from diffuse_core.cases import (anomaly_threshold_of, default_settings, load_default_models, mri_reference_for,
                                    resolve_intensity)
    from diffuse_core.saliency.dispatch import SALIENCY_METHODS
    from diffuse_core.core.redraw import mask_rule_of
    from diffuse_core.core.schedule import validate_noise_level
    from diffuse_core.models.device import pick_device

    if mask_from not in SALIENCY_METHODS:
        raise ValueError(f"--mask-from {mask_from}: a volume run takes a saliency method ({', '.join(SALIENCY_METHODS)})")
    if percentile is not None and not 0.0 < float(percentile) < 100.0:
        raise ValueError(f"percentile must lie strictly between 0 and 100 (the paper uses 90), got {percentile}")
    dev = pick_device(device)
    denoiser, sal = load_default_models(model_dir, saliency_dir, dev, True, modality=modality)
    chosen = default_settings(denoiser)
    k = chosen["k"] if k is None else int(k)
    steps = chosen["steps"] if steps is None else int(steps)
    validate_noise_level(k, steps, denoiser.schedule.num_train_timesteps)
    rule = mask_rule_of(denoiser.card, percentile)
    settings = {"k": k, "steps": steps, "percentile": chosen["percentile"] if percentile is None else float(percentile),
                "mask_rule": rule, "solver": chosen["solver"] if solver is None else solver, "mask_from": mask_from,
                "threshold": anomaly_threshold_of(denoiser) if threshold is None else float(threshold),
                "intensity": resolve_intensity(denoiser, intensity), "precision": precision, "variant": variant,
                "model": str(model_dir or "installed"), "device": str(dev),
                "model_steps": ((denoiser.card or {}).get("training") or {}).get("steps_done")}
    ref = mri_reference_for(denoiser, intensity) if modality != "ct" else None
    return VolumeEngine(denoiser, sal, dev, settings, ref, rule)
