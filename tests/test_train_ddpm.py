"""DDPM training: loss goes down on an easy set, checkpoints resume, --init-from continues, the CLI trains."""

import json

import numpy as np
import pytest
import torch

from diffuse_core.cli import main
from diffuse_core.models.checkpoint import read_config, update_card
from diffuse_core.models.denoiser import DenoiserConfig, load_denoiser
from diffuse_core.train.ddpm import DDPMTrainConfig, TensorPool, train_ddpm

TINY = DenoiserConfig(resolution=16, block_channels=(16, 32), attention_levels=(False, True), norm_num_groups=8,
                      attention_head_dim=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pool(n=32):
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(-1, 1, 16).view(1, 1, 16).expand(n, 1, 16, 16)
    return TensorPool(base + 0.05 * torch.randn(n, 1, 16, 16, generator=g))


def _weights(folder):
    return load_denoiser(folder).unet.state_dict()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_resume_continues_the_step_count(tmp_path):
    cfg = DDPMTrainConfig(steps=4, batch_size=4, checkpoint_every=2, unet=TINY, precision="fp32")
    train_ddpm(tmp_path / "run", _pool(), cfg, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "model.safetensors").exists()
    assert load_denoiser(tmp_path / "run").card["training"]["steps_done"] == 4
    after_4 = _weights(tmp_path / "run")
    cfg.steps = 6
    saved_at = []
    train_ddpm(tmp_path / "run", _pool(), cfg, progress=False, on_checkpoint=lambda step, loss: saved_at.append(step))
    assert saved_at == [6]                       # only the two missing steps were trained
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6 and load_denoiser(tmp_path / "run").card["training"]["steps_done"] == 6
    # the resumed run ends where one uninterrupted run of 6 steps ends (EMA and raw weights), not where it was
    train_ddpm(tmp_path / "straight", _pool(), cfg, progress=False)
    resumed = _weights(tmp_path / "run")
    assert _same(resumed, _weights(tmp_path / "straight")) and not _same(resumed, after_4)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    assert _same(state["model"], straight["model"])


def test_loss_decreases(tmp_path):
    cfg = DDPMTrainConfig(steps=40, batch_size=8, checkpoint_every=40, unet=TINY, lr=2e-3, precision="fp32")
    train_ddpm(tmp_path, _pool(), cfg, progress=False)
    rows = [r.split(",") for r in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 10, 20, 30, 40]
    losses = [float(r[1]) for r in rows]
    assert np.mean(losses[-2:]) < 0.5 * losses[0]     # the untrained step-1 loss is about Var(eps) = 1


def test_init_from_continues_from_saved_weights(tmp_path):
    cfg = DDPMTrainConfig(steps=3, batch_size=4, checkpoint_every=3, unet=TINY, precision="fp32")
    flair = {"data": {"modalities": ["flair"]}}
    train_ddpm(tmp_path / "a", _pool(), cfg, progress=False, card={**flair, "anomaly_kernel": 3})
    update_card(tmp_path / "a", anomaly_threshold=0.2, by="calibrate")              # measured on these weights
    saved = _weights(tmp_path / "a")
    # a run asked for no more steps than the saved weights have: its weights are the saved ones
    train_ddpm(tmp_path / "same", _pool(), cfg, progress=False, init_from=tmp_path / "a")
    assert _same(_weights(tmp_path / "same"), saved)
    assert load_denoiser(tmp_path / "same").card["training"]["steps_done"] == 3
    # two more steps from the saved weights: not what a fresh run of 5 steps gives
    cfg.steps = 5
    train_ddpm(tmp_path / "b", _pool(), cfg, progress=False, init_from=tmp_path / "a", card=flair)
    train_ddpm(tmp_path / "fresh", _pool(), cfg, progress=False, card=flair)
    continued = _weights(tmp_path / "b")
    assert load_denoiser(tmp_path / "b").card["training"]["steps_done"] == 5
    # the kernel (a setting of the 128-px grid) carries over; the old weights' threshold is measured again, not kept
    card_b = load_denoiser(tmp_path / "b").card
    assert card_b["anomaly_kernel"] == 3 and "anomaly_threshold" not in card_b
    assert "anomaly_kernel" not in load_denoiser(tmp_path / "fresh").card
    # the card says where the first 3 steps came from (a fresh run has no such line)
    assert card_b["init_from"].startswith(f"{tmp_path / 'a'} (3 steps)")
    assert "init_from" not in load_denoiser(tmp_path / "fresh").card
    # another modality warm-started from these weights keeps nothing (its kernel is measured on its own data)
    cfg.steps = 4
    train_ddpm(tmp_path / "ct", _pool(), cfg, progress=False, init_from=tmp_path / "a",
               card={"data": {"modalities": ["ct"]}})
    assert "anomaly_kernel" not in load_denoiser(tmp_path / "ct").card
    assert not _same(continued, saved) and not _same(continued, _weights(tmp_path / "fresh"))
    # another architecture is refused with the reason
    other = DDPMTrainConfig(steps=5, batch_size=4, unet=DenoiserConfig(resolution=16, block_channels=(8, 16),
                                                                       attention_levels=(False, True),
                                                                       norm_num_groups=8, attention_head_dim=8))
    with pytest.raises(ValueError, match="architecture"):
        train_ddpm(tmp_path / "c", _pool(), other, progress=False, init_from=tmp_path / "a")


def test_cli_trains_ddpm_on_synthbrain(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    code = main(["train", "ddpm", "--out", str(tmp_path / "m"), "--steps", "2", "--batch-size", "2", "--pool", "4",
                 "--size", "32", "--channels", "16,32", "--checkpoint-every", "1"])
    assert code == 0
    meta = read_config(tmp_path / "m")
    card = meta["card"]
    assert card["training"]["steps_done"] == 2 and card["data"]["generator"] == "SynthBrain"
    assert card["data"]["healthy_only"] is True and card["data"]["n_slices"] == 4
    assert meta["unet"]["block_channels"] == [16, 32]
    # one copy of the card, each field stamped with the command that wrote it
    assert "card" not in json.loads((tmp_path / "m" / "config.json").read_text()) and card["training"]["steps"] == 2
    assert json.loads((tmp_path / "m" / "model_card.json").read_text()) == card
    assert card["written_by"]["training"]["writer"] == "train" and card["written_by"]["data"]["command"]
    # --steps is the total: from weights that record 2 steps, --steps 2 would train nothing, and says so
    again = ["train", "ddpm", "--out", str(tmp_path / "n"), "--init-from", str(tmp_path / "m"), "--batch-size", "2",
             "--pool", "4", "--size", "32", "--channels", "16,32"]
    assert main(again + ["--steps", "2"]) == 2
    assert "nothing to train (for 2 more, ask --steps 4)" in capsys.readouterr().err
    assert not (tmp_path / "n" / "config.json").exists()
    assert main(again + ["--steps", "3"]) == 0
    assert json.loads((tmp_path / "n" / "model_card.json").read_text())["training"]["steps_done"] == 3


def test_cli_train_refuses_bad_options(tmp_path, capsys):
    assert main(["train", "ddpm", "--out", str(tmp_path / "x"), "--channels", "16,wide"]) == 2
    assert "--channels" in capsys.readouterr().err
    assert main(["train", "classifier", "--out", str(tmp_path / "y"), "--channels", "16,32"]) == 2
    assert "DDPM" in capsys.readouterr().err


def test_cli_trains_on_percentile_stretched_synthbrain_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    code = main(["train", "ddpm", "--out", str(tmp_path / "m"), "--steps", "1", "--batch-size", "2", "--pool", "4",
                 "--size", "32", "--channels", "16,32", "--normalise", "percentile"])
    assert code == 0
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["input_normalisation"] == "percentile"
    # the intensity reference is that of the stretched slices: the brain's median sits well above SynthBrain's -0.2
    ref = dict(zip((float(p) for p in card["intensity_reference"]["percentiles"]),
                   card["intensity_reference"]["values"][0]))                 # one channel: FLAIR
    assert ref[50] > 0.0 and ref[75] > ref[50]


def test_normalisation_is_for_synthbrain_slices_only(tmp_path, capsys):
    assert main(["train", "classifier", "--out", str(tmp_path / "c"), "--normalise", "percentile",
                 "--data", str(tmp_path)]) == 2
    assert "--normalise" in capsys.readouterr().err
    with pytest.raises(SystemExit):                                          # argparse: not one of the choices
        main(["train", "ddpm", "--out", str(tmp_path / "d"), "--normalise", "zscore"])
    assert "invalid choice" in capsys.readouterr().err


def test_ctrl_c_stops_training_and_keeps_what_it_trained(tmp_path):
    """A background CPU training run stopped by Ctrl-C (SIGINT) or SIGTERM saves its checkpoint and exports the
    weights of the last finished step, exits 0, and the same command resumes from there."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "diffuse_core", "train", "ddpm", "--out", str(out), "--steps", "100000",
           "--batch-size", "2", "--pool", "4", "--size", "32", "--channels", "16,32", "--checkpoint-every", "100000",
           "--threads", "1"]
    env = {**__import__("os").environ, "DIFFUSE_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.5)                                   # a few steps logged: the loop is running
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    meta = read_config(out)
    done = meta["card"]["training"]["steps_done"]
    assert 2 <= done < 100000 and (out / "checkpoint.pt").is_file() and (out / "model.safetensors").is_file()
    again = subprocess.run(cmd[:8] + [str(done + 1)] + cmd[9:], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "model_card.json").read_text())["training"]["steps_done"] == done + 1


def test_train_on_scanner_synthbrain_records_the_realism(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    base = ["--steps", "1", "--batch-size", "2", "--pool", "4", "--size", "32", "--checkpoint-every", "1"]
    assert main(["train", "ddpm", "--out", str(tmp_path / "d"), "--channels", "16,32", "--realism", "scanner"] + base) == 0
    data = json.loads((tmp_path / "d" / "model_card.json").read_text())["data"]
    from diffuse_core.data.synthbrain import check_realism

    assert data["realism"] == ",".join(sorted(check_realism("scanner"))) and data["n_slices"] == 4
    assert main(["train", "classifier", "--out", str(tmp_path / "c"), "--realism", "scanner,nope"] + base) == 2
    assert main(["train", "ddpm", "--out", str(tmp_path / "e"), "--data", str(tmp_path), "--realism", "scanner"]
                + base) == 2
