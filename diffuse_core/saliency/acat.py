"""ACAT saliency maps by progressive latent shift (Fontanella et al., ICML 2023; used by Dif-fuse, Sec. III-B).

Given an image x, an autoencoder (E, D) and a classifier f (healthy 0 / diseased 1):

1. z0 = E(x), x_rec = D(z0).
2. For a target class y, take ``steps`` small steps on z that lower CE(f(D(z)), y) while an L1 term
   ``l1_weight * |z - z0|_1`` keeps z close to z0 (ACAT's regulariser: the change must be attributable to the class
   shift, not to drifting away from the image).
3. The map of direction y is |D(z_T) - x_rec| summed over channels, zero outside the brain, divided by its maximum.
4. As in the authors' code, this is done towards both classes and the two normalised maps are averaged (then
   re-normalised to a maximum of 1). ``both_directions=False`` keeps only the shift towards "healthy".

The optimiser (documented choice): **L2-normalised gradient steps with a proximal L1 step** (ISTA). At each step

    g  = dCE/dz / rms(dCE/dz)                         (per sample; rms = sqrt(mean(g**2)))
    z' = z - step_size * rms(z0) * g                  (an L2 step of length step_size * ||z0||_2)
    z  = z0 + soft_threshold(z' - z0, step_size * rms(z0) * l1_weight)

The soft-threshold is the proximal operator of the L1 term, so ``l1_weight`` reads as "latent elements whose
normalised gradient stays below l1_weight (in units of its RMS) do not move at all": the shift is sparse and local
instead of a small change spread over the whole latent. Normalising the gradient makes the step length independent
of how confident the classifier is, so the shift towards the class the image already has (the "diseased" direction on
a diseased slice) still moves, reinforcing the evidence, which is what makes that map informative too.

Nothing here is random: ``generator`` only matters where ``init_noise > 0`` (a small Gaussian jitter of z0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from diffuse_core.core.brain import brain_masks
from diffuse_core.models.classifier import DISEASED, HEALTHY


DEFAULT_STEPS = 20
DEFAULT_STEP_SIZE = 0.05
DEFAULT_L1_WEIGHT = 0.5


@dataclass
class SaliencyResult:
    """ACAT output. For a single (C, H, W) input arrays have no batch axis; for (B, C, H, W) they lead with B.

    saliency: (H, W) float32 in [0, 1], the average of the normalised direction maps (re-normalised to max 1).
    saliency_healthy / saliency_diseased: the normalised maps of the shift towards each class (None if not run).
    counterfactual: (C, H, W) the decoded image after the shift towards "healthy".
    reconstruction: (C, H, W) D(E(x)).
    prob_before: classifier's P(diseased) on the input image; prob_reconstruction: on D(E(x));
    prob_after: on the healthy counterfactual; prob_after_diseased: on the shift towards "diseased".
    brain_mask: (H, W) bool, where the saliency may be non-zero.
    """

    saliency: np.ndarray
    saliency_healthy: np.ndarray
    saliency_diseased: np.ndarray | None
    counterfactual: np.ndarray
    reconstruction: np.ndarray
    prob_before: float | np.ndarray
    prob_reconstruction: float | np.ndarray
    prob_after: float | np.ndarray
    prob_after_diseased: float | np.ndarray | None
    brain_mask: np.ndarray
    params: dict = field(default_factory=dict)


def as_batch(image) -> tuple[torch.Tensor, bool]:
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if x.ndim == 3:
        return x[None].float(), True
    if x.ndim == 4:
        return x.float(), False
    raise ValueError(f"expected an image (C, H, W) or a batch (B, C, H, W), got shape {tuple(x.shape)}")


def brain_batch(brain_mask, x: torch.Tensor) -> np.ndarray:
    b, _, h, w = x.shape
    if brain_mask is None:
        return brain_masks(x)
    m = brain_mask.detach().cpu().numpy() if isinstance(brain_mask, torch.Tensor) else np.asarray(brain_mask)
    m = m.astype(bool)
    if m.ndim == 2:
        m = np.broadcast_to(m, (b, h, w))
    elif m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    elif m.ndim == 3 and m.shape[0] == 1 and b > 1:
        m = np.broadcast_to(m[0], (b, h, w))
    if m.shape != (b, h, w):
        raise ValueError(f"brain mask of shape {np.shape(brain_mask)} does not fit images {tuple(x.shape)}")
    return np.array(m, dtype=bool, copy=True)


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map of a (B, H, W) stack divided by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return maps / peak[:, None, None]


def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.pow(2).mean(dim=tuple(range(1, t.ndim)), keepdim=True).sqrt()


def latent_shift(z0: torch.Tensor, x: torch.Tensor, x_rec: torch.Tensor, targets: torch.Tensor, autoencoder,
                 classifier, steps: int, step_size: float, l1_weight: float, residual: bool = False) -> torch.Tensor:
    """The progressive, L1-regularised shift of ``z0`` towards ``targets`` (B,) (see module docstring).

    With ``residual=True`` the classifier sees x + (D(z) - x_rec) instead of D(z): the shift's change applied to the
    sharp input, which keeps the classifier on the image distribution it was trained on.
    """
    scale = _rms(z0).clamp_min(1e-6) * step_size
    z = z0.clone()
    for _ in range(int(steps)):
        z.requires_grad_(True)
        decoded = autoencoder.decode(z)
        seen = x + (decoded - x_rec) if residual else decoded
        logits = classifier(seen).float()
        loss = F.cross_entropy(logits, targets, reduction="sum")  # per-sample gradients stay independent
        (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            grad = grad / _rms(grad).clamp_min(1e-20)
            d = (z - scale * grad) - z0
            if l1_weight > 0:
                d = torch.sign(d) * torch.relu(d.abs() - scale * l1_weight)
            z = z0 + d
    return z.detach()


def acat_saliency(image, autoencoder, classifier, steps: int = DEFAULT_STEPS, step_size: float = DEFAULT_STEP_SIZE,
                  l1_weight: float = DEFAULT_L1_WEIGHT, both_directions: bool = True, generator=None,
                  brain_mask=None, residual: bool = False, init_noise: float = 0.0) -> SaliencyResult:
    """ACAT saliency of ``image`` (C, H, W) or (B, C, H, W), values in [-1, 1], background -1.

    ``brain_mask`` (H, W), (B, H, W) or (B, 1, H, W) restricts the map; without it the brain is where the image
    exceeds -1 + 1e-3 (holes filled). Runs on the autoencoder's device, in float32; models are used in eval mode
    and left unchanged. See the module docstring for the optimiser and the meaning of the parameters.
    """
    if steps < 0 or step_size < 0 or l1_weight < 0:
        raise ValueError("steps, step_size and l1_weight must be non-negative")
    x, single = as_batch(image)
    if x.shape[1] != autoencoder.config.channels or x.shape[1] != classifier.config.channels:
        raise ValueError(f"image has {x.shape[1]} channels; the autoencoder expects {autoencoder.config.channels} "
                         f"and the classifier {classifier.config.channels}")
    device = next(autoencoder.parameters()).device
    x = x.to(device)
    brain = brain_batch(brain_mask, x)
    b = x.shape[0]
    was_training = (autoencoder.training, classifier.training)
    autoencoder.eval()
    classifier.eval()
    try:
        with torch.no_grad():
            z0 = autoencoder.encode(x)
            if init_noise > 0:
                noise = torch.randn(z0.shape, generator=generator, device="cpu" if generator is None else
                                    generator.device).to(z0.device)
                z0 = z0 + init_noise * _rms(z0) * noise
            x_rec = autoencoder.decode(z0)
            p_before = torch.softmax(classifier(x).float(), 1)[:, DISEASED]
            p_rec = torch.softmax(classifier(x_rec).float(), 1)[:, DISEASED]
        targets = [HEALTHY, DISEASED] if both_directions else [HEALTHY]
        n_dir = len(targets)
        tgt = torch.tensor(targets, device=device).repeat_interleave(b)
        z = latent_shift(z0.repeat(n_dir, 1, 1, 1), x.repeat(n_dir, 1, 1, 1), x_rec.repeat(n_dir, 1, 1, 1), tgt,
                         autoencoder, classifier, steps, step_size, l1_weight, residual=residual)
        with torch.no_grad():
            x_shift = autoencoder.decode(z)
            seen = x.repeat(n_dir, 1, 1, 1) + (x_shift - x_rec.repeat(n_dir, 1, 1, 1)) if residual else x_shift
            p_after = torch.softmax(classifier(seen).float(), 1)[:, DISEASED]
            diff = (x_shift - x_rec.repeat(n_dir, 1, 1, 1)).abs().sum(dim=1).float()
            diff = diff * torch.from_numpy(np.tile(brain, (n_dir, 1, 1))).to(diff.device, diff.dtype)
            maps = normalise_maps(diff).view(n_dir, b, *diff.shape[1:])
            sal = normalise_maps(maps.mean(dim=0))
    finally:
        autoencoder.train(was_training[0])
        classifier.train(was_training[1])

    def out(t, i=None):
        a = t.detach().cpu().numpy().astype(np.float32)
        return a[0] if single else a

    def prob(t):
        a = t.detach().cpu().numpy().astype(np.float64)
        return float(a[0]) if single else a

    return SaliencyResult(
        saliency=out(sal), saliency_healthy=out(maps[0]),
        saliency_diseased=out(maps[1]) if both_directions else None,
        counterfactual=out(x_shift[:b]), reconstruction=out(x_rec),
        prob_before=prob(p_before), prob_reconstruction=prob(p_rec), prob_after=prob(p_after[:b]),
        prob_after_diseased=prob(p_after[b:]) if both_directions else None,
        brain_mask=brain[0] if single else brain,
        params={"steps": int(steps), "step_size": float(step_size), "l1_weight": float(l1_weight),
                "both_directions": bool(both_directions), "residual": bool(residual)})
