"""Every default a user of the app sees, in one place, and the checks of what a user typed.

:data:`DEFAULTS` is one mutable dict shared by the whole app: the model card's recommended K, percentile and steps
replace the paper's when the demo is built (:func:`diffuse_core.studio.model_store.apply_recommended_defaults`).
"""

from __future__ import annotations

import os

import numpy as np

DEFAULTS = {
    "k": 500,                 # noise level K in [1, T]; the paper's choice
    "percentile": 90.0,       # saliency percentile that becomes the mask (paper Fig. 5: 90 is best)
    "steps": 50,              # respaced sampling steps spanning [0, K]: fewer = faster, coarser
    "seed": 0,                # fixes every random draw of a run
    "window": "brain",        # CT window preset (CT inputs only)
    "variant": "paper",       # one network call per step (Algorithm 1)
    "mask_from": "acat",      # acat | gradcam | gradient | file | draw
    "opacity": 0.6,           # anomaly heat-map opacity over the input
    "display_size": 256,      # pixels a side of every picture shown
    "max_upload_mb": float(os.environ.get("DIFFUSE_MAX_UPLOAD_MB", 50)),
    "concurrency": int(os.environ.get("DIFFUSE_CONCURRENCY", 2)),   # model runs at once (queue)
    "max_queue": 64,          # waiting requests before new ones are turned away
    "max_batch": 12,          # cases per Curate batch
    "gpu_seconds": 120,       # ZeroGPU time asked for per run
    "healthy_flag_fraction": 0.01,   # healthy check passes when < 1 % of the brain is flagged anomalous
    "host": "127.0.0.1",
    "port": 7860,
}
K_RANGE = (1, 1000)
STEPS_RANGE = (1, 250)
PERCENTILE_RANGE = (50, 99)       # what the sliders offer (the engine accepts any value strictly inside (0, 100))
CT_WINDOW_CHOICES = ["brain", "stroke", "subdural"]
MASK_SOURCES = [("ACAT saliency (paper)", "acat"), ("Grad-CAM", "gradcam"), ("Gradient", "gradient"),
                ("Mask file", "file"), ("Draw the mask", "draw")]
SALIENCY_METHODS = ("acat", "gradcam", "gradient")


def max_upload_bytes() -> int:
    """The upload limit of :data:`DEFAULTS` in bytes."""
    return int(DEFAULTS["max_upload_mb"] * 2**20)


def whole_number(value, what: str) -> int:
    """``value`` as an int, or ValueError naming ``what`` when it is not a finite whole number."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    if not np.isfinite(f) or f != round(f):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(round(f))


def check_settings(k, steps, seed) -> tuple[int, int, int]:
    """K, steps and seed as ints, checked before any model time is spent."""
    from diffuse_core.core.schedule import validate_noise_level

    k, steps, seed = whole_number(k, "K"), whole_number(steps, "the number of steps"), whole_number(seed, "the seed")
    validate_noise_level(k, steps, K_RANGE[1])
    if steps > STEPS_RANGE[1]:
        raise ValueError(f"at most {STEPS_RANGE[1]} sampling steps, got {steps}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"the seed must be a non-negative whole number, got {seed}")
    return k, steps, seed


def check_percentile(percentile) -> float:
    """The saliency percentile as a float strictly inside (0, 100)."""
    if not 0.0 < float(percentile) < 100.0:
        raise ValueError(f"the saliency percentile must lie strictly between 0 and 100 (the paper uses 90), got "
                         f"{percentile}")
    return float(percentile)
