"""The Quiz tab: the rapid-reporting packet (call each slice normal or abnormal, callbacks in
:mod:`~diffuse_core.ui.rapids`) and the outline practice (paint the lesion on the case chosen in Explore, scored by
:mod:`~diffuse_core.ui.outline_practice`). :func:`quiz_tab` builds the components inside the page's tabs
(:func:`diffuse_core.ui.layout.build_demo`), :func:`wire_quiz` wires their events."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from diffuse_core.studio import rapids as rapids_engine
from diffuse_core.ui import outline_practice, rapids


def quiz_tab(d: int, img_kw: dict) -> SimpleNamespace:
    """The tab's components, by name (``d``: the display size; ``img_kw``: the picture panels' options).
    ``quiz_editor`` is the outline-practice canvas, which Explore fills with the case chosen there."""
    q = SimpleNamespace()
    with gr.Tab("Quiz", id="quiz"):
        gr.Markdown("**Rapid reporting.** A packet of slices, about half of them normal: call each one "
                    "normal or abnormal (for abnormal, click where first). The answer comes at once: the "
                    "expert's outline, the healthy counterfactual Dif-fuse drew and its anomaly map. "
                    f"Marks: {rapids_engine.SCORES['correct-normal']} for a right normal call, "
                    f"{rapids_engine.SCORES['correct-abnormal']} for abnormal in the right place (within "
                    f"{rapids_engine.LOCATION_TOLERANCE_MM:g} mm of the lesion), "
                    f"{rapids_engine.SCORES['abnormal-wrong-place']} for abnormal in the wrong place, 0 for "
                    "a miss or an overcall. Your answers stay in this browser tab.")
        with gr.Row():
            q.rp_sets = gr.Dropdown(rapids.set_choices(), value=[rapids.DEFAULT_SET], multiselect=True,
                                    label="Teaching sets", elem_id="df-rp-sets", scale=3)
            q.rp_n = gr.Slider(*rapids_engine.PACKET_SIZES, value=10, step=1, label="Slices in the packet",
                               elem_id="df-rp-n", scale=2)
            q.rp_minutes = gr.Number(0, label="Time limit (minutes, 0 = none)", minimum=0, maximum=120,
                                     precision=0, scale=1)
            q.rp_seed = gr.Number(1, label="Packet seed", precision=0, minimum=0, scale=1,
                                  info="same seed, same packet", elem_id="df-rp-seed")
        with gr.Row():
            q.rp_new = gr.Button("New packet", variant="primary", elem_id="df-rp-new")
            q.rp_repeat = gr.Button("Repeat this packet", elem_id="df-rp-repeat")
        q.rp_header = gr.Markdown(elem_id="df-rp-header")
        with gr.Row(visible=False, equal_height=False) as q.rp_play:
            with gr.Column(scale=1):
                q.rp_image = gr.Image(label="Click where the abnormality is", interactive=False,
                                      height=rapids.PANEL, width=rapids.PANEL, format="png",
                                      elem_id="df-rp-image", buttons=["fullscreen"])
                with gr.Row():
                    q.rp_normal = gr.Button("Normal", elem_id="df-rp-normal")
                    q.rp_abnormal = gr.Button("Abnormal", variant="stop", elem_id="df-rp-abnormal")
                q.rp_next = gr.Button("Next slice ▸", visible=False, variant="primary", elem_id="df-rp-next")
            with gr.Column(scale=2, visible=False) as q.rp_reveal:
                with gr.Row():
                    q.rp_slider = gr.ImageSlider(label="Slice / healthy counterfactual", type="numpy",
                                                 height=rapids.PANEL, max_height=rapids.PANEL,
                                                 interactive=False, elem_id="df-rp-slider")
                    q.rp_heat = gr.Image(label="Anomaly map, expert outline", interactive=False,
                                         height=rapids.PANEL, width=rapids.PANEL, format="png",
                                         elem_id="df-rp-heat")
                # the slice verdict (normal / abnormal) of issue 36 item 1 goes here, above the feedback
                q.rp_verdict = gr.Markdown("", elem_id="df-rp-verdict", visible=False)  # noqa: F841
                q.rp_feedback = gr.Markdown(elem_id="df-rp-feedback")
        q.rp_review = gr.Markdown(visible=False, elem_id="df-rp-review")
        q.rp_state = gr.State(None)
        q.rp_point = gr.State(None)
        q.rp_timer = gr.Timer(1.0, active=False)

        with gr.Accordion("Outline practice: paint the lesion on the case chosen in Explore", open=False):
            gr.Markdown("Draw where you think the lesion is on the case chosen in **Explore**, then check. "
                        "You are scored (Dice, 0–1) against the expert's outline and against the model's "
                        "anomaly map (run the model in Explore first).")
            with gr.Row():
                q.quiz_editor = gr.ImageEditor(label="Paint the lesion", type="numpy", image_mode="RGBA",
                                               elem_id="df-quiz",
                                               sources=[], transforms=[], layers=False,
                                               brush=gr.Brush(colors=["#ff463c"], color_mode="fixed",
                                                              default_size=10),
                                               canvas_size=(d, d), fixed_canvas=True, height=d + 120)
                with gr.Column():
                    q.quiz_btn = gr.Button("Check my drawing", variant="primary")
                    q.quiz_image = gr.Image(label="Your drawing vs the answers", **img_kw)
                    q.quiz_md = gr.Markdown()
    return q


def wire_quiz(demo: gr.Blocks, q: SimpleNamespace, page: SimpleNamespace, case_inputs: list) -> None:
    """The tab's events: a packet (new, repeat, click, call, next, the timer) and the outline check, which reads
    Explore's case (``case_inputs``) and last run (``page.run_state``)."""
    light, heavy = page.light, page.heavy
    rp_outs = [q.rp_state, q.rp_point, q.rp_header, q.rp_image, q.rp_reveal, q.rp_slider, q.rp_heat, q.rp_feedback,
               q.rp_normal, q.rp_abnormal, q.rp_next, q.rp_play, q.rp_review, q.rp_timer]
    rp_start_ins = [q.rp_sets, q.rp_n, q.rp_seed, q.rp_minutes]
    q.rp_new.click(rapids.new_seed, [q.rp_state, q.rp_seed], q.rp_seed, **light).then(
        rapids.start_packet, rp_start_ins, rp_outs, api_visibility="undocumented", **heavy)
    q.rp_repeat.click(rapids.repeat_seed, [q.rp_state, q.rp_seed], q.rp_seed, **light).then(
        rapids.start_packet, rp_start_ins, rp_outs, api_visibility="undocumented", **heavy)
    q.rp_image.select(rapids.click_point, q.rp_state, [q.rp_image, q.rp_point], **light)
    call_outs = [q.rp_state, q.rp_header, q.rp_reveal, q.rp_slider, q.rp_heat, q.rp_feedback, q.rp_normal,
                 q.rp_abnormal, q.rp_next]
    q.rp_normal.click(rapids.call("normal"), [q.rp_state, q.rp_point], call_outs, **light)
    q.rp_abnormal.click(rapids.call("abnormal"), [q.rp_state, q.rp_point], call_outs, **light)
    q.rp_next.click(rapids.next_case, q.rp_state, rp_outs, **light)
    q.rp_timer.tick(rapids.tick, q.rp_state, q.rp_header, **light)
    demo.load(lambda: gr.update(choices=rapids.set_choices()), None, q.rp_sets, **light)

    q.quiz_btn.click(outline_practice.quiz_check, [q.quiz_editor, page.run_state] + case_inputs,
                     [q.quiz_image, q.quiz_md], api_visibility="undocumented")
