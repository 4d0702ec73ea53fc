"""The page: the header and status line, the tabs, each built and wired by its own module
(:mod:`~diffuse_core.ui.explore_tab`, :mod:`~diffuse_core.ui.volume_tab`, :mod:`~diffuse_core.ui.quiz_tab`,
:mod:`~diffuse_core.ui.healthy_tab`, :mod:`~diffuse_core.ui.curate_tab`), the library refresh that fills several of them, and the HTTP API
(:func:`diffuse_core.ui.api.add_api`). :func:`build_demo` returns it unlaunched."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from diffuse_core.data import curation
from diffuse_core.studio.library import list_library, teaching_root
from diffuse_core.studio.model_store import MODELS, apply_recommended_defaults, model_device
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.ui import healthy
from diffuse_core.ui.adapt_panel import wire_adapt
from diffuse_core.ui.api import add_api
from diffuse_core.ui.bounded import close_session
from diffuse_core.ui.curate_tab import curate_tab, wire_curate
from diffuse_core.ui.explore_tab import GALLERY_HINT, explore_controls, explore_tab, wire_explore
from diffuse_core.ui.healthy_tab import healthy_tab, wire_healthy
from diffuse_core.ui.notes import METHOD, NOTES
from diffuse_core.ui.pictures import thumbnail
from diffuse_core.ui.quiz_tab import quiz_tab, wire_quiz
from diffuse_core.ui.volume_tab import volume_tab, wire_volume


def status_markdown() -> str:
    """One line on what is installed and where the models run, with what to do about anything missing."""
    d, a = MODELS.ddpm_info(), MODELS.acat_info()
    parts = []
    if d["available"]:
        trained = f", {d['steps_done']} training steps" if d.get("steps_done") else ""
        parts.append(f"✓ Healthy diffusion model: {d['resolution']}×{d['resolution']}, {d['channels']} channel(s)"
                     f"{trained}.")
    else:
        parts.append(f"⚠ **No healthy diffusion model** — {d['reason']}. You can browse cases, but not run.")
    parts.append("✓ ACAT saliency models installed." if a["available"] else f"⚠ {a['reason']}")
    if d["available"] and MODELS.level("cpu", d.get("card")) is not None:
        parts.append("✓ Level check: no call on slices from levels the model never learned.")
    device = "GPU" if model_device().type == "cuda" else "CPU"
    parts.append(f"Running on the {device}.")
    return " &nbsp;·&nbsp; ".join(parts)


def refresh_library():
    """Page load / refresh -> gallery, its keys, hint, healthy-case choices, batch choices, status, mask source,
    saved sets."""
    entries = list_library()
    items = [(thumbnail(e.image, e.truth), e.gallery_caption) for e in entries]
    keys = [e.key for e in entries]
    healthy_cases = [(e.long_caption, e.key) for e in entries if e.healthy]
    choices = [(e.long_caption, e.key) for e in entries]
    mask_default = DEFAULTS["mask_from"] if MODELS.acat_info()["available"] else "draw"
    info = (GALLERY_HINT if entries else
            f"No teaching sets found in {teaching_root()}: build the default one with "
            f"`python teaching_sets/build_default.py`, or upload a file.")
    current = [("The case selected in Explore", healthy.CURRENT_CASE)]
    return (items, keys, info, gr.update(choices=current + healthy_cases,
                                         value=healthy_cases[0][1] if healthy_cases else healthy.CURRENT_CASE),
            gr.update(choices=choices), status_markdown(), gr.update(value=mask_default),
            gr.update(choices=curation.list_sets()))


def build_demo(title: str = "Dif-fuse Studio") -> gr.Blocks:
    """The whole app as a gr.Blocks (not launched); the installed model card's recommended settings become the
    defaults first (:func:`~diffuse_core.studio.model_store.apply_recommended_defaults`)."""
    apply_recommended_defaults()
    d = DEFAULTS["display_size"]
    img_kw = dict(height=d, width=d, interactive=False, buttons=["download", "fullscreen"], format="png")
    # delete_cache: every 30 min, drop cached pictures older than 2 h (streamed frames would pile up on a host)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(1800, 7200), fill_width=True) as demo:
        gr.Markdown(f"# {title}\nHealthy counterfactuals of brain slices with **Dif-fuse**: a diffusion model "
                    "trained only on healthy brains redraws the suspicious region; the difference is the anomaly map.")
        status = gr.Markdown(status_markdown(), elem_classes="df-status")
        # the state the tabs share, and how their events queue
        page = SimpleNamespace(
            gallery_keys=gr.State([]), selected_key=gr.State(None), run_state=gr.State(None),
            review_items=gr.State([]), review_index=gr.State(None),
            refused_upload=gr.State(None),     # the upload the page reported as refused (explore.report_bad_upload)
            light=dict(concurrency_limit=None, api_visibility="undocumented"),
            # model runs: one queue of DEFAULTS["concurrency"] slots, each callback bounded (time limit, cancel)
            heavy=dict(concurrency_id="model", concurrency_limit="default"))

        with gr.Tabs() as tabs:
            ex = explore_tab(page, d, img_kw)
            vol = volume_tab(img_kw)
            quiz = quiz_tab(d, img_kw)
            check = healthy_tab(d)
            cur = curate_tab(d, explore_controls)
            with gr.Tab("About", id="about"):
                gr.Markdown("\n\n".join(NOTES) + "\n\n" + METHOD)

        lib_outputs = [ex.gallery, page.gallery_keys, ex.case_info, check.healthy_choice, cur.batch_cases, status,
                       ex.mask_from, cur.saved_sets]
        demo.load(refresh_library, None, lib_outputs, **page.light)
        ex.refresh.click(refresh_library, None, lib_outputs, **page.light)
        wire_explore(ex, page, quiz.quiz_editor, cur)
        wire_quiz(demo, quiz, page, ex.case_inputs)
        wire_healthy(check, page, ex.case_inputs, ex.ctl)
        wire_curate(cur, page.review_items, page.review_index, page.light, page.heavy)
        wire_adapt(demo, cur.adapt, [ex.model, vol.model], page.light)
        wire_volume(demo, vol, tabs, ex, page.light, page.heavy)
        add_api(page.heavy)
        demo.unload(close_session)          # a closed tab cancels its requests still computing (an upload's decode)
    return demo
