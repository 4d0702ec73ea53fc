"""The Healthy check tab: run a healthy slice and read how much the model changed it (it should barely)."""

from __future__ import annotations

import html

import gradio as gr

from diffuse_core.studio.display import display_result
from diffuse_core.studio.library import load_library_case
from diffuse_core.studio.model_store import MODELS
from diffuse_core.studio.runs import run_case
from diffuse_core.studio.scoring import flagged_row, looks_healthy, scores
from diffuse_core.studio.selection import load_selected
from diffuse_core.ui.errors import user_errors
from diffuse_core.ui.pictures import grey_rgb
from diffuse_core.ui.progress import step_fraction

CURRENT_CASE = "__current__"     # the dropdown's choice "the case selected in Explore"


@user_errors
def healthy_check(choice, source, gallery_key, files, slice_index, channel, window, gt_file, k, percentile, steps,
                  seed, progress=gr.Progress()):
    """Run a healthy case: the model should leave it nearly unchanged. Yields a progress line per sampler step, then
    (before/after, markdown). A generator, so that a closed tab ends the run at its next step (gradio closes a
    streaming callback when its client goes away; a plain one would compute on to the request's time limit)."""
    if choice in (None, "", CURRENT_CASE):
        lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    else:
        lc = load_library_case(choice)
    if MODELS.acat_info()["available"]:
        mask_from, drawn, how = "acat", None, "the ACAT mask, by the model's rule"
    else:  # without ACAT the harshest test: redraw the whole brain
        mask_from, drawn, how = "draw", lc.case.brain_mask, "the whole brain (ACAT is unavailable)"
    result = None
    for item in run_case(lc, mask_from, None, drawn, k, steps, seed, percentile):
        if item["kind"] == "step":
            done, total = step_fraction(item)
            what = "inverting" if item["phase"] == "invert" else "sampling"
            progress(done / total, desc=what)
            yield gr.skip(), f"Healthy check: {what}, step {item['index'] + 1}/{item['total']}…"
        elif item["kind"] == "result":
            result = item
    r = result["result"]
    v = result.get("verdict")                       # the calibrated verdict, where the model card has one
    s = scores(r, None, result["threshold"], verdict=v)
    change = r.summary()["mean_abs_change_in_brain"]
    normal = (not v.abnormal) if v is not None else looks_healthy(s["flagged_fraction_of_brain"])
    verdict = ("✓ **Nearly unchanged**, as a model trained on healthy slices should leave a healthy slice"
               + (f": the verdict is **normal** (peak anomaly {v.score:.3f}, threshold {v.threshold:.3f})."
                  if v is not None else ".")
               if normal else
               "⚠ **Changed more than expected** for a healthy slice: the model may be undertrained, or the slice "
               "is not healthy.")
    row = flagged_row(s, 2)
    label = "healthy case" if lc.healthy else ("case not marked healthy" if lc.healthy is False else "uploaded case")
    md = (f"**{html.escape(lc.title)}** ({label}); redrawn region: {how}.\n\n"
          f"| Measure | Value |\n|---|---|\n"
          f"| Mean absolute change inside the brain | **{change:.4f}** (intensities span 0–2) |\n"
          f"| {row[0]} | **{row[1]}** |\n\n"
          f"{verdict}")
    d = display_result(lc.case, r)                  # at the input's own resolution
    yield (grey_rgb(d.image[0], d.panel_size), grey_rgb(d.counterfactual[0], d.panel_size)), md
