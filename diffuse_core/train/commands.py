"""``diffuse-studio train``: assembles the data and settings of one model and hands them to its trainer.

Data is SynthBrain by default: a pool of slices generated once (in parallel) into memory and cached on disk (see
:mod:`diffuse_core.train.data`), so that a resumed run does not regenerate it. ``data`` (a folder) takes real data
instead (see :mod:`diffuse_core.data.slice_folder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffuse_core.models.registry import MODEL_KINDS, default_model_dir

DDPM_POOL = 6000        # SynthBrain slices held in memory for the DDPM (healthy only)


@dataclass
class TrainCommand:
    """One ``diffuse-studio train MODEL`` request. None means "the model's default"."""

    model: str                                  # ddpm | autoencoder | classifier | level
    out: str | Path | None = None               # run folder (default: the shipped assets/<model>)
    steps: int | None = None                    # total optimiser steps
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    size: int = 128                             # image side in pixels
    modalities: tuple[str, ...] = ("flair",)    # SynthBrain modalities, one channel each
    data: str | Path | None = None              # a folder of real slices / BraTS cases instead of SynthBrain
    pool: int | None = None                     # SynthBrain slices in memory (default: 6000 DDPM, 4000 ACAT models)
    checkpoint_every: int = 250
    channels: tuple[int, ...] | None = None     # DDPM UNet widths per level (attention on the last)
    resume: bool = True                         # continue from out/checkpoint.pt where there is one
    init_from: str | Path | None = None         # without a checkpoint: start from these saved weights
    threads: int | None = None                  # CPU threads (None: torch's choice)
    normalise: str = "absolute"                 # SynthBrain slices: as rendered, "percentile" or "tissue" (the app's)
    prediction: str | None = None               # DDPM output: epsilon (the paper's) or v_prediction; None: the
                                                # --init-from model's, else epsilon
    min_snr_gamma: float | None = None          # DDPM: min-SNR loss weighting (None: plain L_simple)
    lr_schedule: str = "constant"               # DDPM: constant or cosine (warm-up, then down to 5 %)
    augment: bool = False                       # DDPM: scanner augmentation (the shipped FLAIR model's 2nd stage)
    max_minutes: float | None = None            # DDPM: a time box; the weights are exported when it ends
    realism: str = "default"                    # SynthBrain's realism ("scanner": scanner effects, lesion shapes)
    paired: bool = False                        # classifier: each diseased slice beside its healthy counterpart

    def __post_init__(self):
        if self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_KINDS)}")
        self.modalities = tuple(self.modalities)
        if not self.modalities:
            raise ValueError("no modalities given: pass e.g. --modalities flair or flair,t1")
        from diffuse_core.train.data import NORMALISATIONS

        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"unknown --normalise {self.normalise!r}: choose one of {', '.join(NORMALISATIONS)}")
        from diffuse_core.data.synthbrain import check_realism

        check_realism(self.realism)                # a ValueError naming the known effects
        if self.realism != "default" and self.data:
            raise ValueError("--realism applies to SynthBrain training slices, not to --data")
        if self.normalise != "absolute" and self.data:
            raise ValueError("--normalise applies to SynthBrain training slices, not to --data")
        from diffuse_core.core.schedule import PREDICTION_TYPES

        if self.prediction is not None and self.prediction not in PREDICTION_TYPES:
            raise ValueError(f"unknown --prediction {self.prediction!r}: choose one of {', '.join(PREDICTION_TYPES)}")
        if self.model != "ddpm" and (self.prediction is not None or self.min_snr_gamma is not None
                                     or self.lr_schedule != "constant" or self.augment):
            raise ValueError("--prediction, --min-snr, --lr-schedule and --augment apply to the DDPM only")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ValueError(f"--min-snr must be positive (Hang et al. use 5), got {self.min_snr_gamma}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown --lr-schedule {self.lr_schedule!r}: choose constant or cosine")
        if self.paired and (self.model != "classifier" or self.data):
            raise ValueError("--paired applies to the classifier on SynthBrain (healthy counterparts), not to "
                             f"{'--data' if self.data else 'the ' + self.model}")
        if self.channels is not None and self.model != "ddpm":
            raise ValueError("--channels sets the DDPM's UNet widths; the autoencoder and classifier have fixed ones")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else default_model_dir(self.model)


def train_model(cmd: TrainCommand) -> Path:
    """Train the model ``cmd`` names; return the folder holding its weights."""
    import torch

    if cmd.threads:
        torch.set_num_threads(cmd.threads)
    if cmd.model == "ddpm":
        return _train_ddpm(cmd)
    if cmd.model == "level":
        return _train_level(cmd)
    from diffuse_core.train import saliency as train_saliency

    fn = train_saliency.train_autoencoder if cmd.model == "autoencoder" else train_saliency.train_classifier
    kwargs = {"seed": cmd.seed, "size": cmd.size, "modalities": cmd.modalities, "resume": cmd.resume,
              "checkpoint_every": cmd.checkpoint_every, "progress": True, "init_from": cmd.init_from,
              "pool_size": cmd.pool or train_saliency.DEFAULT_POOL, "realism": cmd.realism,
              "normalise": cmd.normalise}
    if cmd.paired:
        kwargs["paired"] = True
    for name in ("steps", "batch_size", "lr"):
        if getattr(cmd, name):
            kwargs[name] = getattr(cmd, name)
    if cmd.data:
        from diffuse_core.data.slice_folder import load_slice_folder

        kwargs["data"] = load_slice_folder(cmd.data, size=cmd.size, modalities=cmd.modalities, healthy_only=False)
    return Path(fn(cmd.out_dir, **kwargs))


def _train_level(cmd: TrainCommand) -> Path:
    """The slice-level estimator: SynthBrain slices of every level on the scale ``--normalise`` names (the shipped
    FLAIR denoiser's, "tissue", is what a run gives it)."""
    from diffuse_core.train.level import train_level

    if cmd.data:
        raise ValueError("the level estimator learns levels SynthBrain knows; --data (a folder of slices) has none")
    if cmd.realism != "default":
        raise ValueError("the level estimator trains on every level with scanner effects; it takes no --realism")
    return train_level(cmd.out_dir, steps=cmd.steps, batch_size=cmd.batch_size, lr=cmd.lr, seed=cmd.seed,
                       size=cmd.size, modalities=cmd.modalities, pool_size=cmd.pool, normalise=cmd.normalise,
                       checkpoint_every=cmd.checkpoint_every, resume=cmd.resume, init_from=cmd.init_from)


def _train_ddpm(cmd: TrainCommand) -> Path:
    from diffuse_core.models.denoiser import DenoiserConfig
    from diffuse_core.train.data import synthbrain_card, synthbrain_pool
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

    unet = DenoiserConfig(channels=len(cmd.modalities), resolution=cmd.size)
    if cmd.channels:
        unet = DenoiserConfig(channels=len(cmd.modalities), resolution=cmd.size, block_channels=cmd.channels,
                              attention_levels=tuple([False] * (len(cmd.channels) - 1) + [True]))
    from diffuse_core.core.schedule import ScheduleConfig

    prediction = cmd.prediction
    if prediction is None:          # continuing a model keeps what it predicts unless told otherwise
        prediction = "epsilon"
        if cmd.init_from:
            from diffuse_core.models.checkpoint import read_config

            prediction = (read_config(cmd.init_from, "ddpm").get("schedule") or {}).get("prediction_type", "epsilon")
    cfg = DDPMTrainConfig(unet=unet, seed=cmd.seed, checkpoint_every=cmd.checkpoint_every,
                          schedule=ScheduleConfig(prediction_type=prediction), min_snr_gamma=cmd.min_snr_gamma,
                          lr_schedule=cmd.lr_schedule, augment=cmd.augment,
                          max_seconds=None if cmd.max_minutes is None else 60.0 * float(cmd.max_minutes))
    for name in ("steps", "batch_size", "lr"):
        if getattr(cmd, name):
            setattr(cfg, name, getattr(cmd, name))
    pool = cmd.pool or DDPM_POOL
    if cmd.data:
        from diffuse_core.data.slice_folder import load_slice_folder

        images = load_slice_folder(cmd.data, size=cmd.size, modalities=cmd.modalities, healthy_only=True)["images"]
        card = {"data": {"source": "folder", "path": str(cmd.data)}}
    else:
        images = synthbrain_pool(pool, "train", cmd.seed, cmd.size, cmd.modalities, healthy=True,
                                 realism=cmd.realism)["images"]
        card = {"data": synthbrain_card(pool, "train", cmd.seed, cmd.size, cmd.modalities, healthy_only=True,
                                        realism=cmd.realism)}
        card["input_normalisation"] = cmd.normalise
        if cmd.normalise == "tissue":
            from diffuse_core.core.intensity import TISSUE_SCALE

            card["tissue_scale"] = dict(TISSUE_SCALE)
        if cmd.normalise != "absolute":
            from diffuse_core.train.data import normalise_slices

            images = normalise_slices(images, cmd.normalise).astype(np.float16)
    if len(images) < cfg.batch_size:
        raise ValueError(f"only {len(images)} training slices: need at least one batch ({cfg.batch_size})")
    from diffuse_core.io.preprocess import intensity_reference

    card["intensity_reference"] = {**intensity_reference(np.asarray(images[:2000], np.float32)),
                                   "source": "the first 2,000 training slices"}
    return train_ddpm(cmd.out_dir, TensorPool(images), cfg, resume=cmd.resume, card=card, init_from=cmd.init_from)
