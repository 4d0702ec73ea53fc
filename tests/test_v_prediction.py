"""v-prediction (the schedule's ``prediction_type``): the samplers read a v model's output as diffusers does, training
learns the v target, min-SNR weighting and a cosine learning rate that follows a time box."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from diffuse_core.core.sampler import (ddpm_posterior_std, generalized_step, iter_ddim_sampling, predict_x0,
                                       run_to_end, unet_eps_model)
from diffuse_core.core.schedule import NoiseSchedule, ScheduleConfig
from diffuse_core.models.checkpoint import read_config

V = NoiseSchedule(ScheduleConfig(prediction_type="v_prediction"))


def _smooth_v(x, t):
    w = torch.tensor([[[[0.0, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.1, 0.0]]]])
    return -torch.nn.functional.conv2d(x, w, padding=1) * (0.3 + t / 1500) + 0.05 * math.cos(t / 70)


def test_unknown_prediction_type_raises():
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule(ScheduleConfig(prediction_type="sample"))


def test_v_target_and_its_inverse_recover_x0_and_eps():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.randn(4, 1, 8, 8, generator=g)
    for t in (0, 10, 400, 999):
        tt = torch.full((4,), t)
        x_t = V.q_sample(x0, tt, eps)
        v = V.training_target(x0, eps, tt)
        ab = V.alpha_bar(t)
        assert torch.allclose(V.eps_from_output(x_t, v, t), eps, atol=1e-5)
        x0_hat, _ = predict_x0(x_t, V.eps_from_output(x_t, v, t), ab, clip=False)
        assert torch.allclose(x0_hat, x0, atol=2e-3 if t == 999 else 1e-4)   # t 999: ab 4e-5, float32 division
    eps_sched = NoiseSchedule()
    assert eps_sched.training_target(x0, eps, torch.zeros(4, dtype=torch.long)) is eps


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_v_model_steps_match_diffusers(eta, clip):
    ref = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=clip, set_alpha_to_one=True, timestep_spacing="trailing",
                        prediction_type="v_prediction")
    ref.set_timesteps(20)
    ts = V.respaced_timesteps(1000, 20)
    g = torch.Generator().manual_seed(3)
    for t in [ts[-1], ts[10], ts[1], ts[0]]:
        x, v, noise = (torch.randn(2, 1, 8, 8, generator=g) for _ in range(3))
        i = ts.index(t)
        ab, ab_prev = V.alpha_bar(t), V.alpha_bar(ts[i - 1] if i > 0 else -1)
        out = ref.step(v, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise)
        x0, eps = predict_x0(x, V.eps_from_output(x, v, t), ab, clip)
        mine = generalized_step(x0, eps, ab_prev, eta * ddpm_posterior_std(ab, ab_prev), noise)
        assert torch.allclose(x0, out.pred_original_sample, atol=1e-4, rtol=1e-4)
        assert torch.allclose(mine, out.prev_sample, atol=1e-4, rtol=1e-4), (t, (mine - out.prev_sample).abs().max())


def test_v_model_second_order_walk_matches_diffusers():
    ts = V.respaced_timesteps(500, 10)
    x_k = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    eps_model = lambda x, t: V.eps_from_output(x, _smooth_v(x, t), t)   # noqa: E731
    ours = run_to_end(iter_ddim_sampling(eps_model, V, x_k, ts, clip_x0=False, order=2))
    ref = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                      beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2,
                                      solver_type="midpoint", final_sigmas_type="zero", prediction_type="v_prediction")
    ref.set_timesteps(timesteps=sorted(ts, reverse=True))
    x = x_k.clone()
    for t in ref.timesteps:
        x = ref.step(_smooth_v(x, int(t)), t, x).prev_sample
    assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4)


def test_unet_eps_model_converts_only_with_a_v_schedule():
    class Net(torch.nn.Module):
        def forward(self, x, t):
            return type("Out", (), {"sample": 0.5 * x + 0.1})()

    x = torch.randn(1, 1, 4, 4)
    assert torch.allclose(unet_eps_model(Net())(x, 300), 0.5 * x + 0.1)
    assert torch.allclose(unet_eps_model(Net(), None, NoiseSchedule())(x, 300), 0.5 * x + 0.1)
    got = unet_eps_model(Net(), None, V)(x, 300)
    ab = V.alpha_bar(300)
    assert torch.allclose(got, math.sqrt(1 - ab) * x + math.sqrt(ab) * (0.5 * x + 0.1), atol=1e-6)


def test_cosine_lr_follows_the_time_box():
    from diffuse_core.train.trainer import TrainSettings

    s = TrainSettings(steps=10**7, lr=1e-4, lr_schedule="cosine", warmup_steps=10, lr_floor=0.05, max_seconds=100)
    assert s.lr_at(0) == pytest.approx(1e-5)
    assert s.lr_at(100, 0.0) == pytest.approx(1e-4, rel=1e-3)
    assert s.lr_at(100, 0.5) == pytest.approx(1e-4 * (0.05 + 0.95 * 0.5))
    assert s.lr_at(100, 1.0) == pytest.approx(5e-6)
    assert TrainSettings(lr=1e-4).lr_at(100, 0.9) == 1e-4     # constant ignores the box


def _train(tmp_path, name, **kw):
    from diffuse_core.models.denoiser import DenoiserConfig, load_denoiser
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

    images = np.random.default_rng(0).uniform(-1, 1, (16, 1, 16, 16)).astype(np.float32)
    cfg = DDPMTrainConfig(steps=3, batch_size=4, checkpoint_every=3, precision="fp32",
                          unet=DenoiserConfig(resolution=16, block_channels=(16, 16), attention_levels=(False, True),
                                              norm_num_groups=8, attention_head_dim=8), **kw)
    out = train_ddpm(tmp_path / name, TensorPool(images), cfg, progress=False, device="cpu")
    return load_denoiser(out), read_config(out)


def test_v_model_trains_saves_and_loads_as_v(tmp_path):
    den, cfg = _train(tmp_path, "v", schedule=ScheduleConfig(prediction_type="v_prediction"), min_snr_gamma=5.0,
                      lr_schedule="cosine")
    assert den.schedule.prediction_type == "v_prediction"
    assert cfg["schedule"]["prediction_type"] == "v_prediction"
    assert "v-prediction" in cfg["card"]["model"]
    assert cfg["card"]["training"]["min_snr_gamma"] == 5.0 and cfg["card"]["training"]["lr_schedule"] == "cosine"
    old, old_cfg = _train(tmp_path, "eps")
    assert old.schedule.prediction_type == "epsilon" and "epsilon" in old_cfg["card"]["model"]


def test_min_snr_weighting_changes_the_loss_and_bad_gamma_raises():
    from diffuse_core.models.denoiser import DenoiserConfig
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, ddpm_task

    images = np.random.default_rng(0).uniform(-1, 1, (8, 1, 16, 16)).astype(np.float32)
    unet = DenoiserConfig(resolution=16, block_channels=(16, 16), attention_levels=(False, True), norm_num_groups=8,
                          attention_head_dim=8)
    losses = []
    for gamma in (None, 5.0):
        task = ddpm_task(TensorPool(images), DDPMTrainConfig(batch_size=8, unet=unet, min_snr_gamma=gamma))
        batch = task.make_batch(torch.Generator().manual_seed(0))
        with torch.no_grad():
            losses.append(float(task.loss(task.model, batch)))
    assert losses[1] < losses[0]          # every weight min(SNR, 5) / SNR is at most 1, below 1 at low noise
    with pytest.raises(ValueError, match="min_snr_gamma"):
        ddpm_task(TensorPool(images), DDPMTrainConfig(batch_size=8, unet=unet, min_snr_gamma=0.0))


def test_continuing_a_model_keeps_its_prediction_type_unless_told(tmp_path):
    from diffuse_core.train.commands import TrainCommand, train_model

    common = dict(model="ddpm", steps=1, batch_size=2, pool=2, size=32, checkpoint_every=1, threads=1,
                  channels=(32, 32))
    train_model(TrainCommand(out=tmp_path / "v", prediction="v_prediction", **common))
    kept = train_model(TrainCommand(out=tmp_path / "kept", init_from=tmp_path / "v", **{**common, "steps": 2}))
    turned = train_model(TrainCommand(out=tmp_path / "eps", init_from=tmp_path / "v", prediction="epsilon",
                                      **{**common, "steps": 2}))
    assert json.loads((kept / "config.json").read_text())["schedule"]["prediction_type"] == "v_prediction"
    assert json.loads((turned / "config.json").read_text())["schedule"]["prediction_type"] == "epsilon"
    fresh = train_model(TrainCommand(out=tmp_path / "fresh", **common))
    assert json.loads((fresh / "config.json").read_text())["schedule"]["prediction_type"] == "epsilon"
    with pytest.raises(ValueError, match="DDPM only"):
        TrainCommand(model="classifier", prediction="v_prediction")


def test_train_command_augment_reaches_the_ddpm_run_and_its_card(tmp_path):
    """``train ddpm --augment`` (the shipped FLAIR model's second stage) is recorded where the run's settings are."""
    from diffuse_core.cli import main
    from diffuse_core.train.commands import TrainCommand

    out = tmp_path / "aug"
    assert main(["train", "ddpm", "--out", str(out), "--steps", "1", "--batch-size", "2", "--pool", "2", "--size",
                 "32", "--channels", "32,32", "--threads", "1", "--checkpoint-every", "1", "--augment"]) == 0
    assert json.loads((out / "model_card.json").read_text())["training"]["augment"] is True
    plain = tmp_path / "plain"
    assert main(["train", "ddpm", "--out", str(plain), "--steps", "1", "--batch-size", "2", "--pool", "2", "--size",
                 "32", "--channels", "32,32", "--threads", "1", "--checkpoint-every", "1"]) == 0
    assert json.loads((plain / "model_card.json").read_text())["training"]["augment"] is False
    with pytest.raises(ValueError, match="DDPM only"):
        TrainCommand(model="autoencoder", augment=True)
