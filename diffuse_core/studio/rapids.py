"""Rapid reporting ("rapids"): a packet of slices, about half normal, each called normal or abnormal and, if
abnormal, where; scored per slice and reviewed at the end (issue: teaching v2). Plain Python, no gradio: the Quiz
tab (:mod:`diffuse_core.ui.rapids`) keeps a packet in the browser session's state, never on the server.

Scoring, per slice (:data:`SCORES`), after the rapid-reporting exams trainees practise for:

============================  =====  ==========================================================
verdict                       marks  when
============================  =====  ==========================================================
``correct-normal``            2      a normal slice called normal
``correct-abnormal``          2      an abnormal slice called abnormal, the click on the lesion
``abnormal-wrong-place``      1      an abnormal slice called abnormal, the click elsewhere
``abnormal-unlocated``        2      abnormal called on a slice with no expert outline to check
``missed``                    0      an abnormal slice called normal
``overcall``                  0      a normal slice called abnormal
``no-answer``                 0      after the packet's time limit
============================  =====  ==========================================================

"On the lesion" means within :data:`LOCATION_TOLERANCE_MM` of the expert's outline (the pixel spacing of the case
turns it into pixels), so a click on the edge of a lesion counts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

SCORES = {"correct-normal": 2, "correct-abnormal": 2, "abnormal-wrong-place": 1, "abnormal-unlocated": 2,
          "missed": 0, "overcall": 0, "no-answer": 0}
VERDICT_TEXT = {"correct-normal": "correct: normal", "correct-abnormal": "correct: abnormal, right place",
                "abnormal-wrong-place": "abnormal called, but the click missed the lesion",
                "abnormal-unlocated": "correct: abnormal (no expert outline to check the place)",
                "missed": "missed: this slice is abnormal", "overcall": "overcall: this slice is normal",
                "no-answer": "no answer within the time limit"}
MAX_PER_CASE = 2
LOCATION_TOLERANCE_MM = 5.0
PACKET_SIZES = (4, 40)          # smallest and largest packet


@dataclass(frozen=True)
class PacketCase:
    """What a packet needs to know of a library case before it is loaded."""

    key: str
    healthy: bool
    lesion_type: str = ""
    difficulty: str = ""
    modality: str = ""


def draw_packet(cases: list[PacketCase], n: int = 10, seed: int = 0, normal_share: float = 0.5) -> list[PacketCase]:
    """``n`` cases in a seeded random order, ``round(n * normal_share)`` of them normal where the sets hold enough
    (the rest abnormal; a short side is filled from the other). The same cases and seed give the same packet."""
    n = int(n)
    if not PACKET_SIZES[0] <= n <= PACKET_SIZES[1]:
        raise ValueError(f"a packet holds {PACKET_SIZES[0]} to {PACKET_SIZES[1]} slices, not {n}")
    if len(cases) < n:
        raise ValueError(f"the chosen teaching sets hold {len(cases)} slices: choose a packet of at most that many, "
                         f"or add a set")
    rng = np.random.default_rng(int(seed))
    normal = [c for c in cases if c.healthy]
    abnormal = [c for c in cases if not c.healthy]
    rng.shuffle(normal)
    rng.shuffle(abnormal)
    want_normal = min(len(normal), max(0, round(n * normal_share)))
    want_normal = max(want_normal, n - len(abnormal))          # too few abnormal ones: more normal ones
    picked = normal[:want_normal] + abnormal[:n - want_normal]
    order = rng.permutation(len(picked))
    return [picked[i] for i in order]


def on_lesion(point, truth: np.ndarray, spacing_mm=(1.0, 1.0), tolerance_mm: float = LOCATION_TOLERANCE_MM) -> bool:
    """Whether ``point`` (row, col) on ``truth``'s grid lies within ``tolerance_mm`` of the lesion."""
    truth = np.asarray(truth, np.uint8)
    r, c = int(round(point[0])), int(round(point[1]))
    if not (0 <= r < truth.shape[0] and 0 <= c < truth.shape[1]):
        return False
    px = max(1, int(round(tolerance_mm / max(min(float(spacing_mm[0]), float(spacing_mm[1])), 1e-3))))
    near = cv2.dilate(truth, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)))
    return bool(near[r, c])


def judge(call: str, healthy: bool, point=None, truth=None, spacing_mm=(1.0, 1.0)) -> str:
    """The verdict (a key of :data:`SCORES`) of one call: ``call`` "normal" or "abnormal"; ``point`` (row, col) on
    the truth's grid, required for an abnormal call on an abnormal slice that has an outline."""
    if call not in ("normal", "abnormal"):
        raise ValueError(f"a call is 'normal' or 'abnormal', not {call!r}")
    if healthy:
        return "correct-normal" if call == "normal" else "overcall"
    if call == "normal":
        return "missed"
    if truth is None or not np.asarray(truth).any():
        return "abnormal-unlocated"
    if point is None:
        raise ValueError("click where the abnormality is before calling the slice abnormal")
    return "correct-abnormal" if on_lesion(point, truth, spacing_mm) else "abnormal-wrong-place"


@dataclass
class Answer:
    key: str
    call: str
    verdict: str
    points: int
    healthy: bool
    lesion_type: str
    difficulty: str
    title: str = ""
    point: tuple | None = None
    seconds: float = 0.0


@dataclass
class Packet:
    """A packet being played: its cases, where the trainee is, the answers so far and the clock. Plain data (kept
    in the browser session's state)."""

    cases: list[PacketCase]
    seed: int
    time_limit_s: float = 0.0                 # 0: untimed
    index: int = 0
    answers: list[Answer] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    case_started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        return self.index >= len(self.cases)

    @property
    def current(self) -> PacketCase | None:
        return None if self.done else self.cases[self.index]

    def remaining_s(self, now: float | None = None) -> float | None:
        if not self.time_limit_s:
            return None
        return self.time_limit_s - ((time.monotonic() if now is None else now) - self.started)

    def answer(self, call: str, point=None, truth=None, spacing_mm=(1.0, 1.0), title: str = "",
               now: float | None = None) -> Answer:
        """Score the current case and move on to the next."""
        case = self.current
        if case is None:
            raise ValueError("the packet is finished: start a new one or repeat it")
        now = time.monotonic() if now is None else now
        late = self.time_limit_s and now - self.started > self.time_limit_s
        verdict = "no-answer" if late else judge(call, case.healthy, point, truth, spacing_mm)
        a = Answer(key=case.key, call=call, verdict=verdict, points=SCORES[verdict], healthy=case.healthy,
                   lesion_type=case.lesion_type or ("normal" if case.healthy else "lesion"),
                   difficulty=case.difficulty or "-", title=title,
                   point=None if point is None else (float(point[0]), float(point[1])),
                   seconds=round(now - self.case_started, 1))
        self.answers.append(a)
        self.index += 1
        self.case_started = now
        return a

    def to_state(self) -> dict:
        return {"cases": [asdict(c) for c in self.cases], "seed": self.seed, "time_limit_s": self.time_limit_s,
                "index": self.index, "answers": [asdict(a) for a in self.answers], "started": self.started,
                "case_started": self.case_started}

    @classmethod
    def from_state(cls, state: dict) -> "Packet":
        return cls(cases=[PacketCase(**c) for c in state["cases"]], seed=int(state["seed"]),
                   time_limit_s=float(state.get("time_limit_s") or 0), index=int(state["index"]),
                   answers=[Answer(**a) for a in state["answers"]], started=float(state["started"]),
                   case_started=float(state["case_started"]))


def packet_report(answers: list[Answer]) -> dict:
    """Total and maximum marks, the misses and overcalls, and marks by lesion type and by difficulty."""
    total = sum(a.points for a in answers)
    maximum = MAX_PER_CASE * len(answers)

    def groups(attr):
        out: dict[str, dict] = {}
        for a in answers:
            g = out.setdefault(getattr(a, attr), {"points": 0, "max": 0, "n": 0})
            g["points"] += a.points
            g["max"] += MAX_PER_CASE
            g["n"] += 1
        return out

    return {"total": total, "max": maximum, "percent": 100.0 * total / maximum if maximum else 0.0,
            "n": len(answers), "missed": [a.key for a in answers if a.verdict == "missed"],
            "overcalled": [a.key for a in answers if a.verdict == "overcall"],
            "wrong_place": [a.key for a in answers if a.verdict == "abnormal-wrong-place"],
            "by_type": groups("lesion_type"), "by_difficulty": groups("difficulty"),
            "seconds": round(sum(a.seconds for a in answers), 1)}
