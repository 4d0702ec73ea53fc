"""MRI intensities matched to the model's training data (``--intensity model``) against the percentile stretch."""

import json

import numpy as np
import pytest
from PIL import Image

from diffuse_core.cli import main
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.io.preprocess import intensity_reference, normalize_mri, prepare_slice, standardize_mri
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser


def _healthy(i, size=64):
    return generate_slice(sample_seed("val", 0, i), ("flair",), size, healthy=True).image


@pytest.fixture(scope="module")
def reference():
    return intensity_reference(np.stack([_healthy(i) for i in range(8)]))


def test_reference_holds_the_training_slices_percentiles(reference):
    assert reference["percentiles"] == [10.0, 25.0, 50.0, 75.0] and reference["slices"] == 8
    v = np.asarray(reference["values"][0])
    assert np.all(np.diff(v) > 0) and -0.6 < v[0] < v[-1] < 0.1     # SynthBrain FLAIR brain: below 0 mostly
    with pytest.raises(ValueError, match="N, C, H, W"):
        intensity_reference(np.zeros((4, 4)))


def test_a_scanner_s_units_come_back_to_the_training_scale(reference):
    img = _healthy(20)[0]
    brain = img > -1
    raw = np.where(brain, 700.0 + 900.0 * (img + 1), 0.0)          # arbitrary units: a linear map of the slice
    out, ranges = standardize_mri(raw, brain, reference)
    # back near where the model learnt it (the reference is the median over slices; one slice differs a little)
    assert np.abs(out[brain] - img[brain]).mean() < 0.1
    assert np.all(out[~brain] == -1)
    lo, hi = ranges[0]
    assert lo < raw[brain].min() + 900 and hi > lo
    # the percentile stretch puts the same healthy brain far brighter than training (the 99th percentile -> 1)
    stretched = normalize_mri(raw, brain)
    assert stretched[brain].mean() - img[brain].mean() > 0.2 > 2 * np.abs(out[brain] - img[brain]).mean()


def test_a_bright_lesion_moves_the_percentile_stretch_not_the_match(reference):
    img = _healthy(21)[0]
    brain = img > -1
    raw = np.where(brain, 100.0 * (img + 1), 0.0)
    ys, xs = np.nonzero(brain)
    lesion = np.zeros_like(brain)
    cy, cx = int(ys.mean()), int(xs.mean())
    lesion[cy - 7:cy + 7, cx - 7:cx + 7] = True                    # about a tenth of the brain, twice as bright
    sick = np.where(lesion & brain, raw * 2.0, raw)
    normal = brain & ~lesion
    moved_match = np.abs(standardize_mri(sick, brain, reference)[0][normal]
                         - standardize_mri(raw, brain, reference)[0][normal]).mean()
    moved_stretch = np.abs(normalize_mri(sick, brain)[normal] - normalize_mri(raw, brain)[normal]).mean()
    assert moved_match < 0.05 and moved_stretch > 5 * moved_match


def test_reference_must_fit_the_image(reference):
    with pytest.raises(ValueError, match="does not fit"):
        standardize_mri(np.ones((2, 16, 16)), np.ones((16, 16)), reference)
    prep = prepare_slice(np.where(_healthy(3)[0] > -1, 50 * (_healthy(3)[0] + 1), 0), size=32, modality="mri",
                         mri_reference=reference)
    assert prep.percentiles is None and any("matched to the model" in n for n in prep.notes)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, reference):
    cfg = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                         norm_num_groups=8, attention_head_dim=8)
    with_ref, without = tmp_path_factory.mktemp("with_ref"), tmp_path_factory.mktemp("without")
    save_denoiser(new_denoiser(cfg, seed=0), with_ref, card={"anomaly_threshold": 0.1,
                                                              "intensity_reference": reference})
    save_denoiser(new_denoiser(cfg, seed=0), without, card={"anomaly_threshold": 0.1})
    return with_ref, without


def test_run_with_intensity_model(tiny_models, tmp_path, capsys):
    with_ref, without = tiny_models
    img = _healthy(5)[0]
    Image.fromarray(np.where(img > -1, 40 + 100 * (img + 1), 0).astype(np.uint8)).save(tmp_path / "s.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    args = ["run", str(tmp_path / "s.png"), "--mask-from", str(tmp_path / "m.png"), "--k", "100", "--steps", "2",
            "--device", "cpu", "--precision", "fp32"]
    assert main(args + ["--model", str(with_ref), "--intensity", "model", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "result.json").read_text())["intensity"] == "model"
    assert main(args + ["--model", str(with_ref), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "result.json").read_text())["intensity"] == "percentile"
    capsys.readouterr()
    assert main(args + ["--model", str(without), "--intensity", "model", "--out", str(tmp_path / "c")]) != 0
    err = capsys.readouterr().err.strip()
    assert "no intensity_reference" in err and len(err.splitlines()) == 1


def test_a_percentile_model_gets_its_synthbrain_slices_stretched_and_its_change_on_the_apps_scale():
    from diffuse_core.run.card import input_normalisation_of
    from diffuse_core.evaluation.protocol import app_scale_factors, normalised_set, synthbrain_set

    tiny = DenoiserConfig(resolution=32, block_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4,
                          attention_head_dim=8)
    assert input_normalisation_of(new_denoiser(tiny, seed=0)) == "absolute"          # cards from before the field
    den = new_denoiser(tiny, seed=0)
    den.card = {"input_normalisation": "percentile"}
    assert input_normalisation_of(den) == "percentile"

    data = synthbrain_set("val", 4, size=64, healthy_fraction=0.5)
    assert normalised_set(data, "absolute") is data
    st = normalised_set(data, "percentile")
    assert np.array_equal(st.lesions, data.lesions) and np.array_equal(st.brains, data.brains) and not st.saliency
    for raw, img, brain in zip(data.images, st.images, data.brains):
        inside = brain.astype(bool)
        assert np.percentile(img[0][inside], 99) == pytest.approx(1, abs=0.05)
        assert (img[0][raw[0] <= -0.99] == -1).all()
    # a change d on the absolute scale is d * gain on the stretched one, where the stretch does not clip
    gain = app_scale_factors(data.images, data.brains)
    assert (gain > 1.5).all()                       # SynthBrain's brain spans well under the app's 2 units
    raw, img, brain = data.images[0, 0], st.images[0, 0], data.brains[0].astype(bool)
    lo, hi = np.percentile(raw[brain], [1, 99])
    mid = brain & (raw > lo + 0.05) & (raw < hi - 0.05)
    a, b = np.argwhere(mid)[[0, -1]].T
    assert (img[a[1], b[1]] - img[a[0], b[0]]) == pytest.approx(gain[0] * (raw[a[1], b[1]] - raw[a[0], b[0]]),
                                                                  rel=0.05, abs=0.02)
