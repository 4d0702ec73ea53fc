"""The Curate tab's callbacks: generate a batch, review each result (accept, reject, rerun), save the accepted ones
into a teaching set and download it as a zip."""

from __future__ import annotations

import html

import gradio as gr

from diffuse_core.data import curation
from diffuse_core.studio.guard import RunCancelled, RunTimeLimit
from diffuse_core.studio.library import load_library_case
from diffuse_core.studio.model_store import MODELS, ModelUnavailable
from diffuse_core.studio.scoring import verdict_line
from diffuse_core.studio.review import batch_sources, item_from_state, run_for_review, save_accepted
from diffuse_core.studio.selection import reload_case
from diffuse_core.studio.settings import check_settings
from diffuse_core.studio.uploads import load_upload_case
from diffuse_core.ui.errors import USER_ERRORS, user_errors
from diffuse_core.ui.pictures import grey_rgb, review_tile, with_outlines

STATUS_ICON = {"pending": "○", "accepted": "✓", "rejected": "✗"}


def review_gallery(items: list) -> list:
    """The review gallery: one (tile, caption) per item."""
    out = []
    for it in items:
        saved = f" · saved as {it.result['saved_as']}" if it.result.get("saved_as") else ""
        out.append((review_tile(it.result), f"{STATUS_ICON[it.status]} {it.label}{saved}"))
    return out


def batch_status(items) -> str:
    """The Curate status line after a decision or a save: where the review stands now (replaces "Batch done")."""
    items = list(items or [])
    if not items:
        return ""
    counts = curation.review_counts(items)
    saved = sum(1 for it in items if it.result.get("saved_as"))
    return (f"To review: {counts['pending']} pending, {counts['accepted']} accepted ({saved} saved), "
            f"{counts['rejected']} rejected.")


def _counts_text(items) -> str:
    counts = curation.review_counts(items)
    return f"{counts['accepted']} accepted, {counts['rejected']} rejected, {counts['pending']} pending."


@user_errors
def curate_generate(case_keys, files, k, steps, percentile, seed, items):
    """Generate counterfactuals for a batch; streams (status, review gallery, items)."""
    sources = batch_sources(case_keys, files)
    check_settings(k, steps, seed)
    items = list(items or [])
    failed = []
    for i, (label, kind, ref) in enumerate(sources):
        yield f"Generating {i + 1}/{len(sources)}: {html.escape(label)}…", review_gallery(items), items
        try:
            lc = load_library_case(ref) if kind == "library" else load_upload_case([ref])
            record = run_for_review(lc, k, steps, seed, percentile)
        except RunCancelled:
            raise
        except RunTimeLimit as err:                  # the request's time is up: keep what was generated
            failed.append(f"{label} and the {len(sources) - i - 1} case(s) after it: {err}")
            break
        except USER_ERRORS as err:
            if isinstance(err, ModelUnavailable) and not MODELS.ddpm_info()["available"]:
                raise
            failed.append(f"{label}: {err}")
            continue
        items.append(curation.ReviewItem(key=lc.key, label=label, result=record))
    counts = curation.review_counts(items)
    msg = (f"Batch done: {len(sources) - len(failed)} generated. To review: {counts['pending']} pending, "
           f"{counts['accepted']} accepted, {counts['rejected']} rejected. Click a result to review it.")
    if failed:
        msg += "\n\nSkipped:\n" + "\n".join(f"- {html.escape(f)}" for f in failed)
    yield msg, review_gallery(items), items


def send_to_curate(state, items):
    """Explore's last result -> the review list."""
    if not state:
        raise gr.Error("Run the model on a case first, then send the result to Curate.", print_exception=False)
    items = list(items or []) + [item_from_state(state)]
    gr.Info("Added to the Curate review list.")
    return review_gallery(items), items


def review_select(evt: gr.SelectData, items):
    """A review thumbnail clicked -> (index, before/after, details, note)."""
    i = evt.index if isinstance(evt.index, int) else evt.index[0]
    return (i, *review_details(items, i))


def review_details(items, i):
    """(before/after pair, details markdown, note) of review item ``i``."""
    if not items or i is None or not 0 <= i < len(items):
        return None, "Select a result above.", ""
    it = items[i]
    r = it.result
    s = r["summary"]
    dice = f", Dice {s['dice']:.3f}" if "dice" in s else ""
    md = (f"**{html.escape(it.label)}** — {STATUS_ICON[it.status]} {it.status} · run {it.runs} · K={s['k']}, "
          f"{s['steps']} steps, seed {s['seed']}, {_region(s)}{dice}, mean change in brain "
          f"{s['mean_abs_change_in_brain']:.4f}")
    line = verdict_line(s.get("verdict"), r.get("modality") or "")
    if line:
        md = f"{line}\n\n{md}"
        if it.result.get("healthy") and s.get("verdict") and s["verdict"]["abnormal"]:
            md += ("\n\n⚠ This slice is labelled **healthy** but the verdict is **abnormal**: check it before it "
                   "goes into a healthy teaching set.")
    return (with_outlines(grey_rgb(r["image"][0]), truth=r.get("truth")), grey_rgb(r["counterfactual"][0])), md, it.note


def _region(summary: dict) -> str:
    if summary.get("mask_rule") == "card":
        return "region by the model's rule"
    return f"percentile {summary['percentile']:g}"


def review_decide(decision: str):
    """The Accept / Reject callback: (items, index, note) -> (gallery, items, before/after, details, counts)."""
    def decide(items, i, note):
        if not items or i is None or not 0 <= i < len(items):
            raise gr.Error("Select a result in the review gallery first.", print_exception=False)
        items = list(items)
        items[i].decide(decision)
        items[i].note = note or ""
        return (review_gallery(items), items, *review_details(items, i)[:2], _counts_text(items))
    decide.__name__ = f"review_{decision}"
    return decide


@user_errors
def review_rerun(items, i, k, steps, percentile, seed):
    """Rerun the selected result with the current settings (it goes back to pending)."""
    if not items or i is None or not 0 <= i < len(items):
        raise ValueError("select a result in the review gallery first")
    items = list(items)
    it = items[i]
    it.result = run_for_review(reload_case(it.result["origin"]), k, steps, seed, percentile)
    it.status, it.runs = "pending", it.runs + 1
    return (review_gallery(items), items, *review_details(items, i)[:2], f"Reran {html.escape(it.label)}.")


@user_errors
def curate_save(items, set_name):
    """Save the accepted results into the named set. -> (status, zip file, sets dropdown, gallery, items)."""
    items = list(items or [])
    set_name, saved, archive, n = save_accepted(items, set_name)
    msg = f"Saved {len(saved)} case(s) into **{html.escape(set_name)}** ({n} in the set): {', '.join(saved)}."
    return (msg, str(archive), gr.update(choices=curation.list_sets(curation.default_root()), value=set_name),
            review_gallery(items), items)


@user_errors
def curate_zip(set_name):
    """The chosen saved set as a zip file."""
    if not set_name:
        raise ValueError("choose a saved set to download")
    return str(curation.zip_set(set_name, curation.default_root()))


@user_errors
def curate_dicom_zip(set_name):
    """The chosen saved set as de-identified DICOM (a study per case: original, counterfactual, anomaly map)."""
    from diffuse_core.data.curated_dicom import zip_set_dicom

    if not set_name:
        raise ValueError("choose a saved set to download")
    return str(zip_set_dicom(set_name, curation.default_root()))
