"""The Explore tab's callbacks: preview the chosen case, run it with the steps shown live, show every result, redraw
the overlay when the opacity moves, and Stop."""

from __future__ import annotations

import html
from typing import Optional

import gradio as gr
import numpy as np

from diffuse_core.studio.adapt_jobs import adapted_model_dir
from diffuse_core.studio.display import display_result
from diffuse_core.studio.library import LoadedCase
from diffuse_core.studio.model_store import MODELS
from diffuse_core.studio.review import modality_label
from diffuse_core.studio.runs import result_record, run_case
from diffuse_core.studio.scoring import flagged_row, looks_normal, result_summary, verdict_line
from diffuse_core.studio.selection import load_selected
from diffuse_core.studio.guard import RunCancelled, request_guard
from diffuse_core.studio.session import LIVE_RUNS, session_id
from diffuse_core.studio.uploads import upload_paths
from diffuse_core.ui.errors import USER_ERRORS, short_message, user_errors
from diffuse_core.ui.pictures import (drawing_to_mask, grey_rgb, mask_picture, overlay_picture, saliency_picture,
                                      with_outlines)
from diffuse_core.ui.progress import change_chart, progress_html, step_fraction

EXPLORE_OUTPUTS = ["live_noisy", "live_clean", "progress", "out_input", "out_saliency", "out_mask", "out_cf",
                   "out_overlay", "out_slider", "out_metrics", "out_chart", "out_summary", "run_state"]
STOPPED_TEXT = "Stopped. Change the settings and press Run again."
RUN_LABEL, RUNNING_LABEL = "▶ Run", "⏳ Running…"
STALE_TEXT = "stale: settings changed since this run — press Run"
NOT_RUN_TEXT = "Not run: the uploaded file was refused (see the message under “1 · Choose a case”)."
# what a run's results depend on, in the order of the inputs of :func:`stale_marker` after the run's state
SETTING_NAMES = ("source", "case", "files", "slice", "channel", "window", "mask_from", "k", "percentile", "steps",
                 "seed", "model")


def skip_all(n: int) -> list:
    """``n`` outputs left as they are."""
    return [gr.skip() for _ in range(n)]


def preview_case(source, gallery_key, files, slice_index, channel, window, gt_file):
    """Case selected -> (preview picture, case description, quiz canvas, mask-drawing canvas)."""
    try:
        lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    except USER_ERRORS as err:
        gr.Warning(str(err))
        return None, f"⚠ {html.escape(str(err))}", None, None
    rgb = with_outlines(grey_rgb(lc.case.image[0]), truth=lc.case.ground_truth)
    canvas = {"background": grey_rgb(lc.case.image[0]), "layers": [], "composite": None}
    info = f"**{html.escape(lc.title)}**"
    if lc.case.ground_truth is not None:
        info += " · ground-truth lesion outlined in green"
    extra = [lc.note] + list(lc.notes) if lc.note else list(lc.notes)
    if extra:
        info += "\n\n" + "\n".join(f"- {html.escape(str(n))}" for n in extra if n)
    return rgb, info, canvas, canvas


def preview_mask(source, gallery_key, files, slice_index, channel, window, gt_file, mask_from, percentile,
                 model=None):
    """Percentile slider moved (or mask source or healthy model changed) -> the preview with the mask that a run
    would use, before any run: the saliency map is computed once per slice and kept
    (:mod:`diffuse_core.studio.saliency_cache`); an adapted model's own classifier makes its mask.
    -> (preview picture, progress line)."""
    from diffuse_core.studio.saliency_cache import mask_preview
    from diffuse_core.studio.settings import SALIENCY_METHODS, split_mask_source

    method, rule = split_mask_source(mask_from)
    if method not in SALIENCY_METHODS:
        return gr.skip(), gr.skip()
    try:
        lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
        model_dir = adapted_model_dir(model) if lc.case.modality != "ct" else None
        mask, _ = mask_preview(lc, method, percentile, rule, model_dir)
    except USER_ERRORS:
        return gr.skip(), gr.skip()             # nothing selected yet, or no ACAT: the run says why
    rgb = with_outlines(grey_rgb(lc.case.image[0]), mask, lc.case.ground_truth)
    brain = lc.case.brain_mask.astype(bool)
    share = 100.0 * mask[brain].mean() if brain.any() else 0.0
    how = (f"above the {float(percentile):g}th percentile" if rule == "percentile" else
           "by the model's rule (sized to the lesion; the paper's percentile is the other ACAT choice)")
    return rgb, progress_html(0, 1, f"Mask preview: {method.upper()} saliency {how}, {share:.0f} % of the brain "
                                    f"(cyan). Press Run to redraw it.")


def _number(v):
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return v


def run_settings_shown(source, gallery_key, files, slice_index, channel, window, mask_from, k, percentile, steps,
                       seed, model="") -> dict:
    """What the page shows of the settings a run depends on (compared by :func:`stale_marker`); only what applies to
    the chosen source counts (the gallery's key for a teaching case; the files, slice, channel and window for an
    upload)."""
    upload = source == "upload"
    names = tuple(sorted(upload_paths(files))) if upload else ()
    return dict(zip(SETTING_NAMES, (source, None if upload else gallery_key, names,
                                    _number(slice_index) if upload else None, channel if upload else None,
                                    window if upload else None, mask_from, _number(k), _number(percentile),
                                    _number(steps), _number(seed), model or "")))


def stale_marker(state, source, gallery_key, files, slice_index, channel, window, mask_from, k, percentile, steps,
                 seed, model="") -> str:
    """A setting or the case changed after the last run -> the visible "stale" marker over its results ("" while
    they match the page, or before any run)."""
    ran = (state or {}).get("shown_settings")
    if not ran:
        return ""
    now = run_settings_shown(source, gallery_key, files, slice_index, channel, window, mask_from, k, percentile,
                             steps, seed, model)
    changed = [name for name in SETTING_NAMES if now.get(name) != ran.get(name)]
    if not changed:
        return ""
    words = {"source": "case source", "case": "case", "files": "uploaded file", "slice": "slice",
             "mask_from": "mask source", "k": "K", "percentile": "percentile", "steps": "steps", "seed": "seed",
             "model": "healthy model"}
    what = ", ".join(dict.fromkeys(words.get(c, c) for c in changed))
    return (f'<div class="df-stale" role="status"><b>⚠ {STALE_TEXT}</b> <span>(changed: {html.escape(what)}; the '
            f'results below are from the previous run)</span></div>')


def lock_run():
    """Run pressed: the button is disabled until the run ends (:func:`unlock_run`), so a second press is never
    dropped silently."""
    return gr.update(interactive=False, value=RUNNING_LABEL)


def unlock_run():
    """The run ended (results, error or Stop): Run can be pressed again."""
    return gr.update(interactive=True, value=RUN_LABEL)


def report_bad_upload(source, gallery_key, files, slice_index, channel, window, gt_file):
    """:func:`preview_case` plus which upload was refused (its files and message, for :func:`explore_run`: a file
    is reported once, where it was uploaded), or None."""
    shown = preview_case(source, gallery_key, files, slice_index, channel, window, gt_file)
    refused = None
    if source == "upload" and shown[0] is None and upload_paths(files):
        refused = {"files": sorted(upload_paths(files)), "message": shown[1]}
    return (*shown, refused)


@user_errors
def explore_run(source, gallery_key, files, slice_index, channel, window, gt_file, mask_from, mask_file, drawing,
                k, percentile, steps, seed, opacity, request: Optional[gr.Request] = None, refused=None, model=""):
    """The Run button: streams (live noisy, live clean, progress, ...skips) per step, then every result.

    Ends early, with the "Stopped." message, once :func:`request_stop` cancels this session's run (or the request
    itself is cancelled). ``refused``: the upload the page already reported as refused (:func:`report_bad_upload`);
    a run of those same files says "Not run" in its progress line instead of a second message. ``model``: the
    name of a model adapted in the app (:mod:`diffuse_core.studio.adapt_jobs`) for an MRI case, "" the installed
    one (a CT case always runs through the CT model)."""
    guard = request_guard(session_id(request))    # a Stop pressed before this run started is not for it
    try:
        lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    except USER_ERRORS as err:
        if refused and source == "upload" and sorted(upload_paths(files)) == refused.get("files"):
            yield cleared_outputs(NOT_RUN_TEXT)
            return
        yield cleared_outputs(f"Run failed: {short_message(str(err))}")     # the previous run's results do not stay on screen
        raise
    try:
        yield from _run_loaded(lc, source, gallery_key, files, slice_index, channel, window, mask_from, mask_file,
                               drawing, k, percentile, steps, seed, opacity, guard, model)
    except (GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as err:
        yield cleared_outputs(f"Run failed: {short_message(str(err))}")
        raise


def cleared_outputs(message: str) -> list:
    """Every Explore output of a run that failed: the result panels, scores and the run's state emptied (nothing
    of the run it replaced stays on screen as if it were this one's), ``message`` in the progress line."""
    values = {name: None for name in EXPLORE_OUTPUTS}
    values["progress"] = progress_html(0, 1, message, "error")
    values["out_metrics"] = ""
    return [values[name] for name in EXPLORE_OUTPUTS]


def _run_loaded(lc, source, gallery_key, files, slice_index, channel, window, mask_from, mask_file, drawing, k,
                percentile, steps, seed, opacity, guard, model):
    """:func:`explore_run` once the case is loaded."""
    n = len(EXPLORE_OUTPUTS)
    model_dir = adapted_model_dir(model) if lc.case.modality != "ct" else None
    shown = run_settings_shown(source, gallery_key, files, slice_index, channel, window, mask_from, k, percentile,
                               steps, seed, model)
    drawn = drawing_to_mask(drawing, lc.case.image.shape[-1]) if mask_from == "draw" else None
    yield [None, None, progress_html(0, 1, "Computing the saliency map and the mask…"), *skip_all(n - 3)]
    mask = None
    try:
        for item in run_case(lc, mask_from, mask_file, drawn, k, steps, seed, percentile, guard=guard,
                             model_dir=model_dir):
            out = skip_all(n)
            if item["kind"] == "mask":
                mask = item["mask"]
                out[EXPLORE_OUTPUTS.index("out_saliency")] = saliency_picture(item["saliency"], lc.case.brain_mask)
                out[EXPLORE_OUTPUTS.index("out_mask")] = mask_picture(lc.case.image[0], mask)
                out[EXPLORE_OUTPUTS.index("out_input")] = with_outlines(grey_rgb(lc.case.image[0]), mask,
                                                                        lc.case.ground_truth)
                out[EXPLORE_OUTPUTS.index("progress")] = progress_html(0, 1, "Mask ready; inverting the image to "
                                                                             "noise…")
                yield out
            elif item["kind"] == "step":
                done, total = step_fraction(item)
                what = "Inverting (DDIM) towards noise" if item["phase"] == "invert" else "Sampling back (Dif-fuse)"
                out[0] = with_outlines(grey_rgb(item["x_t"]), mask)
                out[1] = with_outlines(grey_rgb(item["x0"]), mask)
                out[2] = progress_html(done, total, f"{what}: step {item['index'] + 1}/{item['total']}, "
                                                    f"t = {item['timestep']}")
                yield out
            else:
                out = explore_outputs(lc, item, opacity)
                out[EXPLORE_OUTPUTS.index("run_state")]["shown_settings"] = shown
                if model_dir is not None:
                    out[EXPLORE_OUTPUTS.index("out_metrics")] += f"\n\nModel: **adapted, {html.escape(model)}**."
                yield out
    except RunCancelled:
        yield [gr.skip(), gr.skip(), progress_html(0, 1, STOPPED_TEXT), *skip_all(n - 3)]


def verdict_view(state):
    """The verdict line above the results; after a run whose model card has no calibrated verdict (a model not
    calibrated yet), the line says there is none (hidden only before any run)."""
    line = verdict_line(state.get("verdict"), state.get("modality") or "", state.get("verdict_withheld")) if state \
        else ""
    return gr.update(value=line, visible=bool(line))


def explore_outputs(lc: LoadedCase, item: dict, opacity: float) -> list:
    """Every Explore output for a finished run (a "result" item), in :data:`EXPLORE_OUTPUTS` order; "run_state" is
    the run's record plus what the quiz and the overlay need."""
    r = item["result"]
    summary = result_summary(lc, item)
    d = display_result(lc.case, r)              # the panels at the input's own resolution
    if summary.get("verdict") and not summary["verdict"]["abnormal"]:
        d.anomaly = np.zeros_like(d.anomaly)    # a slice called normal shows no red
    state = {**result_record(lc, item, summary), "key": lc.key, "saliency": r.saliency,
             "threshold": item["threshold"], "display": d, "modality_label": modality_label(lc),
             "verdict": summary.get("verdict"), "verdict_withheld": summary.get("verdict_withheld")}
    values = {
        "live_noisy": gr.skip(), "live_clean": with_outlines(grey_rgb(r.counterfactual[0]), r.mask),
        "progress": progress_html(1, 1, f"Done in {r.seconds:.1f} s ({r.network_calls} network calls"
                                        + ("; the inversion was reused from an earlier run of this slice, K and "
                                           "steps" if r.inversion_reused else "") + ")."),
        **result_panels(d, opacity), "out_metrics": metrics_markdown(lc, summary),
        "out_chart": change_chart(item["changes"]), "out_summary": summary, "run_state": state,
    }
    return [values[name] for name in EXPLORE_OUTPUTS]


def metrics_markdown(lc: LoadedCase, summary: dict) -> str:
    """The results table of a run, with a word on healthy, truthless and out-of-domain cases."""
    rows = [("Mean absolute change inside the brain", f"{summary['mean_abs_change_in_brain']:.4f} (of a 0–2 range)"),
            ("Mask (redrawn region)", f"{100 * summary['mask_fraction_of_brain']:.1f} % of the brain"),
            flagged_row(summary)]
    if "dice" in summary:
        rows.insert(0, ("Dice vs ground truth", f"**{summary['dice']:.3f}**"))
        rows.insert(1, ("IoU vs ground truth", f"{summary['iou']:.3f}"))
    rows.append(("Run", f"K={summary['k']}, {summary['steps']} steps, seed {summary['seed']}, "
                        f"{summary['network_calls']} network calls, {summary['seconds']:.1f} s on {summary['device']}"))
    if summary.get("verdict"):
        v = summary["verdict"]
        rows.insert(0, ("Verdict", f"**{'abnormal' if v['abnormal'] else 'normal'}** (peak anomaly {v['score']:.3f}; "
                                   f"threshold {v['threshold']:.3f})"))
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    head = f"**{html.escape(lc.title)}**"
    if lc.healthy:
        ok = looks_normal(summary)
        head += (" — a **healthy** case: the model should leave it nearly unchanged "
                 f"({'✓ it did' if ok else '⚠ it changed more than expected'}).")
    elif lc.case.ground_truth is None:
        head += " — no ground-truth lesion mask, so no Dice/IoU."
    trained_on = MODELS.out_of_domain(summary.get("modality"))
    if trained_on:
        head += (f"\n\n⚠ **Out of domain:** the healthy model was trained on "
                 f"{', '.join(m.upper() for m in trained_on)} slices only, and this is "
                 f"{str(summary['modality']).upper()}: read the counterfactual with caution.")
    return f"{head}\n\n| Measure | Value |\n|---|---|\n{table}"


RESULT_PANELS = ["out_input", "out_saliency", "out_mask", "out_cf", "out_overlay", "out_slider"]


def result_panels(d, opacity: float) -> dict:
    """The result panels of a Display (see :data:`RESULT_PANELS`)."""
    size, thick = d.panel_size, max(1, d.panel_size // 256)
    before = with_outlines(grey_rgb(d.image[0], size), truth=d.truth, thickness=thick)
    after = with_outlines(grey_rgb(d.counterfactual[0], size), truth=d.truth, thickness=thick)
    return {"out_input": with_outlines(grey_rgb(d.image[0], size), d.mask, d.truth, thick),
            "out_saliency": saliency_picture(d.saliency if d.saliency is not None else d.mask, d.brain, size),
            "out_mask": mask_picture(d.image[0], d.mask, size),
            "out_cf": with_outlines(grey_rgb(d.counterfactual[0], size), d.mask, thickness=thick),
            "out_overlay": overlay_picture(d.image[0], d.anomaly, opacity, d.mask, d.truth, d.vmax, size),
            "out_slider": (before, after)}


def render_view(state, opacity, centre, width, zoom, focus):
    """Window/level, zoom or opacity changed: redraw every result panel of the last run (no model call)."""
    from diffuse_core.studio.display import view

    if not state or state.get("display") is None:
        return [gr.skip()] * len(RESULT_PANELS)
    panels = result_panels(view(state["display"], centre, width, zoom, focus), opacity)
    return [panels[name] for name in RESULT_PANELS]


def window_preset(name):
    """A display preset chosen -> (centre, width)."""
    from diffuse_core.studio.display import WINDOW_PRESETS

    c, w = WINDOW_PRESETS.get(name, (0.0, 2.0))
    return c, w


def set_focus(state, zoom, focus, evt: gr.SelectData):
    """A click on a result panel: the zoom centres there (2x if it was off) -> (focus, zoom)."""
    from diffuse_core.studio.display import panel_side, view_box

    if not state or state.get("display") is None:
        return gr.skip(), gr.skip()
    side = state["display"].anomaly.shape[0]
    top, left, crop = view_box(side, zoom, focus)
    shown = panel_side(crop)
    x, y = float(evt.index[0]), float(evt.index[1])
    row, col = top + y / shown * crop, left + x / shown * crop
    return (min(max(row / side, 0.0), 1.0), min(max(col / side, 0.0), 1.0)), (zoom if zoom and zoom > 1 else 2.0)


def render_overlay(state, opacity):
    """Opacity slider moved: redraw the overlay from the last run (no model call)."""
    if not state:
        return gr.skip()
    d = state.get("display")
    if d is not None:
        return overlay_picture(d.image[0], d.anomaly, opacity, d.mask, d.truth, d.vmax, d.panel_size)
    return overlay_picture(state["image"][0], state["anomaly"], opacity, state["mask"], state["truth"], state["vmax"])


def request_stop(request: Optional[gr.Request] = None):
    """The Stop button: cancel this session's running run (it ends at its next step), and say so once it has ended,
    so that no step update of the run can reach the page after "Stopped." (a session's updates share one stream)."""
    sid = session_id(request)
    if LIVE_RUNS.stop_session(sid):
        LIVE_RUNS.wait_idle(sid)
    return progress_html(0, 1, STOPPED_TEXT)


def stop_run(request: Optional[gr.Request] = None):
    """The Stop button of the page: :func:`request_stop`, and Run enabled again -> (progress, Run button)."""
    return request_stop(request), unlock_run()
