"""Every evaluation method and the report on a few tiny slices (the --quick code path with tiny real models)."""

import numpy as np
import pytest

from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder
from diffuse_core.models.classifier import ClassifierConfig, new_classifier
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser
from diffuse_core.evaluation.protocol import choose_threshold, kid, synthbrain_set
from diffuse_core.evaluation.methods import METHODS, run_method
from diffuse_core.evaluation.report import EvalSettings, run_evaluation
from diffuse_core.saliency.dispatch import SaliencyModels

SIZE = 32


@pytest.fixture(scope="module")
def models():
    den = new_denoiser(DenoiserConfig(resolution=SIZE, block_channels=(16, 32), attention_levels=(False, True),
                                      norm_num_groups=8, attention_head_dim=8), seed=0)
    sal = SaliencyModels(new_autoencoder(AutoencoderConfig(resolution=SIZE, widths=(8, 16), latent_channels=4)).eval(),
                         new_classifier(ClassifierConfig(resolution=SIZE, widths=(8, 16, 16))).eval())
    return den, sal


def test_evaluation_measures_the_assembly_the_app_runs(models):
    """What `evaluate` scores for Dif-fuse is what the app and `diffuse-studio run` produce: the same bytes for the
    same slice, mask and seed (both go through diffuse_core.pipeline.iter_batch)."""
    from diffuse_core.pipeline import run_counterfactual

    den, _ = models
    data = synthbrain_set("val", 2, size=SIZE, healthy_fraction=0.0)
    masks = {s: data.lesions.copy() for s in ("acat", "gradcam", "gradient")}
    for variant, method in (("paper", "dif-fuse"), ("two-chain", "dif-fuse-two-chain")):
        out = run_method(method, den, data.images[:1], data.brains[:1], {k: v[:1] for k, v in masks.items()}, k=200,
                         steps=4, seed=5, precision="fp32")
        app = run_counterfactual(den, data.images[0], data.lesions[0], brain_mask=data.brains[0], k=200, steps=4,
                                 seed=5, variant=variant, precision="fp32")
        np.testing.assert_array_equal(out.counterfactuals[0], app.counterfactual)
        np.testing.assert_array_equal(out.anomalies[0], app.anomaly)
        assert out.calls_per_slice == app.network_calls


def test_every_method_runs_and_counts_calls(models):
    den, _ = models
    data = synthbrain_set("val", 2, size=SIZE, healthy_fraction=0.0)
    masks = {s: data.lesions.copy() for s in ("acat", "gradcam", "gradient", "oracle")}
    calls = {}
    for m in METHODS:
        out = run_method(m, den, data.images, data.brains, masks, k=200, steps=4, seed=0, precision="fp32")
        assert out.counterfactuals.shape == data.images.shape and out.anomalies.shape == data.lesions.shape
        assert np.isfinite(out.anomalies).all()
        assert (out.anomalies[data.brains == 0] == 0).all()
        calls[m] = out.calls_per_slice
    assert calls["dif-fuse"] == 8 and calls["dif-fuse-two-chain"] == 12 and calls["ddpm"] == 4
    assert calls["ddim"] == 8 and calls["mask-at-end"] == 12 and calls["acat"] == 0
    assert calls["flair-threshold"] == 0 and calls["dif-fuse-oracle"] == 8
    with pytest.raises(ValueError, match="unknown method"):
        run_method("nope", den, data.images, data.brains, masks)


def test_threshold_is_chosen_to_maximise_dice():
    lesion = np.zeros((2, 16, 16), np.uint8)
    lesion[:, 4:8, 4:8] = 1
    ano = lesion * 0.3 + 0.1  # 0.1 everywhere, 0.4 on the lesion
    t = choose_threshold(ano.astype(np.float32), lesion, grid=(0.05, 0.2, 0.5))
    assert t == 0.2


def test_kid_is_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    assert abs(kid(a, b)) < 0.05
    assert kid(a, b + 2.0) > 0.5


@pytest.mark.slow
def test_quick_report_writes_tables_and_figures(models, tmp_path):
    den, sal = models
    s = EvalSettings(n_val=4, n_test=4, seeds=(0,), steps=2, k=200, sweep_k=(100, 200), sweep_percentiles=(90.0,),
                     sweep_steps=(1, 2), precision="fp32", command="pytest")
    result = run_evaluation(den, sal, s, tmp_path)
    assert set(result["methods"]) == set(METHODS)
    md = (tmp_path / "results.md").read_text()
    assert "Table I" in md and "Dif-fuse ranks" in md and "pytest" in md
    targets = md.split("## Where the models issue's targets stand")[1].split("##")[0]
    assert f"{result['methods']['dif-fuse']['dice']:.3f}, rank" in targets
    assert (tmp_path / "results_per_slice.csv").read_text().count("\n") == 1 + len(METHODS) * 4
    assert (tmp_path / "fig_k_percentile.html").exists() and (tmp_path / "fig_steps.html").exists()
    assert np.array(result["sweeps"]["k_percentile"]).shape == (2, 1)


@pytest.mark.slow
def test_write_cards_puts_measured_quality_into_all_three_cards(models, tmp_path):
    import json

    from diffuse_core.models import checkpoint as saliency_models
    from diffuse_core.cli import main
    from diffuse_core.models.denoiser import load_denoiser, save_denoiser
    from diffuse_core.run.card import anomaly_threshold_of

    den, sal = models
    save_denoiser(den, tmp_path / "ddpm", card={"model": "tiny"})
    saliency_models.save(sal.autoencoder, tmp_path / "sal" / "autoencoder")
    saliency_models.save(sal.classifier, tmp_path / "sal" / "classifier")
    args = ["evaluate", "--n-val", "4", "--n-test", "4", "--seeds", "0", "--steps", "2", "--k", "200", "--no-sweeps",
            "--methods", "dif-fuse,acat", "--precision", "fp32", "--device", "cpu", "--model", str(tmp_path / "ddpm"),
            "--n-samples", "2",
            "--saliency-models", str(tmp_path / "sal"), "--docs", str(tmp_path / "docs")]
    assert main(args + ["--quick", "--write-cards"]) == 2  # quick numbers never go into a card
    assert "quality" not in json.loads((tmp_path / "ddpm" / "model_card.json").read_text())
    assert main(args + ["--write-cards", "--n-cards", "8"]) == 0
    ddpm = load_denoiser(tmp_path / "ddpm")
    q = ddpm.card["quality"]
    assert 0.0 <= q["dif_fuse"]["dice"] <= 1.0 and q["dif_fuse"]["k"] == 200
    assert anomaly_threshold_of(ddpm) == q["dif_fuse"]["threshold_from_validation"]
    assert (tmp_path / "docs" / "ddpm_samples.png").stat().st_size > 0
    assert q["samples_from_noise"]["ddpm"]["n"] == 2 and q["samples_from_noise"]["ddim"]["n"] == 2
    assert ddpm.card["recommended_settings"] is None        # no sweeps: no evidence to move the app off the paper
    clf = json.loads((tmp_path / "sal" / "classifier" / "model_card.json").read_text())["quality"]
    assert clf["n"] == 8 and 0.0 <= clf["accuracy"] <= 1.0 and "per_lesion_type" in clf
    ae = json.loads((tmp_path / "sal" / "autoencoder" / "model_card.json").read_text())["quality"]
    assert set(ae["saliency"]) == {"acat", "gradcam", "gradient"}
    card = json.loads((tmp_path / "ddpm" / "model_card.json").read_text())     # its one copy, with provenance
    assert card["quality"] == q and "card" not in json.loads((tmp_path / "ddpm" / "config.json").read_text())
    assert card["written_by"]["quality.dif_fuse"]["writer"] == "evaluate"
    assert card["written_by"]["quality.dif_fuse"]["command"].split()[0] not in ("", "None")
    assert 0.0 <= ae["saliency"]["acat"]["lesion_share"] <= 1.0
    assert clf["measured_for"]["weights_sha256"]["classifier"] is not None

    # same classifier/autoencoder weights: their numbers are kept (not re-measured) when only the DDPM is measured
    (tmp_path / "sal" / "classifier" / "model_card.json").write_text(json.dumps(
        {"quality": {**clf, "accuracy": 0.123}}))
    assert main(args + ["--write-cards", "--n-cards", "8"]) == 0
    kept = json.loads((tmp_path / "sal" / "classifier" / "model_card.json").read_text())["quality"]
    assert kept["accuracy"] == 0.123
    assert main(args + ["--write-cards", "--n-cards", "6"]) == 0          # another measurement: measured again
    again = json.loads((tmp_path / "sal" / "classifier" / "model_card.json").read_text())["quality"]
    assert again["n"] == 6 and again["accuracy"] != 0.123


def test_recommended_settings_move_off_the_paper_setting_only_on_paired_evidence():
    from diffuse_core.evaluation.cards import recommended_settings

    settings = {"sweep_k": (250, 500), "sweep_percentiles": (85.0, 90.0), "k": 500, "percentile": 90.0}
    steps = {"steps": [10, 25, 50], "dice": [0.30, 0.395, 0.40]}
    base = np.array([0.30, 0.50, 0.40, 0.60, 0.45, 0.55])
    noisy = base + np.array([0.30, -0.20, 0.25, -0.15, 0.30, -0.10])      # higher mean, but not on every slice
    steady = base + 0.05                                                 # a little higher on every slice

    def grid(best):
        per = np.stack([np.stack([base - 0.1, best]), np.stack([base - 0.2, base])])  # [K][percentile][slice]
        return {"settings": settings, "sweeps": {"k_percentile": per.mean(axis=2).tolist(),
                                                 "k_percentile_per_slice": per.tolist(), "steps": steps}}

    rec = recommended_settings(grid(noisy))                              # K=250/90 has the best mean only
    assert (rec["k"], rec["percentile"], rec["steps"]) == (500, 90.0, 25)
    assert rec["best_mean_cell"]["k"] == 250 and rec["best_mean_cell"]["paired_gain"] > 0
    rec = recommended_settings(grid(steady))                             # better on every slice: taken
    assert (rec["k"], rec["percentile"]) == (250, 90.0)
    assert recommended_settings({"settings": {}, "sweeps": {}}) is None
    old = grid(steady)
    del old["sweeps"]["k_percentile_per_slice"]                          # means alone: no evidence, no default
    assert recommended_settings(old) is None


def test_a_calibrated_k_survives_evaluate_and_the_sweeps_advice_is_kept_beside_it():
    from diffuse_core.evaluation.cards import CALIBRATED_K, merged_recommendation

    swept = {"k": 500, "percentile": 85.0, "steps": 10, "validation_dice": 0.6, "rule": "r"}
    assert merged_recommendation(None, swept) == swept                  # nothing chosen before: the sweeps decide
    assert merged_recommendation({"k": 250, "steps": 50}, None) is None  # an unconfirmed old choice is cleared
    calibrated = {"k": 700, "steps": 25, "percentile": 90.0, "k_chosen_by": "calibrate (old wording)",
                  "sweeps_recommend": {"k": 250}, "validation_dice": 0.59, "rule": "K = 500 unless ..."}
    out = merged_recommendation(calibrated, swept)
    assert (out["k"], out["steps"], out["percentile"]) == (700, 25, 90.0)   # the card's setting stays whole
    assert out["sweeps_recommend"] == swept                              # the sweeps' Dice stays with their cell
    assert "validation_dice" not in out and "rule" not in out and out["k_chosen_by"] == CALIBRATED_K
    kept = merged_recommendation(calibrated, None)                     # no paired evidence: the card's choice stays
    assert (kept["k"], kept["steps"], kept["percentile"]) == (700, 25, 90.0) and "sweeps_recommend" not in kept
    assert "validation_dice" not in kept and "rule" not in kept          # an older sweep's figures go
    partial = merged_recommendation({"k": 700, "k_chosen_by": "calibrate"}, swept)   # what it lacks, the sweeps give
    assert (partial["k"], partial["steps"], partial["percentile"]) == (700, 10, 85.0)


def test_the_full_evaluations_sweep_grid_holds_the_apps_own_setting(monkeypatch, tmp_path):
    """The K x percentile sweep compares every cell with the setting the app runs (the card's K 700 lies off the
    paper's grid 250/500/750): without it the sweeps had no home cell and their advice was dropped."""
    from diffuse_core.cli import main
    from diffuse_core.evaluation import report

    seen = {}

    def fake_run(denoiser, sal, s, docs, progress=None):
        seen["s"] = s
        raise SystemExit(0)

    monkeypatch.setattr(report, "run_evaluation", fake_run)
    monkeypatch.setattr("diffuse_core.run.models.load_default_models", lambda *a, **k: (_CardOnly(), None))
    with pytest.raises(SystemExit):
        main(["evaluate", "--device", "cpu", "--docs", str(tmp_path)])
    s = seen["s"]
    assert s.k == 700 and s.sweep_k == (250, 500, 700, 750) and s.sweep_percentiles == (80.0, 85.0, 90.0, 95.0)
    with pytest.raises(SystemExit):                                      # the quick run has no sweeps at all
        main(["evaluate", "--quick", "--device", "cpu", "--docs", str(tmp_path)])
    assert seen["s"].sweep_k == () and seen["s"].sweep_steps == ()


class _CardOnly:
    card = {"recommended_settings": {"k": 700, "steps": 25, "percentile": 90.0}}


@pytest.mark.slow
def test_sweeps_only_writes_just_the_recommended_settings(models, tmp_path):
    from diffuse_core.models import checkpoint as saliency_models
    from diffuse_core.cli import main
    from diffuse_core.models.denoiser import load_denoiser, save_denoiser

    den, sal = models
    save_denoiser(den, tmp_path / "ddpm", card={"model": "tiny"})
    saliency_models.update_card(tmp_path / "ddpm", quality={"dif_fuse": {"dice": 0.5}}, by="evaluate")
    saliency_models.save(sal.autoencoder, tmp_path / "sal" / "autoencoder")
    saliency_models.save(sal.classifier, tmp_path / "sal" / "classifier")
    assert main(["evaluate", "--sweeps-only", "--write-cards", "--n-val", "4", "--k", "200", "--steps", "2",
                 "--precision", "fp32", "--device", "cpu", "--model", str(tmp_path / "ddpm"),
                 "--saliency-models", str(tmp_path / "sal")]) == 0          # K=200 joins the grid as its home cell
    card = load_denoiser(tmp_path / "ddpm").card
    assert card["quality"] == {"dif_fuse": {"dice": 0.5}}
    rec = card["recommended_settings"]
    assert rec["k"] in (200, 250, 500, 750) and rec["n_validation_diseased"] == 3 and "command" in rec
    assert rec["rule"].startswith("K = 200, 90th percentile unless")


def test_sample_judging_counts_grain_and_grey_backgrounds_against_real_slices():
    from diffuse_core.evaluation.cards import judge_samples, realism_reference

    ref = realism_reference(6, size=32)
    assert ref["n"] == 6 and ref["grey_background"] == 0 and ref["graininess_p99"] > 0
    real = __import__("diffuse_core.evaluation.cards", fromlist=["x"]).synthbrain_labelled(
        "val", 3, size=32, healthy_fraction=1.0)["images"][:, 0].astype(np.float32)
    speckled = np.clip(real + np.random.default_rng(0).normal(0, 0.5, real.shape), -1, 1).astype(np.float32)
    grey = np.where(real <= -0.99, -0.6, real).astype(np.float32)
    verdict = judge_samples(np.concatenate([real, speckled, grey]), ref)
    assert (verdict["n"], verdict["grainy"], verdict["grey_background"], verdict["clean"]) == (9, 3, 3, 3)


@pytest.mark.slow
def test_samples_only_writes_both_grids_and_only_that_block_of_the_card(models, tmp_path):
    import json

    from diffuse_core.cli import main
    from diffuse_core.models.denoiser import load_denoiser, save_denoiser
    from diffuse_core.evaluation.cards import sample_from_noise

    from diffuse_core.models.checkpoint import update_card

    den, _ = models
    save_denoiser(den, tmp_path / "ddpm", card={"model": "tiny"})
    update_card(tmp_path / "ddpm", quality={"dif_fuse": {"dice": 0.5}}, by="evaluate")
    args = ["evaluate", "--samples-only", "--n-samples", "3", "--n-cards", "4", "--device", "cpu",
            "--model", str(tmp_path / "ddpm"), "--docs", str(tmp_path / "docs")]
    assert main(args) == 0                                   # without --write-cards the card is left alone
    assert "samples_from_noise" not in load_denoiser(tmp_path / "ddpm").card["quality"]
    assert main(args + ["--write-cards"]) == 0
    q = load_denoiser(tmp_path / "ddpm").card["quality"]
    assert q["dif_fuse"] == {"dice": 0.5}                    # the evaluation's numbers are kept
    s = q["samples_from_noise"]
    assert s["ddpm"]["n"] == 3 and s["ddim"]["n"] == 3 and s["reference"]["n"] == 4
    assert s["ddpm"]["clean"] + max(s["ddpm"]["grainy"], s["ddpm"]["grey_background"]) <= 3
    assert (tmp_path / "docs" / "ddpm_samples.png").exists() and (tmp_path / "docs" / "ddpm_samples_ddim.png").exists()
    assert json.loads((tmp_path / "ddpm" / "model_card.json").read_text())["quality"] == q
    # the two samplers start from the same noise and differ: the stochastic one adds fresh noise on the way
    a = sample_from_noise(den, 2, 4, seed=1, sampler="ddpm")
    b = sample_from_noise(den, 2, 4, seed=1, sampler="ddim")
    assert a.shape == b.shape == (2, 1, den.config.resolution, den.config.resolution) and not np.allclose(a, b)
    assert np.array_equal(a, sample_from_noise(den, 2, 4, seed=1, sampler="ddpm"))   # seeded: repeatable
    try:
        sample_from_noise(den, 1, 2, sampler="euler")
        raise AssertionError("an unknown sampler must be refused")
    except ValueError as err:
        assert "ddpm" in str(err)


def test_samples_of_a_ct_model_are_judged_against_ct_slices_and_drawn_into_ct_grids(models, tmp_path):
    """A CT DDPM's samples are compared with held-out SynthBrain CT slices (not FLAIR ones), and its grids get the
    ``ct_`` prefix so they never overwrite the FLAIR model's docs/ddpm_samples*.png."""
    from diffuse_core.evaluation.cards import measure_samples, model_modality, realism_reference
    from diffuse_core.models.denoiser import load_denoiser, save_denoiser

    den, _ = models
    save_denoiser(den, tmp_path / "ct", card={"model": "tiny", "data": {"modalities": ["ct"]}})
    ct = load_denoiser(tmp_path / "ct")
    assert model_modality(ct) == "ct" and model_modality(den) == "flair"
    q = measure_samples(ct, tmp_path / "docs", n=2, ddpm_steps=2, ddim_steps=2, n_reference=4)
    assert q["reference"]["modality"] == "ct"
    assert q["reference"]["graininess_p99"] != realism_reference(4, size=SIZE)["graininess_p99"]
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["ct_ddpm_samples.png", "ct_ddpm_samples_ddim.png"]


def test_the_threshold_baseline_flags_the_brightest_pixels_and_the_oracle_mask_covers_the_lesion():
    from diffuse_core.evaluation.baselines import oracle_masks, zscore_maps

    brain = np.zeros((1, 32, 32), np.uint8)
    brain[0, 4:28, 4:28] = 1
    img = np.where(brain[:, None] > 0, 0.0, -1.0).astype(np.float32)
    img[0, 0, 10:14, 10:14] = 0.8
    z = zscore_maps(img, brain)
    assert z[0, 12, 12] > 3 and abs(z[0, 20, 20]) < 0.5 and z[0, 0, 0] == 0
    lesion = np.zeros((1, 32, 32), np.uint8)
    lesion[0, 10:14, 10:14] = 1
    o = oracle_masks(lesion, brain, radius=3)
    assert (o[lesion > 0] == 1).all() and o.sum() > lesion.sum() and (o[brain == 0] == 0).all()


def test_the_ct_threshold_flags_the_darkest_pixels_of_a_real_synthbrain_ct_stroke():
    """The CT analogue of the FLAIR threshold: an infarct is hypodense, so the darkest brain pixels are flagged;
    it is a method of the registry (for CT sets) but not of the default FLAIR evaluation."""
    from diffuse_core.core.metrics import dice
    from diffuse_core.data.synthbrain import generate_slice, sample_seed
    from diffuse_core.evaluation.baselines import hypodensity_maps
    from diffuse_core.evaluation.methods import ALL_METHODS, METHODS, run_method

    s = generate_slice(sample_seed("val", 0, 5), modalities=("ct",), size=128, lesion_type="stroke")
    assert s.lesion_mask.any()
    out = run_method("ct-threshold", None, s.image[None], s.brain_mask[None], {})
    h = hypodensity_maps(s.image[None], s.brain_mask[None])
    assert np.array_equal(out.anomalies, h) and out.calls_per_slice == 0 and (h >= 0).all()
    lesion = s.lesion_mask.astype(bool)
    assert h[0][lesion].mean() > 2 * h[0][s.brain_mask.astype(bool) & ~lesion].mean()   # the infarct is darker
    assert max(dice(h[0] > t, s.lesion_mask) for t in (0.5, 1.0, 1.5, 2.0)) > 0.1
    assert "ct-threshold" in ALL_METHODS and "ct-threshold" not in METHODS


BRATS = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"


@pytest.mark.slow
@pytest.mark.skipif(not BRATS.is_dir(), reason="the shared BraTS cases are not on this machine")
def test_real_data_table_has_healthy_controls_threshold_free_scores_and_intervals(models, tmp_path):
    den, sal = models
    s = EvalSettings(n_val=4, n_test=4, seeds=(0,), steps=2, k=200, sweep_k=(), sweep_steps=(), precision="fp32",
                     methods=("dif-fuse", "flair-threshold", "acat"), brats_dir=str(BRATS), brats_per_case=1,
                     brats_healthy_per_case=1, command="pytest")
    result = run_evaluation(den, sal, s, tmp_path)
    for m in s.methods:
        r = result["real"][m]
        assert r["n"] == 6 and r["n_healthy"] == 6
        assert 0 <= r["healthy_flagged"] <= 1 and 0 <= r["auprc"] <= 1 and 0 <= r["auroc"] <= 1
        assert r["dice_ci"][0] <= r["dice"] <= r["dice_ci"][1]
        assert r["dice_best_threshold"] >= r["dice"] - 1e-9 or m == "acat"
    md = (tmp_path / "results.md").read_text()
    assert "healthy flagged" in md and "AUPRC" in md and "FLAIR threshold" in md and "95% CI" in md
    assert (tmp_path / "brats_grid.png").stat().st_size > 0 and "brats_grid.png" in md


def test_targets_section_reports_each_target_with_its_measured_value_and_never_a_pass_it_did_not_earn():
    from diffuse_core.evaluation.results_page import targets_section

    def result(ours, thr, change, real=None):
        return {"methods": {"dif-fuse": {"dice": ours, "identity_change": change},
                            "flair-threshold": {"dice": thr, "identity_change": 0.0}}, "real": real or {}}
    card = {"quality": {"samples_from_noise": {"ddpm": {"n": 16, "grey_background": 10, "grainy": 0}}},
            "healthy_change_breakdown": {"rows": [
                {"walk": "paper", "solver": "ddim", "healthy_change": {"brain": 0.074}, "test_dice": 0.535},
                {"walk": "two-chain", "solver": "ddim-refined", "healthy_change": {"brain": 0.020}, "test_dice": 0.504}]}}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in targets_section(result(0.56, 0.607, 0.074), card)
            if line.startswith("| ") and "target" not in line}
    assert "0.560, rank 2 of 2" in rows["SynthBrain test Dice >= 0.70 and first of all methods"]
    assert rows["SynthBrain test Dice >= 0.70 and first of all methods"].endswith("| no |")
    assert "two-chain walk + ddim-refined 0.020" in rows["Healthy slices: mean absolute change <= 0.03"]
    assert rows["Healthy slices: mean absolute change <= 0.03"].endswith("| no (the default) |")
    assert "10 of 16 grey" in rows["Samples from pure noise: 0 of 16 grey, 0 grainy"]
    good = targets_section(result(0.72, 0.61, 0.02, {"dif-fuse": {"dice": 0.80}, "flair-threshold": {"dice": 0.48}}),
                           {})
    text = "\n".join(good)
    assert "0.720, rank 1 of 2 (FLAIR threshold 0.610) | yes |" in text
    assert "0.800 vs 0.480 | above the threshold; 0.85 not reached |" in text
    assert "| 0.020 | yes |" in text and "Samples from pure noise" not in text
    assert targets_section({"methods": {"flair-threshold": {"dice": 0.5}}, "real": {}}, card) == []


def _tiny_cli_models(models, tmp_path):
    from diffuse_core.models import checkpoint as saliency_models
    from diffuse_core.models.denoiser import save_denoiser

    den, sal = models
    save_denoiser(den, tmp_path / "ddpm", card={"model": "tiny", "anomaly_threshold": 0.2, "score": "signed",
                                                "mask_rule": {"kind": "weighted", "level": 0.2, "max_share": 0.5},
                                                "verdict": {"percentile": 99.5, "threshold": 0.2}})
    saliency_models.save(sal.autoencoder, tmp_path / "sal" / "autoencoder")
    saliency_models.save(sal.classifier, tmp_path / "sal" / "classifier")
    return ["--model", str(tmp_path / "ddpm"), "--saliency-models", str(tmp_path / "sal"), "--device", "cpu",
            "--precision", "fp32", "--threads", "1"]


def test_quick_writes_its_results_file_and_only_its_region_of_the_page(models, tmp_path):
    """`evaluate --quick` (explicit tiny sizes here) writes docs/results/evaluation_quick.json and, from it alone, its
    region of results.md: the hand text and the other generated regions of the page stay as they were."""
    import json

    from diffuse_core.cli import main
    from diffuse_core.evaluation.report import QUICK_METHODS
    from diffuse_core.evaluation.results_page import markdown

    docs = tmp_path / "docs"
    docs.mkdir()
    page = ("# Evaluation results\n\nHand text.\n\n<!-- generated:real_data -->\nkept as it is\n"
            "<!-- /generated:real_data -->\n\n## Quick\n\n<!-- generated:evaluation_quick -->\nold\n"
            "<!-- /generated:evaluation_quick -->\n\nMore hand text.\n")
    (docs / "results.md").write_text(page)
    args = ["evaluate", "--quick", "--n-val", "4", "--n-test", "4", "--steps", "2", "--k", "200", "--docs", str(docs)]
    assert main(args + _tiny_cli_models(models, tmp_path)) == 0
    doc = json.loads((docs / "results" / "evaluation_quick.json").read_text())
    assert tuple(doc["settings"]["methods"]) == QUICK_METHODS and doc["settings"]["seeds"] == [0]
    assert doc["settings"]["sweep_k"] == [] and doc["sweeps"] == {} and doc["torch_threads"] == 1
    for key in ("date", "commit", "hardware", "command", "wall_seconds", "cpu_seconds"):
        assert doc[key], key
    assert doc["command"].startswith("diffuse-studio evaluate")     # the typed command line where there is one
    ours = doc["methods"]["dif-fuse"]
    assert ours["threshold"] == 0.2 and ours["threshold_from"] == "card" and "verdict" in ours
    text = (docs / "results.md").read_text()
    assert "<!-- generated:real_data -->\nkept as it is\n" in text and "Hand text." in text and "More hand text." in text
    assert f"<!-- generated:evaluation_quick -->\n{markdown(doc)}<!-- /generated:evaluation_quick -->" in text
    assert "Subset: SynthBrain 3 diseased + 1 healthy test slices" in text
    assert (docs / doc["grid"]).stat().st_size > 0 and (docs / doc["per_slice_csv"]).is_file()
    assert not (docs / "results_per_slice.csv").exists()          # the full run's files are left alone


def test_an_interrupted_evaluation_resumes_at_the_first_unfinished_method(models, tmp_path, monkeypatch):
    from diffuse_core.evaluation import report

    den, sal = models
    s = EvalSettings(n_val=4, n_test=4, seeds=(0,), steps=2, k=200, sweep_k=(), sweep_steps=(), precision="fp32",
                     methods=("dif-fuse", "flair-threshold"), command="pytest", name="evaluation_quick")
    from diffuse_core.evaluation.kept_results import KeptResults

    monkeypatch.setattr(KeptResults, "clear", lambda self: None)        # as if the run had stopped before the end
    first = run_evaluation(den, sal, s, tmp_path)
    said = []
    again = run_evaluation(den, sal, s, tmp_path, progress=said.append)
    assert any(t.startswith("resuming: dif-fuse, flair-threshold") for t in said)
    assert not any(t.startswith("method ") for t in said)
    assert again["methods"] == first["methods"]
    import copy

    import torch

    other = copy.deepcopy(sal)                                            # another classifier: nothing is reused
    with torch.no_grad():
        next(other.classifier.parameters()).add_(0.01)
    said.clear()
    run_evaluation(den, other, s, tmp_path, progress=said.append)
    assert not any(t.startswith("resuming") for t in said)
    s.n_test = 8                                                          # other settings: nothing is reused
    said.clear()
    run_evaluation(den, sal, s, tmp_path, progress=said.append)
    assert not any(t.startswith("resuming") for t in said)


def test_shares_of_an_evaluation_add_up_to_the_whole_run(models, tmp_path):
    """``--workers``: each share (``part``) computes its round-robin share of the methods and sweeps and keeps it;
    the run that writes the results then computes nothing and gives what one process alone gives."""
    den, sal = models
    kw = dict(n_val=4, n_test=4, seeds=(0,), steps=2, k=200, sweep_k=(200,), sweep_percentiles=(90.0,),
              sweep_steps=(), precision="fp32", methods=("dif-fuse", "dif-fuse-percentile", "flair-threshold"),
              command="pytest", name="evaluation_quick")
    alone = run_evaluation(den, sal, EvalSettings(**kw), tmp_path / "alone")
    said = []
    for i in range(2):
        out = run_evaluation(den, sal, EvalSettings(**kw, part=(i, 2)), tmp_path / "shared", progress=said.append)
        assert out["kept"] == [["dif-fuse", "flair-threshold"], ["_sweeps", "dif-fuse-percentile"]][i]
    assert not (tmp_path / "shared" / "results" / "evaluation_quick.json").exists()     # a share writes no results
    said.clear()
    whole = run_evaluation(den, sal, EvalSettings(**kw), tmp_path / "shared", progress=said.append)
    assert not any(t.startswith(("method ", "sweep")) for t in said), said
    for m in kw["methods"]:
        assert whole["methods"][m]["dice"] == pytest.approx(alone["methods"][m]["dice"], abs=1e-9), m
    assert whole["sweeps"] == alone["sweeps"]
    assert not (tmp_path / "shared" / "results" / ".evaluation_quick_parts").exists()   # cleared once written


def test_evaluate_workers_run_shares_in_their_own_processes(tmp_path, monkeypatch):
    """The CLI's ``--workers N`` starts N copies of the same command with ``--part i/N`` and stops with one line
    when a share fails, keeping what finished."""
    import subprocess

    from diffuse_core.cli import evaluation as cli_eval

    started = []

    class Proc:
        def __init__(self, cmd):
            self.cmd = cmd
            started.append(cmd)

        def wait(self):
            return 1 if self.cmd[-1] == "1/2" else 0

    monkeypatch.setattr(subprocess, "Popen", Proc)
    args = type("A", (), {"workers": 2, "threads": 1, "argv": ["evaluate", "--quick"]})()
    with pytest.raises(cli_eval.UserError, match=r"share\(s\) 1/2 \(exit 1\) failed"):
        cli_eval._run_shares(args)
    assert [c[-1] for c in started] == ["0/2", "1/2"]
    assert all(c[c.index("--quick") - 1] == "evaluate" and "--workers" in c for c in started)
    Proc.wait = lambda self: 0
    assert cli_eval._run_shares(args) == min(2, __import__("os").cpu_count() or 1)   # the rest: both workers' threads


def test_kept_method_results_do_not_depend_on_the_real_data_pass_settings():
    """The BraTS pass runs after the kept method results and is never kept itself: a run resumed with other (or no)
    --brats settings reuses them; any setting the methods do depend on starts afresh."""
    from diffuse_core.evaluation.kept_results import results_key as _fingerprint
    from diffuse_core.evaluation.report import EvalSettings

    class Card:
        card = {"anomaly_threshold": 0.3}

    base = _fingerprint(Card(), EvalSettings())
    assert _fingerprint(Card(), EvalSettings(brats_dir="cases", brats_per_case=2, brats_healthy_per_case=1)) == base
    assert _fingerprint(Card(), EvalSettings(n_test=48)) != base and _fingerprint(Card(), EvalSettings(k=700)) != base


def test_the_page_says_when_its_minutes_leave_out_results_kept_from_earlier_starts():
    from diffuse_core.evaluation.results_page import _earlier_starts

    assert _earlier_starts({"kept_from_earlier_starts": [], "methods": {"a": 1}}) == ""      # one uninterrupted start
    line = _earlier_starts({"kept_from_earlier_starts": ["a", "_sweeps"], "methods": {"a": 1, "b": 2}})
    assert "resumed 1 of 2 methods and the sweeps kept from earlier starts" in line
    assert "earlier starts are not counted" in _earlier_starts({"methods": {}})              # files written before
