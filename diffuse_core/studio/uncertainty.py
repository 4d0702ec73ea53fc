"""Where is the model unsure? S healthy counterfactuals of one case as one batch
(:func:`diffuse_core.pipeline.iter_uncertainty`), with the time it will take said before it starts.

Dif-fuse's DDPM steps inside the mask draw fresh noise, so different draws give different counterfactuals there; the
per-pixel standard deviation over S of them shows where the healthy model is unsure what belongs, and the mean
counterfactual gives a steadier anomaly map than any single draw.
"""

from __future__ import annotations

import threading
import time

import torch

from diffuse_core.studio.guard import RunGuard, request_guard
from diffuse_core.studio.library import LoadedCase
from diffuse_core.studio.model_store import MODELS, model_device
from diffuse_core.studio.session import LIVE_RUNS

SAMPLES_RANGE = (2, 8)
_CALL_SECONDS: dict = {}
_LOCK = threading.Lock()


def call_seconds(denoiser, batch: int, device) -> float:
    """Seconds of one network call of ``denoiser`` at ``batch`` slices on ``device``, measured once per process
    (two calls, the second timed)."""
    from diffuse_core.core.sampler import denoiser_eps_model
    from diffuse_core.models.device import resolve_precision

    key = (id(denoiser), int(batch), str(device))
    with _LOCK:
        if key in _CALL_SECONDS:
            return _CALL_SECONDS[key]
    r, c = denoiser.config.resolution, denoiser.config.channels
    model = denoiser_eps_model(denoiser, resolve_precision("auto", device))
    x = torch.zeros(batch, c, r, r, device=device)
    t = 100                                    # any level: the cost of a call does not depend on it
    with torch.inference_mode():
        model(x, t)
        start = time.perf_counter()
        model(x, t)
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    with _LOCK:
        _CALL_SECONDS[key] = seconds
    return seconds


def estimate_seconds(denoiser, samples: int, steps: int, device) -> float:
    """The diffusion part of an uncertainty run: ``steps`` calls at one slice (the inversion) and ``steps`` calls at
    ``samples`` slices (the batch walking back)."""
    return steps * (call_seconds(denoiser, 1, device) + call_seconds(denoiser, samples, device))


def run_uncertainty(lc: LoadedCase, mask_from="acat", mask_file=None, drawn=None, k=None, steps=None, seed=None,
                    percentile=None, samples: int = 4, guard: RunGuard | None = None):
    """Stream an uncertainty run: ``{"kind": "estimate", "seconds"}`` first (before any model time beyond two
    timing calls), then ``{"kind": "mask"}``, one ``{"kind": "step"}`` per sampler step, and
    ``{"kind": "result", "result": UncertaintyResult, "seconds_estimated"}``."""
    from diffuse_core.run.assembly import ReadyMask, iter_uncertainty_run
    from diffuse_core.studio.runs import INVERSION_CACHE, resolve_mask, run_settings, run_settings_for
    from diffuse_core.studio.saliency_cache import SALIENCY_CACHE

    guard = guard if guard is not None else request_guard()
    k, steps, seed, percentile = run_settings(k, steps, seed, percentile)
    samples = int(samples)
    if not SAMPLES_RANGE[0] <= samples <= SAMPLES_RANGE[1]:
        raise ValueError(f"choose {SAMPLES_RANGE[0]} to {SAMPLES_RANGE[1]} samples, not {samples}")
    MODELS.require_ddpm()
    choice = resolve_mask(lc, mask_from, mask_file, drawn, percentile)
    device = model_device()
    denoiser = MODELS.denoiser(device, lc.case.modality)
    estimate = estimate_seconds(denoiser, samples, steps, device)
    yield {"kind": "estimate", "seconds": estimate, "samples": samples, "steps": steps}
    with LIVE_RUNS.running(guard):
        guard.check("before the mask")
        models = MODELS.run_models(device, lc.case.modality, need_saliency=choice.saliency_method is not None)
        settings = run_settings_for(models.card, k, steps, seed, percentile, choice.rule)
        for item in iter_uncertainty_run(lc.case, models, settings,
                                         choice.saliency_method or ReadyMask(choice.mask, choice.saliency),
                                         samples=samples, saliency_of=SALIENCY_CACHE.saliency,
                                         inversion_cache=INVERSION_CACHE):
            if item["kind"] == "mask":
                yield item
                continue
            if item["kind"] == "result":
                yield {"kind": "result", "result": item["result"], "seconds_estimated": estimate,
                       "settings": {"k": k, "steps": steps, "seed": seed, "percentile": percentile,
                                    "samples": samples, "mask_from": mask_from, "mask_rule": choice.rule}}
                return
            guard.check(f"at {'inversion' if item['phase'] == 'invert' else 'sampling'} step "
                        f"{item['index'] + 1}/{item['total']}")
            LIVE_RUNS.step()
            yield {"kind": "step", "phase": item["phase"], "index": item["index"], "total": item["total"]}
