"""The one trainer and the one model format: resume, init_from, learning-rate schedule, legacy checkpoints, cards.

Tiny autoencoder / classifier / UNet on a toy set, a few steps on the CPU.
"""

import json

import numpy as np
import pytest
import torch

from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder
from diffuse_core.models.checkpoint import (CARD_NAME, load_autoencoder, load_classifier, save, update_card,
                                            weights_digest)
from diffuse_core.models.classifier import ClassifierConfig
from diffuse_core.models.denoiser import DenoiserConfig, load_denoiser, new_denoiser, save_denoiser
from diffuse_core.models.registry import installed_models
from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm
from diffuse_core.train.saliency import train_autoencoder, train_classifier
from diffuse_core.train.trainer import CHECKPOINT_NAME, TrainSettings

SIZE = 16
AE_CFG = AutoencoderConfig(channels=1, resolution=SIZE, widths=(4, 8), latent_channels=2)
CLF_CFG = ClassifierConfig(channels=1, resolution=SIZE, widths=(4, 8), dropout=0.5)   # dropout: global RNG in play
UNET = DenoiserConfig(resolution=SIZE, block_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4,
                      attention_head_dim=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy(n: int = 24) -> dict:
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (n, 1, SIZE, SIZE)).astype(np.float32)
    labels = np.arange(n) % 2
    images[labels == 1, :, 4:8, 4:8] = 1.0
    return {"images": images, "labels": labels}


def same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("train, load, cfg", [(train_autoencoder, load_autoencoder, AE_CFG),
                                              (train_classifier, load_classifier, CLF_CFG)])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, train, load, cfg):
    kw = dict(batch_size=4, data=toy(), progress=False, config=cfg, checkpoint_every=3, lr=1e-2)
    train(tmp_path / "run", steps=3, **kw)
    first = load(tmp_path / "run").state_dict()
    train(tmp_path / "run", steps=5, **kw)
    train(tmp_path / "straight", steps=5, **kw)
    resumed = load(tmp_path / "run").state_dict()
    assert same(resumed, load(tmp_path / "straight").state_dict()) and not same(resumed, first)
    run_log, straight_log = ([r.split(",") for r in (tmp_path / d / "log.csv").read_text().splitlines()[1:]]
                             for d in ("run", "straight"))
    assert [int(r[0]) for r in run_log] == [1, 3, 5]          # one log for both calls, no step twice
    assert run_log[-1][1] == straight_log[-1][1]              # the same last loss
    assert torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)["step"] == 5
    assert load(tmp_path / "run").card["training"]["steps_done"] == 5


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    data = toy()
    train_autoencoder(tmp_path, steps=2, batch_size=4, data=data, progress=False, config=AE_CFG)
    wider = AutoencoderConfig(channels=1, resolution=SIZE, widths=(8, 8), latent_channels=2)
    with pytest.raises(ValueError, match="another autoencoder run.*--no-resume"):
        train_autoencoder(tmp_path, steps=4, batch_size=4, data=data, progress=False, config=wider)
    train_autoencoder(tmp_path, steps=1, batch_size=4, data=data, progress=False, config=wider, resume=False)
    assert load_autoencoder(tmp_path).config == wider


def test_init_from_starts_at_the_saved_weights_and_step_count(tmp_path):
    kw = dict(batch_size=4, data=toy(), progress=False, config=AE_CFG)
    train_autoencoder(tmp_path / "a", steps=3, **kw)
    saved = load_autoencoder(tmp_path / "a").state_dict()
    train_autoencoder(tmp_path / "same", steps=3, init_from=tmp_path / "a", **kw)     # nothing left to train
    assert same(load_autoencoder(tmp_path / "same").state_dict(), saved)
    train_autoencoder(tmp_path / "b", steps=4, init_from=tmp_path / "a", **kw)
    train_autoencoder(tmp_path / "fresh", steps=4, **kw)
    b = load_autoencoder(tmp_path / "b")
    assert b.card["training"]["steps_done"] == 4 and not same(b.state_dict(), saved)
    assert b.card["init_from"].startswith(f"{tmp_path / 'a'} (3 steps)")         # where its first 3 steps came from
    assert "init_from" not in load_autoencoder(tmp_path / "fresh").card
    assert not same(b.state_dict(), load_autoencoder(tmp_path / "fresh").state_dict())
    with pytest.raises(ValueError, match="but a classifier was expected"):
        train_classifier(tmp_path / "c", steps=4, batch_size=4, data=toy(), progress=False, config=CLF_CFG,
                         init_from=tmp_path / "a")


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    s = TrainSettings(steps=200, lr=1.0, lr_schedule="cosine", warmup_steps=50, lr_floor=0.05)
    assert s.lr_at(0) == pytest.approx(1 / 50) and s.lr_at(49) == pytest.approx(1.0)
    assert s.lr_at(125) == pytest.approx(0.05 + 0.95 * 0.5) and s.lr_at(200) == pytest.approx(0.05)
    assert TrainSettings(lr=0.3).lr_at(999) == 0.3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainSettings(lr_schedule="step")


def test_a_checkpoint_of_the_earlier_ddpm_trainer_resumes(tmp_path):
    """runs/ddpm checkpoints written before the one trainer (no kind, training config, no batch generator state)."""
    pool = TensorPool(torch.rand(16, 1, SIZE, SIZE) * 2 - 1)
    cfg = DDPMTrainConfig(steps=2, batch_size=4, checkpoint_every=2, unet=UNET, precision="fp32")
    train_ddpm(tmp_path, pool, cfg, progress=False)
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    legacy = {"model": ck["model"], "ema": ck["ema"], "optimizer": ck["optimizer"], "step": ck["step"],
              "seconds": ck["seconds"], "torch_rng": ck["torch_rng"], "numpy_rng": ck["numpy_rng"],
              "config": cfg.to_dict()}
    torch.save(legacy, tmp_path / CHECKPOINT_NAME)
    cfg.steps = 3
    train_ddpm(tmp_path, pool, cfg, progress=False)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)["step"] == 3
    assert load_denoiser(tmp_path).card["training"]["steps_done"] == 3


def test_every_save_stores_the_card_once_with_who_wrote_each_field(tmp_path):
    save(new_autoencoder(AE_CFG), tmp_path / "ae", card={"model": "x"}, by="train")
    save_denoiser(new_denoiser(UNET), tmp_path / "ddpm", card={"model": "y"}, by="train")
    for folder in (tmp_path / "ae", tmp_path / "ddpm"):
        card = update_card(folder, {"quality": {"dif_fuse": {"dice": np.float32(0.5)}}}, by="evaluate",
                           command="diffuse-studio evaluate --write-cards", anomaly_threshold=0.2)
        assert json.loads((folder / CARD_NAME).read_text()) == card and card["quality"] == {"dif_fuse": {"dice": 0.5}}
        assert "card" not in json.loads((folder / "config.json").read_text())            # one copy: beside the weights
        stamp = card["written_by"]["quality.dif_fuse"]
        assert stamp == card["written_by"]["anomaly_threshold"] and stamp["writer"] == "evaluate"
        assert stamp["command"] == "diffuse-studio evaluate --write-cards" and stamp["commit"] and stamp["hardware"]
        assert card["written_by"]["model"]["writer"] == "train" and card["schema"] == 2
        with pytest.raises(ValueError, match="calibrate may not write card field.*ct_check"):
            update_card(folder, ct_check={"x": 1}, by="calibrate")         # a field its command does not measure
        with pytest.raises(ValueError, match="may not write card field.*quality.note"):
            update_card(folder, {"quality": {"note": "typed by hand"}}, by="evaluate")
        with pytest.raises(ValueError, match="unknown card writer"):
            update_card(folder, anomaly_threshold=0.1, by="hand")
        assert json.loads((folder / "model_card.json").read_text()) == card      # refused writes change nothing
        assert not list(folder.glob("*.tmp*"))
    digest = weights_digest(tmp_path / "ae")
    save(new_autoencoder(AE_CFG, seed=1), tmp_path / "ae")
    assert len(digest) == 64 and weights_digest(tmp_path / "ae") != digest
    assert weights_digest(tmp_path / "nowhere") is None


def test_installed_models_lists_kind_folder_and_modality(tmp_path):
    save_denoiser(new_denoiser(UNET), tmp_path / "ddpm", card={"data": {"modalities": ["flair"]}})
    save(new_autoencoder(AE_CFG), tmp_path / "autoencoder", card={"data": {"source": "folder"}})
    (tmp_path / "classifier").mkdir()                        # no weights: not installed
    found = installed_models(tmp_path)
    assert [(m.kind, m.folder, m.modality) for m in found] == [("ddpm", tmp_path / "ddpm", "flair"),
                                                               ("autoencoder", tmp_path / "autoencoder", None)]


def test_a_time_box_stops_the_run_and_still_exports(tmp_path):
    """``max_seconds``: a run on a lent GPU ends at its time box with its weights written, between checkpoints."""
    import json as _json

    from diffuse_core.models.denoiser import DenoiserConfig
    from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

    cfg = DDPMTrainConfig(steps=None, batch_size=2, checkpoint_every=5000, max_seconds=0.5,
                          unet=DenoiserConfig(channels=1, resolution=16, block_channels=(8, 16),
                                              attention_levels=(False, True), norm_num_groups=4,
                                              attention_head_dim=4))
    out = train_ddpm(tmp_path / "run", TensorPool(np.zeros((4, 1, 16, 16), np.float32)), cfg, progress=False)
    card = _json.loads((out / "model_card.json").read_text())
    assert card["training"]["steps_done"] > 0 and card["training"]["max_seconds"] == 0.5
    assert card["training"]["steps"] is None              # no step limit: the card says so, no placeholder count
    assert (out / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="needs a time box"):
        DDPMTrainConfig(steps=None).settings()


def test_scanner_augmentation_keeps_air_and_range_and_follows_the_generator():
    import torch

    from diffuse_core.train.data import scanner_augment

    x = torch.full((6, 1, 32, 32), -1.0)
    x[:, :, 8:24, 8:24] = 0.2
    a = scanner_augment(x, torch.Generator().manual_seed(3), p=1.0)
    b = scanner_augment(x, torch.Generator().manual_seed(3), p=1.0)
    assert torch.equal(a, b) and a.shape == x.shape
    assert (a[x == -1] == -1).all() and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, x)
    assert torch.equal(scanner_augment(x, torch.Generator().manual_seed(3), p=0.0), x)


def test_a_shard_pool_takes_in_new_shards(tmp_path):
    import torch

    from diffuse_core.train.ddpm import ShardPool

    np.savez(tmp_path / "shard_0000.npz", images=np.zeros((3, 1, 8, 8), np.float16))
    pool = ShardPool(tmp_path, every=1)
    assert len(pool) == 3
    np.savez(tmp_path / "shard_0001.npz", images=np.ones((2, 1, 8, 8), np.float16))
    (tmp_path / ".shard_0002.tmp.npz").write_bytes(b"PK half-written")   # a shard still being written
    pool.sample(4, torch.Generator().manual_seed(0))
    assert len(pool) == 5


def test_percentile_stretch_puts_synthbrain_on_the_apps_scale():
    from diffuse_core.io.preprocess import prepare_slice
    from diffuse_core.train.data import normalise_slices, percentile_stretch, synthbrain_pool

    images = synthbrain_pool(3, "val", 0, 64, ("flair",), healthy=True, workers=1)["images"].astype(np.float32)
    out = percentile_stretch(images)
    assert out.shape == images.shape and out.dtype == np.float32
    for raw, st in zip(images, out):
        brain = raw[0] > -0.98
        assert (st[0][~brain] == -1).all()                                     # air stays -1
        lo, hi = np.percentile(st[0][brain], [1, 99])
        assert lo == pytest.approx(-1, abs=0.02) and hi == pytest.approx(1, abs=0.02)
        # what the app itself makes of the same slice given the same brain
        app = prepare_slice(raw, size=64, modality="mri", brain_mask=brain).image
        assert np.abs(app - st).max() < 0.05
    assert normalise_slices(images, "absolute") is not None and np.array_equal(normalise_slices(images, "absolute"),
                                                                               images)
    with pytest.raises(ValueError, match="normalisation"):
        normalise_slices(images, "zscore")


def test_acat_training_slices_take_the_tissue_scale_and_the_card_says_so():
    from diffuse_core.train.commands import TrainCommand
    from diffuse_core.train.data import labelled_training_data, normalise_slices

    raw, card_raw = labelled_training_data(None, 4, 0, 64, ("flair",))
    scaled, card = labelled_training_data(None, 4, 0, 64, ("flair",), normalise="tissue")
    assert card_raw["input_normalisation"] == "absolute" and card["input_normalisation"] == "tissue"
    np.testing.assert_allclose(scaled["images"], normalise_slices(raw["images"].astype(np.float32), "tissue"), atol=1e-6)
    assert np.array_equal(scaled["labels"], raw["labels"])
    assert TrainCommand(model="classifier", normalise="tissue").normalise == "tissue"     # allowed for ACAT models now
    with pytest.raises(ValueError, match="not to --data"):
        TrainCommand(model="classifier", normalise="tissue", data="somewhere")


def test_paired_batches_keep_each_pair_together_and_flip_it_alike():
    from diffuse_core.train.saliency import paired_batch

    g = torch.Generator().manual_seed(0)
    healthy = torch.rand(6, 1, 8, 8)
    diseased = healthy.clone()
    diseased[:, :, :3, :2] += 1.0                   # a "lesion" in the top-left corner
    images = torch.cat([healthy, diseased]).half()
    labels = torch.tensor([0] * 6 + [1] * 6)
    pairs = torch.stack([torch.arange(6), 6 + torch.arange(6)], dim=1)
    x, y = paired_batch(images, labels, pairs, 16, g)
    assert x.shape == (32, 1, 8, 8) and y.tolist() == [0] * 16 + [1] * 16
    flipped = 0
    for h, d in zip(x[:16], x[16:]):
        diff = (d - h).abs()[0] > 0.5
        left, right = torch.zeros(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool)
        left[:3, :2], right[:3, 6:] = True, True
        assert torch.equal(diff, left) or torch.equal(diff, right)     # the lesion alone, flipped with its pair
        flipped += torch.equal(diff, right)
    assert 0 < flipped < 16


def test_paired_pool_holds_each_diseased_slice_beside_its_healthy_counterpart():
    from diffuse_core.train.data import paired_training_data

    arrays, card = paired_training_data(8, 0, 64, ("flair",))
    assert arrays["labels"].tolist() == [0] * 4 + [1] * 4 and arrays["pairs"].tolist() == [[i, 4 + i] for i in range(4)]
    for h, d in arrays["pairs"]:
        changed = np.abs(arrays["images"][d].astype(np.float32) - arrays["images"][h].astype(np.float32)) > 0.02
        assert 0 < changed.mean() < 0.15           # the lesion (and a glioma's mass effect), not another slice
    assert "healthy counterpart" in card["pairing"]
    with pytest.raises(ValueError, match="paired batches"):
        train_classifier("unused", steps=1, data=toy(), paired=True)
    from diffuse_core.train.commands import TrainCommand

    assert TrainCommand(model="classifier", paired=True).paired
    for wrong in ({"model": "ddpm"}, {"model": "autoencoder"}, {"model": "classifier", "data": "somewhere"}):
        with pytest.raises(ValueError, match="--paired applies to the classifier"):
            TrainCommand(paired=True, **wrong)
