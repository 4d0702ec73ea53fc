"""One run of Dif-fuse on prepared slices: the redrawn region, the walk, the anomaly map, the verdict, timed.

The only assembly of a run. ``diffuse-studio run`` (:mod:`diffuse_core.run.files`), the app's Run button
(:mod:`diffuse_core.studio.runs`), volume runs and the evaluation call :func:`iter_run` (one slice, streamed) or
:func:`run_stack` (many slices, batched through the network):

1. the region m: a saliency method's map (ACAT by default) thresholded by the model card's rule or the paper's
   percentile (:mod:`diffuse_core.run.region`), or a ready mask;
2. the walk (Algorithm 1: DDIM inversion to K, then back with a DDPM step inside m and a DDIM step outside,
   :func:`diffuse_core.pipeline.iter_batch`), reusing a kept inversion where one is given;
3. the anomaly map (the card's score), its threshold and the slice verdict from the card;
4. the split of the time: ``saliency`` (the region), ``inversion`` and ``sampling`` (the walk), ``post`` (what
   follows the walk), ``total`` (model loading and file reading excluded).

Items are plain dicts of numpy arrays (picklable, as ZeroGPU needs): one ``{"kind": "mask"}``, one
``{"kind": "step"}`` per sampler step, then ``{"kind": "result"}`` holding a :class:`RunOutcome`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from diffuse_core.run.models import RunModels
from diffuse_core.run.settings import RunSettings, mask_rule


@dataclass
class PreparedSlice:
    """A slice already on the model's grid, from arrays (an evaluation set, a training pool): what
    :func:`run_stack` needs of a :class:`diffuse_core.cases.CaseInput`. ``image`` (C, R, R) in [-1, 1]."""

    image: np.ndarray
    brain_mask: np.ndarray
    notes: tuple[str, ...] = ()


def slices_of(images, brains) -> list[PreparedSlice]:
    """Prepared slices of a stack: images (N, C, R, R) in [-1, 1] and brain masks (N, R, R)."""
    return [PreparedSlice(np.asarray(i, np.float32), np.asarray(b).astype(np.uint8)) for i, b in zip(images, brains)]


@dataclass
class ReadyMask:
    """A mask the user gave (a file read, a drawing): (R, R) {0, 1}, and the map shown as its saliency."""

    mask: np.ndarray
    saliency: np.ndarray


@dataclass
class RunOutcome:
    """A finished run on the model grid: the pipeline's result, and what the card and the settings made of it."""

    result: object                     # diffuse_core.pipeline.CounterfactualResult
    settings: RunSettings
    rule: dict                         # the redrawn region's rule as applied
    threshold: float                   # anomaly binarisation threshold (the card's unless the settings give one)
    verdict: object | None             # diffuse_core.core.verdict.Verdict, None where the card holds no verdict
    model: str                         # the denoiser's folder
    model_version: str
    card: dict = field(default_factory=dict)   # the denoiser's model card
    timings: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    level: float | None = None         # the slice's estimated template level (models.level), None where not estimated
    withheld: str | None = None        # why this slice gets no call: it lies outside the levels the model learned

    @property
    def mask_share(self) -> float:
        """The redrawn region's share of the brain."""
        brain = np.asarray(self.result.brain_mask).astype(bool)
        return float(np.asarray(self.result.mask)[brain].mean()) if brain.any() else 0.0

    def record(self) -> dict:
        """The run's settings, choices and measurements as plain JSON-able values (a results file's fields)."""
        return {"percentile": self.settings.percentile if self.rule.get("kind") == "percentile" else None,
                "mask_rule": self.rule, "mask_share": self.mask_share, "score": self.card.get("score") or "abs",
                "threshold": self.threshold, "verdict": None if self.verdict is None else self.verdict.to_dict(),
                "verdict_withheld": self.withheld,
                "level": None if self.level is None else round(float(self.level), 1), "model": self.model,
                "model_version": self.model_version,
                "model_steps": (self.card.get("training") or {}).get("steps_done"),
                "model_grid": int(np.asarray(self.result.image).shape[-1])}


def _region(case, models: RunModels, settings: RunSettings, mask_from, saliency_of) -> tuple[np.ndarray, np.ndarray]:
    """1. The region m (R, R) uint8 and its saliency map (R, R) float32."""
    from diffuse_core.run.region import SALIENCY_CHOICES, mask_for_case, redrawn_region

    rule = mask_rule(settings, models.card)
    if isinstance(mask_from, ReadyMask):
        return np.asarray(mask_from.mask, np.uint8), np.asarray(mask_from.saliency, np.float32)
    if isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES:
        if models.saliency is None:
            raise ValueError(f"the {mask_from} mask needs the ACAT autoencoder and classifier")
        if saliency_of is None:
            from diffuse_core.saliency.dispatch import compute_saliency

            saliency = compute_saliency(mask_from, case.image, models.saliency, brain_mask=case.brain_mask)
        else:
            saliency = saliency_of(case, mask_from, models.saliency)
        saliency = np.asarray(saliency, np.float32) * case.brain_mask
        return redrawn_region(case, saliency, rule, models.saliency), saliency
    mask, saliency = mask_for_case(case, mask_from, settings.percentile, models.saliency, rule=rule)
    return np.asarray(mask, np.uint8), np.asarray(saliency, np.float32)


def _regions(chunk: list, models: RunModels, settings: RunSettings, mask_from) -> list[tuple[np.ndarray, np.ndarray]]:
    """1. for a batch: the saliency maps of a saliency method in one pass through its models, and the classifier's
    P(diseased) of the batch where the rule weighs by it; the region of each slice as :func:`_region` makes it."""
    from diffuse_core.core.redraw import needs_probability, redrawn_mask
    from diffuse_core.run.region import SALIENCY_CHOICES

    if not (isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES) or len(chunk) == 1:
        return [_region(c, models, settings, mask_from, None) for c in chunk]
    if models.saliency is None:
        raise ValueError(f"the {mask_from} mask needs the ACAT autoencoder and classifier")
    from diffuse_core.core.masks import mask_from_saliency
    from diffuse_core.saliency.dispatch import compute_saliency, diseased_probabilities

    images, brains = np.stack([c.image for c in chunk]), np.stack([c.brain_mask for c in chunk])
    maps = np.asarray(compute_saliency(mask_from, images, models.saliency, brain_mask=brains), np.float32) * brains
    rule = mask_rule(settings, models.card)
    if rule["kind"] == "percentile":
        return [(mask_from_saliency(m, b, rule["percentile"]), m) for m, b in zip(maps, brains)]
    ps = diseased_probabilities(images, models.saliency) if needs_probability(rule) else [None] * len(chunk)
    return [(redrawn_mask(m, b, rule, p).astype(np.uint8), m) for m, b, p in zip(maps, brains, ps)]


def slice_verdict(result, card: dict, level_model=None) -> tuple[object | None, float | None, str | None]:
    """(Verdict or None, estimated level or None, reason or None) of a walked slice under a model card: no verdict
    where the card has none (:func:`diffuse_core.core.verdict.verdict_of`), nor where ``level_model`` places the
    slice outside the levels the denoiser learned (:mod:`diffuse_core.run.level_check`, with the margin the
    estimator's card holds; the reason says so). ``level_model`` None: the level is not checked."""
    from diffuse_core.core.verdict import verdict_of
    from diffuse_core.run.level_check import outside_trained_levels

    level = None if level_model is None else float(level_model.levels(result.image)[0])
    verdict = verdict_of(result.anomaly, result.brain_mask, card)
    margin = float((getattr(level_model, "card", None) or {}).get("level_margin", 0))
    outside = outside_trained_levels(level, card, margin)
    return (None if outside else verdict), level, outside


def _outcome(result, models: RunModels, settings: RunSettings, timings: dict, notes=()) -> RunOutcome:
    """3. The threshold and the verdict of a walked slice (:func:`slice_verdict`)."""
    from diffuse_core.run.card import anomaly_threshold_of

    threshold = anomaly_threshold_of(models.denoiser) if settings.threshold is None else float(settings.threshold)
    verdict, level, withheld = slice_verdict(result, models.card, models.level)
    return RunOutcome(result=result, settings=settings, rule=mask_rule(settings, models.card), threshold=threshold,
                      verdict=verdict, model=models.folder, model_version=models.version, card=models.card,
                      timings=timings, notes=tuple(models.notes) + tuple(notes), level=level, withheld=withheld)


def _frame(item, prev: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> tuple[dict, np.ndarray]:
    """A sampler step as the app draws it: x_t and the predicted x0, and the mean change inside and outside m."""
    x_t = item.x_t[0].detach().float().cpu().numpy()
    diff = np.abs(x_t - prev).mean(axis=0)
    return {"x_t": x_t[0], "x0": item.x0_pred[0, 0].detach().float().cpu().numpy(),
            "inside": float(diff[inside].mean()) if inside.any() else 0.0,
            "outside": float(diff[outside].mean()) if outside.any() else 0.0}, x_t


def kept_inversion(models: RunModels, image, settings: RunSettings, cache) -> np.ndarray | None:
    """x_K (C, H, W) that ``cache`` (a :class:`diffuse_core.pipeline.InversionCache`) holds for this slice and
    settings (the one the walk will start from instead of inverting), or None."""
    from diffuse_core.pipeline import InversionCache

    if cache is None:
        return None
    img = np.asarray(image, np.float32)
    img = img[None] if img.ndim == 3 else img[None, None]
    n = len(models.denoiser.schedule.respaced_timesteps(settings.k, settings.steps))
    hit = cache.get(InversionCache.key(models.denoiser, img, settings.k, n, settings.precision, settings.solver),
                    models.denoiser)
    return None if hit is None else hit[0].detach().float().cpu().numpy()


def iter_run(case, models: RunModels, settings: RunSettings, mask_from="acat", *, saliency_of: Callable | None = None,
             inversion_cache=None, frames: bool = False) -> Iterator[dict]:
    """Dif-fuse on one prepared slice (:class:`diffuse_core.cases.CaseInput`), streamed (see the module's items).

    ``mask_from``: a saliency method ("acat", "gradcam", "gradient"), a mask file, an array, or a
    :class:`ReadyMask`. ``saliency_of(case, method, saliency_models)`` replaces the saliency computation (the app
    keeps maps per slice). ``inversion_cache`` keeps x_K for reruns. ``frames``: each step item also carries the
    pictures the app streams (x_t, x0) and the mean change inside/outside m; without, only where the walk is."""
    from diffuse_core.pipeline import CounterfactualResult, iter_counterfactual

    start = time.perf_counter()
    mask, saliency = _region(case, models, settings, mask_from, saliency_of)                   # 1.
    mask_ready = time.perf_counter()
    yield {"kind": "mask", "mask": mask, "saliency": saliency}
    inside = mask.astype(bool)
    outside = case.brain_mask.astype(bool) & ~inside
    prev = np.asarray(case.image, np.float32)
    cached = kept_inversion(models, case.image, settings, inversion_cache) if frames else None
    inverted = False
    for item in iter_counterfactual(models.denoiser, case.image, mask, brain_mask=case.brain_mask, k=settings.k,  # 2.
                                    steps=settings.steps, seed=settings.seed, variant=settings.variant,
                                    precision=settings.precision, saliency=saliency, solver=settings.solver,
                                    inversion_cache=inversion_cache):
        if isinstance(item, CounterfactualResult):
            end = time.perf_counter()                                                           # 4.
            walk = item.timings.get("inversion", 0.0) + item.timings.get("sampling", 0.0)
            timings = {"saliency": mask_ready - start, "inversion": item.timings.get("inversion", 0.0),
                       "sampling": item.timings.get("sampling", 0.0),
                       "post": max(0.0, end - mask_ready - walk), "total": end - start}
            outcome = _outcome(item, models, settings, timings, getattr(case, "notes", ()))     # 3.
            yield {"kind": "result", "result": item, "outcome": outcome, "threshold": outcome.threshold,
                   "verdict": outcome.verdict, "model_version": outcome.model_version, "timings": timings}
            return
        step = {"kind": "step", "phase": item.phase, "index": item.index, "total": item.total,
                "timestep": int(item.timestep)}
        if frames:
            inverted = inverted or item.phase == "invert"
            if item.phase == "sample" and item.index == 0 and not inverted and cached is not None:
                prev = cached              # the inversion was reused: sampling starts from the kept x_K
            picture, prev = _frame(item, prev, inside, outside)
            step.update(picture)
        yield step


def iter_uncertainty_run(case, models: RunModels, settings: RunSettings, mask_from="acat", *, samples: int = 4,
                         saliency_of: Callable | None = None, inversion_cache=None) -> Iterator[dict]:
    """S counterfactuals of one slice from different draws inside m, in one batch
    (:func:`diffuse_core.pipeline.iter_uncertainty`), over the same region a run makes (1.): one ``{"kind": "mask"}``,
    one ``{"kind": "step"}`` per sampler step, then ``{"kind": "result", "result": UncertaintyResult}``."""
    from diffuse_core.pipeline import UncertaintyResult, iter_uncertainty

    mask, saliency = _region(case, models, settings, mask_from, saliency_of)                   # 1.
    yield {"kind": "mask", "mask": mask, "saliency": saliency}
    for item in iter_uncertainty(models.denoiser, case.image, mask, samples=samples, brain_mask=case.brain_mask,
                                 k=settings.k, steps=settings.steps, seed=settings.seed, precision=settings.precision,
                                 inversion_cache=inversion_cache, solver=settings.solver):
        if isinstance(item, UncertaintyResult):
            yield {"kind": "result", "result": item}
            return
        yield {"kind": "step", "phase": item.phase, "index": item.index, "total": item.total,
               "timestep": int(item.timestep)}


def run_one(case, models: RunModels, settings: RunSettings, mask_from="acat", *,
            callback: Callable | None = None, **kwargs) -> RunOutcome:
    """:func:`iter_run` to the end; ``callback`` sees every step item."""
    for item in iter_run(case, models, settings, mask_from, **kwargs):
        if item["kind"] == "result":
            return item["outcome"]
        if item["kind"] == "step" and callback is not None:
            callback(item)
    raise RuntimeError("the run ended without a result")  # pragma: no cover


def run_stack(cases: Sequence, models: RunModels, settings: RunSettings, mask_from="acat", *, batch_size: int = 8,
              progress: Callable[[int, int], None] | None = None,
              cancelled: Callable[[], bool] | None = None) -> Iterator[tuple[int, RunOutcome]]:
    """Dif-fuse on many prepared slices of one model grid, ``batch_size`` at a time through the network (one call
    per step for the whole batch). Yields (index into ``cases``, :class:`RunOutcome`) as each batch finishes, in
    order. ``progress(done, total)`` after each batch; ``cancelled()`` is asked before each batch and each sampler
    step: when it says True the stack stops (RuntimeError "cancelled") with the finished slices already yielded.
    A slice's random draws depend on its batch, so a stacked result differs from :func:`run_one`'s in the noise
    inside m (the same distribution; the seed still fixes the bytes)."""
    from diffuse_core.pipeline import BatchResult, CounterfactualResult, iter_batch

    if batch_size < 1:
        raise ValueError(f"the batch size must be >= 1, got {batch_size}")
    total = len(cases)
    for first in range(0, total, batch_size):
        if cancelled is not None and cancelled():
            raise RuntimeError(f"cancelled after {first} of {total} slices")
        chunk = list(cases[first:first + batch_size])
        start = time.perf_counter()
        regions = _regions(chunk, models, settings, mask_from)                                      # 1.
        mask_ready = time.perf_counter()
        batch = None
        for item in iter_batch(models.denoiser, np.stack([c.image for c in chunk]),                   # 2.
                               np.stack([m for m, _ in regions]), np.stack([c.brain_mask for c in chunk]),
                               k=settings.k, steps=settings.steps, seed=settings.seed, variant=settings.variant,
                               precision=settings.precision, solver=settings.solver):
            if isinstance(item, BatchResult):
                batch = item
            elif cancelled is not None and cancelled():
                raise RuntimeError(f"cancelled after {first} of {total} slices")
        end = time.perf_counter()
        share = 1.0 / len(chunk)                                                                      # 4.
        walk = batch.timings.get("inversion", 0.0) + batch.timings.get("sampling", 0.0)
        timings = {"saliency": (mask_ready - start) * share, "inversion": batch.timings["inversion"] * share,
                   "sampling": batch.timings["sampling"] * share,
                   "post": max(0.0, end - mask_ready - walk) * share, "total": (end - start) * share}
        for i, case in enumerate(chunk):
            result = CounterfactualResult(
                image=batch.images[i], counterfactual=batch.counterfactuals[i], mask=batch.masks[i],
                anomaly=batch.anomalies[i], brain_mask=batch.brain_masks[i], k=batch.k, steps=batch.steps,
                variant=batch.variant, seed=batch.seed, network_calls=batch.network_calls,
                seconds=batch.seconds * share, device=batch.device, saliency=regions[i][1],
                timings={n: batch.timings[n] * share for n in batch.timings},
                extras={"solver": settings.solver, "batch": len(chunk)})
            yield first + i, _outcome(result, models, settings, dict(timings), getattr(case, "notes", ()))  # 3.
        if progress is not None:
            progress(min(first + batch_size, total), total)
