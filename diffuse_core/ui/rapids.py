"""The Quiz tab's rapid-reporting packet: call each slice normal or abnormal (click where), see the answer with the
Dif-fuse counterfactual at once, and review the packet at the end. The packet lives in the browser session's state
(``gr.State``: in memory for that tab only, gone when it closes); nothing about a trainee is written anywhere.
Rules and scoring: :mod:`diffuse_core.studio.rapids`.
"""

from __future__ import annotations

import random

import cv2
import gradio as gr
import numpy as np

from diffuse_core.studio import rapids
from diffuse_core.studio.display import display_result
from diffuse_core.studio.library import list_library, load_library_case
from diffuse_core.studio.model_store import MODELS
from diffuse_core.studio.reveal_cache import result_for_case
from diffuse_core.studio.scoring import verdict_line
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.ui.errors import user_errors
from diffuse_core.ui.pictures import USER_COLOR, grey_rgb, overlay_picture, resize_mask, with_outlines

PANEL = 384                     # pixels a side of the quiz's pictures
DEFAULT_SET = "teaching/default"


def set_choices() -> list[tuple[str, str]]:
    """(label, value) per teaching or curated set: value ``<kind>/<set>``."""
    counts: dict[str, list] = {}
    for e in list_library():
        kind = e.key.split("/", 1)[0]
        counts.setdefault(f"{kind}/{e.set_name}", []).append(e.healthy)
    return [(f"{v.split('/', 1)[1]} ({slices(len(h))}, {sum(h)} normal"
             f"{'' if v.startswith('teaching/') else ', curated'})", v) for v, h in sorted(counts.items())]


def slices(n: int) -> str:
    """"1 slice", "2 slices"."""
    return f"{n} slice" if n == 1 else f"{n} slices"


def _packet_cases(sets) -> list[rapids.PacketCase]:
    chosen = set(sets or [])
    if not chosen:
        raise ValueError("choose at least one teaching set for the packet")
    return [rapids.PacketCase(key=e.key, healthy=bool(e.healthy),
                              lesion_type="normal" if e.healthy else (e.lesion_type or "lesion"),
                              difficulty=e.difficulty or "-", modality=e.modality)
            for e in list_library() if f"{e.key.split('/', 1)[0]}/{e.set_name}" in chosen]


def _marker(rgb: np.ndarray, point_px, color=USER_COLOR) -> np.ndarray:
    if point_px is not None:
        x, y = int(round(point_px[1])), int(round(point_px[0]))
        cv2.drawMarker(rgb, (x, y), color, cv2.MARKER_CROSS, 22, 2, cv2.LINE_AA)
        cv2.circle(rgb, (x, y), 12, color, 1, cv2.LINE_AA)
    return rgb


def _view(key: str):
    """The case's picture (panel pixels), its Display and LoadedCase (the reveal result is cached: instant); the
    Display carries the slice verdict (``d.verdict``) and, for a slice called normal, no anomaly to show."""
    from diffuse_core.run.assembly import slice_verdict

    lc = load_library_case(key)
    result = result_for_case(lc)
    d = display_result(lc.case, result)
    card = (MODELS.ddpm_info(lc.case.modality).get("card") or {})
    v, _, _ = slice_verdict(result, card, MODELS.level("cpu", card))
    d.verdict = None if v is None else v.to_dict()
    if v is not None and not v.abnormal:
        d.anomaly = np.zeros_like(d.anomaly)       # a slice called normal shows no anomaly spots
    return lc, d


def _header(packet: rapids.Packet, revealing: bool = False) -> str:
    n = len(packet.cases)
    if packet.done and not revealing:
        return f"**Packet done**: {sum(a.points for a in packet.answers)} / {rapids.MAX_PER_CASE * n} marks"
    number = len(packet.answers) if revealing else packet.index + 1
    parts = [f"**Slice {number} of {n}**" + (" — the answer" if revealing else ""), f"packet seed {packet.seed}",
             f"marks so far {sum(a.points for a in packet.answers)} / {rapids.MAX_PER_CASE * len(packet.answers)}"]
    left = packet.remaining_s()
    if left is not None:
        parts.append(f"time left {int(max(left, 0)) // 60}:{int(max(left, 0)) % 60:02d}" if left > 0
                     else "**time is up**: the remaining slices score 0")
    return " · ".join(parts)


def _case_picture(key: str, point_px=None) -> np.ndarray:
    _, d = _view(key)
    return _marker(grey_rgb(d.image[0], PANEL), point_px)


def _hidden_reveal():
    return gr.update(visible=False), None, None, ""


def _buttons(answering: bool, last: bool = False):
    return (gr.update(interactive=answering), gr.update(interactive=answering),
            gr.update(visible=not answering, value="See the results" if last else "Next slice ▸"))


@user_errors
def start_packet(sets, n, seed, minutes, progress=gr.Progress()):
    """Draw a packet and show its first slice; results missing from the reveal cache are computed first."""
    cases = rapids.draw_packet(_packet_cases(sets), int(n), int(seed))
    for i, c in enumerate(cases):                  # the reveal of every slice ready before the first call
        progress((i, len(cases)), desc="preparing the packet's counterfactuals")
        _view(c.key)
    packet = rapids.Packet(cases=cases, seed=int(seed), time_limit_s=60.0 * float(minutes or 0))
    state = packet.to_state()
    return (state, None, _header(packet), _case_picture(cases[0].key), *_hidden_reveal(), *_buttons(True),
            gr.update(visible=True), gr.update(visible=False, value=""), gr.Timer(active=bool(minutes)))


def new_seed(state=None, seed=None) -> int:
    """"New packet": the seed as the trainee typed it, so that the same seed gives the same packet; a fresh random
    seed only when the box still holds the seed of the packet just played (or is empty)."""
    typed = None if seed is None or seed == "" else int(seed)
    if typed is not None and (not state or typed != int(state.get("seed", -1))):
        return typed
    return random.randrange(1, 10**6)


@user_errors
def click_point(state, evt: gr.SelectData):
    """Mark where the trainee clicked (panel pixels: row, col)."""
    if not state:
        raise ValueError("start a packet first")
    packet = rapids.Packet.from_state(state)
    if packet.done or state.get("revealing"):
        return gr.update(), gr.update()          # the answer is shown: the click no longer counts
    x, y = evt.index[0], evt.index[1]
    point = (float(y), float(x))
    return _case_picture(packet.current.key, point), point


def _reveal(lc, d, answer: rapids.Answer, point_px):
    """Before/after slider, anomaly map with the expert outline and the click, and the feedback text."""
    truth = None if d.truth is None or not d.truth.any() else d.truth
    before = with_outlines(grey_rgb(d.image[0], PANEL), None, None if truth is None else resize_mask(truth, PANEL), 2)
    before = _marker(before, point_px)
    after = grey_rgb(d.counterfactual[0], PANEL)
    heat = overlay_picture(d.image[0], d.anomaly, DEFAULTS["opacity"], None,
                           truth, d.vmax, PANEL)
    heat = _marker(heat, point_px)
    sign = f"+{answer.points}" if answer.points else "0"
    lines = [f"### {sign} — {rapids.VERDICT_TEXT[answer.verdict]}", ""]
    lines += [f"Dif-fuse's verdict: {verdict_line(getattr(d, 'verdict', None), lc.case.modality)}", ""]
    lines += [
             f"**{lc.title}** · {'normal' if answer.healthy else answer.lesion_type} · difficulty "
             f"{answer.difficulty}" + (f" · {lc.location}" if lc.location else "")]
    if lc.note:
        lines += ["", f"*Teaching note:* {lc.note}"]
    lines += ["", "Left: the slice with the expert's outline (green) and your click (red); slide to see the healthy "
                  "counterfactual Dif-fuse drew. Right: the anomaly map (bright = changed most)."]
    return gr.update(visible=True), (before, after), heat, "\n".join(lines)


def call(choice: str):
    """The handler of the Normal / Abnormal buttons."""

    def handler(state, point_px):
        if not state:
            raise ValueError("start a packet first")
        packet = rapids.Packet.from_state(state)
        if packet.done:
            raise ValueError("the packet is finished: repeat it or draw a new one")
        lc, d = _view(packet.current.key)
        truth = None if d.truth is None else d.truth
        point = None
        if point_px is not None:
            scale = d.image.shape[-1] / PANEL
            point = (point_px[0] * scale, point_px[1] * scale)
        if choice == "abnormal" and point is None and truth is not None and truth.any() \
                and (packet.remaining_s() is None or packet.remaining_s() > 0):
            raise ValueError("click on the slice where the abnormality is, then press Abnormal")
        answer = packet.answer(choice, point, truth, lc.case.spacing, title=lc.title)
        return ({**packet.to_state(), "revealing": True}, _header(packet, revealing=True), *_reveal(lc, d, answer, point_px),
                *_buttons(False, last=packet.done))

    handler.__name__ = f"call_{choice}"
    return user_errors(handler)


@user_errors
def next_case(state):
    """Show the next slice, or the packet's review after the last."""
    packet = rapids.Packet.from_state(state)
    if packet.done:
        return (state, None, _header(packet), None, *_hidden_reveal(), *_buttons(True), gr.update(visible=False),
                gr.update(visible=True, value=review_markdown(packet)), gr.Timer(active=False))
    state = {**packet.to_state(), "revealing": False}
    return (state, None, _header(packet), _case_picture(packet.current.key), *_hidden_reveal(), *_buttons(True),
            gr.update(visible=True), gr.update(visible=False, value=""), gr.update())


def tick(state):
    if not state:
        return gr.update()
    packet = rapids.Packet.from_state(state)
    revealing = bool(state.get("revealing"))
    return _header(packet, revealing) if revealing or not packet.done else gr.update()


def review_markdown(packet: rapids.Packet) -> str:
    r = rapids.packet_report(packet.answers)
    lines = [f"## {r['total']} / {r['max']} marks ({r['percent']:.0f} %)", "",
             f"{r['n']} slices in {r['seconds']:.0f} s · missed {len(r['missed'])} · overcalled "
             f"{len(r['overcalled'])} · right call, wrong place {len(r['wrong_place'])}", "",
             "| # | slice | truth | your call | marks | verdict | time |", "|---|---|---|---|---|---|---|"]
    for i, a in enumerate(packet.answers, 1):
        truth = "normal" if a.healthy else f"abnormal ({a.lesion_type}, {a.difficulty})"
        lines.append(f"| {i} | {a.title or a.key} | {truth} | {a.call} | {a.points} | "
                     f"{rapids.VERDICT_TEXT[a.verdict]} | {a.seconds:.0f} s |")
    for title, key in (("By lesion type", "by_type"), ("By difficulty", "by_difficulty")):
        lines += ["", f"**{title}**", "", "| | slices | marks |", "|---|---|---|"]
        for name, g in sorted(r[key].items()):
            lines.append(f"| {name} | {g['n']} | {g['points']} / {g['max']} |")
    lines += ["", "Repeat the packet to try the same slices again, or draw a new one."]
    return "\n".join(lines)


def repeat_seed(state, seed):
    return int(state["seed"]) if state else seed
