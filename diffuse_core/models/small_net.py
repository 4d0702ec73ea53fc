"""What the ACAT autoencoder and the classifier share: a small torch module that knows its device and size, and a
seeded constructor that leaves the global random state alone."""

from __future__ import annotations

import math
from typing import Callable, TypeVar

import torch
from torch import nn

Net = TypeVar("Net", bound=nn.Module)


class SmallNet(nn.Module):
    """An ``nn.Module`` with the two facts the CLI, the app and the model cards ask of every model."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def norm_groups(channels: int, max_groups: int = 8) -> int:
    """Group count for ``nn.GroupNorm`` over ``channels``: the largest divisor of ``channels`` up to ``max_groups``
    that also divides ``max_groups`` (gcd), so any width works."""
    return math.gcd(channels, max_groups)


def build_seeded(build: Callable[[], Net], seed: int) -> Net:
    """``build()`` with its weight initialisation fixed by ``seed`` (global RNG untouched), returned in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()
