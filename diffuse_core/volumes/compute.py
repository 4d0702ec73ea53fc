"""The per-slice compute of a volume run: a stack of prepared slices (:class:`~diffuse_core.cases.CaseInput`) ->
full-resolution results, batched through the network. The one place a volume run calls the engine, and it calls the
project's one assembly of a run: :func:`diffuse_core.run.assembly.run_stack` (the redrawn region, the walk, the
anomaly map, the threshold), with the models (:func:`diffuse_core.run.models.load_run_models`) and the settings
(:func:`diffuse_core.run.settings.settings_for`) resolved as ``diffuse-studio run`` resolves them.

:meth:`VolumeEngine.run_slices` runs one batch (``len(cases)`` slices through the network at once) and brings every
result back to the input's pixels (:meth:`CaseInput.full_resolution <diffuse_core.cases.CaseInput.full_resolution>`).
The noise of a batch comes from one generator seeded with ``seed``: a slice's result depends on the seed and the batch
it ran in, which :mod:`.run` keeps fixed (same seed, same batches, same bytes, resumed or not).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
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
    outside: str | None = None        # why the slice lies outside the levels the model learned (run.level_check)


@dataclass
class VolumeEngine:
    """The models (:class:`diffuse_core.run.models.RunModels`), the run settings
    (:class:`diffuse_core.run.settings.RunSettings`) and the mask source of a volume run; :attr:`settings` is their
    JSON-able record (a run's fingerprint)."""

    models: object
    run_settings: object
    mask_from: str
    device: object
    settings: dict
    mri_reference: dict | None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.models.denoiser.config.resolution)

    @property
    def channels(self) -> int:
        return int(self.models.denoiser.config.channels)

    @property
    def saliency_models(self):
        return self.models.saliency

    def run_slices(self, cases: list[CaseInput], seed: int,
                   callback: Callable | None = None) -> list[SliceResult]:
        """Dif-fuse on a batch of prepared slices (one network batch), each result at its input's size."""
        from diffuse_core.core.anomaly import binarize
        from diffuse_core.run.assembly import run_stack

        settings = dataclasses.replace(self.run_settings, seed=int(seed))
        with self.lock:                  # one batch at a time through the models (workers may share an engine)
            outcomes = dict(run_stack(cases, self.models, settings, self.mask_from, batch_size=max(1, len(cases))))
        out = []
        for i, case in enumerate(cases):
            o = outcomes[i]
            r = o.result
            full = case.full_resolution(SimpleNamespace(counterfactual=r.counterfactual, anomaly=r.anomaly,
                                                        mask=r.mask, saliency=r.saliency))
            case.last_full = None                       # the stack's results are kept by the caller, not twice
            out.append(SliceResult(z=case.slice_index, counterfactual=full.counterfactual[0], image=full.image[0],
                                   anomaly=full.anomaly, redrawn=full.mask, brain=full.brain,
                                   flagged=binarize(full.anomaly, o.threshold), peak=float(full.anomaly.max()),
                                   truth=case.truth_at_input_size, outside=o.withheld))
        return out


def load_engine(*, model_dir=None, saliency_dir=None, device="auto", k=None, steps=None, percentile=None,
                mask_from: str = "acat", solver=None, threshold=None, intensity: str = "auto",
                precision: str = "auto", variant: str = "paper", modality: str | None = None) -> VolumeEngine:
    """The models for ``modality`` ("mri"/"ct"; the CT models where installed) and the settings a one-slice
    ``diffuse-studio run`` with the same options would use (a ``percentile`` asks for the paper's region rule)."""
    from diffuse_core.models.device import pick_device
    from diffuse_core.run.card import anomaly_threshold_of, mri_reference_for, resolve_intensity
    from diffuse_core.run.models import load_run_models
    from diffuse_core.run.region import SALIENCY_CHOICES
    from diffuse_core.run.settings import check_percentile, mask_rule, settings_for

    if mask_from not in SALIENCY_CHOICES:
        raise ValueError(f"--mask-from {mask_from}: a volume run takes a saliency method ({', '.join(SALIENCY_CHOICES)})")
    if percentile is not None:
        check_percentile(percentile)
    dev = pick_device(device)
    models = load_run_models(modality, model_dir=model_dir, saliency_dir=saliency_dir, device=dev)
    run_settings = settings_for(models.card, k=k, steps=steps, percentile=percentile, solver=solver,
                                variant=variant, precision=precision, threshold=threshold,
                                rule="percentile" if percentile is not None else "card",
                                num_train_timesteps=models.denoiser.schedule.num_train_timesteps)
    rec = run_settings.to_dict()
    rec.pop("seed")
    settings = {**rec, "mask_rule": mask_rule(run_settings, models.card), "mask_from": mask_from,
                "threshold": anomaly_threshold_of(models.denoiser) if threshold is None else float(threshold),
                "intensity": resolve_intensity(models.card, intensity), "model": models.folder,
                "model_version": models.version, "device": str(dev),
                "model_steps": (models.card.get("training") or {}).get("steps_done"), "notes": list(models.notes)}
    ref = mri_reference_for(models.card, intensity) if modality != "ct" else None
    return VolumeEngine(models, run_settings, mask_from, dev, settings, ref)
