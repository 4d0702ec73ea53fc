"""The CT check (issue: models v2, item 3): the teaching set's CT cases read as the app reads them, candidates named
on the command line, and the whole comparison on a few slices with a tiny CT model."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffuse_core.evaluation import ct_check
from diffuse_core.evaluation.picture import TILE, real_data_grid
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser


def test_teaching_ct_cases_are_windowed_strokes_darker_than_their_brain():
    data = ct_check.teaching_ct_set("default")
    assert data.ids == ["case13_ct_stroke", "case14_ct_stroke", "case15_ct_stroke", "case21_ct_healthy"]
    assert data.images.shape == (4, 1, 128, 128) and data.images.min() >= -1 and data.images.max() <= 1
    for img, lesion, brain, kind in zip(data.images[:, 0], data.lesions, data.brains, data.lesion_types):
        if kind == "none":
            assert not lesion.any()
            continue
        assert lesion.any() and (lesion <= brain).all()
        assert img[lesion > 0].mean() < img[(brain > 0) & (lesion == 0)].mean() - 0.05   # hypodense infarct


def test_candidate_names_a_ddpm_and_its_acat_pair():
    assert ct_check._candidate("ct=runs/ct/ddpm") == ("ct", (Path("runs/ct/ddpm"), Path("runs/ct")))
    assert ct_check._candidate("mri=assets/ddpm:assets") == ("mri", (Path("assets/ddpm"), Path("assets")))


@pytest.mark.slow
def test_compare_measures_candidates_and_the_ct_threshold_on_the_same_slices(tmp_path, monkeypatch):
    # a tiny untrained CT DDPM beside the shipped ACAT pair: checks the bookkeeping, not the quality
    tiny = DenoiserConfig(channels=1, resolution=128, block_channels=(8, 16), attention_levels=(False, True),
                          norm_num_groups=4, attention_head_dim=8)
    save_denoiser(new_denoiser(tiny, seed=0), tmp_path / "ddpm", card={"data": {"modalities": ["ct"]}})
    assets = tmp_path / "acat"
    for kind in ("autoencoder", "classifier"):
        shutil.copytree(Path(__file__).resolve().parents[1] / "assets" / kind, assets / kind)
    keep = {}
    out = ct_check.compare({"tiny": (tmp_path / "ddpm", assets)}, n_val=1, n_test=1, n_healthy=1,
                           settings={"k": 200, "steps": 2, "percentile": 90}, keep=keep)
    json.dumps(out)                                      # what --out writes
    thr = out["ct_threshold"]
    assert set(thr["teaching_dice"]) == {"case13_ct_stroke", "case14_ct_stroke", "case15_ct_stroke"}
    assert set(thr["teaching_healthy_flagged"]) == {"case21_ct_healthy"}
    assert 0 <= thr["test_dice"] <= 1 and thr["teaching_dice"]["case13_ct_stroke"] > 0.3   # the large infarct
    c = out["candidates"]["tiny"]
    assert c["settings"] == {"k": 200, "steps": 2, "percentile": 90.0, "seed": 0}
    for key in ("val_dice", "test_dice", "test_dice_oracle_mask", "acat_mask_share_of_lesion_test",
                "healthy_flagged_share"):
        assert 0.0 <= c[key] <= 1.0, key
    assert c["healthy_change"] > 0 and set(c["teaching_dice"]) == set(thr["teaching_dice"])
    assert np.isfinite(list(c["teaching_acat_share_of_lesion"].values())).all()

    ct_check.write_cards(out, "tiny", "the test", {"device": "cpu"}, n_saliency=4)
    card = json.loads((tmp_path / "ddpm" / "model_card.json").read_text())
    assert card["anomaly_threshold"] == c["threshold_from_val"]
    assert card["recommended_settings"]["steps"] == 2 and card["ct_check"]["candidates"]["tiny"] == c
    assert card["written_by"]["ct_check"]["command"] == "the test" and card["written_by"]["ct_check"]["writer"] == "ct-check"
    clf = json.loads((assets / "classifier" / "model_card.json").read_text())["quality"]
    assert clf["data"]["modalities"] == ["ct"] and clf["data"]["n"] == 4 and 0 <= clf["accuracy"] <= 1
    section = "\n".join(ct_check.markdown(card["ct_check"], shipped=card["ct_check"]["shipped"]))
    assert "| Dif-fuse, tiny (shipped) |" in section and "case13_ct_stroke" in section
    assert f"{c['test_dice']:.3f}" in section and f"z > {thr['threshold_from_val']:g}" in section
    data = keep.pop("data")
    assert set(keep) == {"ct-threshold", "tiny"} and keep["tiny"][1].shape == (4, 128, 128)
    png = real_data_grid(data, keep, tmp_path / "ct.png", rows=len(data))
    grid = cv2.imread(str(png))
    assert grid.shape[0] > 3 * TILE and grid.shape[1] > 4 * TILE      # 3 strokes x (input, 2 + 1 panels)


def test_merge_takes_earlier_candidates_only_from_the_same_slices():
    base = {"slices": {"val": 16}, "ct_threshold": {"test_dice": 0.3}, "candidates": {"ct": {"test_dice": 0.5}}}
    earlier = {"slices": {"val": 16}, "ct_threshold": {"test_dice": 0.3}, "candidates": {"mri": {"test_dice": 0.1}}}
    assert list(ct_check.merge(base, earlier)["candidates"]) == ["mri", "ct"]
    other = {**earlier, "slices": {"val": 8}}
    with pytest.raises(ValueError, match="other slices"):
        ct_check.merge(base, other)


@pytest.mark.slow
def test_a_candidate_run_as_the_app_runs_it_uses_and_writes_its_own_rule_and_score(tmp_path):
    """``--as-app``: the one assembly at the candidate's card settings (here with a mask rule and score given for the
    measurement), recorded with the candidate and written into its card with the threshold."""
    tiny = DenoiserConfig(channels=1, resolution=128, block_channels=(8, 16), attention_levels=(False, True),
                          norm_num_groups=4, attention_head_dim=8)
    save_denoiser(new_denoiser(tiny, seed=0), tmp_path / "ddpm",
                  card={"data": {"modalities": ["ct"]}, "recommended_settings": {"k": 200, "steps": 2}})
    assets = tmp_path / "acat"
    for kind in ("autoencoder", "classifier"):
        shutil.copytree(Path(__file__).resolve().parents[1] / "assets" / "ct" / kind, assets / kind)
    rule = {"kind": "weighted", "level": 0.2, "max_share": 0.5}
    out = ct_check.compare({"tiny": (tmp_path / "ddpm", assets)}, n_val=1, n_test=1, n_healthy=1, as_app=True,
                           card_settings={"tiny": {"mask_rule": rule, "score": "signed"}})
    c = out["candidates"]["tiny"]
    assert c["settings"]["as_app"] and c["settings"]["k"] == 200 and c["settings"]["steps"] == 2
    assert c["settings"]["mask_rule"]["kind"] == "weighted" and c["settings"]["score"] == "signed"
    assert 0.0 <= c["test_dice"] <= 1.0 and 0.0 <= c["healthy_flagged_share"] <= 1.0
    ct_check.write_cards(out, "tiny", "the test", {"device": "cpu"}, n_saliency=4)
    card = json.loads((tmp_path / "ddpm" / "model_card.json").read_text())
    assert card["mask_rule"]["kind"] == "weighted" and card["score"] == "signed"
    assert card["anomaly_threshold"] == c["threshold_from_val"] and "as the app runs it" in \
        card["recommended_settings"]["rule"]


def test_card_entries_need_the_app_run():
    with pytest.raises(SystemExit):
        ct_check.main(["b=assets/ct/ddpm", "--out", "x.json", "--card", 'b={"score": "signed"}'])
    with pytest.raises(SystemExit):
        ct_check.main(["b=assets/ct/ddpm", "--out", "x.json", "--as-app", "--card", 'c={"score": "signed"}'])
