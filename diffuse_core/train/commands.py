"""``diffuse-studio train``: assembles data and settings for each model and calls its trainer.

Data is SynthBrain by default: a pool of slices generated once (in parallel) into memory and cached on disk under
``~/.cache/diffuse-studio`` keyed by generator version, split, seeds, size and modalities, so that a resumed run does
not regenerate it. ``--data DIR`` takes real data instead (see :mod:`diffuse_core.data.slice_folder`).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from diffuse_core.models.registry import default_model_dir


def cache_dir() -> Path:
    root = Path(os.environ.get("DIFFUSE_CACHE", Path.home() / ".cache" / "diffuse-studio"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _make_one(task: tuple) -> tuple[np.ndarray, int, np.ndarray]:
    from diffuse_core.data.synthbrain import generate_slice

    seed, modalities, size, healthy = task
    s = generate_slice(seed, modalities=modalities, size=size, healthy=healthy)
    return s.image.astype(np.float16), int(s.lesion_type != "none"), s.lesion_mask.astype(np.uint8)


def synthbrain_pool(n: int, split: str = "train", base_seed: int = 0, size: int = 128,
                    modalities: tuple[str, ...] = ("flair",), healthy: bool | None = True,
                    workers: int | None = None) -> dict[str, np.ndarray]:
    """``n`` SynthBrain slices as arrays: images (N, C, H, W) float16, labels (N,), lesion masks (N, H, W)."""
    from diffuse_core.data.synthbrain import SYNTHBRAIN_VERSION, sample_seed

    source = hashlib.sha1((Path(__file__).resolve().parents[1] / "data" / "synthbrain.py").read_bytes()).hexdigest()[:12]
    key = f"{SYNTHBRAIN_VERSION}|{source}|{split}|{base_seed}|{n}|{size}|{','.join(modalities)}|{healthy}"
    path = cache_dir() / f"pool_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    seeds = [sample_seed(split, base_seed, i) for i in range(n)]
    tasks = [(s, tuple(modalities), size, healthy) for s in seeds]
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as ex:
        results = list(ex.map(_make_one, tasks, chunksize=64))
    pool = {"images": np.stack([r[0] for r in results]), "labels": np.array([r[1] for r in results], np.int64),
            "masks": np.stack([r[2] for r in results]), "seeds": np.array(seeds, np.int64)}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **pool)
    os.replace(tmp, path)
    return pool


def _data_card(args, split: str = "train", healthy: bool | None = True) -> dict:
    from diffuse_core.data.synthbrain import SYNTHBRAIN_VERSION, sample_seed

    if args.data:
        return {"data": {"source": "folder", "path": str(args.data)}}
    return {"data": {"generator": "SynthBrain", "version": SYNTHBRAIN_VERSION, "split": split,
                     "modalities": [m.strip() for m in args.modalities.split(",") if m.strip()], "size": args.size, "healthy_only": healthy is True,
                     "n_slices": args.pool,
                     "seed_range": [sample_seed(split, args.seed, 0), sample_seed(split, args.seed, args.pool - 1)]}}


def train_model(args) -> Path:
    """Dispatch ``diffuse-studio train MODEL`` (argparse namespace from :mod:`diffuse_core.cli`)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    out = Path(args.out) if args.out else default_model_dir(args.model)
    if args.model == "ddpm":
        return _train_ddpm(args, modalities, out)
    from diffuse_core.train import saliency as train_saliency

    fn = train_saliency.train_autoencoder if args.model == "autoencoder" else train_saliency.train_classifier
    kwargs = {"seed": args.seed, "size": args.size, "modalities": modalities, "resume": not args.no_resume,
              "checkpoint_every": args.checkpoint_every, "progress": True}
    if args.steps:
        kwargs["steps"] = args.steps
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    if args.lr:
        kwargs["lr"] = args.lr
    if args.data:
        from diffuse_core.data.slice_folder import load_slice_folder

        kwargs["data"] = load_slice_folder(args.data, size=args.size, modalities=modalities, healthy_only=False)
    return Path(fn(out, **kwargs))


def _train_ddpm(args, modalities: tuple[str, ...], out: Path) -> Path:
    from diffuse_core.models.denoiser import DenoiserConfig
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

    unet = DenoiserConfig(channels=len(modalities), resolution=args.size)
    if args.channels:
        widths = tuple(int(c) for c in args.channels.split(","))
        unet = DenoiserConfig(channels=len(modalities), resolution=args.size, block_channels=widths,
                              attention_levels=tuple([False] * (len(widths) - 1) + [True]))
    cfg = DDPMTrainConfig(unet=unet, seed=args.seed, checkpoint_every=args.checkpoint_every)
    if args.steps:
        cfg.steps = args.steps
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if args.lr:
        cfg.lr = args.lr
    if args.data:
        from diffuse_core.data.slice_folder import load_slice_folder

        data = load_slice_folder(args.data, size=args.size, modalities=modalities, healthy_only=True)
        images = data["images"]
    else:
        images = synthbrain_pool(args.pool, "train", args.seed, args.size, modalities, healthy=True)["images"]
    if len(images) < cfg.batch_size:
        raise ValueError(f"only {len(images)} training slices: need at least one batch ({cfg.batch_size})")
    return train_ddpm(out, TensorPool(images), cfg, resume=not args.no_resume, card=_data_card(args),
                      init_from=getattr(args, "init_from", None))
