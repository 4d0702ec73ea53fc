"""One assembly of a run: ``diffuse-studio run`` and the app's Run button give the same result for the same file and
settings, and a stacked (batched) run gives each slice what a run of its own gives, up to the noise inside m."""

from pathlib import Path

import numpy as np
import pytest

from diffuse_core.models.registry import is_installed, model_dir_for

pytestmark = pytest.mark.skipif(not (is_installed(model_dir_for("ddpm", None)) and
                                     is_installed(model_dir_for("classifier", None))),
                                reason="the shipped models are not installed")


def _flair_slice(tmp_path: Path) -> Path:
    """A SynthBrain FLAIR slice with a lesion, written as NIfTI (what a user uploads or runs)."""
    import nibabel as nib

    from diffuse_core.data.synthbrain import generate_slice

    s = generate_slice(seed=11, size=128, lesion_type="glioma")
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(s.image, np.float32)[0][:, :, None], np.eye(4)), str(path))
    return path


def test_cli_and_app_give_the_same_result(tmp_path):
    from diffuse_core.run.files import run_file
    from diffuse_core.studio.runs import run_case
    from diffuse_core.studio.uploads import load_upload_case
    from diffuse_core.studio.guard import RunGuard

    path = _flair_slice(tmp_path)
    summary = run_file(path, tmp_path / "cli", k=40, steps=3, seed=5, device="cpu")
    lc = load_upload_case([str(path)])
    items = list(run_case(lc, mask_from="acat", k=40, steps=3, seed=5, guard=RunGuard(None), reuse_inversion=False))
    app = items[-1]
    assert app["kind"] == "result"
    r = app["result"]
    from PIL import Image

    from diffuse_core.core.anomaly import binarize

    full = lc.case.full_resolution(r)                          # what the app shows and exports, at the input's size
    cli_mask = np.asarray(Image.open(tmp_path / "cli" / "mask.png")) > 0
    np.testing.assert_array_equal(cli_mask, full.mask > 0)
    assert summary["mask_share"] == pytest.approx(float(r.mask[r.brain_mask > 0].mean()))
    ours = r.summary()
    for key in ("mean_abs_change_in_brain", "mask_fraction_of_brain", "network_calls", "k", "steps"):
        assert summary[key] == pytest.approx(ours[key], abs=1e-7), key
    assert app["threshold"] == summary["threshold"]
    assert summary["anomaly_pixels"] == int(binarize(full.anomaly, app["threshold"]).sum())
    assert (app["verdict"] is None) == (summary["verdict"] is None)
    if summary["verdict"] is not None:
        assert app["verdict"].to_dict() == summary["verdict"]
    assert set(summary["timings"]) == set(app["timings"]) == {"saliency", "inversion", "sampling", "post", "total"}


@pytest.mark.slow
def test_a_stack_is_the_single_run_batched(tmp_path):
    from diffuse_core.cases import case_from_normalized
    from diffuse_core.data.synthbrain import generate_slice
    from diffuse_core.run.assembly import run_one, run_stack
    from diffuse_core.run.models import load_run_models
    from diffuse_core.run.settings import settings_for

    models = load_run_models("mri", device="cpu")
    settings = settings_for(models.card, k=40, steps=3, seed=2)
    cases = [case_from_normalized(np.clip(generate_slice(seed=s, lesion_type="glioma").image, -1, 1))
             for s in (3, 4, 5)]
    seen = []
    stacked = dict(run_stack(cases, models, settings, batch_size=2, progress=lambda d, t: seen.append((d, t))))
    assert sorted(stacked) == [0, 1, 2] and seen == [(2, 3), (3, 3)]
    alone = dict(run_stack(cases[2:], models, settings, batch_size=1))[0]
    for i, case in enumerate(cases):
        one = run_one(case, models, settings)
        if i == 2:   # a batch of one is the single run, byte for byte
            np.testing.assert_array_equal(alone.result.mask, one.result.mask)
            np.testing.assert_array_equal(alone.result.counterfactual, one.result.counterfactual)
            assert alone.timings.keys() == one.timings.keys() and alone.threshold == one.threshold
        # in a batch, ACAT's latent shift runs on other convolution kernels: its maps drift within the numerical
        # sensitivity of the optimisation (most on a slice the classifier finds nearly healthy), so the region may
        # move by a rim; DDIM outside m is deterministic, so the counterfactual there stays put
        a, b = stacked[i].result.mask.astype(bool), one.result.mask.astype(bool)
        assert (a ^ b).sum() <= 0.35 * max(a.sum(), b.sum(), 1), ((a ^ b).sum(), a.sum(), b.sum())
        outside = case.brain_mask.astype(bool) & ~(a | b)
        gap = np.abs(stacked[i].result.counterfactual[:, outside] - one.result.counterfactual[:, outside])
        assert gap.mean() < 1e-2 and np.percentile(gap, 95) < 0.05, (gap.mean(), np.percentile(gap, 95))
        assert stacked[i].threshold == one.threshold and stacked[i].model == one.model


def test_a_cancelled_stack_stops_and_keeps_what_finished():
    from diffuse_core.cases import case_from_normalized
    from diffuse_core.data.synthbrain import generate_slice
    from diffuse_core.run.assembly import run_stack
    from diffuse_core.run.models import load_run_models
    from diffuse_core.run.settings import settings_for

    models = load_run_models("mri", device="cpu")
    settings = settings_for(models.card, k=20, steps=2)
    cases = [case_from_normalized(np.clip(generate_slice(seed=s, healthy=True).image, -1, 1))
             for s in (1, 2, 3)]
    done = []
    with pytest.raises(RuntimeError, match="cancelled after 1 of 3"):
        for i, outcome in run_stack(cases, models, settings, mask_from="gradient", batch_size=1,
                                    cancelled=lambda: len(done) >= 1):
            done.append(i)
    assert done == [0]


def test_settings_are_checked_in_one_place():
    from diffuse_core.run.settings import RANGES, settings_for
    from diffuse_core.studio.settings import K_RANGE, STEPS_RANGE, check_settings

    assert (K_RANGE, STEPS_RANGE) == (RANGES["k"], RANGES["steps"])
    assert check_settings(500, 400, 0) == (500, 400, 0)              # the CLI's range is the app's
    for bad in ({"k": 0}, {"k": 1001}, {"steps": 1001, "k": 1000}, {"seed": -1}, {"percentile": 100}):
        with pytest.raises(ValueError):
            settings_for({}, **bad)
    chosen = settings_for({"recommended_settings": {"k": 700, "steps": 25, "percentile": 85}})
    assert (chosen.k, chosen.steps, chosen.percentile) == (700, 25, 85.0)
    chosen = settings_for({"recommended_settings": {"k": 5000}})           # out of range: the paper's
    assert chosen.k == 500
