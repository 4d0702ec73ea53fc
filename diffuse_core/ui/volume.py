"""The Volume tab's callbacks (issue 34, item 2): open an uploaded volume or series, show the slice in view (input,
counterfactual and overlay together, coronal and sagittal reformats), follow the background computation (a timer
tick), jump to the most abnormal slices (the curve's click, the button), stop and go on, download the results, and
hand the slice in view to Explore. The volume itself lives in :mod:`diffuse_core.studio.volume_session`, one per
browser session."""

from __future__ import annotations

import html
import tempfile
from typing import Optional

import gradio as gr

from diffuse_core.studio.adapt_jobs import adapted_model_dir
from diffuse_core.studio.model_store import k_shown_for
from diffuse_core.studio.session import session_id
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.studio.uploads import replacing_upload, upload_paths
from diffuse_core.studio.volume_session import VOLUMES, open_volume, reformat_allowed, write_results
from diffuse_core.ui.errors import USER_ERRORS, capitalised, short_message
from diffuse_core.ui.progress import progress_html
from diffuse_core.ui.volume_pictures import PANEL, axial_panels, physical_size, reformats, score_curve

# the outputs every view of a slice fills, in this order
VIEW_OUTPUTS = ["slice_info", "input", "counterfactual", "overlay", "coronal", "sagittal", "curve", "progress"]
NO_VOLUME = "Upload a NIfTI volume or a DICOM series (its files, or a .zip of them) to scroll through it."
WORST_COUNT = 5               # the "most abnormal" button cycles through this many slices
REFORMAT_CHOICES = [("Input", "input"), ("Counterfactual", "counterfactual"), ("Anomaly overlay", "overlay")]


def key_of(request: Optional[gr.Request]) -> str:
    """The browser session's key of its volume (one per session; tests without a request share one)."""
    return session_id(request) or "local"


def threshold_of(s) -> float:
    """The anomaly threshold the volume's slices are flagged at (the model card's)."""
    return float(s.store.engine.settings["threshold"])


def _slice_info(s, z: int) -> str:
    v = s.volume
    r = s.store.get(z)
    where = f"**Slice {z}** of {v.num_slices} (0 = most inferior)"
    if z not in s.store.brain:
        return f"{where} · no brain in this slice: not run"
    if r is None:
        return f"{where} · computing…"
    area = s.store.scores()[z] or 0.0
    verdict = "**flagged**" if area > 0 else "nothing flagged"
    line = (f"{where} · {verdict}: {area:.0f} mm² above the threshold, peak anomaly {r.peak:.3f} "
            f"(threshold {threshold_of(s):.3f})")
    if r.outside is not None:
        line += f" · **outside the levels the model learned**: {r.outside}; red here may be normal anatomy"
    return line


def progress_line(s) -> str:
    """The tab's progress bar: slices done of the brain slices, speed, what happens now."""
    done, total = s.store.progress
    if s.error:
        return progress_html(done, total, f"Stopped by an error after {done} of {total} slices: {s.error}", "error")
    sec = s.seconds_per_slice()
    speed = f" · {sec:.1f} s a slice" if sec else ""
    if done == total:
        return progress_html(done, total, f"All {total} brain slices computed{speed}. Download the results below.")
    if s.running and not s.stopped:
        left = f", about {sec * (total - done) / 60:.0f} min left" if sec else ""
        return progress_html(done, total, f"Computing: {done} of {total} brain slices, the slice in view first"
                                          f"{speed}{left}.")
    return progress_html(done, total, f"Paused at {done} of {total} brain slices: press Continue to go on.")


def view(s, z: int, opacity: float, reformat_of: str, row: float | None = None, col: float | None = None) -> list:
    """Every picture of slice ``z`` of session ``s``, in :data:`VIEW_OUTPUTS` order (``row``/``col``: where the
    coronal and sagittal cuts go, as fractions of the height and width; None: the middle)."""
    v = s.volume
    z = int(min(max(int(z), 0), v.num_slices - 1))
    r = s.store.get(z)
    pending = "no brain: not run" if z not in s.store.brain else f"computing slice {z}…"
    thr = threshold_of(s)
    panels = axial_panels(s.raw(z), s.counterfactual(z) if r is not None else None, r, s.window, v.spacing, thr,
                          opacity, pending)
    ok, why = reformat_allowed(v)
    coronal = sagittal = None
    if ok:
        _, h, w = v.shape
        ri = int(round((0.5 if row is None else float(row)) * (h - 1)))
        ci = int(round((0.5 if col is None else float(col)) * (w - 1)))
        if reformat_of == "counterfactual":
            stack, done = s.stacked("counterfactual")
        else:
            stack, done = s.stacked("input")
            if reformat_of != "overlay":
                done = done | True                       # the input is all there: nothing dimmed
        anomaly = s.stacked("anomaly")[0] if reformat_of == "overlay" else None
        coronal, sagittal = reformats(stack, done, z, ri, ci, s.window, v.spacing, float(v.slice_step), anomaly, thr,
                                      opacity)
    info = _slice_info(s, z) + ("" if ok else f"\n\n{html.escape(why)}")
    curve = score_curve(s.store.scores(), s.store.brain, z, s.store.worst(3), s.store.progress[0],
                        s.store.outside())
    return [info, *panels, coronal, sagittal, curve, progress_line(s)]


def _cleared(message: str) -> list:
    """The tab with no volume: every picture empty and ``message`` where the slice description goes."""
    return [message, None, None, None, None, None, None, progress_html(0, 1, "No volume.")]


def replace_upload(files, previous):
    """An upload into a box that held files: the new files replace the old ones unless all are files of one DICOM
    series (:func:`~diffuse_core.studio.uploads.replacing_upload`) -> (the box's files, the same to remember)."""
    keep = replacing_upload(previous, files)
    return (gr.skip() if keep == upload_paths(files) else keep), keep


def open_upload(files, k, steps, seed, opacity, reformat_of, model="", request: Optional[gr.Request] = None):
    """Files uploaded (or Recompute pressed) -> the volume opened and computing, the middle brain slice in view:
    (slice slider, timer, download files, *view). A file that is not a volume, or a volume refused (sizes,
    mixed series, 4-D, too large...), clears the tab and says why in one line. ``model``: the "Healthy model"
    choice ("" the installed one, else an adapted model's name; MRI volumes only)."""
    key = key_of(request)
    if not files:
        VOLUMES.close(key)
        return (gr.update(visible=False), gr.Timer(active=False), None, *_cleared(NO_VOLUME))
    k_arg = None if k in (None, "") or int(k) == int(DEFAULTS["k"]) else int(k)         # None: the card's K
    steps_arg = None if steps in (None, "") or int(steps) == int(DEFAULTS["steps"]) else int(steps)
    try:
        s = open_volume(key, files, k=k_arg, steps=steps_arg, seed=int(seed or 0), model_dir=adapted_model_dir(model))
    except USER_ERRORS as err:
        VOLUMES.close(key)                               # nothing of the previous volume stays on screen
        msg = capitalised(short_message(str(err)))
        gr.Warning(msg)
        return (gr.update(visible=False), gr.Timer(active=False), None, *_cleared(f"⚠ {html.escape(msg)}"))
    z = s.store.focused
    slider = gr.update(visible=True, minimum=0, maximum=max(s.volume.num_slices - 1, 1), value=z,
                       label=f"Axial slice (0 = most inferior; {len(s.store.brain)} of {s.volume.num_slices} hold "
                             f"brain)")
    return (slider, gr.Timer(active=True), None, *view(s, z, opacity, reformat_of))


def show_slice(z, opacity, reformat_of, row, col, request: Optional[gr.Request] = None):
    """The slider (or the opacity, or the reformat choice) moved: that slice comes next in the computation and
    every picture shows it -> *view, timer."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        return [gr.skip()] * len(VIEW_OUTPUTS) + [gr.skip()]
    z = s.focus(z or 0)
    if not s.stopped and not s.store.complete:
        s.start()                                        # after an error or a finished run of another order
    return [*view(s, z, opacity, reformat_of, row, col), gr.Timer(active=s.running)]


def tick(z, opacity, reformat_of, row, col, shown, request: Optional[gr.Request] = None):
    """The timer while slices compute: when new slices are done, refresh the curve, the progress and (when the
    slice in view is among them) the pictures -> (*view, timer, shown); the timer stops once nothing runs."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        return [gr.skip()] * len(VIEW_OUTPUTS) + [gr.Timer(active=False), gr.skip()]
    done = s.store.progress[0]
    state = (id(s), done, s.running, s.error)
    if shown == list(state) or shown == state:
        return [gr.skip()] * len(VIEW_OUTPUTS) + [gr.skip(), gr.skip()]
    out = view(s, z or 0, opacity, reformat_of, row, col)
    return [*out, gr.Timer(active=s.running), list(state)]


def jump_to_worst(z, request: Optional[gr.Request] = None):
    """"Most abnormal slice": the computed slice with the largest flagged area, then at each press the next of the
    :data:`WORST_COUNT` worst -> the slider's value."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        return gr.skip()
    scores, outside = s.store.scores(), s.store.outside()
    worst = ([w for w in s.store.worst(WORST_COUNT) if (scores[w] or 0) > 0 and not outside[w]]
             or s.store.worst(1))                       # slices the model learned first; outside ones last
    if not worst:
        gr.Info("No slice computed yet: the curve fills in as slices finish.")
        return gr.skip()
    z = int(z or 0)
    nxt = worst[(worst.index(z) + 1) % len(worst)] if z in worst else worst[0]
    return gr.update(value=nxt)


def curve_clicked(value):
    """The curve's script wrote "<slice>:<time>" into the hidden box -> the slider's value."""
    try:
        return gr.update(value=int(str(value).split(":")[0]))
    except (TypeError, ValueError):
        return gr.skip()


def cut_at(evt: gr.SelectData, request: Optional[gr.Request] = None):
    """A click on the axial input panel: the coronal and sagittal cuts go through that point -> (row, col) as
    fractions of the slice's height and width."""
    s = VOLUMES.get(key_of(request))
    try:
        x, y = float(evt.index[0]), float(evt.index[1])
    except (TypeError, ValueError, AttributeError, IndexError):
        return gr.skip(), gr.skip()
    if s is None:
        return gr.skip(), gr.skip()
    h, w = physical_size(s.volume.shape[1:], s.volume.spacing[0], s.volume.spacing[1], PANEL)
    return min(max(y / h, 0.0), 1.0), min(max(x / w, 0.0), 1.0)


def stop_computing(request: Optional[gr.Request] = None):
    """Stop after the batch in flight (the slices done are kept) -> (progress, timer)."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        return gr.skip(), gr.skip()
    s.stop(wait=False)
    return progress_html(*s.store.progress, "Pausing after the slices in flight…"), gr.Timer(active=True)


def go_on(z, request: Optional[gr.Request] = None):
    """Continue the computation from the slice in view -> (progress, timer)."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        return gr.skip(), gr.skip()
    s.focus(z or 0)
    s.stopped = False
    s.start()
    return progress_line(s), gr.Timer(active=True)


def download(request: Optional[gr.Request] = None):
    """The results as files (NIfTI, + DICOM SEG for a DICOM series), once every brain slice is done."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        raise gr.Error(NO_VOLUME, print_exception=False)
    try:
        paths = write_results(s, tempfile.mkdtemp(prefix="diffuse-volume-out-"))
    except USER_ERRORS as err:
        raise gr.Error(capitalised(short_message(str(err))), print_exception=False) from None
    return gr.update(value=[str(p) for p in paths], visible=True)


def to_explore(z, request: Optional[gr.Request] = None):
    """"Open this slice in Explore": the Explore tab on the upload of this volume at slice ``z``, ready to run step by
    step -> (tabs, Explore's source, files, slice slider, channel, window, the files Explore's box holds)."""
    s = VOLUMES.get(key_of(request))
    if s is None:
        raise gr.Error(NO_VOLUME, print_exception=False)
    z = int(z or 0)
    n = s.volume.num_slices
    # the slider's range first; its value in a second step (slice_to_explore): a browser applying a value before a
    # wider maximum would clamp it to the old range
    return (gr.Tabs(selected="explore"), "upload", list(s.files),
            gr.update(visible=n > 1, minimum=0, maximum=max(n - 1, 1)),
            gr.update(visible=False, choices=list(s.volume.channel_names), value=s.volume.channel_names[0]),
            gr.update(visible=s.modality == "ct"), list(s.files))


def k_to_explore(k, request: Optional[gr.Request] = None):
    """The third step of "Open this slice in Explore": Explore's K slider shows the K its run of this volume's
    modality uses (:func:`~diffuse_core.studio.model_store.k_shown_for`)."""
    s = VOLUMES.get(key_of(request))
    shown = None if s is None else k_shown_for(k, s.modality)
    return gr.skip() if shown is None else shown


def slice_to_explore(z):
    """The second step of "Open this slice in Explore": the slice, once the slider's range is the volume's."""
    return int(z or 0)


def close_session(request: Optional[gr.Request] = None):
    """The browser tab closed: its volume stops computing and is dropped."""
    VOLUMES.close(key_of(request))
