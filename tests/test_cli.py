"""The `diffuse-studio` command line as a user runs it: help, `run` with a mask file, errors as one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from diffuse_core.cli import main
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser

TINY = DenoiserConfig(channels=1, resolution=32, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)
OUTPUTS = ["counterfactual.png", "saliency.png", "mask.png", "anomaly.png", "overlay.png", "counterfactual.nii.gz",
           "result.json"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_denoiser(new_denoiser(TINY, seed=0), folder, card={"anomaly_threshold": 0.1})
    return folder


@pytest.fixture()
def slice_png(tmp_path):
    yy, xx = np.mgrid[:48, :40]
    img = np.where(np.hypot((yy - 24) / 20, (xx - 20) / 17) < 1, 110, 0).astype(np.uint8)
    img[14:22, 12:20] = 250
    mask = np.zeros((48, 40), np.uint8)
    mask[12:24, 10:22] = 255
    Image.fromarray(img).save(tmp_path / "slice.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


#: the documented commands (README, docs/cli.md) and options each must keep (contracts: scripts call them)
COMMANDS = {"run": ["--mask-from", "--gt", "--k", "--steps", "--percentile", "--model", "--device", "--out", "--slice",
                    "--solver"],
            "synth": ["--preset", "--n", "--seed", "--split", "--size", "--out"],
            "train": ["--data", "--out", "--steps", "--init-from", "--modalities"],
            "evaluate": ["--quick", "--write-cards", "--sweeps-only", "--samples-only", "--model", "--docs"],
            "app": ["--host", "--port"], "models": [], "adapt": ["--data", "--out", "--minutes"],
            "real-data": ["--brats"]}


def test_help_names_every_command_and_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    top = capsys.readouterr().out
    assert done.value.code == 0 and top.startswith("usage: diffuse-studio")
    listed = top.split("positional arguments:")[1].split("options:")[0]
    for command, options in COMMANDS.items():
        assert f"\n    {command}" in listed, f"the top-level help lacks {command}"
        with pytest.raises(SystemExit) as done:
            main([command, "--help"] if command != "train" else [command, "ddpm", "--help"])
        text = capsys.readouterr().out
        assert done.value.code == 0 and text.startswith(f"usage: diffuse-studio {command}"), command
        missing = [o for o in options if o not in text]
        assert not missing, f"diffuse-studio {command} --help lacks {missing}"
    # the installed entry point is the same parser (one process: python -m diffuse_core)
    out = subprocess.run([sys.executable, "-m", "diffuse_core", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: diffuse-studio run") and "--mask-from" in out.stdout


def test_run_with_mask_file_writes_every_output(tiny_model, slice_png, tmp_path):
    out = tmp_path / "out"
    code = main(["run", str(slice_png / "slice.png"), "--mask-from", str(slice_png / "mask.png"), "--gt",
                 str(slice_png / "mask.png"), "--k", "100", "--steps", "3", "--model", str(tiny_model),
                 "--device", "cpu", "--precision", "fp32", "--out", str(out)])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    r = json.loads((out / "result.json").read_text())
    for key in ["k", "percentile", "steps", "variant", "network_calls", "seconds", "device", "seed", "dice", "iou"]:
        assert key in r, key
    assert r["k"] == 100 and r["steps"] == 3 and r["network_calls"] == 6 and r["variant"] == "paper"
    assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["iou"] <= 1.0
    # where the time went: every part measured, none negative, the parts within the total
    t = r["timings"]
    assert set(t) == {"saliency", "inversion", "sampling", "post", "total"}
    assert min(t.values()) >= 0 and t["inversion"] > 0 and t["sampling"] > 0
    assert sum(t[p] for p in ("saliency", "inversion", "sampling", "post")) <= t["total"] + 0.01
    import nibabel as nib
    assert nib.load(out / "counterfactual.nii.gz").shape[:2] in [(40, 48), (48, 40)]  # the input's size


def test_run_without_gt_reports_null_scores(tiny_model, slice_png, tmp_path):
    out = tmp_path / "o2"
    assert main(["run", str(slice_png / "slice.png"), "--mask-from", str(slice_png / "mask.png"), "--k", "50",
                 "--steps", "2", "--model", str(tiny_model), "--device", "cpu", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["dice"] is None and r["iou"] is None


@pytest.mark.parametrize("args,words", [
    (["--k", "0"], "K must"),
    (["--percentile", "100"], "percentile"),
    (["--mask-from", "nowhere.png"], "no such file"),
    (["--model", "/nonexistent/model"], "no model folder"),
])
def test_run_errors_are_one_line(tiny_model, slice_png, tmp_path, capsys, args, words):
    base = ["run", str(slice_png / "slice.png"), "--mask-from", str(slice_png / "mask.png"), "--model",
            str(tiny_model), "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "o")]
    code = main(base + args)
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_run_rejects_a_text_file(tiny_model, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    code = main(["run", str(bad), "--mask-from", str(bad), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_run_works_with_tqdm_disabled_and_no_terminal(tiny_model, slice_png, tmp_path):
    """TQDM_DISABLE=1 (common in CI and batch jobs) used to crash the progress callback (a disabled bar has no desc)."""
    import os

    out = tmp_path / "quiet"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "diffuse_core", "run", str(slice_png / "slice.png"), "--mask-from",
                           str(slice_png / "mask.png"), "--k", "50", "--steps", "2", "--model", str(tiny_model),
                           "--device", "cpu", "--out", str(out)], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((out / "result.json").read_text())["network_calls"] == 4


def test_run_without_settings_uses_the_model_cards_like_the_app(tmp_path, slice_png):
    """One set of defaults: `run` without --k/--percentile/--steps takes the card's recommended_settings."""
    folder = tmp_path / "carded"
    save_denoiser(new_denoiser(TINY, seed=0), folder,
                  card={"anomaly_threshold": 0.1, "recommended_settings": {"k": 40, "percentile": 80.0, "steps": 3}})
    out = tmp_path / "o"
    assert main(["run", str(slice_png / "slice.png"), "--mask-from", str(slice_png / "mask.png"), "--model",
                 str(folder), "--device", "cpu", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert (r["k"], r["steps"], r["percentile"], r["network_calls"]) == (40, 3, 80.0, 6)
    # an explicit option still wins
    assert main(["run", str(slice_png / "slice.png"), "--mask-from", str(slice_png / "mask.png"), "--model",
                 str(folder), "--device", "cpu", "--steps", "2", "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["network_calls"] == 4


def test_evaluate_saliency_only_writes_the_retrained_pairs_cards(tmp_path, capsys):
    """After retraining the classifier: ``evaluate --saliency-only --write-cards`` measures it on held-out slices and
    writes its quality (for exactly these weights) into its card and ACAT's into the autoencoder's, nothing else."""
    import shutil

    from diffuse_core.evaluation.cards import weights_digest
    from diffuse_core.models.registry import default_model_dir

    pair = tmp_path / "pair"
    for name in ("autoencoder", "classifier"):
        shutil.copytree(default_model_dir(name), pair / name, ignore=shutil.ignore_patterns("checkpoint.pt", "log.csv"))
        card = json.loads((pair / name / "model_card.json").read_text())
        card.pop("quality", None)
        (pair / name / "model_card.json").write_text(json.dumps(card))
    assert main(["evaluate", "--saliency-only", "--saliency-models", str(pair), "--n-cards", "8"]) == 2
    assert "add --write-cards" in capsys.readouterr().err
    assert main(["evaluate", "--saliency-only", "--write-cards", "--saliency-models", str(pair), "--n-cards", "8",
                 "--device", "cpu"]) == 0
    clf = json.loads((pair / "classifier" / "model_card.json").read_text())["quality"]
    ae = json.loads((pair / "autoencoder" / "model_card.json").read_text())["quality"]
    assert clf["n"] == 8 and 0.0 <= clf["auroc"] <= 1.0 and clf["measured_for"]["n"] == 8
    assert clf["measured_for"]["weights_sha256"]["classifier"] == weights_digest(pair / "classifier")
    assert ae["measured_for"] == clf["measured_for"] and set(ae["saliency"]) == {"acat", "gradcam", "gradient"}
    assert f"AUROC {clf['auroc']:.3f}" in capsys.readouterr().out
