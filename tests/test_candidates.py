"""Candidate DDPMs compared on the same slices, each on its own intensity scale (needs the real BraTS cases)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"


@pytest.mark.slow
def test_candidates_on_their_own_scale_with_real_normal_brain_flagged(tmp_path):
    if not (BRATS.is_dir() and any(BRATS.glob("brats_*"))):
        pytest.skip(f"real BraTS cases not available at {BRATS}")
    from diffuse_core.evaluation.candidates import compare

    tiny = DenoiserConfig(channels=1, resolution=128, block_channels=(8, 16), attention_levels=(False, True),
                          norm_num_groups=4, attention_head_dim=8)
    for name in ("absolute", "percentile"):
        save_denoiser(new_denoiser(tiny, seed=0), tmp_path / name, card={"input_normalisation": name})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = compare({n: tmp_path / n for n in ("absolute", "percentile")}, str(BRATS), n_val=4, n_healthy=1,
                      steps=2, per_case=1, healthy_per_case=1, batch_size=8)
    finally:
        torch.set_num_threads(before)
    json.dumps(out)
    assert out["slices"]["brats"] == 6 and out["slices"]["brats_tumour_free"] == 6
    a, p = out["candidates"]["absolute"], out["candidates"]["percentile"]
    assert a["input_normalisation"] == "absolute" and p["input_normalisation"] == "percentile"
    for c in (a, p):
        for key in ("val_dice", "brats_dice", "brats_dice_oracle_mask", "healthy_flagged_share",
                    "brats_tumour_free_flagged_share"):
            assert 0.0 <= c[key] <= 1.0, key
    # on its own scale the percentile model's change is already on the app's; the absolute one's is magnified
    assert p["healthy_change_app_scale"] == p["healthy_change"]
    assert a["healthy_change_app_scale"] > 1.5 * a["healthy_change"] and np.isfinite(a["healthy_change_app_scale"])
    assert len(a["per_slice"]["brats_dice"]) == 6 and np.mean(a["per_slice"]["brats_dice"]) == pytest.approx(
        a["brats_dice"], abs=1e-3)


def test_paired_differences_with_a_bootstrap_interval():
    from diffuse_core.evaluation.candidates import paired

    res = {"candidates": {"a": {"per_slice": {"brats_dice": [0.5, 0.6, 0.7, 0.8]}},
                          "b": {"per_slice": {"brats_dice": [0.4, 0.5, 0.7, 0.8]}}}}
    d = paired(res, "a", "b")["brats_dice"]
    assert d["mean"] == pytest.approx(0.05) and d["n"] == 4
    assert d["ci95"][0] == pytest.approx(0.0) and d["ci95"][1] == pytest.approx(0.1)
    same = paired(res, "a", "a")["brats_dice"]
    assert same["mean"] == 0 and same["ci95"] == [0, 0]
