"""The sampler's formulas against diffusers' schedulers, and its behaviour with an exact denoiser."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from diffuse_core.core.sampler import (CallCounter, ddim_invert, iter_ddim_inversion, solver_order, ddim_inversion_step, ddpm_posterior_std, dif_fuse,
                                  generalized_step, iter_ddim_sampling, iter_ddpm_sampling, iter_dif_fuse,
                                  iter_repaint, iter_two_chain, predict_x0, repaint_path, run_to_end)
from diffuse_core.core.schedule import NoiseSchedule

SCHED = NoiseSchedule()


def _diffusers_ddim(clip: bool) -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         clip_sample=clip, set_alpha_to_one=True, timestep_spacing="trailing")


def test_betas_match_diffusers():
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    assert torch.allclose(SCHED.alphas_cumprod.float(), ref.alphas_cumprod, atol=0, rtol=1e-6)
    assert SCHED.betas[0] == pytest.approx(1e-4) and SCHED.betas[-1] == pytest.approx(0.02)


@pytest.mark.parametrize("k,steps", [(1000, 50), (1000, 10), (500, 50), (500, 100), (37, 50)])
def test_respaced_timesteps_end_at_k(k, steps):
    ts = SCHED.respaced_timesteps(k, steps)
    assert ts[-1] == k - 1
    assert len(ts) == min(k, steps)
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[0] >= 0


def test_respacing_matches_diffusers_trailing():
    ref = _diffusers_ddim(False)
    ref.set_timesteps(50)
    assert sorted(ref.timesteps.tolist()) == SCHED.respaced_timesteps(1000, 50)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("num_steps", [50, 20])
def test_ddim_and_ddpm_steps_match_diffusers(eta, clip, num_steps):
    ref = _diffusers_ddim(clip)
    ref.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(1)
    ts = SCHED.respaced_timesteps(1000, num_steps)
    for t in [ts[-1], ts[len(ts) // 2], ts[1], ts[0]]:
        x = torch.randn(2, 1, 8, 8, generator=g)
        eps = torch.randn(2, 1, 8, 8, generator=g)
        noise = torch.randn(2, 1, 8, 8, generator=g)
        i = ts.index(t)
        ab, ab_prev = SCHED.alpha_bar(t), SCHED.alpha_bar(ts[i - 1] if i > 0 else -1)
        out = ref.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise)
        x0, eps2 = predict_x0(x, eps, ab, clip)
        sigma = eta * ddpm_posterior_std(ab, ab_prev)
        mine = generalized_step(x0, eps2, ab_prev, sigma, noise)
        assert torch.allclose(x0, out.pred_original_sample, atol=1e-5, rtol=1e-5)
        assert torch.allclose(mine, out.prev_sample, atol=1e-5, rtol=1e-5), (t, (mine - out.prev_sample).abs().max())


@pytest.mark.parametrize("num_steps", [50, 10])
def test_inversion_step_matches_diffusers(num_steps):
    ref = DDIMInverseScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                               clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    ref.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(2)
    ratio = 1000 // num_steps
    for t_to in ref.timesteps.tolist()[1:]:
        x = torch.randn(1, 1, 8, 8, generator=g)
        eps = torch.randn(1, 1, 8, 8, generator=g)
        t_from = t_to - ratio
        out = ref.step(eps, t_to, x).prev_sample
        mine = ddim_inversion_step(x, eps, SCHED.alpha_bar(t_from), SCHED.alpha_bar(t_to))
        assert torch.allclose(mine, out, atol=1e-5, rtol=1e-5)


# ---- an exact denoiser for a known data distribution --------------------------------------------------------------
# Data x0 ~ N(mu, s^2) per pixel. Then x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab) and the ideal epsilon prediction is
# E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab). With s = 0 (all data equal to mu) it is exact.

def exact_eps_model(mu: torch.Tensor, s: float):
    def eps(x, t):
        ab = SCHED.alpha_bar(t)
        return math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * s * s + 1 - ab)
    return eps


def _mu(size=16):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return (0.6 * torch.exp(-(xx ** 2 + yy ** 2) * 3) - 0.3)[None, None]


@pytest.mark.parametrize("k,steps", [(500, 50), (1000, 100), (250, 25)])
def test_inversion_then_ddim_reconstructs_input(k, steps):
    mu = _mu()
    model = exact_eps_model(mu, 0.0)
    ts = SCHED.respaced_timesteps(k, steps)
    x_k = ddim_invert(model, SCHED, mu, ts)
    assert not torch.allclose(x_k, mu, atol=1e-2)  # it really was noised
    rec = run_to_end(iter_ddim_sampling(model, SCHED, x_k, ts))
    assert (rec - mu).abs().max() < 1e-4


def test_inversion_round_trip_for_gaussian_data():
    # a non-degenerate distribution: inversion + DDIM reconstructs a typical sample closely with enough steps
    mu, s = _mu(), 0.2
    model = exact_eps_model(mu, s)
    x0 = mu + s * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    ts = SCHED.respaced_timesteps(500, 500)
    rec = run_to_end(iter_ddim_sampling(model, SCHED, ddim_invert(model, SCHED, x0, ts), ts, clip_x0=False))
    # the only mismatch left is DDIM inversion's usual approximation (eps taken at the level a step starts from)
    assert (rec - x0).abs().max() < 1e-2
    assert (rec - x0).abs().mean() < 3e-3


def test_zero_mask_equals_ddim_and_one_mask_equals_ddpm():
    mu = _mu()
    model = exact_eps_model(mu, 0.1)
    ts = SCHED.respaced_timesteps(500, 20)
    x_k = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    zero, one = torch.zeros_like(mu), torch.ones_like(mu)
    fused0 = dif_fuse(model, SCHED, x_k, zero, ts, torch.Generator().manual_seed(7))
    ddim = run_to_end(iter_ddim_sampling(model, SCHED, x_k, ts))
    assert torch.equal(fused0, ddim)
    fused1 = dif_fuse(model, SCHED, x_k, one, ts, torch.Generator().manual_seed(7))
    ddpm = run_to_end(iter_ddpm_sampling(model, SCHED, x_k, ts, torch.Generator().manual_seed(7)))
    assert torch.equal(fused1, ddpm)
    assert not torch.allclose(ddim, ddpm, atol=1e-3)  # the two differ, so the test above means something


def test_half_mask_fuses_at_every_step_not_only_at_the_end():
    mu = _mu()
    model = exact_eps_model(mu, 0.1)
    ts = SCHED.respaced_timesteps(500, 20)
    x_k = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros_like(mu)
    mask[..., :, :8] = 1
    fused = dif_fuse(model, SCHED, x_k, mask, ts, torch.Generator().manual_seed(7))
    ddim = run_to_end(iter_ddim_sampling(model, SCHED, x_k, ts))
    ddpm = run_to_end(iter_ddpm_sampling(model, SCHED, x_k, ts, torch.Generator().manual_seed(7)))
    end_only = mask * ddpm + (1 - mask) * ddim
    outside = mask == 0
    # the model is pixel-wise, so the outside follows the DDIM chain exactly ...
    assert torch.allclose(fused[outside], ddim[outside], atol=1e-6)
    # ... and the inside is the DDPM proposal taken from the fused chain
    assert torch.allclose(fused[~outside], end_only[~outside], atol=1e-6)


def test_paper_variant_makes_one_call_per_step_two_chain_makes_two():
    mu = _mu()
    ts = SCHED.respaced_timesteps(500, 25)
    mask = torch.zeros_like(mu)
    mask[..., 4:9, 4:9] = 1
    counter = CallCounter(exact_eps_model(mu, 0.1))
    steps = list(iter_dif_fuse(counter, SCHED, mu, mask, ts, torch.Generator().manual_seed(0)))
    assert counter.calls == len(ts) == len(steps) == 25
    counter2 = CallCounter(exact_eps_model(mu, 0.1))
    list(iter_two_chain(counter2, SCHED, mu, mask, ts, torch.Generator().manual_seed(0)))
    assert counter2.calls == 2 * len(ts)
    counter3 = CallCounter(exact_eps_model(mu, 0.1))
    ddim_invert(counter3, SCHED, mu, ts)
    assert counter3.calls == len(ts)


def test_sampler_steps_report_progress():
    mu = _mu()
    ts = SCHED.respaced_timesteps(500, 10)
    steps = list(iter_dif_fuse(exact_eps_model(mu, 0.1), SCHED, mu, torch.ones_like(mu), ts,
                               torch.Generator().manual_seed(0)))
    assert [s.index for s in steps] == list(range(10))
    assert [s.timestep for s in steps] == sorted(ts, reverse=True)
    assert all(s.total == 10 and s.x_t.shape == mu.shape and s.x0_pred.shape == mu.shape for s in steps)


def test_same_seed_same_bytes_different_seed_differs():
    mu = _mu()
    model = exact_eps_model(mu, 0.2)
    ts = SCHED.respaced_timesteps(500, 10)
    m = torch.ones_like(mu)
    a = dif_fuse(model, SCHED, mu, m, ts, torch.Generator().manual_seed(5))
    b = dif_fuse(model, SCHED, mu, m, ts, torch.Generator().manual_seed(5))
    c = dif_fuse(model, SCHED, mu, m, ts, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_repaint_keeps_known_region_and_path_resamples():
    assert repaint_path(4, 1, 1) == [3, 2, 1, 0]
    path = repaint_path(10, 5, 3)
    assert path == [9, 8, 7, 6, 5] * 3 + [4, 3, 2, 1, 0]
    mu = _mu()
    model = exact_eps_model(mu, 0.0)
    mask = torch.zeros_like(mu)
    mask[..., 4:9, 4:9] = 1
    known = mu.clone()
    known[mask.bool()] = 0.9  # a "lesion" to inpaint away
    ts = SCHED.respaced_timesteps(1000, 20)
    out = run_to_end(iter_repaint(model, SCHED, known, mask, ts, torch.Generator().manual_seed(0), 5, 2))
    assert torch.allclose(out[mask == 0], known[mask == 0], atol=1e-6)
    assert (out[mask == 1] - mu[mask == 1]).abs().max() < 1e-3  # the exact model redraws the data mean


@pytest.mark.parametrize("bad", [torch.zeros(1, 8, 8), torch.full((1, 1, 8, 8), float("nan"))])
def test_bad_images_raise(bad):
    with pytest.raises(ValueError):
        ddim_invert(exact_eps_model(torch.zeros(1, 1, 8, 8), 0.1), SCHED, bad, [9, 19])


def test_bad_masks_raise():
    x = torch.zeros(1, 1, 8, 8)
    model = exact_eps_model(x, 0.1)
    with pytest.raises(ValueError, match="does not match"):
        dif_fuse(model, SCHED, x, torch.zeros(1, 1, 4, 4), [9, 19])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dif_fuse(model, SCHED, x, torch.full((1, 1, 8, 8), 2.0), [9, 19])
    from diffuse_core.run.settings import settings_for

    with pytest.raises(ValueError, match="unknown variant 'nope'"):      # walks are named in one place: WALKS
        settings_for({}, variant="nope")


@pytest.mark.parametrize("k,steps,match", [(0, 10, "K must"), (1001, 10, "K must"), (500, 0, "steps"),
                                           (500, -3, "steps"), (2.5, 10, "K must")])
def test_bad_noise_levels_raise(k, steps, match):
    with pytest.raises(ValueError, match=match):
        SCHED.respaced_timesteps(k, steps)


def test_posterior_std_is_zero_at_the_last_step_and_positive_before():
    assert ddpm_posterior_std(SCHED.alpha_bar(9), 1.0) == 0.0
    assert ddpm_posterior_std(SCHED.alpha_bar(19), SCHED.alpha_bar(9)) > 0
    # with consecutive timesteps it is the DDPM posterior variance beta_tilde_t of Ho et al.
    t = 400
    beta_tilde = (1 - SCHED.alpha_bar(t - 1)) / (1 - SCHED.alpha_bar(t)) * float(SCHED.betas[t])
    assert ddpm_posterior_std(SCHED.alpha_bar(t), SCHED.alpha_bar(t - 1)) ** 2 == pytest.approx(beta_tilde, rel=1e-9)
    assert np.isfinite(ddpm_posterior_std(SCHED.alpha_bar(999), SCHED.alpha_bar(0)))


# --- second order (DPM-Solver++ 2M) for the deterministic updates ------------------------------------------------

def _smooth_model(x, t):
    # a made-up but smooth, time-dependent noise predictor that keeps the walk bounded
    w = torch.tensor([[[[0.0, 0.1, 0.0], [0.1, 0.4, 0.1], [0.0, 0.1, 0.0]]]])
    return torch.nn.functional.conv2d(x, w, padding=1) * (0.5 + t / 2000) + 0.05 * math.sin(t / 50)


@pytest.mark.parametrize("k,steps", [(500, 10), (500, 25), (1000, 20), (300, 7)])
def test_second_order_walk_matches_diffusers_dpm_solver_2m(k, steps):
    ts = SCHED.respaced_timesteps(k, steps)
    x_k = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    ours = run_to_end(iter_ddim_sampling(_smooth_model, SCHED, x_k, ts, clip_x0=False, order=2))
    ref = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                      beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2,
                                      solver_type="midpoint", final_sigmas_type="zero")
    ref.set_timesteps(timesteps=sorted(ts, reverse=True))
    x = x_k.clone()
    for t in ref.timesteps:
        x = ref.step(_smooth_model(x, int(t)), t, x).prev_sample
    assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4)
    ddim = run_to_end(iter_ddim_sampling(_smooth_model, SCHED, x_k, ts, clip_x0=False, order=1))
    assert not torch.allclose(ddim, x, atol=1e-3)   # first order is a different walk: the match above means something


def test_second_order_first_steps_are_ddim():
    # the first step of a walk has no earlier prediction, and the inversion's first two touch the clean image
    mu = _mu()
    model = exact_eps_model(mu, 0.2)
    x0 = mu + 0.2 * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    ts = SCHED.respaced_timesteps(500, 10)
    inv1 = list(iter_ddim_inversion(model, SCHED, x0, ts, order=1))
    inv2 = list(iter_ddim_inversion(model, SCHED, x0, ts, order=2))
    assert torch.equal(inv1[0].x_t, inv2[0].x_t)
    assert torch.allclose(inv1[1].x_t, inv2[1].x_t, atol=1e-6)
    assert not torch.allclose(inv1[-1].x_t, inv2[-1].x_t, atol=1e-4)
    down1 = list(iter_ddim_sampling(model, SCHED, inv1[-1].x_t, ts, order=1))
    down2 = list(iter_ddim_sampling(model, SCHED, inv1[-1].x_t, ts, order=2))
    assert torch.allclose(down1[0].x_t, down2[0].x_t, atol=1e-6)
    assert not torch.allclose(down1[-1].x_t, down2[-1].x_t, atol=1e-4)


@pytest.mark.parametrize("steps", [25, 50])
def test_second_order_round_trip_is_closer_than_ddim(steps):
    # Gaussian data with its exact noise predictor: inversion + walk back should return x0; the error left is the
    # solvers' discretisation, which the second order must shrink at the same number of network calls
    mu, s = _mu(), 0.2
    model = exact_eps_model(mu, s)
    x0 = mu + s * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    ts = SCHED.respaced_timesteps(500, steps)
    err = {}
    for order in (1, 2):
        counter = CallCounter(model)
        x_k = run_to_end(iter_ddim_inversion(counter, SCHED, x0, ts, order=order))
        rec = run_to_end(iter_ddim_sampling(counter, SCHED, x_k, ts, clip_x0=False, order=order))
        assert counter.calls == 2 * steps
        err[order] = float((rec - x0).abs().mean())
    assert err[2] < 0.75 * err[1]


def test_second_order_dif_fuse_keeps_algorithm_1():
    # one call per step; zero mask = the 2M walk; one mask = the paper's DDPM walk (the inside is never changed)
    mu = _mu()
    model = exact_eps_model(mu, 0.1)
    ts = SCHED.respaced_timesteps(500, 12)
    x_k = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    counter = CallCounter(model)
    fused0 = run_to_end(iter_dif_fuse(counter, SCHED, x_k, torch.zeros_like(mu), ts, torch.Generator().manual_seed(7),
                                      order=2))
    assert counter.calls == len(ts)
    assert torch.equal(fused0, run_to_end(iter_ddim_sampling(model, SCHED, x_k, ts, order=2)))
    fused1 = run_to_end(iter_dif_fuse(model, SCHED, x_k, torch.ones_like(mu), ts, torch.Generator().manual_seed(7),
                                      order=2))
    ddpm = run_to_end(iter_ddpm_sampling(model, SCHED, x_k, ts, torch.Generator().manual_seed(7)))
    assert torch.equal(fused1, ddpm)


def test_unknown_solver_or_order_raises():
    assert solver_order("ddim") == 1 and solver_order("dpm-solver++") == 2
    with pytest.raises(ValueError, match="unknown solver"):
        solver_order("euler")
    with pytest.raises(ValueError, match="order must be"):
        list(iter_ddim_sampling(_smooth_model, SCHED, torch.zeros(1, 1, 8, 8), [10, 20], order=3))


@pytest.mark.parametrize("steps", [10, 25])
def test_refined_inversion_returns_the_walk_back_to_its_input(steps):
    # eq. 8 takes eps where a step starts, the walk back where it arrives: the round trip misses x0. Each fixed-point
    # refinement re-solves the step the walk back will take; converged, the DDIM walk back lands on x0
    mu, s = _mu(), 0.2
    model = exact_eps_model(mu, s)
    x0 = (mu + s * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))).double()
    ts = SCHED.respaced_timesteps(500, steps)
    err = {}
    for refine in (0, 1, 16):
        counter = CallCounter(model)
        x_k = run_to_end(iter_ddim_inversion(counter, SCHED, x0, ts, refine=refine, clip_x0=False))
        assert counter.calls == steps * (1 + refine)
        rec = run_to_end(iter_ddim_sampling(model, SCHED, x_k, ts, clip_x0=False))
        err[refine] = float((rec - x0).abs().mean())
    assert err[1] < 0.5 * err[0]
    assert err[16] < 1e-6 < err[0]                 # geometric: each refinement shrinks the miss


def test_refined_inversion_matches_the_clipped_walk_back():
    # with the walk back's clipping (x0_hat in [-1, 1]) the refinement inverts the clipped step: an image at the
    # clip (background at -1) comes back, through the Dif-fuse walk with an empty mask (pure DDIM outside)
    mu = _mu()
    model = exact_eps_model(mu, 0.3)
    x0 = mu.clone().double()
    x0[..., :4, :] = -1.0
    ts = SCHED.respaced_timesteps(500, 20)
    x_k = run_to_end(iter_ddim_inversion(model, SCHED, x0, ts, refine=16))
    rec = run_to_end(iter_dif_fuse(model, SCHED, x_k, torch.zeros_like(x0), ts, torch.Generator().manual_seed(0)))
    assert float((rec - x0).abs().max()) < 1e-5
    plain = run_to_end(iter_dif_fuse(model, SCHED, ddim_invert(model, SCHED, x0, ts), torch.zeros_like(x0), ts,
                                     torch.Generator().manual_seed(0)))
    assert float((plain - x0).abs().max()) > 1e-3


def test_refined_solver_names_and_limits():
    from diffuse_core.core.sampler import solver_refinements

    assert solver_order("ddim-refined") == 1 and solver_refinements("ddim-refined") == 1
    assert solver_refinements("ddim") == 0 and solver_refinements("dpm-solver++") == 0
    with pytest.raises(ValueError, match="refine"):
        list(iter_ddim_inversion(_smooth_model, SCHED, torch.zeros(1, 1, 8, 8), [10, 20], order=2, refine=1))
    with pytest.raises(ValueError, match="refine"):
        list(iter_ddim_inversion(_smooth_model, SCHED, torch.zeros(1, 1, 8, 8), [10, 20], refine=-1))
