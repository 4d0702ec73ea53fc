"""Diseased examples made from a user's real normal slices: a SynthBrain lesion pasted into each.

The ACAT classifier learns "diseased" from SynthBrain's lesions and "healthy" from SynthBrain's anatomy. Fine-tuned on
a scanner's real normal slices alone it could learn the shortcut "looks real = healthy" and miss real lesions. So the
diseased side is made from the same real slices: a SynthBrain slice drawn with a lesion and its healthy counterpart
(same seed, same anatomy and noise: :func:`diffuse_core.data.synthbrain.generate_slice`) are both put on the model's
scale, and their difference (the lesion's contrast and nothing else) is added to a real slice inside its brain, where
at least ``MIN_INSIDE`` of the lesion falls. Real and pasted slices then differ by the lesion only.
"""

from __future__ import annotations

import numpy as np

MIN_INSIDE = 0.8           # share of a lesion that must fall inside the real brain for it to be pasted there
MIN_LESION = 0.004         # SynthBrain lesions smaller than this share of the slice are skipped (too faint to learn)
SEED_BASE = 7              # SynthBrain train-split seeds base_seed 7: not the pools the shipped models trained on


def lesion_difference(seed: int, modalities=("flair",), size: int = 128, normalisation: str = "tissue",
                      scale: dict | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(lesion contrast (C, H, W) on the model's scale, lesion mask (H, W)) of SynthBrain's slice ``seed``, or None
    where it drew no lesion big enough."""
    from diffuse_core.data.synthbrain import generate_slice
    from diffuse_core.train.data import normalise_slices

    sick = generate_slice(seed, tuple(modalities), size, healthy=False)
    mask = np.asarray(sick.lesion_mask) > 0
    if mask.mean() < MIN_LESION:
        return None
    well = generate_slice(seed, tuple(modalities), size, healthy=True, lesion_type=sick.lesion_type)
    pair = normalise_slices(np.stack([sick.image, well.image]).astype(np.float32), normalisation, scale)
    return pair[0] - pair[1], mask


def paste_lesions(normals: np.ndarray, per_slice: int = 4, seed: int = 0, normalisation: str = "tissue",
                  scale: dict | None = None, modalities=("flair",),
                  max_tries: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(images (M, C, H, W), lesion masks (M, H, W)): about ``per_slice`` pasted lesions for each real normal slice of
    ``normals`` (N, C, H, W), already on the model's scale (``normalisation``, ``scale``: the card's). Lesions are
    drawn from SynthBrain's train split (seeds of ``SEED_BASE``), each onto a randomly chosen slice whose brain holds
    it; ``max_tries`` draws per wanted lesion at most."""
    from diffuse_core.core.brain import brain_masks
    from diffuse_core.data.synthbrain import sample_seed

    x = np.asarray(normals, np.float32)
    if x.ndim != 4 or not len(x) or x.shape[1] != len(modalities):
        raise ValueError(f"expected normal slices (N, {len(modalities)}, H, W), got shape {x.shape}")
    brains = brain_masks(x)
    rng = np.random.default_rng(seed)
    want = per_slice * len(x)
    images, masks = [], []
    for draw in range(want * max_tries):
        if len(images) == want:
            break
        made = lesion_difference(sample_seed("train", SEED_BASE + seed, draw), size=x.shape[-1],
                                 normalisation=normalisation, scale=scale, modalities=modalities)
        if made is None:
            continue
        diff, mask = made
        j = int(rng.integers(len(x)))
        if (mask & brains[j]).sum() < MIN_INSIDE * mask.sum():
            continue
        images.append(np.clip(x[j] + diff * brains[j], -1.0, 1.0))
        masks.append((mask & brains[j]).astype(np.uint8))
    if not images:
        raise ValueError("no SynthBrain lesion fitted inside these slices' brains: are they brain slices?")
    return np.stack(images).astype(np.float32), np.stack(masks)
