"""ACAT saliency, Grad-CAM / gradient maps, the saliency models' save/load and their training, on a toy task.

Toy task (32x32): a disk ("brain") on a -1 background; diseased slices carry a bright 6x6 square ("lesion"). A tiny
autoencoder and classifier are trained for a few seconds once per module with the real trainers.
"""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from diffuse_core.core.brain import brain_masks
from diffuse_core.saliency.acat import SaliencyResult, acat_saliency
from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder
from diffuse_core.models.classifier import ClassifierConfig, new_classifier
from diffuse_core.saliency.dispatch import (SALIENCY_METHODS, SaliencyModels, compute_saliency, gradcam_saliency,
                                   gradient_saliency, load_saliency_models)
from diffuse_core.models.checkpoint import load, load_autoencoder, load_classifier, read_config, save
from diffuse_core.evaluation.saliency_quality import auroc, evaluate_acat, evaluate_classifier
from diffuse_core.train.saliency import train_autoencoder, train_classifier
from diffuse_core.train.trainer import CHECKPOINT_NAME

SIZE = 32
AE_CFG = AutoencoderConfig(channels=1, resolution=SIZE, widths=(8, 16), latent_channels=4)
CLF_CFG = ClassifierConfig(channels=1, resolution=SIZE, widths=(8, 16, 16), dropout=0.0)


def toy(n: int, seed: int = 0, size: int = SIZE) -> dict:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels, masks, brains = [], [], [], []
    for i in range(n):
        disk = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5) < size * rng.uniform(0.36, 0.44)
        img = np.where(disk, rng.uniform(-0.2, 0.1) + 0.05 * rng.standard_normal((size, size)), -1.0)
        m = np.zeros((size, size), np.uint8)
        if i % 2:
            while True:
                y0, x0 = rng.integers(4, size - 10, 2)
                if disk[y0:y0 + 6, x0:x0 + 6].all():
                    break
            img[y0:y0 + 6, x0:x0 + 6] = 0.9
            m[y0:y0 + 6, x0:x0 + 6] = 1
        images.append(img[None].astype(np.float32))
        labels.append(i % 2)
        masks.append(m)
        brains.append(disk.astype(np.uint8))
    return {"images": np.stack(images), "labels": np.array(labels), "masks": np.stack(masks),
            "brain_masks": np.stack(brains)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("acat")
    data = toy(256)
    train_autoencoder(root / "ae", steps=300, batch_size=16, lr=5e-3, data=data, progress=False, config=AE_CFG,
                      checkpoint_every=100)
    train_classifier(root / "clf", steps=150, batch_size=16, lr=3e-3, data=data, progress=False, config=CLF_CFG,
                     checkpoint_every=100)
    models = load_saliency_models(root / "ae", root / "clf")
    return root, models


@pytest.fixture(scope="module")
def test_set():
    return toy(16, seed=5)


def diseased_batch(test_set):
    d = test_set["labels"] == 1
    return torch.from_numpy(test_set["images"][d]), test_set["masks"][d], test_set["brain_masks"][d]


# ------------------------------------------------------------------------------------------------ ACAT
def test_acat_shapes_and_ranges(trained, test_set):
    _, models = trained
    x = torch.from_numpy(test_set["images"][:3])
    r = acat_saliency(x, models.autoencoder, models.classifier, steps=5)
    assert isinstance(r, SaliencyResult)
    for m in (r.saliency, r.saliency_healthy, r.saliency_diseased):
        assert m.shape == (3, SIZE, SIZE) and m.dtype == np.float32
        assert m.min() >= 0 and m.max() <= 1 + 1e-6
    assert np.allclose(r.saliency.reshape(3, -1).max(1), 1, atol=1e-5)
    assert r.counterfactual.shape == r.reconstruction.shape == (3, 1, SIZE, SIZE)
    assert r.prob_before.shape == r.prob_after.shape == (3,)
    single = acat_saliency(x[1], models.autoencoder, models.classifier, steps=5, both_directions=False)
    assert single.saliency.shape == (SIZE, SIZE) and single.saliency_diseased is None
    assert single.counterfactual.shape == (1, SIZE, SIZE) and isinstance(single.prob_after, float)
    np.testing.assert_allclose(single.saliency_healthy, r.saliency_healthy[1], atol=1e-5)  # batching is per sample


def test_acat_is_deterministic(trained, test_set):
    _, models = trained
    x = torch.from_numpy(test_set["images"][:2])
    a = acat_saliency(x, models.autoencoder, models.classifier, steps=4)
    b = acat_saliency(x, models.autoencoder, models.classifier, steps=4)
    np.testing.assert_array_equal(a.saliency, b.saliency)
    kw = dict(steps=4, init_noise=0.1)
    c = acat_saliency(x, models.autoencoder, models.classifier, generator=torch.Generator().manual_seed(3), **kw)
    d = acat_saliency(x, models.autoencoder, models.classifier, generator=torch.Generator().manual_seed(3), **kw)
    np.testing.assert_array_equal(c.saliency, d.saliency)


def test_saliency_is_zero_outside_the_brain(trained, test_set):
    _, models = trained
    x = torch.from_numpy(test_set["images"][:4])
    auto = brain_masks(x)
    np.testing.assert_array_equal(auto, test_set["brain_masks"][:4].astype(bool))
    for method in SALIENCY_METHODS:
        kw = {"steps": 3} if method == "acat" else {}
        s = compute_saliency(method, x, models, **kw)
        assert s.shape == (4, SIZE, SIZE) and s.dtype == np.float32
        assert (s[~auto] == 0).all(), method
        # an explicit brain mask (here: the left half only) wins over the automatic one
        half = np.zeros((SIZE, SIZE), bool)
        half[:, : SIZE // 2] = True
        s2 = compute_saliency(method, x[0], models, brain_mask=half, **kw)
        assert s2.shape == (SIZE, SIZE) and (s2[~half] == 0).all() and s2.max() in (0.0, pytest.approx(1.0))


def test_shift_towards_healthy_lowers_p_diseased_and_finds_the_square(trained, test_set):
    _, models = trained
    x, lesions, _ = diseased_batch(test_set)
    r = acat_saliency(x, models.autoencoder, models.classifier, steps=20)
    assert (r.prob_before > 0.8).all()  # the classifier sees the squares
    assert (r.prob_after < 0.2).all() and (r.prob_after < r.prob_before - 0.5).all()
    assert (r.prob_after_diseased >= r.prob_reconstruction - 1e-3).all()
    # the shift towards healthy changes the square (and its 1-pixel rim, the decoder's blur), not the rest
    rim = np.stack([ndimage.binary_dilation(m, iterations=1) for m in lesions])
    mass_in = (r.saliency_healthy * rim).sum((1, 2)) / r.saliency_healthy.sum((1, 2))
    assert mass_in.mean() > 0.5, mass_in
    # the paper's mask (90th percentile of the smoothed two-direction map) lands on the square
    from diffuse_core.core.masks import mask_from_saliency

    hits = [(mask_from_saliency(s, brain_masks(xi[None])[0]).astype(bool) & (m > 0)).sum() / m.sum()
            for s, xi, m in zip(r.saliency, x, lesions)]
    assert np.mean(hits) > 0.5, hits


def test_gradcam_and_gradient_maps(trained, test_set):
    _, models = trained
    x = torch.from_numpy(test_set["images"][:3])
    for fn in (gradcam_saliency, gradient_saliency):
        s = fn(x, models.classifier)
        assert s.shape == (3, SIZE, SIZE) and s.dtype == np.float32
        assert s.min() >= 0 and s.max() <= 1 + 1e-6
        one = fn(x[0].numpy(), models.classifier)
        assert one.shape == (SIZE, SIZE)
    with pytest.raises(ValueError, match="unknown saliency method"):
        compute_saliency("lime", x[0], models)


def test_other_resolutions_and_channels():
    for size, ch in ((64, 1), (64, 4)):
        ae = new_autoencoder(AutoencoderConfig(channels=ch, resolution=size, widths=(4, 8), latent_channels=2))
        clf = new_classifier(ClassifierConfig(channels=ch, resolution=size, widths=(4, 8)))
        x = torch.full((ch, size, size), -1.0)
        x[:, 16:48, 16:48] = 0.3
        r = acat_saliency(x, ae, clf, steps=2)
        assert r.saliency.shape == (size, size) and r.counterfactual.shape == (ch, size, size)
        assert gradcam_saliency(x, clf).shape == (size, size)
    ae = new_autoencoder(AutoencoderConfig(resolution=256))
    assert ae.encode(torch.zeros(1, 1, 256, 256)).shape == (1, *ae.config.latent_shape) == (1, 8, 64, 64)
    assert new_classifier(ClassifierConfig(resolution=256))(torch.zeros(1, 1, 256, 256)).shape == (1, 2)
    with pytest.raises(ValueError):
        AutoencoderConfig(resolution=30, widths=(4, 8, 16))


# ------------------------------------------------------------------------------------------------ save / load
def test_save_load_round_trip(tmp_path):
    ae = new_autoencoder(AE_CFG, seed=1)
    clf = new_classifier(CLF_CFG, seed=2)
    save(ae, tmp_path / "ae", card={"model": "x"})
    save(clf, tmp_path / "clf")
    meta = read_config(tmp_path / "ae")                    # config.json, with model_card.json as its card
    assert "card" not in json.loads((tmp_path / "ae" / "config.json").read_text())
    assert meta["kind"] == "autoencoder" and meta["config"]["widths"] == [8, 16] and meta["card"]["model"] == "x"
    ae2, clf2 = load_autoencoder(tmp_path / "ae"), load_classifier(tmp_path / "clf")
    assert ae2.config == ae.config and clf2.config == clf.config and ae2.card == meta["card"]
    for k, v in ae.state_dict().items():
        assert torch.equal(v, ae2.state_dict()[k])
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(ae(x), ae2(x)) and torch.equal(clf(x), clf2(x))
    assert not list(tmp_path.glob("*/*.tmp*"))  # atomic writes leave no temporaries


def test_missing_and_corrupt_weights_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="diffuse-studio train autoencoder"):
        load_autoencoder(tmp_path / "nowhere")
    save(new_classifier(CLF_CFG), tmp_path / "clf")
    w = tmp_path / "clf" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="diffuse-studio train classifier"):
        load_classifier(tmp_path / "clf")
    w.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors.*diffuse-studio train classifier"):
        load_classifier(tmp_path / "clf")
    (tmp_path / "clf" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(tmp_path / "clf")
    save(new_autoencoder(AE_CFG), tmp_path / "ae")
    with pytest.raises(ValueError, match="holds a autoencoder|holds an autoencoder|but a classifier"):
        load_classifier(tmp_path / "ae")


# ------------------------------------------------------------------------------------------------ training
def test_training_writes_checkpoint_and_weights_and_resumes(tmp_path):
    torch.set_num_threads(1)
    data = toy(32, seed=1)
    kw = dict(batch_size=4, data=data, progress=False, config=AE_CFG, checkpoint_every=2)
    out = train_autoencoder(tmp_path / "ae", steps=4, **kw)
    assert (out / CHECKPOINT_NAME).is_file() and (out / "model.safetensors").is_file()
    assert torch.load(out / CHECKPOINT_NAME, weights_only=False)["step"] == 4
    card = load_autoencoder(out).card
    tr = card["training"]                       # the same layout as the DDPM's card
    assert tr["steps_done"] == 4 and tr["steps"] == 4 and tr["seed"] == 0 and np.isfinite(tr["final_loss_ema"])
    assert {"wall_seconds", "hardware"} <= set(tr) and "data" in card and "torch_threads" in tr["hardware"]
    train_autoencoder(tmp_path / "ae", steps=6, **kw)  # resumes: 2 more steps
    assert torch.load(out / CHECKPOINT_NAME, weights_only=False)["step"] == 6
    assert load_autoencoder(out).card["training"]["steps_done"] == 6
    # resuming gives the same weights as one uninterrupted run
    straight = train_autoencoder(tmp_path / "ae_straight", steps=6, **kw)
    a, b = load_autoencoder(out).state_dict(), load_autoencoder(straight).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the classifier trainer too, and a single-class data set is refused
    clf_out = train_classifier(tmp_path / "clf", steps=2, batch_size=4, data=data, progress=False, config=CLF_CFG)
    assert load_classifier(clf_out).card["training"]["steps_done"] == 2
    with pytest.raises(ValueError, match="both classes"):
        train_classifier(tmp_path / "clf1", steps=2, data={"images": data["images"], "labels": np.zeros(32)},
                         progress=False, config=CLF_CFG)


def test_auroc_and_evaluations(trained, test_set):
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert auroc([0.2, 0.9], [1, 0]) == 0.0 and auroc([0.1], [1]) is None
    _, models = trained
    ds = dict(test_set, lesion_types=np.where(test_set["labels"] == 1, "square", "none"))
    ev = evaluate_classifier(models.classifier, ds)
    assert ev["n"] == 16 and ev["accuracy"] >= 0.9 and ev["auroc"] >= 0.9
    assert set(ev["per_lesion_type"]) == {"square"} and ev["per_lesion_size"]
    ea = evaluate_acat(models, ds, steps=10)
    assert ea["n"] == 8 and 0 <= ea["dice"] <= 1 and ea["lesion_share"] > 0.5
    assert isinstance(SaliencyModels(models.autoencoder, models.classifier).device, torch.device)
