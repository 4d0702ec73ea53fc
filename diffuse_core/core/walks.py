"""The walks from an image to its counterfactual: Algorithm 1 and the variants the paper compares it with.

Each walk is a generator over :class:`~diffuse_core.core.sampler.SamplerStep` that *returns* its final image
(``x = yield from walk(inputs)``), so one assembly (:func:`diffuse_core.pipeline.iter_batch`) runs all of them the same
way: same seeding, clamping, background and anomaly map. Every walk spends its network calls on the same respaced
timesteps over [0, K].

- ``paper``: DDIM inversion to K (eq. 8), then the Dif-fuse walk back, one call per step (Algorithm 1, eq. 9).
- ``two-chain``: the authors' code, a separate DDIM chain supplies the outside (two calls per step).
- the unmasked ablations of Sec. IV-B: ``ddpm`` (forward noising + DDPM sampling), ``ddim-ddpm`` (DDIM inversion +
  DDPM sampling), ``ddpm-ddim`` (forward noising + DDIM sampling), ``ddim`` (DDIM inversion + DDIM sampling).
- ``mask-at-end``: DDIM inversion, then a DDPM chain and a DDIM chain run separately and fused by the mask only at the
  end (Fig. 3b).
- ``anoddpm``: AnoDDPM-style partial noising (Gaussian, not simplex noise) to a low level (paper: 100 steps) and DDPM
  reconstruction of the whole image.
- ``repaint``: RePaint inpainting of the mask from pure noise, with resampling (Sec. IV-F).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import torch

from diffuse_core.core.sampler import (EpsModel, SamplerStep, follow, iter_ddim_inversion, iter_ddim_sampling,
                                       iter_ddpm_sampling, iter_dif_fuse, iter_repaint, iter_two_chain)
from diffuse_core.core.schedule import NoiseSchedule

ANODDPM_LEVEL = 100       # paper Sec. IV-B: "employing 100 noising steps achieves the best results" for AnoDDPM
REPAINT_JUMP, REPAINT_RESAMPLINGS = 5, 3

WalkGenerator = Generator[SamplerStep, None, torch.Tensor]


@dataclass
class WalkInputs:
    """What a walk gets: the counted noise predictor, the schedule, the clean batch x0 (B, C, H, W) in [-1, 1], the
    mask (B, 1, H, W) in {0, 1} or None, the respaced timesteps over [0, K], the seeded generator, K and the step
    budget."""

    model: EpsModel
    schedule: NoiseSchedule
    x0: torch.Tensor
    mask: torch.Tensor | None
    timesteps: list[int]
    generator: torch.Generator
    k: int
    steps: int
    inverted: torch.Tensor | None = None   # x_K of this x0, K and timesteps from an earlier run: loop 1 is skipped
    keep: dict | None = None               # where the walk leaves the x_K it inverted to ("x_k"), for reuse
    order: int = 1                         # deterministic updates: 1 = DDIM (the paper), 2 = DPM-Solver++ (2M)
    refine: int = 0                        # fixed-point refinements per inversion step (0: eq. 8 as the paper)


@dataclass(frozen=True)
class Walk:
    """A named way from x0 to its counterfactual; ``needs_mask`` says whether it reads the mask m."""

    run: Callable[[WalkInputs], WalkGenerator]
    needs_mask: bool
    description: str


def forward_noise(schedule: NoiseSchedule, x0: torch.Tensor, t: int, generator: torch.Generator) -> torch.Tensor:
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) z, z ~ N(0, I) (eq. 4): the forward process in one jump."""
    ab = schedule.alpha_bar(t)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise


def _invert(w: WalkInputs) -> WalkGenerator:
    """Algorithm 1, loop 1: DDIM inversion of x0 to x_K. It is deterministic (no random draw), so an x_K kept from an
    earlier run of the same slice, K and steps is the same tensor, and reusing it skips its network calls."""
    if w.inverted is not None:
        return w.inverted
    x_k = yield from follow(iter_ddim_inversion(w.model, w.schedule, w.x0, w.timesteps, w.order,
                                                w.refine))
    if w.keep is not None:
        w.keep["x_k"] = x_k.detach()
    return x_k


def paper(w: WalkInputs) -> WalkGenerator:
    x_k = yield from _invert(w)
    return (yield from follow(iter_dif_fuse(w.model, w.schedule, x_k, w.mask, w.timesteps, w.generator,
                                           order=w.order)))  # loop 2


def two_chain(w: WalkInputs) -> WalkGenerator:
    x_k = yield from _invert(w)
    return (yield from follow(iter_two_chain(w.model, w.schedule, x_k, w.mask, w.timesteps, w.generator)))


def _noised_then(sampler: str) -> Callable[[WalkInputs], WalkGenerator]:
    def walk(w: WalkInputs) -> WalkGenerator:
        x_k = forward_noise(w.schedule, w.x0, w.timesteps[-1], w.generator)
        return (yield from follow(_down(sampler, w, x_k, w.timesteps)))
    return walk


def _inverted_then(sampler: str) -> Callable[[WalkInputs], WalkGenerator]:
    def walk(w: WalkInputs) -> WalkGenerator:
        x_k = yield from _invert(w)
        return (yield from follow(_down(sampler, w, x_k, w.timesteps)))
    return walk


def _down(sampler: str, w: WalkInputs, x_k: torch.Tensor, timesteps: list[int]) -> Iterator[SamplerStep]:
    if sampler == "ddpm":
        return iter_ddpm_sampling(w.model, w.schedule, x_k, timesteps, w.generator)
    return iter_ddim_sampling(w.model, w.schedule, x_k, timesteps, order=w.order)


def mask_at_end(w: WalkInputs) -> WalkGenerator:
    x_k = yield from _invert(w)
    ddpm = yield from follow(_down("ddpm", w, x_k, w.timesteps))
    ddim = yield from follow(_down("ddim", w, x_k, w.timesteps))
    return w.mask * ddpm + (1 - w.mask) * ddim


def anoddpm(w: WalkInputs) -> WalkGenerator:
    level = min(ANODDPM_LEVEL, w.k)
    ts_low = w.schedule.respaced_timesteps(level, max(1, round(w.steps * level / w.k)))
    x_low = forward_noise(w.schedule, w.x0, ts_low[-1], w.generator)
    return (yield from follow(_down("ddpm", w, x_low, ts_low)))


def repaint(w: WalkInputs) -> WalkGenerator:
    ts_full = w.schedule.respaced_timesteps(w.schedule.num_train_timesteps, w.steps)
    return (yield from follow(iter_repaint(w.model, w.schedule, w.x0, w.mask, ts_full, w.generator, REPAINT_JUMP,
                                           REPAINT_RESAMPLINGS)))


WALKS: dict[str, Walk] = {
    "paper": Walk(paper, True, "Dif-fuse, Algorithm 1: DDIM inversion, then one call per step, DDPM in m, DDIM out"),
    "two-chain": Walk(two_chain, True, "Dif-fuse as in the authors' code: a separate DDIM chain outside m"),
    "ddpm": Walk(_noised_then("ddpm"), False, "forward noising to K, DDPM sampling (no mask)"),
    "ddim-ddpm": Walk(_inverted_then("ddpm"), False, "DDIM inversion to K, DDPM sampling (no mask)"),
    "ddpm-ddim": Walk(_noised_then("ddim"), False, "forward noising to K, DDIM sampling (no mask)"),
    "ddim": Walk(_inverted_then("ddim"), False, "DDIM inversion to K, DDIM sampling (no mask)"),
    "mask-at-end": Walk(mask_at_end, True, "separate DDPM and DDIM chains fused by m only at the end (Fig. 3b)"),
    "anoddpm": Walk(anoddpm, False, "AnoDDPM-style: Gaussian noising to 100 steps, DDPM reconstruction"),
    "repaint": Walk(repaint, True, "RePaint inpainting of m from pure noise, with resampling (Sec. IV-F)"),
}
