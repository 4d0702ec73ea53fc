"""ACAT's classifier: a small CNN, healthy (0) vs diseased (1), returning logits (B, 2).

Stem conv at full resolution, then one stage per extra entry of ``widths`` (stride-2 conv, conv; GroupNorm + SiLU
after each), global average pooling and a linear head. ``forward(x, return_features=True)`` also returns the last
conv feature map (B, widths[-1], H / 2 ** (len(widths) - 1), W / ...), the layer Grad-CAM reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffuse_core.models.small_net import SmallNet, build_seeded, norm_groups

HEALTHY, DISEASED = 0, 1


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(norm_groups(cout), cout),
                         nn.SiLU())


@dataclass
class ClassifierConfig:
    """``channels``: image channels; ``resolution``: square image side; ``widths``: one entry per resolution level
    (len 4 -> the last feature map is 1/8 of the side, 16x16 at 128); ``dropout`` before the linear head."""

    channels: int = 1
    resolution: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 64)
    dropout: float = 0.1
    num_classes: int = 2

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {self.widths}")
        if self.resolution % (2 ** (len(self.widths) - 1)):
            raise ValueError(f"resolution {self.resolution} must be divisible by {2 ** (len(self.widths) - 1)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


class Classifier(SmallNet):
    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        w = config.widths
        layers = [_conv(config.channels, w[0]), _conv(w[0], w[0])]
        for i in range(1, len(w)):
            layers += [_conv(w[i - 1], w[i], stride=2), _conv(w[i], w[i])]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(w[-1], config.num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if x.ndim != 4 or x.shape[1] != self.config.channels:
            raise ValueError(f"expected images (B, {self.config.channels}, H, W), got {tuple(x.shape)}")
        feats = self.features(x)
        logits = self.head(self.dropout(feats.mean(dim=(2, 3))))
        return (logits, feats) if return_features else logits

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Probability of "diseased" (B,), no gradient, eval mode assumed."""
        with torch.no_grad():
            return torch.softmax(self.forward(x).float(), dim=1)[:, DISEASED]


def new_classifier(config: ClassifierConfig | None = None, seed: int = 0) -> Classifier:
    """A freshly initialised classifier (weights fixed by ``seed``, global RNG untouched), in eval mode."""
    return build_seeded(lambda: Classifier(config), seed)
