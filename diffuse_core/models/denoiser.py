"""The healthy denoiser: a diffusers ``UNet2DModel`` that predicts the noise epsilon (paper Sec. III-A, eq. 6).

A saved denoiser is a model folder in the one format of :mod:`diffuse_core.models.checkpoint`: ``model.safetensors``,
``config.json`` (kind ``ddpm``, the UNet's architecture under ``unet``, the noise schedule under ``schedule``) and
``model_card.json`` (:mod:`diffuse_core.models.card`). ``load_denoiser`` restores both; the schedule travels with the weights so that a
sampler can never be run with the wrong one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DModel

from diffuse_core.core.schedule import NoiseSchedule, ScheduleConfig
from diffuse_core.models.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, load_weights_into, read_config, read_weights,
                                            retrain_hint, write_model)

KIND = "ddpm"
__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "Denoiser", "DenoiserConfig", "build_unet", "load_denoiser", "new_denoiser",
           "save_denoiser"]


@dataclass
class DenoiserConfig:
    """Architecture of the epsilon-prediction UNet.

    ``channels`` is 1 for one modality or 4 for FLAIR/T1/T1c/T2 stacked (paper Sec. IV-B); ``resolution`` is the
    square image side in pixels (128 by default, 256 supported). ``block_channels`` has one entry per resolution
    level; ``attention_levels`` marks the levels that use self-attention.
    """

    channels: int = 1
    resolution: int = 128
    block_channels: tuple[int, ...] = (32, 64, 128, 128)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    layers_per_block: int = 1  # paper: 2; 1 trains 1.6x faster on a CPU budget (benchmarks/)
    attention_head_dim: int = 32
    norm_num_groups: int = 16

    def __post_init__(self):
        self.block_channels = tuple(int(c) for c in self.block_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.block_channels) != len(self.attention_levels):
            raise ValueError("block_channels and attention_levels must have one entry per resolution level")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        down = 2 ** (len(self.block_channels) - 1)
        if self.resolution % down:
            raise ValueError(f"resolution {self.resolution} must be divisible by {down} for {len(self.block_channels)} levels")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_channels"] = list(self.block_channels)
        d["attention_levels"] = list(self.attention_levels)
        return d


def build_unet(config: DenoiserConfig) -> UNet2DModel:
    """A diffusers UNet2DModel for epsilon prediction with the given architecture."""
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels)]
    return UNet2DModel(
        sample_size=config.resolution,
        in_channels=config.channels,
        out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=config.block_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
    )


@dataclass
class Denoiser:
    """A UNet with the schedule it was trained on and its model card."""

    unet: UNet2DModel
    config: DenoiserConfig
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    card: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str) -> "Denoiser":
        self.unet.to(device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def new_denoiser(config: DenoiserConfig | None = None, schedule: ScheduleConfig | None = None, seed: int = 0) -> Denoiser:
    """A freshly initialised (untrained) denoiser; the seed fixes the initial weights."""
    config = config or DenoiserConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(config)
    unet.eval()
    return Denoiser(unet=unet, config=config, schedule=NoiseSchedule(schedule or ScheduleConfig()))


def save_denoiser(denoiser: Denoiser, folder: str | Path, card: dict | None = None,
                  state_dict: dict | None = None, by: str | None = None) -> Path:
    """Write the denoiser into ``folder`` in the one model format (:func:`diffuse_core.models.checkpoint.write_model`:
    ``model.safetensors``, ``config.json`` with the architecture and the schedule, ``model_card.json``).

    ``card`` defaults to ``denoiser.card``; ``by``: the writer of its fields, checked and stamped (None: the Python
    API, the card written as given); ``state_dict`` overrides the UNet's own weights (e.g. an EMA copy).
    """
    sd = state_dict if state_dict is not None else denoiser.unet.state_dict()
    architecture = {"unet": denoiser.config.to_dict(), "schedule": denoiser.schedule.to_dict()}
    return write_model(folder, KIND, sd, architecture, denoiser.card if card is None else card, by=by)


def load_denoiser(folder: str | Path, device: torch.device | str = "cpu") -> Denoiser:
    """Load a denoiser saved by :func:`save_denoiser`; raise a clear error where files are missing or broken."""
    folder = Path(folder)
    meta = read_config(folder, KIND)
    try:
        config = DenoiserConfig(**meta["unet"])
        schedule = NoiseSchedule(ScheduleConfig(**meta.get("schedule", {})))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG_NAME} is not a valid denoiser config ({err}); "
                         f"{retrain_hint(KIND)}") from err
    unet = build_unet(config)
    load_weights_into(unet, read_weights(folder, KIND), folder, KIND)
    # channels-last weights: the convolutions' fast layout on CPUs (one fp32 call of the shipped UNet 130 -> 92 ms,
    # bf16 at batch 8 55 -> 48 ms per slice on a 2-core AMD EPYC with AVX-512 BF16; docs/benchmarks.md)
    unet.eval().to(device).to(memory_format=torch.channels_last)
    return Denoiser(unet=unet, config=config, schedule=schedule, card=meta.get("card", {}) or {})
