"""The Volume tab (issue 34, item 2): a whole scan read as a radiologist reads it, by scrolling. Upload a NIfTI
volume or a DICOM series (its files, or a .zip); one slider drives the input, counterfactual and overlay panels
together; the curve of the anomaly per slice jumps to a slice when clicked (and "Most abnormal slice" cycles through
the worst ones); slices are computed in the background, the slice in view first, each kept once computed; coronal
and sagittal reformats where the slice spacing allows (display only); the results download as NIfTI (+ DICOM SEG for
a DICOM series); "Open this slice in Explore" shows the slice in view step by step.

:func:`volume_tab` builds the components (elem_ids ``df-vol-*``), :func:`wire_volume` wires them to
:mod:`~diffuse_core.ui.volume`. The curve is a Plotly figure: a small script (:data:`CURVE_CLICK_JS`) turns a click
on one of its points into the hidden ``df-vol-click`` box's value, which moves the slider."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from diffuse_core.studio.settings import DEFAULTS, K_RANGE, STEPS_RANGE
from diffuse_core.ui import volume
from diffuse_core.ui.adapt_panel import INSTALLED
from diffuse_core.ui.progress import progress_html

TICK_SECONDS = 1.0            # how often the page asks for newly computed slices while the volume computes
PANEL_HEIGHT = 400

# a click on a point of the curve -> "<slice>:<time>" in the hidden box (the time makes a second click count)
CURVE_CLICK_JS = """
() => {
  const hook = () => {
    const plot = document.querySelector('#df-vol-curve .js-plotly-plot');
    if (!plot || plot.__dfHooked || typeof plot.on !== 'function') return;
    plot.__dfHooked = true;
    plot.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      const box = document.querySelector('#df-vol-click textarea, #df-vol-click input');
      if (!p || !box) return;
      box.value = Math.round(Number(p.x)) + ':' + Date.now();
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  setInterval(hook, 300);
}
"""


def volume_tab(img_kw: dict) -> SimpleNamespace:
    """The tab's components, by name (``img_kw``: the picture panels' options of the page)."""
    v = SimpleNamespace()
    kw = {**img_kw, "height": PANEL_HEIGHT, "width": None}
    with gr.Tab("Volume", id="volume"):
        gr.Markdown("Scroll through a whole scan: the slider moves the input, its healthy counterfactual and the "
                    "anomaly overlay together. Slices are computed in the background, **the slice in view first**; "
                    "each is kept once done. Axial slices (the plane the models know); the coronal and sagittal "
                    "views are reformatted for display only.", elem_classes="df-hint")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                v.files = gr.File(label="Volume or DICOM series", file_count="multiple", elem_id="df-vol-upload")
                gr.Markdown("A NIfTI volume (.nii, .nii.gz), all files of one DICOM series, or a .zip of them; "
                            f"up to {DEFAULTS['max_upload_mb']:g} MB. The teaching sets hold single slices, so "
                            "there is no teaching volume to pick.", elem_classes="df-hint")
                with gr.Accordion("Settings (apply to the next upload or Recompute)", open=False,
                                  elem_id="df-vol-settings"):
                    v.k = gr.Slider(*K_RANGE, value=DEFAULTS["k"], step=1, label="Noise level K", elem_id="df-vol-k",
                                    info="the model card's by default")
                    v.steps = gr.Slider(*STEPS_RANGE, value=DEFAULTS["steps"], step=1, label="Sampling steps",
                                        elem_id="df-vol-steps")
                    v.seed = gr.Number(value=DEFAULTS["seed"], precision=0, minimum=0, label="Seed",
                                       elem_id="df-vol-seed")
                    v.model = gr.Dropdown([INSTALLED], value="", label="Healthy model", elem_id="df-vol-model",
                                          info="the installed model, or one adapted to your scanner (Curate tab); "
                                               "MRI volumes")
                    v.recompute = gr.Button("Recompute with these settings", size="sm", elem_id="df-vol-recompute")
                v.progress = gr.HTML(progress_html(0, 1, "No volume."), elem_id="df-vol-progress")
                with gr.Row():
                    v.stop = gr.Button("■ Pause", variant="stop", size="sm", elem_id="df-vol-stop")
                    v.go_on = gr.Button("▶ Continue", size="sm", elem_id="df-vol-continue")
                v.worst = gr.Button("⚑ Most abnormal slice (press again: the next)", variant="primary",
                                    elem_id="df-vol-worst")
                v.explore = gr.Button("Open this slice in Explore (step by step)", elem_id="df-vol-to-explore")
                v.download_btn = gr.Button("Download the results (NIfTI, + DICOM SEG for a series)",
                                           elem_id="df-vol-download-btn")
                v.download = gr.File(label="Results", file_count="multiple", interactive=False, visible=False,
                                     elem_id="df-vol-download")
            with gr.Column(scale=8):
                v.slice = gr.Slider(0, 1, value=0, step=1, label="Axial slice", visible=False,
                                    elem_id="df-vol-slice")
                v.slice_info = gr.Markdown(volume.NO_VOLUME, elem_id="df-vol-info")
                with gr.Row(elem_classes="df-results"):
                    v.input = gr.Image(label="Input", elem_id="df-vol-input", **kw)
                    v.counterfactual = gr.Image(label="Counterfactual", elem_id="df-vol-counterfactual", **kw)
                    v.overlay = gr.Image(label="Anomaly overlay", elem_id="df-vol-overlay", **kw)
                gr.Markdown("<span style='color:#00a8d8'>**Cyan**</span> = the region Dif-fuse redrew, "
                            "<span style='color:#c026d3'>**magenta**</span> = flagged (anomaly above the model's "
                            "threshold); heat map black → bright yellow. Click the input to move the coronal and "
                            "sagittal cuts there.", elem_classes="df-legend")
                v.curve = gr.Plot(show_label=False, elem_id="df-vol-curve")
                v.click = gr.Textbox(visible="hidden", elem_id="df-vol-click", label="clicked slice")
                with gr.Row():
                    v.opacity = gr.Slider(0, 1, value=DEFAULTS["opacity"], step=0.05, label="Anomaly map opacity",
                                          elem_id="df-vol-opacity")
                    v.reformat_of = gr.Radio(volume.REFORMAT_CHOICES, value="input", label="Coronal / sagittal of",
                                             elem_id="df-vol-reformat-of")
                with gr.Row(elem_classes="df-results"):
                    v.coronal = gr.Image(label="Coronal (yellow line: the slice in view)", elem_id="df-vol-coronal",
                                         **{**kw, "height": 320})
                    v.sagittal = gr.Image(label="Sagittal", elem_id="df-vol-sagittal", **{**kw, "height": 320})
        v.row, v.col = gr.State(None), gr.State(None)
        v.shown = gr.State(None)
        v.last_upload = gr.State([])
        v.timer = gr.Timer(TICK_SECONDS, active=False)
    return v


def wire_volume(demo: gr.Blocks, v: SimpleNamespace, tabs: gr.Tabs, ex: SimpleNamespace, light: dict,
                heavy: dict) -> None:
    """The tab's events; ``tabs``: the page's tabs (Explore is opened from here); ``ex``: Explore's components
    (``ex.show_case``/``ex.preview_outputs``: its preview of a chosen case)."""
    heavy = {**heavy, "api_visibility": "undocumented"}      # the page's events, not part of the HTTP API
    view_outs = [getattr(v, name) for name in volume.VIEW_OUTPUTS]
    open_ins = [v.files, v.k, v.steps, v.seed, v.opacity, v.reformat_of, v.model]
    open_outs = [v.slice, v.timer, v.download, *view_outs]
    # a new upload replaces the box's earlier files (unless it adds files of the same DICOM series), then opens
    v.files.upload(volume.replace_upload, [v.files, v.last_upload], [v.files, v.last_upload], **light).then(
        volume.open_upload, open_ins, open_outs, show_progress="minimal", **heavy)
    v.files.clear(volume.open_upload, open_ins, open_outs, **light)
    v.recompute.click(volume.open_upload, open_ins, open_outs, show_progress="minimal", **heavy)
    slice_ins = [v.slice, v.opacity, v.reformat_of, v.row, v.col]
    for comp in (v.slice, v.opacity, v.reformat_of):
        comp.change(volume.show_slice, slice_ins, [*view_outs, v.timer], trigger_mode="always_last",
                    show_progress="hidden", **light)
    v.timer.tick(volume.tick, [*slice_ins, v.shown], [*view_outs, v.timer, v.shown], show_progress="hidden",
                 **light)
    v.input.select(volume.cut_at, None, [v.row, v.col], **light).then(
        volume.show_slice, slice_ins, [*view_outs, v.timer], show_progress="hidden", **light)
    v.worst.click(volume.jump_to_worst, v.slice, v.slice, **light)
    v.click.change(volume.curve_clicked, v.click, v.slice, **light)
    v.stop.click(volume.stop_computing, None, [v.progress, v.timer], **light)
    v.go_on.click(volume.go_on, v.slice, [v.progress, v.timer], **light)
    v.download_btn.click(volume.download, None, v.download, **heavy)
    v.explore.click(volume.to_explore, v.slice, [tabs, ex.source, ex.files, ex.slice_slider, ex.channel, ex.window,
                                       ex.last_upload],
                    **light).then(volume.slice_to_explore, v.slice, ex.slice_slider, **light).then(
                        volume.k_to_explore, ex.ctl["k"], ex.ctl["k"], **light).then(
                        ex.show_case, ex.case_inputs, ex.preview_outputs, **light)
    demo.load(None, None, None, js=CURVE_CLICK_JS)
    demo.unload(volume.close_session)
