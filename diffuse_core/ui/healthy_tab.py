"""The Healthy check tab: run a healthy slice (a teaching case marked healthy, or the case chosen in Explore) at
Explore's settings and read how much the model changed it. :func:`healthy_tab` builds the components,
:func:`wire_healthy` wires the button to :func:`diffuse_core.ui.healthy.healthy_check` (HTTP name
``healthy_check``)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from diffuse_core.ui import healthy
from diffuse_core.ui.bounded import bounded


def healthy_tab(d: int) -> SimpleNamespace:
    """The tab's components, by name (``d``: the display size). ``healthy_choice`` is filled by the page's
    library refresh."""
    h = SimpleNamespace()
    with gr.Tab("Healthy check", id="healthy"):
        gr.Markdown("A model trained on healthy brains should leave a **healthy** slice nearly unchanged. "
                    "Run one and read the number: the mean absolute change inside the brain. The run uses "
                    "the settings of **Explore** (K, steps, percentile, seed).")
        with gr.Row():
            with gr.Column(scale=1):
                h.healthy_choice = gr.Dropdown([("The case selected in Explore", healthy.CURRENT_CASE)],
                                               value=healthy.CURRENT_CASE, label="Healthy case")
                h.healthy_btn = gr.Button("Run the healthy check", variant="primary")
                h.healthy_md = gr.Markdown()
            with gr.Column(scale=1):
                h.healthy_slider = gr.ImageSlider(label="Before / after", type="numpy", height=d,
                                                  interactive=False, max_height=d)
    return h


def wire_healthy(h: SimpleNamespace, page: SimpleNamespace, case_inputs: list, ctl: dict) -> None:
    """The check runs the chosen case with Explore's case inputs and settings (``ctl``: K, percentile, steps,
    seed)."""
    h.healthy_btn.click(bounded(healthy.healthy_check),
                        [h.healthy_choice] + case_inputs + [ctl["k"], ctl["percentile"], ctl["steps"], ctl["seed"]],
                        [h.healthy_slider, h.healthy_md], api_name="healthy_check", **page.heavy)
