"""Every default a user of the app sees, in one place, and the checks of what a user typed.

:data:`DEFAULTS` is one mutable dict shared by the whole app: the model card's recommended K, percentile and steps
replace the paper's when the demo is built (:func:`diffuse_core.studio.model_store.apply_recommended_defaults`).
"""

from __future__ import annotations

import os

from diffuse_core.core.defaults import PAPER_K, PAPER_PERCENTILE, PAPER_STEPS

from diffuse_core.run.settings import (MESSAGE_VALUE_CHARS, RANGES, check_percentile,  # noqa: F401
                                        settings_for, shown, whole_number)

DEFAULTS = {
    "k": PAPER_K,             # noise level K in [1, T]; the paper's choice (the card's replaces it)
    "percentile": PAPER_PERCENTILE,       # saliency percentile that becomes the mask (paper Fig. 5: 90 is best)
    "steps": PAPER_STEPS,     # respaced sampling steps spanning [0, K]: fewer = faster, coarser
    "seed": 0,                # fixes every random draw of a run
    "window": "brain",        # CT window preset (CT inputs only)
    "variant": "paper",       # one network call per step (Algorithm 1)
    "solver": "ddim",         # deterministic updates: ddim (the paper's) | dpm-solver++ (2nd order) | ddim-refined
    "mask_from": "acat",      # acat | gradcam | gradient | file | draw
    "mask_rule": "card",      # card: the model card's redrawn region (sized to the lesion) | percentile: the paper's
    "opacity": 0.6,           # anomaly heat-map opacity over the input
    "display_size": 256,      # pixels a side of every picture shown
    "max_upload_mb": float(os.environ.get("DIFFUSE_MAX_UPLOAD_MB", 50)),   # per file, and all files of a request
    "max_upload_files": int(os.environ.get("DIFFUSE_MAX_UPLOAD_FILES", 400)),   # files per request (a DICOM series)
    "max_body_kb": int(os.environ.get("DIFFUSE_MAX_BODY_KB", 1024)),   # any other request body (an API call's JSON)
    "request_seconds": float(os.environ.get("DIFFUSE_REQUEST_SECONDS", 300)),   # wall time one request may compute
    "concurrency": int(os.environ.get("DIFFUSE_CONCURRENCY", 2)),   # model runs at once (queue)
    "torch_threads": int(os.environ.get("DIFFUSE_TORCH_THREADS", 0)),   # per process; 0: CPU cores / concurrency
    "max_queue": 64,          # waiting requests before new ones are turned away
    "max_sessions": int(os.environ.get("DIFFUSE_MAX_SESSIONS", 64)),   # sessions whose state (~0.7 MB) is kept
    "max_batch": 12,          # cases per Curate batch
    "gpu_seconds": 120,       # ZeroGPU time asked for per run
    "healthy_flag_fraction": 0.01,   # healthy check passes when < 1 % of the brain is flagged anomalous
    "host": "127.0.0.1",
    "port": 7860,
}
K_RANGE = RANGES["k"]             # one range for the app, the CLI and the cards (diffuse_core.run.settings)
STEPS_RANGE = RANGES["steps"]
PERCENTILE_RANGE = (50, 99)       # what the sliders offer (the engine accepts any value strictly inside (0, 100))
CT_WINDOW_CHOICES = ["brain", "stroke", "subdural"]
MASK_RULES = [("Fits the lesion (the model's rule)", "card"), ("Paper: the saliency percentile", "percentile")]
MASK_SOURCES = [("ACAT saliency, region fitted to the lesion", "acat"),
                ("ACAT saliency, the paper's percentile region", "acat-paper"), ("Grad-CAM", "gradcam"),
                ("Gradient", "gradient"), ("Mask file", "file"), ("Draw the mask", "draw")]
SALIENCY_METHODS = ("acat", "gradcam", "gradient")
PAPER_SUFFIX = "-paper"           # "acat-paper": the ACAT saliency thresholded at the percentile slider (the paper's)


def split_mask_source(mask_from: str) -> tuple[str, str | None]:
    """(saliency method or mask source, region rule): "acat" -> ("acat", "card"), "acat-paper" -> ("acat",
    "percentile"), "file"/"draw" -> (same, None)."""
    m = str(mask_from or "")
    if m.endswith(PAPER_SUFFIX) and m[: -len(PAPER_SUFFIX)] in SALIENCY_METHODS:
        return m[: -len(PAPER_SUFFIX)], "percentile"
    return m, ("card" if m in SALIENCY_METHODS else None)




def max_upload_bytes() -> int:
    """The upload limit of :data:`DEFAULTS` in bytes (one file, and all the files of one request together)."""
    return int(DEFAULTS["max_upload_mb"] * 2**20)


def torch_threads() -> int:
    """Torch threads for this process: ``DEFAULTS["torch_threads"]``, or (0) the CPU cores shared among the runs
    the queue lets go at once, at least 1."""
    if DEFAULTS["torch_threads"] > 0:
        return int(DEFAULTS["torch_threads"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(DEFAULTS["concurrency"])))


def check_settings(k, steps, seed) -> tuple[int, int, int]:
    """K, steps and seed as ints, checked before any model time is spent (the run's own checks,
    :func:`diffuse_core.run.settings.settings_for`)."""
    chosen = settings_for({}, k=k, steps=steps, seed=seed)
    return chosen.k, chosen.steps, chosen.seed
