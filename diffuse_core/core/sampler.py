"""DDIM inversion, DDIM / DDPM sampling and the Dif-fuse sampler (paper Sec. III-A/B, eqs. 7-9, Algorithm 1).

All samplers walk a respaced list of timesteps (see :meth:`NoiseSchedule.respaced_timesteps`) and are generators:
each step yields a :class:`SamplerStep` with the step index, the current image x_t and the predicted clean image, so a
UI can show the denoising live. The plain functions (:func:`ddim_invert`, :func:`dif_fuse`, ...) run a generator to
its end and return the final image.

Notation (0-based timestep indices as in diffusers): ``ab`` is alpha_bar_t, ``ab_prev`` is alpha_bar of the next
level down the walk (1 for the clean image). With an epsilon prediction ``eps`` at x_t:

    x0_hat  = (x_t - sqrt(1 - ab) eps) / sqrt(ab)                                     (eq. 7, first term)
    x_{t-1} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z         (eq. 7)
    sigma   = sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev)   for DDPM, 0 for DDIM
    x_{t+1} = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps                             (eq. 8, DDIM inversion)
    x_{t-1} = m * x^{DDPM}_{t-1} + (1 - m) * x^{DDIM}_{t-1}                             (eq. 9, Dif-fuse)

``order=2`` replaces the deterministic (DDIM) updates, the inversion's and the walk back's outside the mask, by the
second-order multistep DPM-Solver++ (2M, Lu et al. 2022, "midpoint" form as in diffusers). With alpha = sqrt(ab),
sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda_to - lambda_from and r = h_last / h:

    D       = (1 + 1 / 2r) x0_hat - (1 / 2r) x0_hat_last      (x0_hat_last: the previous step's prediction)
    x_to    = (sigma_to / sigma_from) x_from - alpha_to (exp(-h) - 1) D

With D = x0_hat this is exactly the DDIM step (eq. 7 with sigma = 0, or eq. 8 upwards), so order 2 needs no extra
network call: it reuses the last step's prediction. The first step of a walk, and any step touching the clean image
(lambda infinite), stay first order. The DDPM proposal inside the mask is always the paper's ancestral step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from diffuse_core.core.schedule import NoiseSchedule

EpsModel = Callable[[torch.Tensor, int], torch.Tensor]
"""A noise predictor: eps = model(x_t, t) for a batch x_t (B, C, H, W) at the integer timestep t."""

SOLVERS = {"ddim": 1, "dpm-solver++": 2, "ddim-refined": 1}
"""The deterministic updates by name -> order: "ddim" is the paper's (eqs. 7-8); "dpm-solver++" the second-order
multistep DPM-Solver++ (2M) at the same network calls (see the module notes); "ddim-refined" the paper's DDIM whose
inversion is refined by fixed-point iteration (:func:`iter_ddim_inversion`, ``refine``), one more call per inversion
step, so that a DDIM walk back returns (closer) to the input."""

INVERSION_REFINEMENTS = {"ddim-refined": 1}
"""Fixed-point refinements per inversion step, by solver name (0 where absent)."""


def solver_order(solver: str) -> int:
    """The order of a named solver (:data:`SOLVERS`); ValueError for an unknown name."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    return SOLVERS[solver]


def solver_refinements(solver: str) -> int:
    """Fixed-point refinements per inversion step of a named solver (:data:`INVERSION_REFINEMENTS`)."""
    solver_order(solver)
    return INVERSION_REFINEMENTS.get(solver, 0)


@dataclass
class SamplerStep:
    """One step of a sampler, as yielded to a progress callback or a live view.

    ``index`` counts from 0 to ``total - 1`` within the ``phase`` ("invert" or "sample"); ``timestep`` is the level the
    step started from. ``x_t`` is the image after the step; ``x0_pred`` the clean image predicted at this step. Both are
    (B, C, H, W) tensors in the model's intensity range ([-1, 1] for images).
    """

    phase: str
    index: int
    total: int
    timestep: int
    x_t: torch.Tensor
    x0_pred: torch.Tensor


class CallCounter:
    """Wraps an epsilon model and counts its calls, so reports state measured, not computed, network calls."""

    def __init__(self, model: EpsModel):
        self.model = model
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t)


def unet_eps_model(unet: torch.nn.Module, autocast_dtype: torch.dtype | None = None,
                   schedule: NoiseSchedule | None = None) -> EpsModel:
    """An :data:`EpsModel` over a diffusers ``UNet2DModel``; optional autocast (bf16 is fast on AMX CPUs).

    ``schedule`` converts a v-prediction model's output to epsilon (:meth:`NoiseSchedule.eps_from_output`); None or an
    epsilon schedule passes the output through. The conversion runs in the input's dtype (float32), after autocast."""

    @torch.no_grad()
    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
                out = unet(x, tt).sample
        else:
            out = unet(x, tt).sample
        out = out.to(x.dtype)
        return out if schedule is None else schedule.eps_from_output(x, out, int(t))

    return eps


def denoiser_eps_model(denoiser, autocast_dtype: torch.dtype | None = None) -> EpsModel:
    """:func:`unet_eps_model` of a loaded :class:`~diffuse_core.models.denoiser.Denoiser`, with its own schedule (so a
    v-prediction model is read as one)."""
    return unet_eps_model(denoiser.unet, autocast_dtype, denoiser.schedule)


# ---------------------------------------------------------------------------------------------------------------
# Single steps: the formulas, shared by every sampler and tested against diffusers' schedulers.
# ---------------------------------------------------------------------------------------------------------------

def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab: float, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """x0_hat from x_t and eps (eq. 7, first term); with ``clip`` x0_hat is clamped to [-1, 1] and eps re-derived
    from it so that both stay consistent (diffusers' ``clip_sample=True, use_clipped_model_output=True``)."""
    x0 = (x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
        if ab < 1.0:
            eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
    return x0, eps


def ddpm_posterior_std(ab: float, ab_prev: float) -> float:
    """sigma_t of eq. 7 with eta = 1: the DDPM posterior standard deviation for the jump ab -> ab_prev."""
    if ab_prev >= 1.0 or ab >= 1.0:
        return 0.0
    return math.sqrt((1.0 - ab_prev) / (1.0 - ab)) * math.sqrt(1.0 - ab / ab_prev)


def generalized_step(x0: torch.Tensor, eps: torch.Tensor, ab_prev: float, sigma: float,
                     noise: torch.Tensor | None) -> torch.Tensor:
    """x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z (eq. 7); sigma = 0 is DDIM."""
    direction = math.sqrt(max(1.0 - ab_prev - sigma ** 2, 0.0)) * eps
    x_prev = math.sqrt(ab_prev) * x0 + direction
    if sigma > 0.0:
        if noise is None:
            raise ValueError("a stochastic (DDPM) step needs a noise tensor")
        x_prev = x_prev + sigma * noise
    return x_prev


def ddim_inversion_step(x_t: torch.Tensor, eps: torch.Tensor, ab: float, ab_next: float) -> torch.Tensor:
    """x_{t+1} = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps (eq. 8), no clipping (inversion must stay invertible)."""
    x0 = (x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
    return math.sqrt(ab_next) * x0 + math.sqrt(1.0 - ab_next) * eps


def half_log_snr(ab: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(ab / (1 - ab)); +inf for the clean image (ab = 1)."""
    return math.inf if ab >= 1.0 else 0.5 * math.log(ab / (1.0 - ab))


def multistep_step(x: torch.Tensor, x0: torch.Tensor, ab_from: float, ab_to: float,
                   last: tuple[torch.Tensor, float] | None) -> torch.Tensor:
    """One deterministic step from level ``ab_from`` to ``ab_to`` (either direction) given x0_hat at ``ab_from``.

    ``last`` is (x0_hat, ab) of the previous step of the same walk for the second-order DPM-Solver++ (2M) update, or
    None for the first-order one, which equals DDIM (eq. 7 with sigma = 0 downwards, eq. 8 upwards). A step to the
    clean image returns x0_hat (first order); a step from it is not one (x0_hat = x_t holds no noise direction): the
    inversion takes its first step by eq. 8."""
    if ab_from >= 1.0:
        raise ValueError("a multistep update needs a noisy starting level: from the clean image use eq. 8")
    lam_from, lam_to = half_log_snr(ab_from), half_log_snr(ab_to)
    if math.isinf(lam_to):                                # down to the clean image: x = x0_hat, as DDIM
        return x0
    d = x0
    if last is not None:
        h, h_last = lam_to - lam_from, lam_from - half_log_snr(last[1])
        r = h_last / h
        d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * last[0]
    h = lam_to - lam_from
    return (math.sqrt(1.0 - ab_to) / math.sqrt(1.0 - ab_from)) * x \
        - math.sqrt(ab_to) * math.expm1(-h) * d


def _check_order(order: int) -> None:
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (DDIM, the paper) or 2 (DPM-Solver++ 2M), not {order!r}")


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU, then moved: the same seed gives the same noise on every device.
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


def _levels_down(schedule: NoiseSchedule, timesteps: list[int]) -> list[tuple[int, float, float]]:
    """(t, ab_t, ab_prev) for a walk down a respaced list, from its last entry to the clean image."""
    ts = sorted(timesteps)
    out = []
    for i in range(len(ts) - 1, -1, -1):
        prev = ts[i - 1] if i > 0 else -1
        out.append((ts[i], schedule.alpha_bar(ts[i]), schedule.alpha_bar(prev)))
    return out


def _check_inputs(x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"the image holds {int((~torch.isfinite(x)).sum())} NaN/inf values: clean the input first")
    if mask is not None:
        if mask.dim() != 4 or mask.shape[-2:] != x.shape[-2:] or mask.shape[0] not in (1, x.shape[0]) \
                or mask.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the image {tuple(x.shape)}: "
                             f"expected (B or 1, 1 or C, {x.shape[-2]}, {x.shape[-1]})")
        if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise ValueError("the mask must hold values in [0, 1] (1 = region to redraw)")


# ---------------------------------------------------------------------------------------------------------------
# Walks
# ---------------------------------------------------------------------------------------------------------------

def iter_ddim_inversion(model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor,
                        timesteps: list[int], order: int = 1, refine: int = 0,
                        clip_x0: bool = True) -> Iterator[SamplerStep]:
    """Map a clean image to the noise level of ``timesteps[-1]`` by DDIM inversion (eq. 8), one call per step.

    The network is evaluated at the level the step starts from; the first step, from the clean image, uses t = 0.
    ``order=2``: the second-order multistep update (:func:`multistep_step`), same calls.

    ``refine`` > 0 (first order only): eq. 8 uses eps at the level the step starts from, while the DDIM walk back
    evaluates it at the level the step arrives at, so walking back does not land exactly on x0 (the inversion error:
    all of an unmasked DDIM round trip's miss, part of what the paper walk changes outside the mask). Each
    refinement re-evaluates eps at the arrival point x_t' (clipped as the walk back clips it, :func:`predict_x0`)
    and moves x_t' to the solution of the DDIM step it must invert,
    ``x_s = sqrt(ab_s) x0_hat(x_t') + sqrt(1 - ab_s) eps(x_t')``: a fixed-point iteration, one extra call each (Pan
    et al., "Effective Real Image Editing with Accelerated Iterative Diffusion Inversion", ICCV 2023). Converged,
    the DDIM walk back from x_K returns x0.
    """
    _check_inputs(x0)
    _check_order(order)
    if refine < 0 or (refine and order != 1):
        raise ValueError(f"refine must be 0 or more and needs the first-order inversion, got refine={refine}, "
                         f"order={order}")
    ts = sorted(timesteps)
    x, ab, t_from = x0, 1.0, 0
    last = None
    for i, t in enumerate(ts):
        eps = model(x, t_from)
        ab_next = schedule.alpha_bar(t)
        x0_pred = (x - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
        if order == 1 or ab >= 1.0:                                       # from the clean image: eq. 8
            x_next = ddim_inversion_step(x, eps, ab, ab_next)
        else:
            x_next = multistep_step(x, x0_pred, ab, ab_next, last)
            last = (x0_pred, ab)
        for _ in range(refine):                                           # x' = f(x'): the walk back's step, inverted
            _, eps_next = predict_x0(x_next, model(x_next, t), ab_next, clip_x0)
            x_next = ddim_inversion_step(x, eps_next, ab, ab_next)
        yield SamplerStep("invert", i, len(ts), t_from, x_next, x0_pred)
        x, ab, t_from = x_next, ab_next, t


def iter_dif_fuse(model: EpsModel, schedule: NoiseSchedule, x_k: torch.Tensor, mask: torch.Tensor,
                  timesteps: list[int], generator: torch.Generator | None = None,
                  clip_x0: bool = True, order: int = 1) -> Iterator[SamplerStep]:
    """The Dif-fuse walk back from x_K (Algorithm 1, second loop; eq. 9), paper variant.

    At each step: 1. one network call on the current fused image; 2. x0_hat and eps from it; 3. the DDPM proposal
    (sigma = DDPM posterior std, fresh noise) and the DDIM proposal (sigma = 0) from that same prediction; 4. fuse them
    with the mask, m * DDPM + (1 - m) * DDIM. An all-zero mask gives pure DDIM, an all-one mask pure DDPM.
    ``order=2`` makes the deterministic proposal 3b the DPM-Solver++ (2M) step from this and the last prediction
    (:func:`multistep_step`): still one network call per step, still fused every step.
    """
    _check_inputs(x_k, mask)
    _check_order(order)
    mask = mask.to(x_k)
    levels = _levels_down(schedule, timesteps)
    x = x_k
    last = None
    for i, (t, ab, ab_prev) in enumerate(levels):
        eps = model(x, t)                                                  # 1. one network call
        x0, eps = predict_x0(x, eps, ab, clip_x0)                          # 2. eq. 7, predicted x0
        sigma = ddpm_posterior_std(ab, ab_prev)
        noise = _noise_like(x, generator)                                  # drawn every step: same seed, same bytes
        x_ddpm = generalized_step(x0, eps, ab_prev, sigma, noise)          # 3a. DDPM proposal
        if order == 1:
            x_ddim = generalized_step(x0, eps, ab_prev, 0.0, None)         # 3b. DDIM proposal
        else:
            x_ddim = multistep_step(x, x0, ab, ab_prev, last)              # 3b. its 2M form
            last = (x0, ab)
        x = mask * x_ddpm + (1.0 - mask) * x_ddim                          # 4. eq. 9
        yield SamplerStep("sample", i, len(levels), t, x, x0)


def iter_two_chain(model: EpsModel, schedule: NoiseSchedule, x_k: torch.Tensor, mask: torch.Tensor,
                   timesteps: list[int], generator: torch.Generator | None = None,
                   clip_x0: bool = True) -> Iterator[SamplerStep]:
    """Dif-fuse as in the authors' public code: a separate DDIM chain reconstructs the outside region.

    Two network calls per step: one on the fused image (its DDPM step fills the mask) and one on the pure DDIM chain
    started from the same x_K (which supplies the outside).
    """
    _check_inputs(x_k, mask)
    mask = mask.to(x_k)
    levels = _levels_down(schedule, timesteps)
    x, x_rec = x_k, x_k
    for i, (t, ab, ab_prev) in enumerate(levels):
        x0, eps = predict_x0(x, model(x, t), ab, clip_x0)
        x0_rec, eps_rec = predict_x0(x_rec, model(x_rec, t), ab, clip_x0)
        noise = _noise_like(x, generator)
        x_ddpm = generalized_step(x0, eps, ab_prev, ddpm_posterior_std(ab, ab_prev), noise)
        x_rec = generalized_step(x0_rec, eps_rec, ab_prev, 0.0, None)
        x = mask * x_ddpm + (1.0 - mask) * x_rec
        yield SamplerStep("sample", i, len(levels), t, x, mask * x0 + (1.0 - mask) * x0_rec)


def iter_ddim_sampling(model: EpsModel, schedule: NoiseSchedule, x_k: torch.Tensor, timesteps: list[int],
                       clip_x0: bool = True, order: int = 1) -> Iterator[SamplerStep]:
    """Deterministic DDIM walk back (eq. 7 with sigma = 0); ``order=2``: DPM-Solver++ (2M)."""
    _check_inputs(x_k)
    _check_order(order)
    levels = _levels_down(schedule, timesteps)
    x = x_k
    last = None
    for i, (t, ab, ab_prev) in enumerate(levels):
        x0, eps = predict_x0(x, model(x, t), ab, clip_x0)
        if order == 1:
            x = generalized_step(x0, eps, ab_prev, 0.0, None)
        else:
            x, last = multistep_step(x, x0, ab, ab_prev, last), (x0, ab)
        yield SamplerStep("sample", i, len(levels), t, x, x0)


def iter_ddpm_sampling(model: EpsModel, schedule: NoiseSchedule, x_k: torch.Tensor, timesteps: list[int],
                       generator: torch.Generator | None = None, clip_x0: bool = True) -> Iterator[SamplerStep]:
    """Stochastic DDPM walk back (eq. 7 with the DDPM posterior std), one fresh noise draw per step."""
    _check_inputs(x_k)
    levels = _levels_down(schedule, timesteps)
    x = x_k
    for i, (t, ab, ab_prev) in enumerate(levels):
        x0, eps = predict_x0(x, model(x, t), ab, clip_x0)
        noise = _noise_like(x, generator)
        x = generalized_step(x0, eps, ab_prev, ddpm_posterior_std(ab, ab_prev), noise)
        yield SamplerStep("sample", i, len(levels), t, x, x0)


def iter_repaint(model: EpsModel, schedule: NoiseSchedule, x0_known: torch.Tensor, mask: torch.Tensor,
                 timesteps: list[int], generator: torch.Generator | None = None, jump_length: int = 5,
                 resamplings: int = 5, clip_x0: bool = True) -> Iterator[SamplerStep]:
    """RePaint (Lugmayr et al. 2022): inpaint the mask from noise, the outside forward-noised from the known image,
    with resampling (every ``jump_length`` steps go back up ``jump_length`` levels, ``resamplings`` times)."""
    _check_inputs(x0_known, mask)
    mask = mask.to(x0_known)
    ts = sorted(timesteps)
    n = len(ts)
    ab_of = [schedule.alpha_bar(t) for t in ts]
    path = repaint_path(n, jump_length, resamplings)
    # start at the top level from the forward-noised known image (pure noise when the top level is T - 1)
    x = math.sqrt(ab_of[-1]) * x0_known + math.sqrt(1.0 - ab_of[-1]) * _noise_like(x0_known, generator)
    prev_pos = path[0]
    total = len(path)
    for i, pos in enumerate(path):
        if pos > prev_pos:  # jump back up: re-noise from level prev_pos to level pos with the forward process
            ratio = ab_of[pos] / ab_of[prev_pos]
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * _noise_like(x, generator)
        t, ab = ts[pos], ab_of[pos]
        ab_prev = ab_of[pos - 1] if pos > 0 else 1.0
        x0, eps = predict_x0(x, model(x, t), ab, clip_x0)
        x_unknown = generalized_step(x0, eps, ab_prev, ddpm_posterior_std(ab, ab_prev), _noise_like(x, generator))
        if ab_prev < 1.0:
            x_known = math.sqrt(ab_prev) * x0_known + math.sqrt(1 - ab_prev) * _noise_like(x, generator)
        else:
            x_known = x0_known
        x = mask * x_unknown + (1.0 - mask) * x_known
        prev_pos = pos - 1
        yield SamplerStep("sample", i, total, t, x, x0)


def repaint_path(n: int, jump_length: int, resamplings: int) -> list[int]:
    """Positions in a respaced list visited by RePaint: down from n-1; after every ``jump_length`` steps the walk goes
    back up ``jump_length`` levels, ``resamplings - 1`` times, before carrying on down."""
    if jump_length < 1 or resamplings < 1:
        raise ValueError("jump_length and resamplings must be >= 1")
    path: list[int] = []
    jumps: dict[int, int] = {}
    pos = n - 1
    while pos >= 0:
        path.append(pos)
        done = n - pos  # steps taken down since the top, counting this one
        if pos > 0 and done % jump_length == 0 and jumps.get(pos, 0) < resamplings - 1:
            jumps[pos] = jumps.get(pos, 0) + 1
            pos = min(pos - 1 + jump_length, n - 1)
        else:
            pos -= 1
    return path


def follow(steps: Iterator[SamplerStep]):
    """Yield a sampler's steps and return its last image (``x = yield from follow(...)`` inside a walk)."""
    last = None
    for step in steps:
        last = step
        yield step
    if last is None:
        raise ValueError("the sampler made no step: check the timesteps")
    return last.x_t


def run_to_end(steps: Iterator[SamplerStep], callback: Callable[[SamplerStep], None] | None = None) -> torch.Tensor:
    """Exhaust a sampler generator (calling ``callback`` at each step) and return its final image."""
    walk = follow(steps)
    while True:
        try:
            step = next(walk)
        except StopIteration as end:
            return end.value
        if callback is not None:
            callback(step)


def ddim_invert(model: EpsModel, schedule: NoiseSchedule, x0: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """x_K from x_0 by DDIM inversion (eq. 8)."""
    return run_to_end(iter_ddim_inversion(model, schedule, x0, timesteps))


def dif_fuse(model: EpsModel, schedule: NoiseSchedule, x_k: torch.Tensor, mask: torch.Tensor, timesteps: list[int],
             generator: torch.Generator | None = None, clip_x0: bool = True) -> torch.Tensor:
    """The healthy counterfactual x0_hat from x_K (Algorithm 1, loop 2). The other walks (the authors' two chains,
    the ablations) are named in :data:`diffuse_core.core.walks.WALKS`, the one dispatcher of walks."""
    return run_to_end(iter_dif_fuse(model, schedule, x_k, mask, timesteps, generator, clip_x0))
