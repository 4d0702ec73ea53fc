"""Rapid reporting (issue: teaching v2, item 1): the packet, the marks, the review, and a whole packet played through
the Quiz tab's functions with the shipped models (a few sampler steps) and the reveal cache."""

import os

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from diffuse_core.studio import rapids  # noqa: E402
from diffuse_core.studio.rapids import Packet, PacketCase, draw_packet, judge, packet_report  # noqa: E402


def _cases(n_normal=6, n_abnormal=15):
    return ([PacketCase(f"t/s/n{i}", True, "normal", "easy") for i in range(n_normal)]
            + [PacketCase(f"t/s/a{i}", False, ["glioma", "stroke", "wmh"][i % 3], ["easy", "subtle"][i % 2])
               for i in range(n_abnormal)])


def test_a_packet_is_seeded_half_normal_and_in_random_order():
    a, b = draw_packet(_cases(), 10, seed=4), draw_packet(_cases(), 10, seed=4)
    assert a == b and len(set(c.key for c in a)) == 10
    assert sum(c.healthy for c in a) == 5
    assert draw_packet(_cases(), 10, seed=5) != a
    orders = {tuple(c.healthy for c in draw_packet(_cases(), 10, seed=s)) for s in range(6)}
    assert len(orders) > 1                                           # normal ones are not always first
    few_normal = draw_packet(_cases(n_normal=2), 10, seed=0)         # the sets decide when they are short
    assert sum(c.healthy for c in few_normal) == 2
    few_abnormal = draw_packet(_cases(n_abnormal=3), 8, seed=0)
    assert sum(not c.healthy for c in few_abnormal) == 3
    with pytest.raises(ValueError, match="at most"):
        draw_packet(_cases(2, 2), 10)
    with pytest.raises(ValueError, match="4 to 40"):
        draw_packet(_cases(), 2)


def test_marks_follow_the_rules():
    truth = np.zeros((64, 64), np.uint8)
    truth[20:30, 20:30] = 1
    spacing = (1.0, 1.0)
    assert judge("normal", True) == "correct-normal"
    assert judge("abnormal", True, (5, 5)) == "overcall"
    assert judge("normal", False, None, truth) == "missed"
    assert judge("abnormal", False, (25, 25), truth, spacing) == "correct-abnormal"
    assert judge("abnormal", False, (33, 25), truth, spacing) == "correct-abnormal"      # 4 mm off the edge
    assert judge("abnormal", False, (40, 25), truth, spacing) == "abnormal-wrong-place"  # 11 mm off
    assert judge("abnormal", False, (31, 25), truth, (2.0, 2.0)) == "correct-abnormal"   # 4 mm at 2 mm pixels
    assert judge("abnormal", False, (33, 25), truth, (2.0, 2.0)) == "abnormal-wrong-place"   # 8 mm
    assert judge("abnormal", False, None, None) == "abnormal-unlocated"
    with pytest.raises(ValueError, match="click"):
        judge("abnormal", False, None, truth)
    with pytest.raises(ValueError):
        judge("maybe", True)
    assert [rapids.SCORES[v] for v in ("correct-normal", "correct-abnormal", "abnormal-wrong-place", "missed",
                                       "overcall")] == [2, 2, 1, 0, 0]


def test_a_timed_packet_scores_late_answers_zero_and_the_review_adds_up():
    truth = np.zeros((32, 32), np.uint8)
    truth[10:14, 10:14] = 1
    cases = [PacketCase("t/s/a", False, "glioma", "easy"), PacketCase("t/s/b", True, "normal", "easy"),
             PacketCase("t/s/c", False, "wmh", "subtle"), PacketCase("t/s/d", True, "normal", "easy")]
    p = Packet(cases=cases, seed=0, time_limit_s=60, started=0.0, case_started=0.0)
    p.answer("abnormal", (12, 12), truth, now=10.0)          # +2
    p.answer("abnormal", (3, 3), None, now=20.0)              # overcall 0
    p = Packet.from_state(p.to_state())                       # the state survives the browser round trip
    p.answer("abnormal", (30, 30), truth, now=30.0)           # wrong place +1
    p.answer("normal", None, None, now=61.0)                  # after the limit: 0
    assert p.done and p.remaining_s(now=61.0) < 0
    r = packet_report(p.answers)
    assert (r["total"], r["max"], r["n"]) == (3, 8, 4)
    assert r["overcalled"] == ["t/s/b"] and r["wrong_place"] == ["t/s/c"] and r["missed"] == []
    assert p.answers[-1].verdict == "no-answer"
    assert r["by_type"]["normal"] == {"points": 0, "max": 4, "n": 2}
    assert r["by_difficulty"]["subtle"] == {"points": 1, "max": 2, "n": 1}
    assert [a.seconds for a in p.answers] == [10.0, 10.0, 10.0, 31.0]
    with pytest.raises(ValueError, match="finished"):
        p.answer("normal")


@pytest.mark.slow
def test_a_whole_packet_through_the_quiz_tab_with_an_instant_second_reveal(tmp_path, monkeypatch):
    """Start a packet of the default teaching set, call every slice (abnormal ones clicked on their lesion, one
    clicked away from it, normal ones called normal but one), and check the review's arithmetic; the reveal results
    are computed once, kept on disk, and read back (no network call) when the packet is repeated."""
    pytest.importorskip("gradio")
    from diffuse_core.studio import reveal_cache
    from diffuse_core.studio.settings import DEFAULTS
    from diffuse_core.ui import rapids as ui

    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setitem(DEFAULTS, "steps", 3)                  # a real run with few steps: fast on a CPU
    monkeypatch.setitem(DEFAULTS, "k", 200)
    no_progress = lambda *a, **k: None                          # noqa: E731
    out = ui.start_packet([ui.DEFAULT_SET], 4, 11, 0, progress=no_progress)
    state = out[0]
    assert len(state["cases"]) == 4 and sum(c["healthy"] for c in state["cases"]) == 2
    stored = list((tmp_path / "data" / "reveal_cache").rglob("*.npz"))
    assert len(stored) == 4
    expected, wrong_place_done, overcall_done = 0, False, False
    for c in state["cases"]:
        lc, d = ui._view(c["key"])
        scale = ui.PANEL / d.image.shape[-1]
        if c["healthy"]:
            choice, point = ("abnormal", (5 * scale, 5 * scale)) if not overcall_done else ("normal", None)
            expected += 0 if not overcall_done else 2
            overcall_done = True
        else:
            ys, xs = np.nonzero(d.truth)
            if not wrong_place_done:            # the far corner of the slice: the wrong place
                point, expected = (2 * scale, 2 * scale), expected + 1
                wrong_place_done = True
            else:
                point, expected = (ys[len(ys) // 2] * scale, xs[len(xs) // 2] * scale), expected + 2
            choice = "abnormal"
        res = ui.call(choice)(state, point)
        state = res[0]
        assert res[2]["visible"] is True and res[3] is not None and res[4] is not None      # the reveal shows
        assert res[5].startswith("### ")
        state = ui.next_case(state)[0]
    end = ui.next_case(state)
    review = end[-2]["value"]
    assert f"## {expected} / 8 marks" in review
    marks = [int(row.split("|")[5]) for row in review.splitlines() if row.startswith("| ") and row[2].isdigit()]
    assert sum(marks) == expected and len(marks) == 4

    calls = []
    real = reveal_cache.store
    monkeypatch.setattr(reveal_cache, "store", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = ui.start_packet([ui.DEFAULT_SET], 4, 11, 0, progress=no_progress)       # repeat: all from the cache
    assert [c["key"] for c in again[0]["cases"]] == [c["key"] for c in state["cases"]] and not calls
    lc, _ = ui._view(state["cases"][0]["key"])
    assert "from_cache" in reveal_cache.result_for_case(lc).extras


def test_the_clock_line_names_the_answered_slice_during_its_reveal():
    pytest.importorskip("gradio")
    from diffuse_core.ui import rapids as ui

    p = Packet(cases=[PacketCase(f"t/s/{c}", True) for c in "abcd"], seed=0, time_limit_s=600)
    p.answer("normal")
    assert ui.tick({**p.to_state(), "revealing": True}).startswith("**Slice 1 of 4** — the answer")
    assert ui.tick({**p.to_state(), "revealing": False}).startswith("**Slice 2 of 4**")
    assert "time left 9:5" in ui.tick(p.to_state())


def test_the_reveal_cache_key_names_a_kernel_other_than_the_papers(tmp_path, monkeypatch):
    """Anomaly maps are stored in the cache, so a model whose card opens/closes them with another kernel must not meet
    entries made with the paper's 5 x 5 (and the paper's kernel keeps the keys the shipped caches were made with)."""
    import shutil

    from diffuse_core.models.checkpoint import update_card
    from diffuse_core.models.registry import model_dir_for
    from diffuse_core.studio.reveal_cache import settings_key

    model = tmp_path / "ddpm"
    shutil.copytree(model_dir_for("ddpm", "mri"), model)
    monkeypatch.setenv("DIFFUSE_MODEL_DIR", str(model))
    update_card(model, anomaly_kernel=5, mask_rule={"kind": "percentile", "percentile": 90.0}, score="abs",
                input_normalisation="absolute", by="adapt")
    paper = settings_key("mri", 500, 90.0, 25, 0)
    assert paper.endswith("_seed0_paper")
    update_card(model, anomaly_kernel=3, by="adapt")
    assert settings_key("mri", 500, 90.0, 25, 0) == paper + "_m3"
    # the region rule, the score and the preparation make other masks and maps: other keys
    update_card(model, mask_rule={"kind": "weighted", "level": 0.2}, score="signed", input_normalisation="tissue",
                by="calibrate")
    assert settings_key("mri", 500, 90.0, 25, 0) == paper + "_m3_w0.2_signed_tissue"
