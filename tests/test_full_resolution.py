"""Results at the input's own size (issue: models v2, item 4): outside the redrawn region the input's pixels, inside
it the model's redrawing upsampled and blended without a seam; maps and scores at the input's size."""

import json

import numpy as np
from PIL import Image

from diffuse_core.cli import main
from diffuse_core.io.full_resolution import blend_weight, to_input_grid
from diffuse_core.io.preprocess import prepare_slice
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser


def _slice(h=300, w=240):
    yy, xx = np.mgrid[:h, :w]
    brain = np.hypot((yy - h / 2) / (0.42 * h), (xx - w / 2) / (0.42 * w)) < 1
    rng = np.random.default_rng(0)
    img = np.where(brain, 100 + 20 * rng.standard_normal((h, w)), 0).astype(np.float32)
    img[120:150, 90:120] = 250                                   # a bright "lesion"
    return img, brain.astype(np.uint8)


def test_outside_the_region_the_input_pixels_inside_the_model_redrawing():
    img, brain = _slice()
    p = prepare_slice(img, size=64, modality="mri", brain_mask=brain)
    full_img = p.original_image
    assert full_img.shape == (1, 300, 240) and p.image.shape == (1, 64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[24:34, 22:32] = 1
    cf = np.full((1, 64, 64), -0.3, np.float32)                  # a "model" that paints everything grey
    anomaly = np.zeros((64, 64), np.float32)
    anomaly[26:32, 24:30] = 0.5
    full = to_input_grid(full_img, p.original_brain_mask, p.geometry, cf, anomaly, mask)
    assert full.counterfactual.shape == (1, 300, 240) and full.anomaly.shape == (300, 240)
    assert full.mask.shape == (300, 240) and full.mask.any()
    far = full.blend == 0
    assert far.mean() > 0.8
    assert np.array_equal(full.counterfactual[0][far], full_img[0][far])       # the input's own pixels, exactly
    inside = full.mask.astype(bool)
    assert np.allclose(full.counterfactual[0][inside], -0.3, atol=1e-4)       # the model's redrawing
    # no seam: between the two the weight ramps over a few pixels, never a jump
    step = max(np.abs(np.diff(full.blend, axis=0)).max(), np.abs(np.diff(full.blend, axis=1)).max())
    assert step < 0.35
    assert 0 < ((full.blend > 0) & (full.blend < 1)).sum()
    assert (full.anomaly[~p.original_brain_mask.astype(bool)] == 0).all()


def test_blend_weight_is_one_in_the_mask_and_zero_far_away():
    m = np.zeros((100, 100), np.uint8)
    m[40:60, 40:60] = 1
    w = blend_weight(m, pixels_per_model_px=4.0)
    assert (w[m > 0] == 1).all() and w[0, 0] == 0 and w.max() <= 1 and w.min() >= 0
    assert (blend_weight(np.zeros((8, 8), np.uint8), 2.0) == 0).all()


def test_without_geometry_the_model_grid_is_returned_as_is():
    x = np.zeros((1, 16, 16), np.float32)
    full = to_input_grid(x, np.ones((16, 16), np.uint8), None, x + 0.1, np.zeros((16, 16)), np.zeros((16, 16)))
    assert full.counterfactual.shape == (1, 16, 16) and np.allclose(full.counterfactual, 0.1)


def test_run_writes_every_view_at_the_input_size_and_scores_there(tmp_path):
    model = tmp_path / "model"
    cfg = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                         norm_num_groups=8, attention_head_dim=8)
    save_denoiser(new_denoiser(cfg, seed=0), model, card={"anomaly_threshold": 0.1})
    img, brain = _slice(200, 160)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "slice.png")
    gt = np.zeros((200, 160), np.uint8)
    gt[80:110, 60:90] = 255
    Image.fromarray(gt).save(tmp_path / "gt.png")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "slice.png"), "--mask-from", str(tmp_path / "gt.png"), "--gt",
                 str(tmp_path / "gt.png"), "--k", "100", "--steps", "2", "--model", str(model), "--device", "cpu",
                 "--precision", "fp32", "--out", str(out)]) == 0
    for name in ("counterfactual.png", "overlay.png", "anomaly.png", "mask.png", "saliency.png"):
        assert Image.open(out / name).size == (160, 200), name
    r = json.loads((out / "result.json").read_text())
    assert r["output_size"] == [200, 160] and r["model_grid"] == 32
    assert 0 <= r["dice"] <= 1 and r["dice_model_grid"] is not None
    # the counterfactual keeps the input's pixels away from the mask: compare a corner of the brain
    cf = np.asarray(Image.open(out / "counterfactual.png"), np.float32)
    ref = np.asarray(Image.open(tmp_path / "slice.png"), np.float32)
    assert cf.shape == ref.shape


def test_a_saved_teaching_case_keeps_the_input_size_and_its_own_pixels(tmp_path):
    from diffuse_core.data import curation

    img, brain = _slice()
    p = prepare_slice(img, size=64, modality="mri", brain_mask=brain)
    mask = np.zeros((64, 64), np.uint8)
    mask[24:34, 22:32] = 1
    cf = p.image.copy()
    full = to_input_grid(p.original_image, p.original_brain_mask, p.geometry, cf, np.zeros((64, 64), np.float32), mask)
    case = curation.CuratedCase(case_id="c1", image=p.image, counterfactual=cf, anomaly=np.zeros((64, 64), np.float32),
                                mask=mask, settings={"k": 100, "steps": 2}, geometry=p.geometry, brain_mask=p.brain_mask,
                                full=full)
    curation.save_case("set1", case, tmp_path)
    folder = next(tmp_path.rglob("c1"))
    original = np.asarray(Image.open(folder / "original.png"))
    assert original.shape == (300, 240)
    expected = np.clip((p.original_image[0] + 1) * 127.5, 0, 255).round().astype(np.uint8)
    assert np.array_equal(original, expected)                    # the input's own pixels, not an upsampled thumbnail
    assert np.asarray(Image.open(folder / "counterfactual.png")).shape == (300, 240)


def test_a_case_computes_a_results_full_resolution_once(tmp_path):
    from types import SimpleNamespace

    from diffuse_core.cases import prepare_case

    img, _ = _slice(120, 100)
    np.save(tmp_path / "s.npy", img)
    case = prepare_case(str(tmp_path / "s.npy"), size=32)
    r = SimpleNamespace(counterfactual=case.image.copy(), anomaly=np.zeros((32, 32), np.float32),
                        mask=np.zeros((32, 32), np.uint8), saliency=None)
    a = case.full_resolution(r)
    assert case.full_resolution(r) is a and a.shape == (120, 100)
    r2 = SimpleNamespace(**vars(r))
    assert case.full_resolution(r2) is not a                    # another result: computed anew
