"""The verdict line as the app shows it (issue 36): "looks normal / abnormal" where the model card carries a
calibrated verdict, and an honest "no verdict" where it does not (the shipped CT model), never silence after a run."""

import json
import os

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from diffuse_core.core.verdict import verdict_of  # noqa: E402
from diffuse_core.models.registry import default_model_dir, is_installed  # noqa: E402
from diffuse_core.studio.scoring import verdict_line  # noqa: E402
from diffuse_core.ui import explore  # noqa: E402

CARD = {"verdict": {"percentile": 99.5, "threshold": 0.3, "false_abnormal_rate": 0.05}}


def _flat_run(card):
    brain = np.ones((32, 32), np.uint8)
    v = verdict_of(np.full((32, 32), 0.05, np.float32), brain, card)
    return None if v is None else v.to_dict()


def test_explore_shows_the_verdict_or_says_there_is_none():
    assert explore.verdict_view(None)["visible"] is False                     # before any run: nothing
    mri = explore.verdict_view({"verdict": _flat_run(CARD), "modality": "mri"})
    assert mri["visible"] and "Looks normal" in mri["value"]
    ct = explore.verdict_view({"verdict": _flat_run({}), "modality": "ct"})
    assert ct["visible"] and "No verdict for CT" in ct["value"] and "no calibrated threshold" in ct["value"]
    other = explore.verdict_view({"verdict": None, "modality": "mri"})
    assert "No verdict for this model" in other["value"]
    assert verdict_line(None) == ""                                           # no run, no line


def test_the_shipped_ct_model_gets_the_no_verdict_line_unless_its_card_has_one():
    folder = default_model_dir("ddpm", "ct")
    if not is_installed(folder):
        return
    card = json.loads((folder / "config.json").read_text()).get("card") or {}
    line = verdict_line(_flat_run(card), "ct")
    if "verdict" in card:
        assert "Looks normal" in line
    else:
        assert line.startswith("**No verdict for CT**")
