"""Dif-fuse end to end: invert, walk back with the mask, take the difference (Algorithm 1). The ONE assembly.

The app, the CLI and the evaluation all run :func:`iter_batch`: it validates the inputs, seeds the sampler, runs the
named walk (:data:`WALKS`: the paper's Algorithm 1, the authors' two-chain code and the ablations of Sec. IV-B/F),
clamps the result to [-1, 1], keeps the input outside the brain and makes the anomaly maps. For one slice,
:func:`iter_counterfactual` / :func:`run_counterfactual` wrap it into a :class:`CounterfactualResult`.

Images are on the model's grid: (C, H, W) (or (B, C, H, W)) in [-1, 1], background -1 (see
:mod:`diffuse_core.io.preprocess` for files); masks are {0, 1} with 1 = region to redraw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from diffuse_core.core.anomaly import anomaly_kernel_of, anomaly_map
from diffuse_core.core.defaults import PAPER_K, PAPER_STEPS
from diffuse_core.core.brain import BRAIN_THRESHOLD, brain_mask_from_image, brain_masks
from diffuse_core.core.walks import WALKS, WalkInputs
from diffuse_core.core.sampler import (CallCounter, SamplerStep, denoiser_eps_model, solver_order, solver_refinements)
from diffuse_core.core.schedule import validate_noise_level
from diffuse_core.models.denoiser import Denoiser
from diffuse_core.models.device import resolve_precision

__all__ = ["BRAIN_THRESHOLD", "BatchResult", "CounterfactualResult", "UncertaintyResult", "WALKS",
           "brain_mask_from_image", "iter_batch", "iter_counterfactual", "iter_uncertainty", "run_batch",
           "run_counterfactual"]

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
    timings: dict = field(default_factory=dict)   # seconds: inversion, sampling, post (see BatchResult)
    inversion_reused: bool = False                # x_K came from an InversionCache: loop 1 made no network call

    def summary(self) -> dict:
        """The run's settings and measurements as plain JSON-able values."""
        inside = self.brain_mask.astype(bool)
        change = np.abs(self.image - self.counterfactual).mean(axis=0)
        return {
            "k": self.k, "steps": self.steps, "variant": self.variant, "seed": self.seed,
            "network_calls": self.network_calls, "seconds": round(self.seconds, 3), "device": self.device,
            "mask_fraction_of_brain": float(self.mask[inside].mean()) if inside.any() else 0.0,
            "mean_abs_change_in_brain": float(change[inside].mean()) if inside.any() else 0.0,
            "timings": {name: round(float(s), 4) for name, s in self.timings.items()},
            "inversion_reused": self.inversion_reused,
            **self.extras,
        }


@dataclass
class BatchResult:
    """Counterfactuals (B, C, H, W) in [-1, 1] and anomaly maps (B, H, W) of one batch, with the measured cost."""

    images: np.ndarray
    counterfactuals: np.ndarray
    anomalies: np.ndarray
    masks: np.ndarray | None
    brain_masks: np.ndarray
    k: int
    steps: int
    variant: str
    seed: int
    network_calls: int
    seconds: float
    device: str
    timings: dict = field(default_factory=dict)   # seconds: "inversion", "sampling", "post" (clamp, anomaly maps)
    inversion_reused: bool = False


class InversionCache:
    """x_K of recent runs, so that a rerun of the same slice with the same K and steps (only the percentile, the
    mask or the seed changed) skips the DDIM inversion: half the network calls of the paper variant. The inversion
    depends only on the model, the image, K, the steps, the device and the precision, never on the mask or the seed,
    so the reused x_K is the tensor the inversion would compute again. At most ``size`` entries (least recently used
    dropped); an entry holds its denoiser, so a reloaded model never meets another's x_K."""

    def __init__(self, size: int = 16):
        import threading
        from collections import OrderedDict

        self.size, self._lock, self._items = int(size), threading.Lock(), OrderedDict()

    @staticmethod
    def key(denoiser: Denoiser, images: np.ndarray, k: int, steps: int, precision: str,
            solver: str = "ddim") -> tuple:
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()
        return (id(denoiser), digest, images.shape, int(k), int(steps), str(denoiser.device), str(precision),
                str(solver))

    def get(self, key: tuple, denoiser: Denoiser) -> torch.Tensor | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] is not denoiser:
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: tuple, denoiser: Denoiser, x_k: torch.Tensor) -> None:
        with self._lock:
            self._items[key] = (denoiser, x_k)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _timed(walk, marks: dict):
    """Pass a walk's steps through and note when its inversion ended (``marks["inverted"]``) and when the walk ended
    (``marks["walked"]``): the split of :attr:`BatchResult.timings`."""
    steps = iter(walk)
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            marks["walked"] = time.perf_counter()
            return stop.value
        yield step
        if step.phase == "invert":
            marks["inverted"] = time.perf_counter()


def _validate(denoiser: Denoiser, images, masks, brains, variant: str, k: int, steps: int):
    """(B, C, R, R) float32 images, (B, R, R) float32 masks or None, (B, R, R) bool brains; ValueError otherwise."""
    img = np.asarray(images, dtype=np.float32)
    if img.ndim != 4:
        raise ValueError(f"expected a 2-D slice (H, W) or (C, H, W), got shape {np.shape(images)[1:]}: "
                         f"pick an axial slice of a volume first (--slice Z)")
    c, r = denoiser.config.channels, denoiser.config.resolution
    if img.shape[1] != c:
        raise ValueError(f"the model expects {c} channel(s), the image has {img.shape[1]}")
    if img.shape[2:] != (r, r):
        raise ValueError(f"the model works on {r}x{r} slices, got {img.shape[2]}x{img.shape[3]}: "
                         f"resize with diffuse_core.io.preprocess.prepare_slice")
    n_bad = int((~np.isfinite(img)).sum())
    if n_bad:
        raise ValueError(f"the image holds {n_bad} NaN/inf values")
    if img.min() < -1.05 or img.max() > 1.05:
        raise ValueError(f"intensities must lie in [-1, 1] (got {img.min():.3g}..{img.max():.3g}): "
                         f"normalise with diffuse_core.io.preprocess.prepare_slice")
    if variant not in WALKS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(WALKS)}")
    m = None
    if masks is not None:
        m = np.asarray(masks, dtype=np.float32)
        if m.ndim == 4 and m.shape[1] == 1:
            m = m[:, 0]
        if m.shape != (img.shape[0],) + img.shape[2:]:
            raise ValueError(f"mask {m.shape[1:] if m.ndim == 3 else m.shape} and image {img.shape[2:]} differ in size")
        if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
            raise ValueError("the mask must hold values in {0, 1} (1 = region to redraw)")
    elif WALKS[variant].needs_mask:
        raise ValueError(f"the {variant!r} walk needs a mask (1 = region to redraw)")
    if brains is None:
        brain = brain_masks(img)
    else:
        brain = np.asarray(brains).astype(bool)
        if brain.shape != (img.shape[0],) + img.shape[2:]:
            raise ValueError(f"brain mask {brain.shape[1:]} and image {img.shape[2:]} differ in size")
    validate_noise_level(k, steps, denoiser.schedule.num_train_timesteps)
    return img, m, brain


def model_modality_of(denoiser) -> str:
    """"ct" for a DDPM trained on CT (its card's ``data.modalities``), else "mri": the direction a lesion departs
    from healthy tissue in the signed scores (:mod:`diffuse_core.core.redraw`)."""
    mods = ((getattr(denoiser, "card", None) or {}).get("data") or {}).get("modalities") or ["flair"]
    return "ct" if str(mods[0]).lower() == "ct" else "mri"


def anomaly_maps(denoiser, images: np.ndarray, counterfactuals: np.ndarray, brains: np.ndarray,
                 redrawn: np.ndarray | None) -> np.ndarray:
    """Anomaly maps (B, H, W) of a batch by the model card's ``score`` (:func:`diffuse_core.core.redraw.score_map`:
    "abs" is the paper's |x0 - x0_hat|) and ``anomaly_kernel``; ``redrawn`` (B, H, W) the walk's masks (None: no
    region redrawn, the unmasked ablations)."""
    from diffuse_core.core.redraw import score_map, score_of

    card = getattr(denoiser, "card", None) or {}
    score, kernel, modality = score_of(card), anomaly_kernel_of(card), model_modality_of(denoiser)
    if score == "abs":
        return np.stack([anomaly_map(images[i], counterfactuals[i], brains[i], kernel) for i in range(len(images))])
    red = np.zeros(np.asarray(brains).shape, np.uint8) if redrawn is None else redrawn
    return np.stack([score_map(images[i], counterfactuals[i], brains[i], red[i], score, kernel, modality)
                     for i in range(len(images))])


def iter_batch(denoiser: Denoiser, images: np.ndarray, masks: np.ndarray | None, brains: np.ndarray | None = None, *,
               k: int = PAPER_K, steps: int = PAPER_STEPS, seed: int = 0, variant: str = "paper", precision: str = "auto",
               paste_background: bool = True, inversion_cache: InversionCache | None = None,
               solver: str = "ddim", x_k: torch.Tensor | None = None) -> Iterator[SamplerStep | BatchResult]:
    """Run the walk ``variant`` on a batch, yielding every :class:`SamplerStep` and finally a :class:`BatchResult`.

    1. validate: images (B, C, R, R) in [-1, 1], masks (B, R, R) in {0, 1} (None for the unmasked ablations),
       brain masks (B, R, R) (computed from the images when None);
    2. one ``torch.Generator`` seeded with ``seed`` makes every random draw (same seed, same bytes);
    3. the walk (Algorithm 1 for "paper") over ``steps`` respaced timesteps spanning [0, K], network calls counted;
    4. the counterfactual clamped to [-1, 1]; with ``paste_background`` the input is kept outside the brain, which
       the method never edits (only reconstruction noise lives there);
    5. the anomaly map: the card's score (the paper's |x0 - x0_hat| unless the card names another,
       :func:`anomaly_maps`), opened and closed with the card's kernel, inside the brain.
    The device is the denoiser's; ``precision`` "auto" | "fp32" | "bf16" | "fp16". With ``inversion_cache`` an x_K
    kept from an earlier run of the same images, K and steps replaces loop 1 (see :class:`InversionCache`).
    ``solver`` names the deterministic updates (:data:`diffuse_core.core.sampler.SOLVERS`): "ddim", the paper's, or
    "dpm-solver++" (second order, same network calls), or "ddim-refined" (DDIM with a fixed-point refined inversion,
    one more call per inversion step); the DDPM step inside the mask is the paper's either way. ``x_k`` (B, C, R, R),
    an inversion made already (the S copies of one slice's x_K, :func:`iter_uncertainty`), replaces loop 1 too.
    """
    img, m, brain = _validate(denoiser, images, masks, brains, variant, k, steps)
    order = solver_order(solver)
    device = denoiser.device
    counter = CallCounter(denoiser_eps_model(denoiser, resolve_precision(precision, device)))
    generator = torch.Generator().manual_seed(int(seed))                          # 2.
    timesteps = denoiser.schedule.respaced_timesteps(k, steps)
    start = time.perf_counter()
    cache_key = None if inversion_cache is None else InversionCache.key(denoiser, img, k, len(timesteps), precision,
                                                                        solver)
    cached = x_k if cache_key is None else inversion_cache.get(cache_key, denoiser)
    inputs = WalkInputs(model=counter, schedule=denoiser.schedule, x0=torch.from_numpy(img).to(device),
                        mask=None if m is None else torch.from_numpy(m)[:, None].to(device),
                        timesteps=timesteps, generator=generator, k=int(k), steps=int(steps), inverted=cached,
                        keep={} if cache_key is not None and cached is None else None, order=order,
                        refine=solver_refinements(solver))
    marks: dict = {}
    out = yield from _timed(WALKS[variant].run(inputs), marks)                     # 3.
    if inputs.keep and "x_k" in inputs.keep:
        inversion_cache.put(cache_key, denoiser, inputs.keep["x_k"])
    cf = out.float().clamp(-1, 1).cpu().numpy()                                    # 4.
    if paste_background:
        cf = np.where(brain[:, None], cf, img)
    anomalies = anomaly_maps(denoiser, img, cf, brain, m)                                               # 5.
    end = time.perf_counter()
    inverted = marks.get("inverted", start)
    timings = {"inversion": inverted - start, "sampling": marks["walked"] - inverted, "post": end - marks["walked"]}
    yield BatchResult(images=img, counterfactuals=cf.astype(np.float32), anomalies=anomalies,
                      masks=None if m is None else m.astype(np.uint8), brain_masks=brain.astype(np.uint8), k=int(k),
                      steps=len(timesteps), variant=variant, seed=int(seed), network_calls=counter.calls,
                      seconds=end - start, device=str(device), timings=timings, inversion_reused=cached is not None)


def run_batch(denoiser: Denoiser, images: np.ndarray, masks: np.ndarray | None, brains: np.ndarray | None = None,
              callback: Callable[[SamplerStep], None] | None = None, **kwargs) -> BatchResult:
    """:func:`iter_batch` run to the end; ``callback`` sees every sampler step."""
    for item in iter_batch(denoiser, images, masks, brains, **kwargs):
        if isinstance(item, BatchResult):
            return item
        if callback is not None:
            callback(item)
    raise RuntimeError("the sampler ended without a result")  # pragma: no cover


def iter_counterfactual(denoiser: Denoiser, image: np.ndarray, mask: np.ndarray, *, brain_mask=None,
                        k: int = PAPER_K, steps: int = PAPER_STEPS, seed: int = 0, variant: str = "paper",
                        precision: str = "auto", paste_background: bool = True,
                        saliency: np.ndarray | None = None, inversion_cache: InversionCache | None = None,
                        solver: str = "ddim") -> Iterator[SamplerStep | CounterfactualResult]:
    """Run Dif-fuse on one slice, yielding each :class:`SamplerStep` (inversion, then sampling) and finally the
    :class:`CounterfactualResult`: :func:`iter_batch` with a batch of one.

    ``image`` (C, H, W) or (H, W) in [-1, 1]; ``mask`` (H, W) in {0, 1}. ``k`` is the noise level K in [1, T]
    (paper: 500); ``steps`` the number of respaced steps spanning [0, K] (one network call each way per step in the
    paper variant). ``seed`` fixes every random draw; ``solver`` the deterministic updates (see :func:`iter_batch`).
    """
    img = np.asarray(image, dtype=np.float32)
    img = img[None] if img.ndim == 2 else img
    if img.ndim != 3:
        raise ValueError(f"expected a 2-D slice (H, W) or (C, H, W), got shape {np.shape(image)}: "
                         f"pick an axial slice of a volume first (--slice Z)")
    m = np.asarray(mask, dtype=np.float32)
    m = m[0] if m.ndim == 3 and m.shape[0] == 1 else m
    if m.ndim != 2:
        raise ValueError(f"mask {m.shape} and image {img.shape[1:]} differ in size")
    brain = None if brain_mask is None else np.asarray(brain_mask)[None]
    for item in iter_batch(denoiser, img[None], m[None], brain, k=k, steps=steps, seed=seed, variant=variant,
                           precision=precision, paste_background=paste_background,
                           inversion_cache=inversion_cache, solver=solver):
        if isinstance(item, BatchResult):
            yield CounterfactualResult(
                image=item.images[0], counterfactual=item.counterfactuals[0], mask=item.masks[0],
                anomaly=item.anomalies[0], brain_mask=item.brain_masks[0], k=item.k, steps=item.steps,
                variant=variant, seed=item.seed, network_calls=item.network_calls, seconds=item.seconds,
                device=item.device, saliency=saliency, timings=dict(item.timings),
                inversion_reused=item.inversion_reused, extras={"solver": solver})
        else:
            yield item


def run_counterfactual(denoiser: Denoiser, image: np.ndarray, mask: np.ndarray,
                       callback: Callable[[SamplerStep], None] | None = None, **kwargs) -> CounterfactualResult:
    """:func:`iter_counterfactual` run to the end; ``callback`` sees every sampler step."""
    for item in iter_counterfactual(denoiser, image, mask, **kwargs):
        if isinstance(item, CounterfactualResult):
            return item
        if callback is not None:
            callback(item)
    raise RuntimeError("the sampler ended without a result")  # pragma: no cover


@dataclass
class UncertaintyResult:
    """S healthy counterfactuals of one slice from different random draws inside the mask (issue: teaching v2):
    ``samples`` (S, C, H, W); ``mean`` (C, H, W); ``std`` (H, W), the per-pixel standard deviation over the samples
    (channels averaged); ``anomaly`` (H, W), the anomaly map of the mean counterfactual."""

    image: np.ndarray
    samples: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    anomaly: np.ndarray
    mask: np.ndarray
    brain_mask: np.ndarray
    k: int
    steps: int
    seed: int
    network_calls: int
    seconds: float
    inversion_reused: bool = False


def iter_uncertainty(denoiser: Denoiser, image: np.ndarray, mask: np.ndarray, *, samples: int = 4, brain_mask=None,
                     k: int = PAPER_K, steps: int = PAPER_STEPS, seed: int = 0, precision: str = "auto",
                     inversion_cache: InversionCache | None = None, solver: str = "ddim"
                     ) -> Iterator[SamplerStep | UncertaintyResult]:
    """Algorithm 1 ``samples`` times on one slice as one batch: loop 1 (the deterministic DDIM inversion) runs once
    for the slice (or comes from ``inversion_cache``), then loop 2 runs the S copies of x_K together, one network call
    per step for the whole batch, each copy with its own DDPM noise inside the mask. Yields every step, then an
    :class:`UncertaintyResult`."""
    from diffuse_core.core.sampler import follow, iter_ddim_inversion

    s = int(samples)
    if not 2 <= s <= 32:
        raise ValueError(f"uncertainty needs 2 to 32 samples, not {samples}")
    img = np.asarray(image, dtype=np.float32)
    img = img[None] if img.ndim == 2 else img
    m = np.asarray(mask, dtype=np.float32)
    brain = None if brain_mask is None else np.asarray(brain_mask)[None]
    img1, m1, brain1 = _validate(denoiser, img[None], m[None], brain, "paper", k, steps)
    start = time.perf_counter()
    timesteps = denoiser.schedule.respaced_timesteps(k, steps)
    key = InversionCache.key(denoiser, img1, k, len(timesteps), precision, solver)
    x_k = None if inversion_cache is None else inversion_cache.get(key, denoiser)
    reused = x_k is not None
    inversion_calls = 0
    if x_k is None:                                                                 # loop 1, once
        counter = CallCounter(denoiser_eps_model(denoiser, resolve_precision(precision, denoiser.device)))
        x_k = yield from follow(iter_ddim_inversion(counter, denoiser.schedule,
                                                            torch.from_numpy(img1).to(denoiser.device), timesteps,
                                                            solver_order(solver), solver_refinements(solver)))
        inversion_calls = counter.calls
        if inversion_cache is not None:
            inversion_cache.put(key, denoiser, x_k.detach())
    batch = np.repeat(img1, s, axis=0)
    result = None
    for item in iter_batch(denoiser, batch, np.repeat(m1, s, axis=0), np.repeat(brain1, s, axis=0), k=k,
                           steps=steps, seed=seed, variant="paper", precision=precision, solver=solver,
                           x_k=x_k.repeat(s, 1, 1, 1)):
        if isinstance(item, BatchResult):
            result = item
        else:
            yield item
    cfs = result.counterfactuals
    mean = cfs.mean(axis=0)
    std = cfs.std(axis=0).mean(axis=0) * brain1[0]
    anomaly = anomaly_maps(denoiser, img1[:1], mean[None], brain1[:1], m1[:1])[0]
    yield UncertaintyResult(image=img1[0], samples=cfs, mean=mean.astype(np.float32), std=std.astype(np.float32),
                            anomaly=anomaly, mask=m1[0].astype(np.uint8),
                            brain_mask=brain1[0].astype(np.uint8), k=int(k), steps=len(timesteps), seed=int(seed),
                            network_calls=inversion_calls + result.network_calls,
                            seconds=time.perf_counter() - start, inversion_reused=reused)

