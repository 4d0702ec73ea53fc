"""ACAT's autoencoder: a small convolutional autoencoder with a *spatial* latent.

ACAT (Fontanella et al., ICML 2023) shifts an image's latent code, not its pixels, so that the counterfactual stays
on the data manifold; a spatial latent (e.g. 128x128x1 -> 32x32x8) keeps the shift local, so that the change of the
decoded image sits where the classifier's evidence is.

Architecture (per level: a residual block GroupNorm-SiLU-conv twice; between levels a stride-2 conv going down and a
nearest-neighbour upsample followed by a conv going up). ``widths`` has one entry per resolution level, so the latent
side is ``resolution / 2 ** (len(widths) - 1)``. The output is linear (no tanh): images live in [-1, 1] with the
background at exactly -1, and an L1-trained linear head reaches the flat background better than a saturating tanh;
``decode(..., clamp=True)`` clips to [-1, 1] for display.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from diffuse_core.models.small_net import SmallNet, build_seeded, norm_groups


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice with a (1x1 where the width changes) skip connection."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


@dataclass
class AutoencoderConfig:
    """Architecture of the ACAT autoencoder.

    ``channels``: image channels (1 = FLAIR, 4 = FLAIR/T1/T1c/T2). ``resolution``: square image side (64, 128, 256).
    ``widths``: feature widths, one per resolution level (len 3 -> latent at 1/4 of the side). ``latent_channels``:
    channels of the spatial latent.
    """

    channels: int = 1
    resolution: int = 128
    widths: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 8

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {self.widths}")
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels}")
        if self.resolution % self.downsample_factor:
            raise ValueError(f"resolution {self.resolution} must be divisible by {self.downsample_factor} "
                             f"for {len(self.widths)} levels")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.downsample_factor
        return (self.latent_channels, side, side)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


class Autoencoder(SmallNet):
    """``encode`` (B, C, H, W) -> (B, latent_channels, H/f, W/f); ``decode`` back; ``forward`` = decode(encode(x))."""

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config = config or AutoencoderConfig()
        w = config.widths
        # encoder
        self.enc_in = nn.Conv2d(config.channels, w[0], 3, padding=1)
        enc = []
        for i, wi in enumerate(w):
            enc.append(ResBlock(w[i - 1] if i else w[0], wi))
            if i < len(w) - 1:
                enc.append(nn.Conv2d(wi, wi, 3, stride=2, padding=1))
        self.enc = nn.Sequential(*enc)
        self.enc_out = nn.Sequential(nn.GroupNorm(norm_groups(w[-1]), w[-1]), nn.SiLU(),
                                     nn.Conv2d(w[-1], config.latent_channels, 3, padding=1))
        # decoder
        self.dec_in = nn.Conv2d(config.latent_channels, w[-1], 3, padding=1)
        dec = []
        for i in reversed(range(len(w))):
            dec.append(ResBlock(w[i + 1] if i < len(w) - 1 else w[-1], w[i]))
            if i > 0:
                dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
                dec.append(nn.Conv2d(w[i], w[i], 3, padding=1))
        self.dec = nn.Sequential(*dec)
        self.dec_out = nn.Sequential(nn.GroupNorm(norm_groups(w[0]), w[0]), nn.SiLU(),
                                     nn.Conv2d(w[0], config.channels, 3, padding=1))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.channels:
            raise ValueError(f"expected images (B, {self.config.channels}, H, W), got {tuple(x.shape)}")
        f = self.config.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image side {tuple(x.shape[-2:])} must be divisible by {f}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.enc_out(self.enc(self.enc_in(x)))

    def decode(self, z: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents (B, {self.config.latent_channels}, h, w), got {tuple(z.shape)}")
        x = self.dec_out(self.dec(self.dec_in(z)))
        return x.clamp(-1.0, 1.0) if clamp else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def new_autoencoder(config: AutoencoderConfig | None = None, seed: int = 0) -> Autoencoder:
    """A freshly initialised autoencoder (weights fixed by ``seed``, global RNG untouched), in eval mode."""
    return build_seeded(lambda: Autoencoder(config), seed)


def encode(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    return model.encode(x)


def decode(model: Autoencoder, z: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    return model.decode(z, clamp=clamp)
