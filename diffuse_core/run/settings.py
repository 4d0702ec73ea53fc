"""Every setting of a run and its allowed range, in one place.

A run's settings come from, in order: what the user gave, the model card's ``recommended_settings`` (chosen on
validation data by ``diffuse-studio evaluate --write-cards`` / ``python -m diffuse_core.evaluation.calibrate``),
then the paper's (Sec. IV-D: K 500, the 90th saliency percentile). The CLI, the app and the evaluation all read
them here, through :func:`settings_for`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from diffuse_core.core.defaults import PAPER_K, PAPER_PERCENTILE, PAPER_SOLVER, PAPER_STEPS

PAPER_SETTINGS = {"k": PAPER_K, "percentile": PAPER_PERCENTILE, "steps": PAPER_STEPS, "solver": PAPER_SOLVER}
RANGES = {"k": (1, 1000), "steps": (1, 1000), "percentile": (1.0, 99.0)}         # what a card may recommend
RULES = ("card", "percentile")   # the redrawn region: the card's mask rule (sized to the lesion) | the paper's
VARIANT = "paper"                # one network call per step (Algorithm 1); the ablations live in core.walks


@dataclass(frozen=True)
class RunSettings:
    """The settings of one run. ``k``: noise level K in [1, T]; ``steps``: respaced steps spanning [0, K];
    ``percentile``: the saliency percentile of the paper's region (``rule`` "percentile"), also the fallback of a
    card without a mask rule; ``threshold``: the anomaly binarisation threshold (None: the card's)."""

    k: int
    steps: int
    seed: int = 0
    percentile: float = PAPER_PERCENTILE
    rule: str = "card"
    solver: str = "ddim"
    variant: str = VARIANT
    precision: str = "auto"
    threshold: float | None = None
    mask_rule: dict | None = None     # a rule replacing the card's (evaluations comparing rules), else None

    def to_dict(self) -> dict:
        return asdict(self)


MESSAGE_VALUE_CHARS = 80          # at most this much of a user's value is quoted back in an error message


def shown(value, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a message never echoes a large input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text)} characters)"


def whole_number(value, what: str) -> int:
    """``value`` as an int, or ValueError naming ``what`` when it is not a finite whole number."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number, got {shown(value)}") from None
    if not math.isfinite(f) or f != round(f):
        raise ValueError(f"{what} must be a whole number, got {shown(value)}")
    return int(round(f))


def check_percentile(percentile) -> float:
    """The saliency percentile as a float strictly inside (0, 100)."""
    try:
        value = float(percentile)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 100.0:
        raise ValueError(f"the saliency percentile must lie strictly between 0 and 100 (the paper uses 90), got "
                         f"{shown(percentile)}")
    return value


def default_settings(card) -> dict:
    """K, percentile, steps and solver to run with when none are given: the card's ``recommended_settings`` where
    present and in :data:`RANGES`, else the paper's. ``card``: a card dict or a loaded denoiser."""
    from diffuse_core.core.sampler import SOLVERS
    from diffuse_core.run.card import card_of

    out = dict(PAPER_SETTINGS)
    rec = card_of(card).get("recommended_settings") or {}
    for key, (low, high) in RANGES.items():
        try:
            value = float(rec[key])
        except (KeyError, TypeError, ValueError):
            continue
        if low <= value <= high:
            out[key] = value if key == "percentile" else int(value)
    out["solver"] = rec["solver"] if rec.get("solver") in SOLVERS else PAPER_SETTINGS["solver"]
    return out


def settings_for(card, *, k=None, steps=None, seed=None, percentile=None, rule=None, solver=None, variant=None,
                 precision=None, threshold=None, mask_rule=None, num_train_timesteps: int = 1000) -> RunSettings:
    """The settings of a run: each one given, else the card's (:func:`default_settings`), checked (ValueError
    saying what is wrong and what to do) before any model time is spent."""
    from diffuse_core.core.sampler import SOLVERS
    from diffuse_core.core.schedule import validate_noise_level
    from diffuse_core.core.walks import WALKS

    chosen = default_settings(card)
    k = chosen["k"] if k is None else whole_number(k, "K")
    steps = chosen["steps"] if steps is None else whole_number(steps, "the number of steps")
    seed = 0 if seed is None else whole_number(seed, "the seed")
    percentile = chosen["percentile"] if percentile is None else check_percentile(percentile)
    validate_noise_level(k, steps, int(num_train_timesteps))
    if steps > RANGES["steps"][1]:
        raise ValueError(f"at most {RANGES['steps'][1]} sampling steps, got {steps}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"the seed must be a non-negative whole number, got {seed}")
    rule = rule or "card"
    if rule not in RULES:
        raise ValueError(f"unknown mask rule {rule!r}: choose 'card' (the model's, sized to the lesion) or "
                         f"'percentile' (the paper's)")
    solver = chosen["solver"] if solver is None else solver
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    variant = variant or VARIANT
    if variant not in WALKS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(WALKS)}")
    if threshold is not None:
        threshold = float(threshold)
        if not math.isfinite(threshold) or threshold < 0:
            raise ValueError(f"the anomaly threshold must be a finite number >= 0, got {threshold}")
    if mask_rule is not None:
        from diffuse_core.core.redraw import check_rule

        mask_rule = check_rule(dict(mask_rule))
    return RunSettings(k=int(k), steps=int(steps), seed=int(seed), percentile=float(percentile), rule=rule,
                       solver=solver, variant=variant, precision=precision or "auto", threshold=threshold,
                       mask_rule=mask_rule)


def mask_rule(settings: RunSettings, card) -> dict:
    """The redrawn region's rule (:func:`diffuse_core.core.redraw.mask_rule_of`): the settings' own ``mask_rule``
    where given, else the card's, or the paper's rule at ``settings.percentile`` when ``settings.rule`` is
    "percentile" or the card names no rule."""
    from diffuse_core.core.redraw import mask_rule_of
    from diffuse_core.run.card import card_of

    if settings.mask_rule is not None:
        return dict(settings.mask_rule)
    own = card_of(card).get("mask_rule")
    return mask_rule_of(card_of(card), settings.percentile if settings.rule == "percentile" or not own else None)
