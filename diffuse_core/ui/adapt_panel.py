"""The Curate tab's "Adapt the healthy model" panel: adapt the installed healthy model (its classifier, and the DDPM
within a time budget where one is given) to an educator's own normal slices (a curated or teaching set), with a
progress bar and a cancel, then use the new model in Explore (issue 31, item 5). The work is :mod:`diffuse_core.studio.adapt_jobs` (the engine:
:func:`diffuse_core.evaluation.adapt.adapt`, also ``diffuse-studio adapt``).

:func:`adapt_panel` builds the components (inside the Curate tab), :func:`wire_adapt` their events. The adaptation
runs in a background thread of the server: a closed browser tab does not stop it (reopening the page shows it
again); the Cancel button does.
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr

from diffuse_core.evaluation.adapt import DEFAULT_MINUTES
from diffuse_core.studio import adapt_jobs
from diffuse_core.ui.errors import user_errors
from diffuse_core.ui.progress import progress_html

INSTALLED = ("Installed healthy model", "")      # Explore's model choice: "" = the installed model
POLL_SECONDS = 0.5
TASKS = [("Adapt the model to them (a few minutes; the DDPM budget optional)", "fine-tune"),
         ("Calibrate the verdict on them only (no training, minutes)", "verdict")]


def adapt_panel() -> SimpleNamespace:
    """The panel's components, by name (built inside the Curate tab)."""
    a = SimpleNamespace()
    with gr.Accordion("Adapt the healthy model to your scanner (your normal slices)", open=False,
                      elem_id="df-adapt"):
        gr.Markdown("Two ways to fit the installed healthy model to the **normal** MRI slices of a set (yours, saved "
                    "above, or a teaching set), on this machine. **Adapt** (a few minutes): the classifier that sizes the "
                    "redrawn region learns that your scanner's normal slices are normal (and that they are not once a "
                    "lesion is pasted in); a DDPM budget above 0 also fine-tunes the model on them, which on real "
                    "scans made it keep tumours, so it is off by default. **Calibrate the verdict** (minutes, no training): the normal/abnormal "
                    "threshold is chosen on your normal slices, where the shipped one, chosen on synthetic slices, "
                    "calls many real normal slices abnormal. Whole cases are held out and measured, and the "
                    "figures go into the new model's card; it is then offered in **Explore** (\"Healthy model\"). Aim "
                    "for 30 normal slices or more to calibrate, 100 or more to adapt; the installed model is "
                    "never changed.", elem_classes="df-hint")
        a.kind = gr.Radio(TASKS, value=TASKS[0][1], label="What to do", elem_id="df-adapt-kind")
        with gr.Row():
            a.source = gr.Dropdown(adapt_jobs.adapt_sources(), label="Normal slices from", elem_id="df-adapt-source",
                                   scale=3)
            a.minutes = gr.Number(DEFAULT_MINUTES, label="DDPM fine-tune (minutes)",
                                  minimum=adapt_jobs.MINUTES_RANGE[0], maximum=adapt_jobs.MINUTES_RANGE[1],
                                  elem_id="df-adapt-minutes", scale=1,
                                  info="0: the classifier alone (recommended); the measurements come on top")
        with gr.Row():
            a.start = gr.Button("Adapt the model", variant="primary", elem_id="df-adapt-start")
            a.cancel = gr.Button("■ Cancel", variant="stop", elem_id="df-adapt-cancel")
        a.progress = gr.HTML(progress_html(0, 1, "Not started."), elem_id="df-adapt-progress")
        a.result = gr.Markdown("", elem_id="df-adapt-result")
    return a


def stage_text(job: adapt_jobs.AdaptJob) -> str:
    """The progress line of a running job: its stage and time (against the budget when it fine-tunes)."""
    where = f"{job.n_slices} normal slices of {html.escape(job.source.split('/', 1)[-1])}"
    if job.kind == "verdict":
        return f"Calibrating the verdict on {where}: {job.stage} · {job.elapsed / 60:.1f} min"
    budget = f"DDPM budget {job.minutes:g} min" if job.minutes else "the classifier alone"
    return f"Adapting on {where}: {job.stage} · {job.elapsed / 60:.1f} min ({budget} + measurements)"


def verdict_markdown(rec: dict, name: str) -> str:
    """A verdict calibrated on the user's slices, in the panel: where the threshold was chosen, what it does on the
    held-out cases beside the installed one's, and whether the app will use it."""
    held, chosen = rec["held_out"], rec["chosen_on"]
    base = rec.get("base_false_abnormal_rate_held_out")
    before = "" if base is None else (f"; with the installed threshold ({rec['base_threshold']:.2f}) "
                                      f"**{100 * base:.0f} %**")
    used = ("The app uses it with this model." if rec.get("verdict_used") else
            "⚠ It calls too few lesions abnormal, so the app withholds the verdict with this model and the map is read "
            "on its own.")
    return (f"**Verdict calibrated: `{html.escape(name)}`** — now offered in Explore (\"Healthy model\").\n\n"
            f"| The new model's card | |\n|---|---|\n"
            f"| Threshold | peak anomaly **{rec['threshold']:.2f}**, chosen on {chosen['normal_slices']} normal slices "
            f"({100 * (1 - rec['false_abnormal_rate_chosen']):.0f} % of them stay under it) |\n"
            f"| Held-out normal slices called abnormal | {held['normal_slices']} slices of {len(held['groups'])} "
            f"held-out case(s): **{100 * rec['false_abnormal_rate_held_out']:.0f} %**{before} |\n"
            f"| Lesions called abnormal | {100 * rec['sensitivity']:.0f} % of {rec['sensitivity_measured_on']['n']} "
            f"{html.escape(rec['sensitivity_measured_on']['source'])} |\n"
            f"| Time | {rec['seconds'] / 60:.1f} min, {html.escape(str(rec.get('hardware', '')))} |\n\n{used}")


def card_markdown(rec: dict, name: str) -> str:
    """The new model's card, in the panel: data, held-out slices, steps, time, false flags before and after."""
    b, a = rec["false_flags_before"], rec["false_flags_after"]
    if b["mean"] <= 0:
        verdict = "none were flagged before: nothing to halve"
    else:
        verdict = "at least halved" if rec.get("halved") else "not halved: more normal slices may help"
    return (f"**Adapted model `{html.escape(name)}`** — now offered in Explore (\"Healthy model\").\n\n"
            f"| The new model's card | |\n|---|---|\n"
            f"| Data | {rec['normal_slices']} normal slices: {rec['trained_on']} trained on, {rec['held_out']} held "
            f"out (whole cases), {rec['measured_on']} measured |\n"
            f"| DDPM fine-tune | {rec['steps']} steps (batch {rec['batch_size']}); {rec['seconds'] / 60:.1f} min in "
            f"all, {html.escape(str(rec.get('hardware', '')))} |\n"
            + (f"| Classifier (the redrawn region) | adapted first: {rec['classifier']['steps']} steps on your normal "
               f"slices and the same with SynthBrain lesions pasted in |\n" if rec.get("classifier") else "") +
            f"| Normal brain flagged, held-out slices | before **{100 * b['mean']:.1f} %** (max {100 * b['max']:.1f} "
            f"%), after **{100 * a['mean']:.1f} %** (max {100 * a['max']:.1f} %): {verdict} |\n"
            f"| Held-out normal slices called abnormal | {calls_row(rec)} |\n"
            f"| Lesions found, held-out lesion slices | {lesion_row(rec)} |")


def calls_row(rec: dict) -> str:
    """The slice verdict on the held-out normal slices before and after (the app's call, level check included)."""
    b, a = rec.get("normal_called_abnormal_before"), rec.get("normal_called_abnormal_after")
    if not b or not a:
        return "no verdict on this model's card"
    return (f"before **{b['abnormal']} of {b['called']}** called, after **{a['abnormal']} of {a['called']}**"
            + ("" if a["called"] == a["measured"] else
               f" ({a['measured'] - a['called']} of {a['measured']} get no call: outside the levels learned)"))


def lesion_row(rec: dict) -> str:
    """The held-out lesion Dice before and after, or why there is none (a model that stops flagging normal brain
    should still flag lesions)."""
    b, a = rec.get("lesion_dice_before"), rec.get("lesion_dice_after")
    if not b or not a:
        return "not measured: no labelled lesion slices were held out; check that it still finds lesions"
    change = a["mean"] - b["mean"]
    note = " (it redraws lesions too: use it with care)" if change < -0.05 else ""
    return f"Dice before **{b['mean']:.2f}**, after **{a['mean']:.2f}** on {b['n']} slices{note}"


def _end(job: adapt_jobs.AdaptJob):
    """(progress, result) of a finished job."""
    if job.record is not None:
        card, what = ((verdict_markdown, "calibrated") if job.kind == "verdict" else (card_markdown, "adapted"))
        return (progress_html(1, 1, f"Done in {job.elapsed / 60:.1f} min: the {what} model is saved."),
                card(job.record, job.name))
    if job.cancelled:
        return progress_html(0, 1, "Stopped: no model was written.", "error"), ""
    return (progress_html(0, 1, f"Adaptation failed: {html.escape(job.error or 'unknown error')}", "error"),
            "")


@user_errors
def adapt_run(source, minutes, kind="fine-tune"):
    """The Adapt button: start the adaptation (``kind``: "verdict" or "fine-tune"), then stream (progress, result)
    until it ends (finished, stopped or failed). The adaptation itself runs in a background thread
    (:func:`diffuse_core.studio.adapt_jobs.start_adapt`)."""
    if not source:
        raise ValueError("choose the set of normal slices to adapt the model to")
    job = adapt_jobs.start_adapt(source, minutes, kind=kind or "fine-tune")
    yield progress_html(0, 1, stage_text(job)), ""
    yield from follow(job)


def follow(job: adapt_jobs.AdaptJob):
    """(progress, result) of ``job`` every half second while it runs, then its end."""
    while not job.done.wait(POLL_SECONDS):
        yield progress_html(job.fraction, 1, stage_text(job)), gr.skip()
    yield _end(job)


def adapt_resume():
    """Page load: a running adaptation of this server is shown (and followed) again; else the last one's end."""
    job = adapt_jobs.current_job()
    if job is None:
        yield gr.skip(), gr.skip()
        return
    yield from follow(job)


def adapt_cancel():
    """The Cancel button: stop the running adaptation at its next training step (its progress line then says
    "Stopped")."""
    job = adapt_jobs.current_job()
    if job is None or not job.running:
        gr.Info("No adaptation is running.")
        return
    job.cancel()


def model_choices(current=None):
    """A "Healthy model" dropdown's choices (Explore's, the Volume tab's): the installed model and every finished adapted model (newest first);
    the current choice is kept while it exists."""
    choices = [INSTALLED] + [(m.label, m.name) for m in adapt_jobs.adapted_models()]
    values = [v for _, v in choices]
    return gr.update(choices=choices, value=current if current in values else "")


def wire_adapt(demo: gr.Blocks, a: SimpleNamespace, model_choices_of: list, light: dict) -> None:
    """The panel's events; ``model_choices_of``: the "Healthy model" dropdowns (Explore's, the Volume tab's),
    refreshed when an adaptation ends and on page load. The progress stream takes no model-run slot (the
    fine-tuning is in its own thread)."""
    poll = dict(concurrency_limit=None, api_visibility="undocumented", show_progress="hidden")
    run = a.start.click(adapt_run, [a.source, a.minutes, a.kind], [a.progress, a.result], **poll)
    for choice in model_choices_of:
        run.then(model_choices, choice, choice, **light)
        demo.load(model_choices, choice, choice, **light)
    a.cancel.click(adapt_cancel, None, None, **light)
    a.source.focus(lambda: gr.update(choices=adapt_jobs.adapt_sources()), None, a.source, **light)
    demo.load(adapt_resume, None, [a.progress, a.result], **poll)
