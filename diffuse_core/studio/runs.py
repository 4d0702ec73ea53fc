"""One run of the app: choose the mask, then Dif-fuse, streamed step by step.

:func:`run_case` checks everything a user can get wrong before any model time is spent, then streams
:func:`dif_fuse_stream` (the model work: the run's one assembly, :func:`diffuse_core.run.assembly.iter_run`, with
the saliency maps kept per slice by :mod:`diffuse_core.studio.saliency_cache`). Items are plain-numpy dicts (picklable, as ZeroGPU needs):
``{"kind": "mask"}``, one ``{"kind": "step"}`` per sampler step, then ``{"kind": "result"}``. :func:`run_case`
checks the request's :class:`~diffuse_core.studio.guard.RunGuard` (wall-time limit, cancel) before every step.

On a Hugging Face Space with ZeroGPU the host wraps the model work with :func:`run_model_work_under` (the UI does,
with ``spaces.GPU``); elsewhere it runs as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuse_core.cases import CaseInput
from diffuse_core.core.masks import DEFAULT_PERCENTILE
from diffuse_core.pipeline import InversionCache
from diffuse_core.data import curation
from diffuse_core.studio.guard import RunGuard, request_guard
from diffuse_core.studio.library import LoadedCase
from diffuse_core.studio.model_store import MODELS, k_for_modality, model_device
from diffuse_core.studio.saliency_cache import SALIENCY_CACHE
from diffuse_core.studio.scoring import result_summary
from diffuse_core.studio.session import LIVE_RUNS
from diffuse_core.studio.settings import (DEFAULTS, MASK_SOURCES, SALIENCY_METHODS, check_percentile, check_settings,
                                          split_mask_source,
                                          max_upload_bytes, shown)
from diffuse_core.studio.uploads import upload_paths

# what a finished run keeps for review and saving (Curate), taken from the Explore run's state too
RECORD_FIELDS = ("image", "counterfactual", "anomaly", "mask", "brain", "truth", "vmax", "geometry", "spacing",
                 "modality", "healthy", "lesion_type", "location", "difficulty", "source", "slice", "settings",
                 "model_version", "summary", "title", "origin", "full", "full_truth")


@dataclass
class MaskChoice:
    """Where the mask comes from: a saliency method (computed with the models), or a ready mask (R, R) {0, 1} with
    the map shown as its saliency."""

    saliency_method: str | None = None
    mask: np.ndarray | None = None
    saliency: np.ndarray | None = None
    rule: str = "card"            # a saliency method's region: "card" (the model card's rule) or "percentile"


def resolve_mask(lc: LoadedCase, mask_from: str, mask_file=None, drawn=None, percentile: float = DEFAULT_PERCENTILE,
                 mask_rule: str | None = None) -> MaskChoice:
    """What the mask comes from, checked before any GPU time is spent. ``drawn`` (R, R) is the painted region of
    ``mask_from="draw"`` on the model's grid (:func:`diffuse_core.ui.pictures.drawing_to_mask`)."""
    check_percentile(percentile)
    mask_from, source_rule = split_mask_source(mask_from or DEFAULTS["mask_from"])
    case = lc.case
    if mask_from in SALIENCY_METHODS:
        MODELS.require_acat()
        rule = mask_rule or source_rule or DEFAULTS["mask_rule"]
        if rule not in ("card", "percentile"):
            raise ValueError(f"unknown mask rule {shown(rule)}: choose 'card' or 'percentile'")
        return MaskChoice(saliency_method=mask_from, rule=rule)
    if mask_from == "file":
        paths = upload_paths(mask_file)
        if not paths:
            raise ValueError("mask source is 'Mask file' but no mask file was uploaded")
        curation.check_upload_size(paths[0], max_upload_bytes())
        from diffuse_core.run.region import mask_for_case

        mask, saliency = mask_for_case(case, paths[0], percentile)
        return MaskChoice(mask=mask, saliency=saliency)
    if mask_from == "draw":
        size = case.image.shape[-1]
        drawn = np.zeros((size, size), np.uint8) if drawn is None else (np.asarray(drawn) > 0).astype(np.uint8)
        mask = drawn & case.brain_mask.astype(np.uint8)
        if not mask.any():
            raise ValueError("the drawn mask is empty (or outside the brain): paint the region to redraw in "
                             "'Draw the mask'")
        return MaskChoice(mask=mask, saliency=mask.astype(np.float32))
    raise ValueError(f"unknown mask source {shown(mask_from)}: choose one of {', '.join(v for _, v in MASK_SOURCES)}")


# x_K of the last runs (64 KB each at 128²): a rerun of a slice with another percentile, mask or seed skips the
# inversion, half the network calls (issue: teaching v2, item 3)
INVERSION_CACHE = InversionCache(size=32)


def dif_fuse_stream(case: CaseInput, choice: MaskChoice, k: int, steps: int, seed: int, percentile: float,
                    reuse_inversion: bool = True, model_dir=None):
    """The model work, on the GPU where there is one: the run's one assembly
    (:func:`diffuse_core.run.assembly.iter_run`) with the app's models, its saliency maps kept per slice and, with
    ``reuse_inversion``, x_K taken from :data:`INVERSION_CACHE` when this slice, K and steps ran before."""
    from diffuse_core.run.assembly import ReadyMask, iter_run

    device = model_device()
    models = MODELS.run_models(device, case.modality, need_saliency=choice.saliency_method is not None,
                               model_dir=model_dir)      # model_dir: a model adapted in the app, else the installed
    settings = run_settings_for(models.card, k, steps, seed, percentile, choice.rule)
    mask_from = choice.saliency_method or ReadyMask(choice.mask, choice.saliency)
    yield from iter_run(case, models, settings, mask_from, saliency_of=SALIENCY_CACHE.saliency,
                        inversion_cache=INVERSION_CACHE if reuse_inversion else None, frames=True)


def run_settings_for(card: dict, k: int, steps: int, seed: int, percentile: float, rule: str = "card"):
    """The :class:`~diffuse_core.run.settings.RunSettings` of an app run: the user's K, steps, seed, percentile
    and region rule, with the app's solver and variant."""
    from diffuse_core.run.settings import settings_for

    return settings_for(card, k=k, steps=steps, seed=seed, percentile=percentile, rule=rule,
                        solver=DEFAULTS["solver"], variant=DEFAULTS["variant"])


_model_work = dif_fuse_stream    # what run_case calls: dif_fuse_stream, or it wrapped by the host


def run_model_work_under(wrapper) -> None:
    """Run the model work as ``wrapper(dif_fuse_stream)`` (e.g. ``spaces.GPU(duration=...)`` on ZeroGPU); None
    restores the plain function. Calling it again replaces the wrapper, never stacks it."""
    global _model_work
    _model_work = dif_fuse_stream if wrapper is None else wrapper(dif_fuse_stream)


def run_settings(k=None, steps=None, seed=None, percentile=None) -> tuple[int, int, int, float]:
    """K, steps, seed and percentile of a run: the app's defaults where None, checked (ValueError saying what)."""
    k = DEFAULTS["k"] if k is None else k
    steps = DEFAULTS["steps"] if steps is None else steps
    seed = DEFAULTS["seed"] if seed is None else seed
    percentile = DEFAULTS["percentile"] if percentile is None else check_percentile(percentile)
    k, steps, seed = check_settings(k, steps, seed)
    return k, steps, seed, percentile


def run_case(lc: LoadedCase, mask_from="acat", mask_file=None, drawn=None, k=None, steps=None, seed=None,
             percentile=None, guard: RunGuard | None = None, reuse_inversion: bool = True, mask_rule=None,
             model_dir=None):
    """Validate, then stream :func:`dif_fuse_stream` for a loaded case (same items; the result also carries
    "changes", the per-step mean change inside/outside the mask, and "settings").

    ``guard`` (default: the current request's, :func:`~diffuse_core.studio.guard.request_guard`) is checked before
    the mask and before every sampler step: a cancelled request ends with RunCancelled, one past its wall-time limit
    with RunTimeLimit, within one step."""
    guard = guard if guard is not None else request_guard()
    k, steps, seed, percentile = run_settings(k, steps, seed, percentile)
    k = k_for_modality(k, lc.case.modality)          # a CT case at the app's default K: its own card's K
    MODELS.require_ddpm()
    guard.check("before the mask")
    choice = resolve_mask(lc, mask_from, mask_file, drawn, percentile, mask_rule)
    changes, result = [], None
    # model_dir: the denoiser folder instead of the installed one (a model adapted in the app)
    with LIVE_RUNS.running(guard):               # counted as running until the result, or the run's end
        work = iter(_model_work(lc.case, choice, k, steps, seed, percentile, reuse_inversion, model_dir))
        where = "while computing the mask"
        try:
            while result is None:
                guard.check(where)               # before each step's computation: a cancel costs at most one step
                item = next(work, None)
                if item is None:
                    return
                if item["kind"] == "step":
                    LIVE_RUNS.step()
                    changes.append({c: item[c] for c in ("phase", "index", "total", "timestep", "inside",
                                                         "outside")})
                    phase = "inversion" if item["phase"] == "invert" else "sampling"
                    where = f"at {phase} step {item['index'] + 1}/{item['total']}"
                elif item["kind"] == "result":
                    result = item
                    continue
                yield item
        finally:
            close = getattr(work, "close", None)
            if close is not None:
                close()                          # a stopped run leaves no suspended model work behind
    result["changes"] = changes
    result["settings"] = {"k": k, "steps": steps, "seed": seed, "percentile": percentile, "mask_from": mask_from,
                          "variant": DEFAULTS["variant"], "mask_rule": choice.rule}
    yield result


def result_record(lc: LoadedCase, item: dict, summary: dict | None = None) -> dict:
    """A finished run (a "result" item) as the record of :data:`RECORD_FIELDS` that review and saving use."""
    r = item["result"]
    return {"image": r.image, "counterfactual": r.counterfactual, "anomaly": r.anomaly, "mask": r.mask,
            "brain": r.brain_mask, "truth": lc.case.ground_truth, "vmax": max(float(r.anomaly.max()), 1e-3),
            "geometry": lc.case.geometry, "spacing": tuple(lc.case.spacing), "modality": lc.case.modality,
            "healthy": lc.healthy, "lesion_type": lc.lesion_type, "location": lc.location,
            "difficulty": lc.difficulty, "source": lc.case.source, "slice": lc.case.slice_index,
            "settings": item["settings"], "model_version": item["model_version"],
            "summary": summary if summary is not None else result_summary(lc, item), "title": lc.title,
            "origin": lc.origin, "full": lc.case.full_resolution(r), "full_truth": lc.case.truth_at_input_size}
