"""DDPM training: loss goes down on an easy set, checkpoints resume, --init-from continues, the CLI trains."""

import json

import numpy as np
import torch

from diffuse_core.cli import main
from diffuse_core.models.denoiser import DenoiserConfig, load_denoiser
from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

TINY = DenoiserConfig(resolution=16, block_channels=(16, 32), attention_levels=(False, True), norm_num_groups=8,
                      attention_head_dim=8)


def _pool(n=32):
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(-1, 1, 16).view(1, 1, 16).expand(n, 1, 16, 16)
    return TensorPool(base + 0.05 * torch.randn(n, 1, 16, 16, generator=g))


def test_checkpoint_resume_continues_the_step_count(tmp_path):
    cfg = DDPMTrainConfig(steps=4, batch_size=4, checkpoint_every=2, unet=TINY)
    train_ddpm(tmp_path, _pool(), cfg, progress=False)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "model.safetensors").exists()
    assert load_denoiser(tmp_path).card["training"]["steps_done"] == 4
    cfg.steps = 6
    train_ddpm(tmp_path, _pool(), cfg, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6 and load_denoiser(tmp_path).card["training"]["steps_done"] == 6


def test_loss_decreases(tmp_path):
    cfg = DDPMTrainConfig(steps=60, batch_size=8, checkpoint_every=60, unet=TINY, lr=2e-3, precision="fp32")
    train_ddpm(tmp_path, _pool(), cfg, progress=False)
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert np.mean(losses[-2:]) < 0.5 * losses[0]


def test_init_from_continues_from_saved_weights(tmp_path):
    cfg = DDPMTrainConfig(steps=3, batch_size=4, checkpoint_every=3, unet=TINY)
    train_ddpm(tmp_path / "a", _pool(), cfg, progress=False)
    cfg.steps = 5
    train_ddpm(tmp_path / "b", _pool(), cfg, progress=False, init_from=tmp_path / "a")
    assert load_denoiser(tmp_path / "b").card["training"]["steps_done"] == 5


def test_cli_trains_ddpm_on_synthbrain(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    code = main(["train", "ddpm", "--out", str(tmp_path / "m"), "--steps", "2", "--batch-size", "2", "--pool", "4",
                 "--size", "32", "--channels", "16,32", "--checkpoint-every", "1"])
    assert code == 0
    card = json.loads((tmp_path / "m" / "config.json").read_text())["card"]
    assert card["training"]["steps_done"] == 2 and card["data"]["generator"] == "SynthBrain"
    assert card["data"]["healthy_only"] is True
