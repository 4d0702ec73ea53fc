"""Uncertainty (issue: teaching v2, item 2): S draws of Dif-fuse as one batch with the shipped model."""

import os

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def denoiser():
    from diffuse_core.models.denoiser import load_denoiser

    return load_denoiser(os.path.join(ROOT, "assets", "ddpm"))


def _slice():
    from diffuse_core.data.synthbrain import generate_slice, sample_seed
    from diffuse_core.evaluation.baselines import oracle_masks

    s = generate_slice(sample_seed("test", 0, 30), modalities=("flair",), size=128, healthy=False)
    return s, oracle_masks(s.lesion_mask[None], s.brain_mask[None])[0]


@pytest.mark.slow
def test_draws_differ_inside_the_mask_far_more_than_outside_with_one_call_per_step(denoiser):
    from diffuse_core.pipeline import UncertaintyResult, iter_uncertainty, run_counterfactual

    s, mask = _slice()
    steps = 5
    items = list(iter_uncertainty(denoiser, s.image, mask, samples=4, brain_mask=s.brain_mask, k=300, steps=steps,
                                  seed=3))
    r = items[-1]
    assert isinstance(r, UncertaintyResult) and r.samples.shape == (4, 1, 128, 128)
    assert r.network_calls == 2 * steps                       # inversion once, then the 4 draws together
    assert sum(1 for i in items[:-1] if i.phase == "sample") == steps
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(r.samples[i] - r.samples[j]).max() > 0.1           # distinct draws
    inside = mask.astype(bool)
    outside = s.brain_mask.astype(bool) & ~inside
    assert r.std[inside].mean() > 4 * r.std[outside].mean()
    assert np.allclose(r.mean, r.samples.mean(axis=0), atol=1e-6)
    assert (r.std[~s.brain_mask.astype(bool)] == 0).all()
    # each draw is a Dif-fuse counterfactual: same shape of change as a single run, and the seed fixes the draws
    again = list(iter_uncertainty(denoiser, s.image, mask, samples=4, brain_mask=s.brain_mask, k=300, steps=steps,
                                  seed=3))[-1]
    assert np.array_equal(again.samples, r.samples)
    single = run_counterfactual(denoiser, s.image, mask, brain_mask=s.brain_mask, k=300, steps=steps, seed=3)
    assert abs(np.abs(single.counterfactual - s.image).mean() - np.abs(r.samples[0] - s.image).mean()) < 0.05
    with pytest.raises(ValueError, match="2 to 32"):
        next(iter_uncertainty(denoiser, s.image, mask, samples=1))


@pytest.mark.slow
def test_the_app_says_how_long_before_it_starts_and_reuses_the_inversion(monkeypatch):
    from diffuse_core.studio.library import load_library_case
    from diffuse_core.studio.runs import INVERSION_CACHE
    from diffuse_core.studio import uncertainty
    from diffuse_core.studio.uncertainty import run_uncertainty

    lc = load_library_case("teaching/default/case01_flair_glioma")
    items = list(run_uncertainty(lc, "acat", k=300, steps=4, seed=0, percentile=90, samples=3))
    # the estimate is the run's calls priced by the measured cost of one call: 4 at one slice (the inversion) and
    # 4 at three slices (the draws walking back together), the figure the result carries too
    device = uncertainty.model_device()
    denoiser = uncertainty.MODELS.denoiser(device, lc.case.modality)
    per_call = {n: uncertainty.call_seconds(denoiser, n, device) for n in (1, 3)}
    assert items[0]["kind"] == "estimate" and items[0]["seconds"] == pytest.approx(4 * (per_call[1] + per_call[3]))
    assert items[-1]["seconds_estimated"] == items[0]["seconds"] and min(per_call.values()) > 0
    assert items[1]["kind"] == "mask" and items[-1]["kind"] == "result"
    first = items[-1]["result"]
    assert first.network_calls == 8 and first.samples.shape[0] == 3
    assert len(INVERSION_CACHE) >= 1
    second = list(run_uncertainty(lc, "acat", k=300, steps=4, seed=1, percentile=90, samples=3))[-1]["result"]
    assert second.inversion_reused and second.network_calls == 4
    with pytest.raises(ValueError, match="2 to 8"):
        next(run_uncertainty(lc, "acat", samples=9))
