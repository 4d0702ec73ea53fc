"""Dif-fuse end to end with a small real (untrained) UNet: shapes, call counts, seeds, bad inputs, save/load."""

import json

import numpy as np
import pytest
import torch

from diffuse_core.models.denoiser import DenoiserConfig, load_denoiser, new_denoiser, save_denoiser
from diffuse_core.pipeline import CounterfactualResult, brain_mask_from_image, iter_counterfactual, run_counterfactual
from diffuse_core.core.sampler import SamplerStep

TINY = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)


@pytest.fixture(scope="module")
def tiny_denoiser():
    return new_denoiser(TINY, seed=0)


def _disc_image(size=32):
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = np.where(r < size * 0.4, 0.2, -1.0).astype(np.float32)
    img[(np.abs(yy - 12) < 3) & (np.abs(xx - 14) < 3)] = 0.9  # a bright "lesion"
    return img[None]


def test_run_counterfactual_end_to_end(tiny_denoiser):
    img = _disc_image()
    mask = np.zeros((32, 32), np.uint8)
    mask[8:17, 10:19] = 1
    steps = []
    res = run_counterfactual(tiny_denoiser, img, mask, callback=steps.append, k=200, steps=5, seed=0,
                             precision="fp32")
    assert isinstance(res, CounterfactualResult)
    assert res.counterfactual.shape == (1, 32, 32) and res.anomaly.shape == (32, 32)
    assert np.isfinite(res.counterfactual).all() and res.counterfactual.min() >= -1 and res.counterfactual.max() <= 1
    assert res.network_calls == 10  # 5 inversion + 5 sampling calls, counted
    assert [s.phase for s in steps] == ["invert"] * 5 + ["sample"] * 5
    assert all(isinstance(s, SamplerStep) for s in steps)
    # outside the brain the input is kept and the anomaly map is zero
    outside = ~res.brain_mask.astype(bool)
    assert np.array_equal(res.counterfactual[0][outside], img[0][outside])
    assert res.anomaly[outside].max() == 0
    s = res.summary()
    assert s["k"] == 200 and s["steps"] == 5 and s["variant"] == "paper" and s["network_calls"] == 10
    json.dumps(s)


def test_the_anomaly_map_is_opened_and_closed_with_the_cards_kernel(tiny_denoiser):
    from dataclasses import replace

    from diffuse_core.core.anomaly import clean_anomaly_map

    img, mask = _disc_image(), np.zeros((32, 32), np.uint8)
    mask[8:17, 10:19] = 1
    maps = {}
    for kernel in (3, 5):
        den = replace(tiny_denoiser, card={"anomaly_kernel": kernel})
        res = run_counterfactual(den, img, mask, k=200, steps=4, seed=0, precision="fp32")
        diff = np.abs(res.image - res.counterfactual).mean(axis=0)
        assert np.allclose(res.anomaly, clean_anomaly_map(diff, kernel) * res.brain_mask, atol=1e-6)
        maps[kernel] = res.anomaly
    assert not np.allclose(maps[3], maps[5])      # same counterfactual (same seed), another kernel


def test_two_chain_variant_counts_two_calls_per_step(tiny_denoiser):
    img = _disc_image()
    res = run_counterfactual(tiny_denoiser, img, np.ones((32, 32)), k=100, steps=4, variant="two-chain",
                             precision="fp32")
    assert res.network_calls == 4 + 2 * 4


def test_seed_reproducible(tiny_denoiser):
    img, mask = _disc_image(), np.ones((32, 32))
    a = run_counterfactual(tiny_denoiser, img, mask, k=100, steps=3, seed=1, precision="fp32")
    b = run_counterfactual(tiny_denoiser, img, mask, k=100, steps=3, seed=1, precision="fp32")
    c = run_counterfactual(tiny_denoiser, img, mask, k=100, steps=3, seed=2, precision="fp32")
    assert np.array_equal(a.counterfactual, b.counterfactual)
    assert not np.array_equal(a.counterfactual, c.counterfactual)


def test_brain_mask_fills_dark_interior():
    img = _disc_image()
    img[0, 14:18, 14:18] = -1.0  # a dark ventricle inside the brain
    bm = brain_mask_from_image(img)
    assert bm[15, 15] == 1 and bm[0, 0] == 0


@pytest.mark.parametrize("image,mask,kwargs,match", [
    (np.zeros((1, 1, 32, 32)), np.zeros((32, 32)), {}, "2-D slice"),
    (np.zeros((3, 32, 32)), np.zeros((32, 32)), {}, "channel"),
    (np.zeros((1, 16, 16)), np.zeros((16, 16)), {}, "32x32"),
    (np.full((1, 32, 32), np.nan), np.zeros((32, 32)), {}, "NaN"),
    (np.full((1, 32, 32), 40.0), np.zeros((32, 32)), {}, r"\[-1, 1\]"),
    (np.zeros((1, 32, 32)), np.zeros((16, 16)), {}, "differ in size"),
    (np.zeros((1, 32, 32)), np.full((32, 32), 3.0), {}, "mask"),
    (np.zeros((1, 32, 32)), np.zeros((32, 32)), {"k": 0}, "K must"),
    (np.zeros((1, 32, 32)), np.zeros((32, 32)), {"k": 5000}, "K must"),
    (np.zeros((1, 32, 32)), np.zeros((32, 32)), {"steps": 0}, "steps"),
    (np.zeros((1, 32, 32)), np.zeros((32, 32)), {"variant": "x"}, "variant"),
])
def test_bad_inputs_raise_clear_errors(tiny_denoiser, image, mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        next(iter_counterfactual(tiny_denoiser, image, mask, **kwargs))


def test_save_and_load_denoiser_round_trip(tmp_path, tiny_denoiser):
    save_denoiser(tiny_denoiser, tmp_path / "m", card={"note": "test"})
    back = load_denoiser(tmp_path / "m")
    assert back.config == tiny_denoiser.config and back.card == {"note": "test", "schema": 2}   # as given, one layout
    for (k1, v1), (k2, v2) in zip(tiny_denoiser.unet.state_dict().items(), back.unet.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_missing_and_corrupt_weights_raise(tmp_path, tiny_denoiser):
    with pytest.raises(FileNotFoundError, match="train ddpm"):
        load_denoiser(tmp_path / "nothing")
    save_denoiser(tiny_denoiser, tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_denoiser(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config"):
        load_denoiser(tmp_path / "m")


def test_a_rerun_with_another_mask_reuses_the_inversion_and_gives_the_same_bytes(tiny_denoiser):
    """Issue teaching v2, item 3: the inversion depends only on the image, K and the steps, so a rerun with another
    mask (another percentile, a drawn mask) makes half the network calls and gives what a fresh run gives."""
    from diffuse_core.pipeline import InversionCache

    img = np.full((1, 32, 32), -1.0, np.float32)
    img[0, 6:26, 6:26] = 0.1
    img[0, 12:18, 12:18] = 0.8
    m1, m2 = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)
    m1[10:20, 10:20], m2[8:22, 8:22] = 1, 1
    cache = InversionCache(size=2)
    kw = {"k": 200, "steps": 4, "seed": 3, "precision": "fp32"}
    first = run_counterfactual(tiny_denoiser, img, m1, inversion_cache=cache, **kw)
    assert not first.inversion_reused and first.network_calls == 8 and len(cache) == 1
    again = run_counterfactual(tiny_denoiser, img, m2, inversion_cache=cache, **kw)
    fresh = run_counterfactual(tiny_denoiser, img, m2, **kw)
    assert again.inversion_reused and again.network_calls == 4 and fresh.network_calls == 8
    assert np.array_equal(again.counterfactual, fresh.counterfactual)
    assert np.array_equal(again.anomaly, fresh.anomaly)
    assert again.summary()["inversion_reused"] is True and again.timings["inversion"] == 0
    other_k = run_counterfactual(tiny_denoiser, img, m2, inversion_cache=cache, **{**kw, "k": 100})
    assert not other_k.inversion_reused and len(cache) == 2
    run_counterfactual(tiny_denoiser, img + 0.01, m2, inversion_cache=cache, **kw)      # another image: a miss
    assert len(cache) == 2                                                                # the oldest was dropped


def test_refined_inversion_costs_one_call_more_per_inversion_step_and_brings_the_walk_back_closer(tiny_denoiser):
    """--solver ddim-refined: one fixed-point refinement per inversion step (a call each), its own cache entry, and
    with an empty mask (pure DDIM outside) a round trip nearer the input than the paper's eq. 8."""
    from diffuse_core.pipeline import InversionCache

    img = _disc_image()
    empty = np.zeros((32, 32), np.float32)
    kw = {"k": 300, "steps": 6, "seed": 0, "precision": "fp32", "paste_background": False}
    cache = InversionCache(size=4)
    plain = run_counterfactual(tiny_denoiser, img, empty, inversion_cache=cache, **kw)
    refined = run_counterfactual(tiny_denoiser, img, empty, inversion_cache=cache, solver="ddim-refined", **kw)
    assert plain.network_calls == 12 and refined.network_calls == 6 + 6 + 6
    assert not refined.inversion_reused and len(cache) == 2
    assert np.abs(refined.counterfactual - img).mean() < 0.5 * np.abs(plain.counterfactual - img).mean()
