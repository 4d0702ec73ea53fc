"""The app's HTTP API for ``gradio_client`` (README, "The app's HTTP API"): ``/status``, ``/cases`` and
``/counterfactual``: the callbacks and their hidden components and events (:func:`add_api`). Their parameters and
outputs are a contract: keep their order."""

from __future__ import annotations

import gradio as gr
import numpy as np

from diffuse_core.studio.display import display_result
from diffuse_core.studio.library import list_library, load_library_case
from diffuse_core.studio.model_store import MODELS, model_device
from diffuse_core.studio.runs import run_case
from diffuse_core.studio.scoring import result_summary
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.studio.uploads import load_upload_case, upload_paths
from diffuse_core.ui.bounded import bounded
from diffuse_core.ui.errors import user_errors
from diffuse_core.ui.pictures import grey_rgb, mask_picture, overlay_picture, with_outlines

COUNTERFACTUAL_INPUTS = ["file", "case_key", "k", "steps", "percentile", "seed", "slice_index", "window", "mask_file"]
COUNTERFACTUAL_OUTPUTS = ["frame", "status", "counterfactual", "overlay", "mask", "summary"]
STATUS_DEFAULTS = ("k", "percentile", "steps", "seed", "window")


@user_errors
def api_counterfactual(file, case_key, k, steps, percentile, seed, slice_index, window, mask_file):
    """``/counterfactual``: a file (or a gallery case key) + settings -> streamed frames, then the counterfactual,
    the anomaly overlay, the mask and a JSON summary. The mask comes from ACAT, or from ``mask_file`` if given."""
    if upload_paths(file):
        z = None if slice_index in (None, "") or float(slice_index) < 0 else slice_index
        lc = load_upload_case(file, z, None, window or None, None)
    elif case_key:
        lc = load_library_case(case_key)
    else:
        raise ValueError("give a file or a case key (see /cases)")
    mask_from = "file" if upload_paths(mask_file) else "acat"
    mask = None
    # the API streams every inversion and sampling frame, as its contract says: no reuse of an earlier inversion
    for item in run_case(lc, mask_from, mask_file, None, k, steps, seed, percentile, reuse_inversion=False):
        if item["kind"] == "mask":
            mask = item["mask"]
        elif item["kind"] == "step":
            frame = np.concatenate([with_outlines(grey_rgb(item["x_t"]), mask),
                                    with_outlines(grey_rgb(item["x0"]), mask)], axis=1)
            yield frame, f"{item['phase']} {item['index'] + 1}/{item['total']} t={item['timestep']}", None, None, \
                None, None
        else:
            summary = result_summary(lc, item)
            d = display_result(lc.case, item["result"])     # at the input's own resolution
            yield (None, "done", grey_rgb(d.counterfactual[0], d.panel_size),
                   overlay_picture(d.image[0], d.anomaly, DEFAULTS["opacity"], d.mask, d.truth, d.vmax, d.panel_size),
                   mask_picture(d.image[0], d.mask, d.panel_size), summary)


def api_cases() -> list[dict]:
    """``/cases``: the gallery's cases (key, caption, modality, lesion type, healthy, has ground truth)."""
    return [{"key": e.key, "caption": e.caption, "modality": e.modality, "lesion_type": e.lesion_type,
             "healthy": e.healthy, "has_ground_truth": bool(e.has_truth)} for e in list_library()]


def api_status() -> dict:
    """``/status``: which models are installed, the device and the defaults."""
    return {"ddpm": MODELS.ddpm_info(), "acat": MODELS.acat_info(), "device": str(model_device()),
            "defaults": {k: DEFAULTS[k] for k in STATUS_DEFAULTS}}


def add_api(heavy: dict) -> None:
    """The hidden components and events of the HTTP API (inside the Blocks being built); the labels are the
    parameter names of :data:`~diffuse_core.ui.api.COUNTERFACTUAL_INPUTS` and the outputs of
    :data:`~diffuse_core.ui.api.COUNTERFACTUAL_OUTPUTS`, in that order."""
    with gr.Column(visible=False):
        api_in = [gr.File(label="file"), gr.Textbox(value="", label="case_key"),
                  gr.Number(value=DEFAULTS["k"], label="k", precision=0),
                  gr.Number(value=DEFAULTS["steps"], label="steps", precision=0),
                  gr.Number(value=DEFAULTS["percentile"], label="percentile"),
                  gr.Number(value=DEFAULTS["seed"], label="seed", precision=0),
                  gr.Number(value=-1, label="slice_index", precision=0), gr.Textbox(value="", label="window"),
                  gr.File(label="mask_file")]
        api_out = [gr.Image(label="frame", format="png"), gr.Textbox(label="status"),
                   gr.Image(label="counterfactual", format="png"), gr.Image(label="overlay", format="png"),
                   gr.Image(label="mask", format="png"), gr.JSON(label="summary")]
        cases_json, status_json = gr.JSON(label="cases"), gr.JSON(label="status")
        api_btn, cases_btn, status_btn = gr.Button("api"), gr.Button("cases"), gr.Button("status")
    api_btn.click(bounded(api_counterfactual), api_in, api_out, api_name="counterfactual", **heavy)
    cases_btn.click(api_cases, None, cases_json, api_name="cases", concurrency_limit=None)
    status_btn.click(api_status, None, status_json, api_name="status", concurrency_limit=None)
