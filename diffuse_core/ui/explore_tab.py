"""The Explore tab: choose a case (teaching set or upload), set K, percentile, steps and seed, watch Dif-fuse work
and read the results. :func:`explore_tab` builds its components inside the page's tabs
(:func:`diffuse_core.ui.layout.build_demo`), :func:`wire_explore` wires their events to the callbacks of
:mod:`~diffuse_core.ui.explore` and :mod:`~diffuse_core.ui.uncertainty`."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from diffuse_core.studio.display import WINDOW_PRESETS, ZOOM_RANGE
from diffuse_core.studio.library import list_library
from diffuse_core.studio.model_store import MODELS, k_shown_for
from diffuse_core.studio.settings import (CT_WINDOW_CHOICES, DEFAULTS, K_RANGE, MASK_SOURCES, PERCENTILE_RANGE,
                                          STEPS_RANGE)
from diffuse_core.studio.uploads import inspect_upload, replacing_upload, upload_paths
from diffuse_core.ui import curate, explore, uncertainty
from diffuse_core.ui.adapt_panel import INSTALLED
from diffuse_core.ui.bounded import bounded
from diffuse_core.ui.notes import NOTES
from diffuse_core.ui.progress import progress_html

log = logging.getLogger(__name__)
GALLERY_HINT = "Pick a case in the gallery or upload one."
RESULT_PANEL = 420      # pixels high of a result panel (about as wide: two a row, at least ~400 px at 1440)


def explore_controls(prefix: str) -> dict:
    """The K, percentile, steps and seed controls (Explore and Curate each have a set)."""
    c = {}
    c["k"] = gr.Slider(*K_RANGE, value=DEFAULTS["k"], step=1, label="Noise level K", elem_id=f"{prefix}-k",
                       info="how far towards noise before redrawing (paper: 500); follows each model's own default "
                            "(MRI or CT) until you move it")
    c["percentile"] = gr.Slider(*PERCENTILE_RANGE, value=DEFAULTS["percentile"], step=1, label="Saliency percentile",
                                elem_id=f"{prefix}-percentile",
                                info="for the paper's region (Mask from: \"the paper's percentile region\"): the "
                                     "saliency above this percentile (paper: 90); the default region fits the lesion")
    c["steps"] = gr.Slider(*STEPS_RANGE, value=DEFAULTS["steps"], step=1, label="Sampling steps",
                           elem_id=f"{prefix}-steps", info="fewer = faster, more = finer")
    c["seed"] = gr.Number(value=DEFAULTS["seed"], precision=0, label="Seed", minimum=0, elem_id=f"{prefix}-seed")
    return c


# ---- small event handlers of the tab ---------------------------------------------------------------------------


def on_source(src):
    return gr.update(visible=src == "gallery"), gr.update(visible=src == "upload")


def on_mask_from(choice):
    return gr.update(visible=choice == "file"), gr.update(visible=choice == "draw")


def on_gallery_select(evt: gr.SelectData, keys):
    i = evt.index if isinstance(evt.index, int) else evt.index[0]
    return (keys[i] if keys and 0 <= i < len(keys) else None), "gallery"


def k_for_case(k, modality):
    """The K slider for a case of ``modality`` (:func:`~diffuse_core.studio.model_store.k_shown_for`): the K a run
    will use while it holds a model's default, else unchanged."""
    shown = k_shown_for(k, modality)
    return gr.skip() if shown is None else shown


def k_for_gallery_case(key, k):
    """:func:`k_for_case` for the gallery case ``key``."""
    entry = next((e for e in list_library() if e.key == key), None)
    return gr.skip() if entry is None else k_for_case(k, entry.modality)


def on_replace_upload(fs, previous):
    """An upload into a box that held files: the new files replace the old ones unless they are all the files of
    one DICOM series (:func:`~diffuse_core.studio.uploads.replacing_upload`) -> (the box's files, the same to
    remember)."""
    keep = replacing_upload(previous, fs)
    if keep == upload_paths(fs):
        return gr.skip(), keep
    return keep, keep


def on_upload(fs, k=None):
    """Files uploaded -> (slice slider, channel choice, CT window, source, K) fitted to them."""
    if not upload_paths(fs):
        return gr.update(visible=False), gr.update(visible=False), gr.update(visible=False), gr.skip(), gr.skip()
    try:
        info = inspect_upload(fs)
    except (ValueError, FileNotFoundError) as err:   # preview_case, next, shows the message
        log.info("upload refused: %s", err)
        return gr.update(visible=False), gr.update(visible=False), gr.update(visible=False), "upload", gr.skip()
    n = info["num_slices"]
    _, model_channels = MODELS.grid()
    return (gr.update(visible=n > 1, minimum=0, maximum=max(n - 1, 1), value=info["slice"]),
            gr.update(visible=len(info["channels"]) > 1 and model_channels == 1, choices=info["channels"],
                      value=info["channels"][0]),
            gr.update(visible=info["ct"]), "upload", k_for_case(k, "ct" if info["ct"] else "mri"))


# ---- the tab ---------------------------------------------------------------------------------------------------


def explore_tab(page: SimpleNamespace, d: int, img_kw: dict) -> SimpleNamespace:
    """The tab's components, by name (``d``: the display size; ``img_kw``: the picture panels' options;
    ``page.selected_key``: the gallery case chosen). ``case_inputs``: what names the case, the inputs of every
    callback that loads it (Explore, Quiz outline practice, Healthy check)."""
    e = SimpleNamespace()
    with gr.Tab("Explore", id="explore"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=340):
                gr.Markdown("### 1 · Choose a case")
                e.source = gr.Radio([("Teaching set", "gallery"), ("Upload", "upload")], value="gallery",
                                    label="Case from", elem_id="df-source")
                with gr.Group(visible=True) as e.gallery_group:
                    e.gallery = gr.Gallery(label="Teaching cases (green = lesion outline)", columns=4,
                                           height=640, allow_preview=False, object_fit="contain",
                                           elem_id="df-gallery", interactive=False)
                    e.refresh = gr.Button("↻ Refresh the case list", size="sm")
                with gr.Group(visible=False) as e.upload_group:
                    e.files = gr.File(label="Slice or volume", file_count="multiple", elem_id="df-upload")
                    e.last_upload = gr.State([])     # the files the box held after the last upload
                    gr.Markdown("PNG, JPEG, TIFF, NIfTI, or DICOM (one file, or all files of a series); "
                                f"up to {DEFAULTS['max_upload_mb']:g} MB.", elem_classes="df-hint")
                    e.slice_slider = gr.Slider(0, 1, value=0, step=1, label="Axial slice", visible=False)
                    e.channel = gr.Dropdown([], label="Channel to use", visible=False, allow_custom_value=True)
                    e.window = gr.Dropdown(CT_WINDOW_CHOICES, value=DEFAULTS["window"],
                                           label="CT window preset", visible=False)
                    e.gt_file = gr.File(label="Lesion mask (optional)", file_count="single")
                e.case_info = gr.Markdown(GALLERY_HINT)
                gr.Markdown("### 2 · Settings")
                e.ctl = explore_controls("df")
                e.model = gr.Dropdown([INSTALLED], value="", label="Healthy model", elem_id="df-model",
                                      info="the installed model, or one adapted to your scanner (Curate tab)")
                with gr.Row():
                    e.run_btn = gr.Button(explore.RUN_LABEL, variant="primary", elem_id="df-run")
                    e.stop_btn = gr.Button("■ Stop", variant="stop", elem_id="df-stop")
                with gr.Accordion("Mask source", open=False, elem_id="df-mask-source"):
                    e.mask_from = gr.Radio(MASK_SOURCES, value=DEFAULTS["mask_from"], label="Mask from",
                                           info="ACAT's region sized to the lesion (default), the paper's "
                                                "percentile region, or your own", elem_id="df-mask-from")
                    e.mask_file = gr.File(label="Mask file (binary mask or saliency map)", file_count="single",
                                          visible=False)
                    e.mask_draw = gr.ImageEditor(label="Paint the region to redraw", type="numpy",
                                                 elem_id="df-mask-draw", image_mode="RGBA", sources=[],
                                                 transforms=[], layers=False, visible=False,
                                                 brush=gr.Brush(colors=["#00c8ff"], color_mode="fixed",
                                                                default_size=10),
                                                 canvas_size=(d, d), fixed_canvas=True, height=d + 90)
            with gr.Column(scale=7):
                gr.Markdown("### 3 · Watch it work")
                with gr.Row():
                    e.preview = gr.Image(label="Selected slice", **img_kw)
                    e.live_noisy = gr.Image(label="Noisy image x_t", **{**img_kw, "format": "webp"})
                    e.live_clean = gr.Image(label="Predicted clean", **{**img_kw, "format": "webp"})
                e.progress = gr.HTML(progress_html(0, 1, "Ready."), elem_id="df-progress")
                gr.Markdown("### 4 · Results")
                # shown when a setting or the case changed after the run (explore.stale_marker)
                e.stale = gr.HTML("", elem_id="df-stale")
                # the slice verdict (normal / abnormal) of issue 36 item 1 goes here, above the panels
                e.explore_verdict = gr.Markdown("", elem_id="df-verdict", visible=False)
                res_kw = {**img_kw, "height": RESULT_PANEL, "width": None}
                with gr.Row(elem_classes="df-results"):
                    e.out_input = gr.Image(label="Input", elem_id="df-out-input", **res_kw)
                    e.out_cf = gr.Image(label="Counterfactual", elem_id="df-counterfactual", **res_kw)
                with gr.Row(elem_classes="df-results"):
                    e.out_overlay = gr.Image(label="Anomaly map", elem_id="df-out-overlay", **res_kw)
                    e.out_slider = gr.ImageSlider(label="Before / after", type="numpy", height=RESULT_PANEL,
                                                  interactive=False, max_height=RESULT_PANEL,
                                                  buttons=["download", "fullscreen"], elem_id="df-out-slider")
                with gr.Row(elem_classes="df-results"):
                    e.out_saliency = gr.Image(label="Saliency", elem_id="df-out-saliency", **res_kw)
                    e.out_mask = gr.Image(label="Mask", elem_id="df-out-mask", **res_kw)
                gr.Markdown("Outlines: <span style='color:#00c8ff'>**cyan**</span> = the mask (region "
                            "redrawn), <span style='color:#3cdc3c'>**green**</span> = the expert's lesion "
                            "outline. Heat maps: black = nothing, bright yellow = strongest.",
                            elem_classes="df-legend")
                e.opacity = gr.Slider(0, 1, value=DEFAULTS["opacity"], step=0.05, label="Anomaly map opacity",
                                      elem_id="df-opacity")
                with gr.Accordion("Display: window / level and zoom (all panels)", open=False,
                                  elem_id="df-display"):
                    with gr.Row():
                        e.win_preset = gr.Dropdown(list(WINDOW_PRESETS), value="As loaded", label="Preset",
                                                   elem_id="df-win-preset")
                        e.win_centre = gr.Slider(-1, 1, value=0.0, step=0.01, label="Level (centre)",
                                                 elem_id="df-win-centre",
                                                 info="-1 = the darkest of the loaded range, 1 = the brightest")
                        e.win_width = gr.Slider(0.05, 2, value=2.0, step=0.01, label="Window (width)",
                                                elem_id="df-win-width", info="narrower = more contrast")
                    with gr.Row():
                        e.zoom = gr.Slider(*ZOOM_RANGE, value=1.0, step=0.5, label="Zoom", elem_id="df-zoom",
                                           info="click a result panel to centre the zoom there")
                        e.view_reset = gr.Button("Reset the view", size="sm")
                    e.view_focus = gr.State(None)
                e.out_metrics = gr.Markdown()
                e.out_chart = gr.Plot(show_label=False, elem_id="df-chart")
                with gr.Row():
                    e.to_curate = gr.Button("Send this result to Curate", size="sm")
                with gr.Accordion("Uncertainty: where is the model unsure?", open=False,
                                  elem_id="df-uncertainty"):
                    gr.Markdown("Run several draws of Dif-fuse on this case at once (one network call per "
                                "step for all of them) and see where they disagree: the per-pixel standard "
                                "deviation, the mean counterfactual and the anomaly map of the mean. Uses "
                                "the settings and the mask source above.", elem_classes="df-hint")
                    with gr.Row():
                        e.unc_samples = gr.Slider(2, 8, value=4, step=1, label="Draws", elem_id="df-unc-n")
                        e.unc_btn = gr.Button("Run the draws", elem_id="df-unc-run")
                    e.unc_progress = gr.HTML()
                    with gr.Row():
                        e.unc_std = gr.Image(label="Spread (std)", elem_id="df-unc-std",
                                             **img_kw)
                        e.unc_mean = gr.Image(label="Mean redrawn", **img_kw)
                        e.unc_anomaly = gr.Image(label="Anomaly of mean", **img_kw)
                    e.unc_md = gr.Markdown(elem_id="df-unc-md")
                with gr.Accordion("Run summary (JSON)", open=False):
                    e.out_summary = gr.JSON()
                with gr.Accordion("What am I looking at?", open=False):
                    for note in NOTES:
                        gr.Markdown(note)
    e.case_inputs = [e.source, page.selected_key, e.files, e.slice_slider, e.channel, e.window, e.gt_file]
    return e


def wire_explore(e: SimpleNamespace, page: SimpleNamespace, quiz_editor, cur: SimpleNamespace) -> None:
    """The tab's events: case choice and preview, Run / Stop, the stale marker and verdict, uncertainty, the view
    (window, zoom) and "Send this result to Curate". ``quiz_editor``: the outline-practice canvas, which shows the
    case chosen here; ``cur``: the Curate tab's components."""
    light, heavy = page.light, page.heavy
    ctl, case_inputs = e.ctl, e.case_inputs
    e.source.change(on_source, e.source, [e.gallery_group, e.upload_group], **light)
    e.mask_from.change(on_mask_from, e.mask_from, [e.mask_file, e.mask_draw], **light)

    preview_outputs = [e.preview, e.case_info, quiz_editor, e.mask_draw, page.refused_upload]
    # an upload is decoded once, in a worker process that a cancel kills (diffuse_core.studio.decoding): the
    # probe, the previews and the run share it; bounded() hands each request's cancel to that worker
    show_case = bounded(explore.report_bad_upload)
    picked = e.gallery.select(on_gallery_select, page.gallery_keys, [page.selected_key, e.source], **light)
    picked.then(show_case, case_inputs, preview_outputs, **light)
    picked.then(k_for_gallery_case, [page.selected_key, ctl["k"]], ctl["k"], **light)
    # a new upload replaces the box's earlier files (unless it adds files of the same DICOM series), then is read
    upload_event = e.files.upload(on_replace_upload, [e.files, e.last_upload], [e.files, e.last_upload],
                                  **light).then(bounded(on_upload), [e.files, ctl["k"]],
                                                [e.slice_slider, e.channel, e.window, e.source, ctl["k"]], **light)
    e.files.clear(lambda: [], None, e.last_upload, **light)
    upload_preview = upload_event.then(show_case, case_inputs, preview_outputs, **light)
    slice_events = [comp.change(show_case, case_inputs, preview_outputs, trigger_mode="always_last", **light)
                    for comp in (e.slice_slider, e.channel, e.window, e.gt_file)]
    e.show_case, e.preview_outputs = show_case, preview_outputs      # the Volume tab hands a slice to Explore

    preview_mask_ins = case_inputs + [e.mask_from, ctl["percentile"], e.model]
    # one listener for both triggers, so previews run one after another and the last setting's preview is the one
    # left on screen (two listeners ran side by side and a slower, older preview could land last)
    gr.on([ctl["percentile"].change, e.mask_from.input, e.model.input], explore.preview_mask, preview_mask_ins,
          [e.preview, e.progress], trigger_mode="always_last", **light)
    explore_inputs = case_inputs + [e.mask_from, e.mask_file, e.mask_draw, ctl["k"], ctl["percentile"],
                                    ctl["steps"], ctl["seed"], e.opacity, page.refused_upload, e.model]
    explore_outs = [e.live_noisy, e.live_clean, e.progress, e.out_input, e.out_saliency, e.out_mask, e.out_cf,
                    e.out_overlay, e.out_slider, e.out_metrics, e.out_chart, e.out_summary, page.run_state]
    # Run is disabled from the click to the run's end (results, error or Stop), so no press is dropped silently
    run_event = e.run_btn.click(explore.lock_run, None, e.run_btn, **light).then(
        bounded(explore.explore_run), explore_inputs, explore_outs, api_name="explore", show_progress="hidden",
        **heavy)
    run_event.then(explore.unlock_run, None, e.run_btn, **light)
    run_event.failure(explore.unlock_run, None, e.run_btn, **light)      # .then does not follow an error
    # a failed run emptied the results (explore.cleared_outputs): no verdict or stale marker of the run it replaced
    run_event.failure(lambda: (gr.update(value="", visible=False), ""), None, [e.explore_verdict, e.stale], **light)
    # the results are marked stale while the settings or the case differ from the run's
    stale_ins = [page.run_state, e.source, page.selected_key, e.files, e.slice_slider, e.channel, e.window,
                 e.mask_from, ctl["k"], ctl["percentile"], ctl["steps"], ctl["seed"], e.model]
    run_event.then(explore.stale_marker, stale_ins, e.stale, **light)
    run_event.then(explore.verdict_view, page.run_state, e.explore_verdict, **light)
    for comp in stale_ins[1:]:
        comp.change(explore.stale_marker, stale_ins, e.stale, trigger_mode="always_last", **light)
    unc_event = e.unc_btn.click(bounded(uncertainty.uncertainty_run), case_inputs + [
        e.mask_from, e.mask_file, e.mask_draw, ctl["k"], ctl["percentile"], ctl["steps"], ctl["seed"],
        e.unc_samples], [e.unc_progress, e.unc_std, e.unc_mean, e.unc_anomaly, e.unc_md],
        api_visibility="undocumented", show_progress="hidden", **heavy)
    e.stop_btn.click(explore.stop_run, None, [e.progress, e.run_btn],
                     cancels=[run_event, unc_event, upload_event, upload_preview, *slice_events], **light)
    view_ins = [page.run_state, e.opacity, e.win_centre, e.win_width, e.zoom, e.view_focus]
    view_outs = [e.out_input, e.out_saliency, e.out_mask, e.out_cf, e.out_overlay, e.out_slider]
    for comp in (e.opacity, e.win_centre, e.win_width, e.zoom):
        comp.change(explore.render_view, view_ins, view_outs, trigger_mode="always_last", **light)
    e.win_preset.input(explore.window_preset, e.win_preset, [e.win_centre, e.win_width], **light)
    for panel in (e.out_input, e.out_cf, e.out_overlay, e.out_mask, e.out_saliency):
        panel.select(explore.set_focus, [page.run_state, e.zoom, e.view_focus], [e.view_focus, e.zoom],
                     **light).then(explore.render_view, view_ins, view_outs, **light)
    e.view_reset.click(lambda: (0.0, 2.0, 1.0, None, "As loaded"), None,
                       [e.win_centre, e.win_width, e.zoom, e.view_focus, e.win_preset], **light).then(
        explore.render_view, view_ins, view_outs, **light)
    run_event.then(explore.render_view, view_ins, view_outs, **light)   # a new run keeps the reader's view
    e.to_curate.click(curate.send_to_curate, [page.run_state, page.review_items], [cur.review, page.review_items],
                      **light)
