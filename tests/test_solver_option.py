"""The second-order solver as a user reaches it: the model card's recommended solver, ``run --solver``, and the
inversion cache that never hands one solver's x_K to the other."""

import json

import numpy as np
from PIL import Image

from diffuse_core.run.settings import default_settings
from diffuse_core.cli import main
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser
from diffuse_core.pipeline import InversionCache, run_batch

TINY = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)


class _Card:
    def __init__(self, card):
        self.card = card


def test_default_solver_comes_from_the_card():
    assert default_settings(_Card({}))["solver"] == "ddim"
    assert default_settings(_Card({"recommended_settings": {"solver": "dpm-solver++"}}))["solver"] == "dpm-solver++"
    assert default_settings(_Card({"recommended_settings": {"solver": "euler"}}))["solver"] == "ddim"


def test_run_with_the_second_order_solver(tmp_path):
    model = tmp_path / "model"
    save_denoiser(new_denoiser(TINY, seed=0), model, card={"anomaly_threshold": 0.1,
                                                           "recommended_settings": {"solver": "dpm-solver++"}})
    yy, xx = np.mgrid[:40, :40]
    Image.fromarray(np.where(np.hypot(yy - 20, xx - 20) < 16, 120, 0).astype(np.uint8)).save(tmp_path / "s.png")
    mask = np.zeros((40, 40), np.uint8)
    mask[14:24, 14:24] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    args = ["run", str(tmp_path / "s.png"), "--mask-from", str(tmp_path / "m.png"), "--k", "200", "--steps", "4",
            "--model", str(model), "--device", "cpu", "--precision", "fp32"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0                       # the card's choice
    assert main(args + ["--solver", "ddim", "--out", str(tmp_path / "b")]) == 0
    assert main(args + ["--solver", "dpm-solver++", "--out", str(tmp_path / "c")]) == 0
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert a["solver"] == "dpm-solver++" and b["solver"] == "ddim"
    assert a["network_calls"] == b["network_calls"] == 8                          # same calls either way
    cf_a, cf_b, cf_c = (np.asarray(Image.open(tmp_path / d / "counterfactual.png"), float) for d in "abc")
    assert np.array_equal(cf_a, cf_c)            # the card's choice is the second-order walk, byte for byte
    assert np.abs(cf_a - cf_b).max() >= 2        # and not DDIM's: apart by more than the PNG's rounding


def test_inversion_cache_keeps_solvers_apart():
    den = new_denoiser(TINY, seed=0)
    img = np.full((1, 1, 32, 32), -1.0, np.float32)
    img[..., 6:26, 6:26] = 0.2
    mask = np.zeros((1, 32, 32), np.float32)
    mask[:, 12:20, 12:20] = 1
    cache = InversionCache()
    first = run_batch(den, img, mask, k=200, steps=4, solver="ddim", inversion_cache=cache, precision="fp32")
    second = run_batch(den, img, mask, k=200, steps=4, solver="dpm-solver++", inversion_cache=cache, precision="fp32")
    again = run_batch(den, img, mask, k=200, steps=4, solver="dpm-solver++", inversion_cache=cache, precision="fp32")
    assert not first.inversion_reused and not second.inversion_reused and again.inversion_reused
    assert second.network_calls == 8 and again.network_calls == 4
    assert np.array_equal(second.counterfactuals, again.counterfactuals)
