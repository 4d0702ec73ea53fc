"""The slice's level: which axial level of the brain a slice shows, and whether the healthy model ever learned it.

A healthy DDPM trained on SynthBrain has seen only the template levels its generator drew (the default realism:
:data:`~diffuse_core.data.synthbrain.anatomy.LEVEL_RANGE`, the lateral ventricles' levels and above, not the skull
base). On a slice from below them (temporal poles, cerebellum, orbits' neighbourhood) its counterfactual redraws
normal anatomy it never learned, and a verdict there calls normal brain abnormal. So a run estimates the slice's level
and, where it lies outside the levels the denoiser was trained on, makes no normal / abnormal call
(:mod:`diffuse_core.run.level_check`).

The estimator is the classifier's small CNN with one output, regressing the ICBM152 template level (z index, 1 mm;
MNI z = level - ``z0``) scaled as ``(level - LEVEL_CENTRE) / LEVEL_SPAN``. It is trained on SynthBrain slices of every
level (healthy and diseased, scanner realism, the app's tissue scale) by ``diffuse-studio train level``; its card
records its validation error. It sees the image as a run prepares it, so it is tied to one modality and one input
scale (its card's), and a run uses it only where the denoiser's card has the same.
"""

from __future__ import annotations

import numpy as np
import torch

from diffuse_core.models.classifier import Classifier, ClassifierConfig
from diffuse_core.models.small_net import build_seeded

LEVEL_CENTRE, LEVEL_SPAN = 80.0, 40.0      # the network's output is (level - LEVEL_CENTRE) / LEVEL_SPAN
TRAINING_REALISM = "scanner,all_levels,lesion_levels"   # every level, healthy and diseased, scanner effects


class LevelEstimator(Classifier):
    """The classifier's body with one output: the slice's template level, scaled (see the module docstring)."""

    def __init__(self, config: ClassifierConfig | None = None):
        config = config or ClassifierConfig(num_classes=1)
        if config.num_classes != 1:
            raise ValueError(f"a level estimator has one output, got num_classes={config.num_classes}")
        super().__init__(config)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the scaled level of a batch of prepared slices (B, C, H, W)."""
        return self.forward(x)[:, 0].float()

    def levels(self, images, batch_size: int = 64) -> np.ndarray:
        """Template levels (float, 1 mm) of prepared slices (N, C, H, W) or one slice (C, H, W), no gradient."""
        x = np.asarray(images, np.float32)
        one = x.ndim == 3
        x = x[None] if one else x
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                out.append(self.scaled(torch.from_numpy(x[i:i + batch_size]).to(self.device)).cpu().numpy())
        lv = np.concatenate(out) * LEVEL_SPAN + LEVEL_CENTRE
        return lv[:1] if one else lv


def new_level_estimator(config: ClassifierConfig | None = None, seed: int = 0) -> LevelEstimator:
    """A freshly initialised level estimator (weights fixed by ``seed``, global RNG untouched), in eval mode."""
    return build_seeded(lambda: LevelEstimator(config), seed)
