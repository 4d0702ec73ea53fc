"""Explore's uncertainty view: S counterfactuals of the selected case as one batch; the per-pixel standard deviation,
the mean counterfactual and the anomaly map of the mean (:mod:`diffuse_core.studio.uncertainty`). The expected time
is shown before the run starts."""

from __future__ import annotations

from typing import Optional

import gradio as gr

from diffuse_core.studio.guard import RunCancelled, request_guard
from diffuse_core.studio.selection import load_selected
from diffuse_core.studio.session import session_id
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.studio.uncertainty import run_uncertainty
from diffuse_core.ui.errors import user_errors
from diffuse_core.ui.pictures import drawing_to_mask, grey_rgb, overlay_picture, with_outlines
from diffuse_core.ui.progress import progress_html

STD_OPACITY = 0.75


@user_errors
def uncertainty_run(source, gallery_key, files, slice_index, channel, window, gt_file, mask_from, mask_file, drawing,
                    k, percentile, steps, seed, samples, request: Optional[gr.Request] = None):
    """-> (progress html, std map, mean counterfactual, anomaly of the mean, markdown), streamed."""
    guard = request_guard(session_id(request))
    lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    drawn = drawing_to_mask(drawing, lc.case.image.shape[-1]) if mask_from == "draw" else None
    skip = gr.skip()
    estimate = None
    try:
        for item in run_uncertainty(lc, mask_from, mask_file, drawn, k, steps, seed, percentile, int(samples),
                                    guard=guard):
            if item["kind"] == "estimate":
                estimate = item["seconds"]
                yield (progress_html(0, 1, f"{item['samples']} samples × {item['steps']} steps: about "
                                           f"{estimate:.0f} s on this machine, plus the mask"), skip, skip, skip, "")
            elif item["kind"] == "mask":
                yield progress_html(0, 1, "Mask ready; inverting the slice once…"), skip, skip, skip, skip
            elif item["kind"] == "step":
                what = "Inverting (once)" if item["phase"] == "invert" else "Sampling all draws together"
                total = 2 * item["total"]
                done = item["index"] + 1 + (item["total"] if item["phase"] != "invert" else 0)
                yield progress_html(done, total, f"{what}: step {item['index'] + 1}/{item['total']}"), skip, \
                    skip, skip, skip
            else:
                r = item["result"]
                truth = lc.case.ground_truth
                size = DEFAULTS["display_size"]
                vmax_std = max(float(r.std.max()), 1e-3)
                std_pic = overlay_picture(r.image[0], r.std, STD_OPACITY, r.mask, truth, vmax_std, size)
                mean_pic = with_outlines(grey_rgb(r.mean[0], size), r.mask)
                ano_pic = overlay_picture(r.image[0], r.anomaly, DEFAULTS["opacity"], r.mask, truth,
                                          max(float(r.anomaly.max()), 1e-3), size)
                inside = r.mask.astype(bool)
                outside = r.brain_mask.astype(bool) & ~inside
                md = (f"**{r.samples.shape[0]} draws** in {r.seconds:.1f} s ({r.network_calls} network calls"
                      + (", inversion reused" if r.inversion_reused else "") + f"; estimated {estimate:.0f} s). "
                      f"Mean standard deviation inside the mask **{r.std[inside].mean() if inside.any() else 0:.3f}**, "
                      f"outside it {r.std[outside].mean() if outside.any() else 0:.3f} (intensities in [-1, 1]; "
                      f"brightest = {vmax_std:.2f}). Bright = the draws disagree there: the model is unsure what "
                      "healthy tissue belongs in that place. The anomaly map is of the mean counterfactual.")
                yield progress_html(1, 1, "Done."), std_pic, mean_pic, ano_pic, md
    except RunCancelled:
        yield progress_html(0, 1, "Stopped."), skip, skip, skip, skip
