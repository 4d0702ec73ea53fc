"""Every file of the bad-input corpus (``tests/bad_inputs.py``) through the CLI and through the app's API endpoint:
each gives a result or a clear one-line error naming what is wrong, never a traceback. Bombs (files whose headers
claim huge images) are refused with the limit named; a compressed bomb costs the program under 1 GB. How long each
takes is measured in benchmarks/bench_bombs.py, not asserted here (a shared CPU makes wall-clock asserts flaky)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import input_cost  # noqa: E402
from bad_inputs import ERROR, MASK_SLICES, RESULT, make_corpus  # noqa: E402

from diffuse_core.cli import main  # noqa: E402
from diffuse_core.io.image import load_image  # noqa: E402
from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser  # noqa: E402

R = 32
TINY = DenoiserConfig(channels=1, resolution=R, block_channels=(16, 32), attention_levels=(False, True),
                      norm_num_groups=8, attention_head_dim=8)
PEAK_MB = 1024                # issue 35: what one hostile file may add to a running CLI or server's memory
# issue 35's compressed bombs (tests/bad_inputs.py): 1 MB -> 1 GiB and 2 MB -> 2 GiB deflated DICOMs, 16 frames of
# 4096 x 4096 RLE (one decoded), a 1 MB .nii.gz inflating to 1 GiB, a series of 80 deflated 2048 x 2048 slices
COMPRESSED_BOMBS = ["bomb_deflate_1g.dcm", "bomb_deflate_2g.dcm", "bomb_rle_frames.dcm", "bomb_gz.nii.gz",
                    "bomb_series"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the CPU is shared); the previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    return folder, make_corpus(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny DDPM (as a model folder and as the app's assets) and Dif-fuse masks on its grid: a 2-D one for
    pictures, a (R, R, MASK_SLICES) one for volumes."""
    base = tmp_path_factory.mktemp("setup")
    save_denoiser(new_denoiser(TINY, seed=0), base / "assets" / "ddpm", card={"anomaly_threshold": 0.1})
    mask = np.zeros((R, R), np.uint8)
    mask[10:20, 10:20] = 255
    Image.fromarray(mask).save(base / "mask2d.png")
    np.save(base / "mask3d.npy", np.repeat((mask > 0)[:, :, None], MASK_SLICES, axis=2).astype(np.uint8))
    return {"model": base / "assets" / "ddpm", "assets": base / "assets", "mask2d": base / "mask2d.png",
            "mask3d": base / "mask3d.npy", "out": base / "out"}


def _mask(case, setup) -> Path:
    return setup["mask3d"] if case.slice is not None else setup["mask2d"]


def _check_error(case, message: str, where: str) -> str | None:
    """What is wrong with an error message, or None."""
    if "Traceback" in message or "\n" in message.strip():
        return f"{where}: {case.file!r}: not one line: {message!r}"
    missing = [w for w in case.words if w not in message.lower()]
    if missing:
        return f"{where}: {case.file!r}: message lacks {missing}: {message!r}"
    return None


def test_bombs_are_refused_from_the_header(corpus):
    folder, cases = corpus
    bombs = [c for c in cases if "limit" in c.words]
    assert len(bombs) >= 8
    for case in bombs:
        with pytest.raises(ValueError) as err:
            load_image(folder / case.file, slice_index=case.slice)
        assert _check_error(case, str(err.value), "load_image") is None, str(err.value)


@pytest.mark.slow
def test_every_corpus_file_through_the_cli(corpus, setup, capsys):
    folder, cases = corpus
    # the corpus this covers: many distinct files, both outcomes, most of them errors
    assert len(cases) >= 60 and len({c.file for c in cases}) == len(cases)
    assert {c.expect for c in cases} == {RESULT, ERROR} and sum(c.expect == ERROR for c in cases) >= 40
    main(["run", str(folder / "ok.png"), "--mask-from", str(setup["mask2d"]), "--model", str(setup["model"]), "--k",
          "50", "--steps", "2", "--device", "cpu", "--out", str(setup["out"] / "warm-up")])  # imports, first load
    capsys.readouterr()
    problems = []
    for i, case in enumerate(cases):
        out = setup["out"] / f"cli{i}"
        args = ["run", str(folder / case.file), "--mask-from", str(_mask(case, setup)), "--model",
                str(setup["model"]), "--k", "50", "--steps", "2", "--device", "cpu", "--precision", "fp32", "--out",
                str(out)]
        if case.slice is not None:
            args += ["--slice", str(case.slice)]
        try:
            code = main(args)
        except BaseException as exc:  # noqa: BLE001 - any escape is what this test exists to catch
            problems.append(f"cli: {case.file!r}: raised {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        if case.expect == RESULT:
            if code != 0 or not (out / "result.json").is_file():
                problems.append(f"cli: {case.file!r}: expected a result, got exit {code}: {err.strip()[-300:]}")
            elif json.loads((out / "result.json").read_text())["steps"] != 2:
                problems.append(f"cli: {case.file!r}: result.json is wrong")
            continue
        lines = [ln for ln in err.splitlines() if ln.startswith("diffuse-studio run: error:")]
        if code != 2 or len(lines) != 1 or "Traceback" in err:
            problems.append(f"cli: {case.file!r}: expected one error line and exit 2, got exit {code}: {err!r}")
            continue
        problem = _check_error(case, lines[0], "cli")
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_every_corpus_file_through_the_app_api(corpus, setup, monkeypatch):
    """The HTTP API's ``/counterfactual`` function, as gradio calls it with an uploaded file."""
    pytest.importorskip("gradio")
    import gradio as gr

    from diffuse_core.ui.api import api_counterfactual

    monkeypatch.setenv("DIFFUSE_ASSETS", str(setup["assets"]))
    monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")
    folder, cases = corpus
    list(api_counterfactual(str(folder / "ok.png"), None, 50, 2, 90, 0, None, None, str(setup["mask2d"])))  # warm-up
    problems = []
    for case in cases:
        try:
            frames = list(api_counterfactual(str(folder / case.file), None, 50, 2, 90, 0, case.slice, None,
                                             str(_mask(case, setup))))
            outcome, message = RESULT, ""
        except (ValueError, FileNotFoundError, gr.Error) as exc:
            outcome, message = ERROR, str(getattr(exc, "message", None) or exc)
        except Exception as exc:  # noqa: BLE001 - any other type reaches the user as a bare traceback
            problems.append(f"app: {case.file!r}: raised {type(exc).__name__}: {exc}")
            continue
        if outcome != case.expect:
            problems.append(f"app: {case.file!r}: expected {case.expect}, got {outcome} {message!r}")
        elif outcome == RESULT:
            summary = frames[-1][-1]
            if frames[-1][1] != "done" or summary is None:
                problems.append(f"app: {case.file!r}: the last frame is not a result: {frames[-1][1]!r}")
        else:
            problem = _check_error(case, message, "app")
            if problem is None and str(folder) in message:
                problem = f"app: {case.file!r}: the message shows the server's path: {message!r}"
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)


def test_a_nifti_with_a_wrong_name_loads_by_content(corpus):
    folder, _ = corpus
    named = load_image(folder / "nifti_named.png", slice_index=1)
    plain = load_image(folder / "ok.nii.gz", slice_index=1)
    assert named.kind == "nifti" and named.num_slices == plain.num_slices == 4
    np.testing.assert_array_equal(named.data, plain.data)
    assert os.path.basename(named.source) == "nifti_named.png"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["cli", "app"])
@pytest.mark.parametrize("name", COMPRESSED_BOMBS)
def test_a_compressed_bomb_costs_under_1_gb_in_the_cli_and_the_app(corpus, setup, name, path):
    """Each in a fresh interpreter that has run a small file first (tests/input_cost.py): its peak memory over what
    the program held before, decode workers included, with the outcome the corpus expects (one line for an error).
    Its seconds: benchmarks/bench_bombs.py."""
    folder, cases = corpus
    case = next(c for c in cases if c.file == name)
    cost = input_cost.run(path, folder / name, slice_index=case.slice, model=setup["model"],
                          mask=_mask(case, setup), out=setup["out"] / f"cost-{path}-{name}",
                          warm=folder / "ok.png", warm_mask=setup["mask2d"],
                          env={"DIFFUSE_ASSETS": str(setup["assets"]), "DIFFUSE_DEVICE": "cpu"})
    assert cost["outcome"] == case.expect, cost
    if case.expect == ERROR:
        assert _check_error(case, cost["message"], path) is None, cost
    assert cost["peak_mb"] + cost["worker_peak_mb"] < PEAK_MB, cost
