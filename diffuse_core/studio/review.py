"""The Curate tab's work: counterfactuals for a batch of cases, each kept as a
:class:`diffuse_core.data.curation.ReviewItem` for an educator to accept, reject or rerun, and the accepted ones
saved into a named teaching set (:mod:`diffuse_core.data.curation`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from diffuse_core.data import curation
from diffuse_core.studio.library import LoadedCase
from diffuse_core.studio.model_store import MODELS, ModelUnavailable
from diffuse_core.studio.runs import RECORD_FIELDS, result_record, run_case
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.studio.uploads import upload_paths

TRUTH_MARGIN = np.ones((5, 5), np.uint8)   # without ACAT, the lesion outline dilated by 2 pixels is the mask


def batch_sources(case_keys, files) -> list[tuple[str, str, object]]:
    """[(label, kind, ref)] for the chosen gallery cases (kind "library") and the uploaded files ("upload")."""
    out = [(k.split("/", 1)[-1], "library", k) for k in (case_keys or [])]
    out += [(Path(p).name, "upload", p) for p in upload_paths(files)]
    if not out:
        raise ValueError("choose cases from the list or upload files to generate a batch")
    if len(out) > DEFAULTS["max_batch"]:
        raise ValueError(f"{len(out)} cases chosen: at most {DEFAULTS['max_batch']} per batch")
    return out


def review_mask_source(lc: LoadedCase) -> tuple[str, np.ndarray | None]:
    """ACAT when installed; otherwise the case's own lesion outline, dilated (an educator's mask): (mask_from,
    drawn mask or None)."""
    if MODELS.acat_info()["available"]:
        return "acat", None
    truth = lc.case.ground_truth
    if truth is None or not np.asarray(truth).any():
        raise ModelUnavailable(MODELS.acat_info()["reason"].replace("Use a mask file or draw the mask instead.",
                               "Curate needs ACAT for cases without a lesion mask."))
    return "draw", cv2.dilate(np.asarray(truth, np.uint8), TRUTH_MARGIN) & lc.case.brain_mask.astype(np.uint8)


def run_for_review(lc: LoadedCase, k, steps, seed, percentile) -> dict:
    """Run ``lc`` to the end and return its record (:func:`diffuse_core.studio.runs.result_record`)."""
    mask_from, drawn = review_mask_source(lc)
    for item in run_case(lc, mask_from, None, drawn, k, steps, seed, percentile):
        if item["kind"] == "result":
            return {**result_record(lc, item), "modality_label": modality_label(lc)}
    raise RuntimeError("the sampler ended without a result")  # pragma: no cover


def modality_label(lc: LoadedCase) -> str:
    """The modality as the case's set names it ("flair"), kept by a saved copy; the grid's "mri" or "ct" where the
    set names none (an upload)."""
    return lc.modality_label or lc.case.modality


def item_from_state(state: dict) -> curation.ReviewItem:
    """The Explore tab's last run (its state: a record plus "key") as a pending review item."""
    return curation.ReviewItem(key=state["key"], label=state["title"].split(" — ")[0],
                               result={k: state[k] for k in RECORD_FIELDS + ("modality_label",) if k in state})


def save_accepted(items: list, set_name: str) -> tuple[str, list[str], Path, int]:
    """Save the accepted, not yet saved items into the set ``set_name`` (under the curated root), marking each
    ``result["saved_as"]``. -> (clean set name, saved case ids, zip of the set, cases now in the set)."""
    set_name = curation.sanitize_name(set_name or "", "set name")
    todo = [it for it in items if it.status == "accepted" and not it.result.get("saved_as")]
    if not todo:
        raise ValueError("no accepted, unsaved results: accept some in the review first")
    root = curation.default_root()
    saved = []
    for it in todo:
        r = it.result
        uploaded = (r.get("origin") or {}).get("kind") == "upload" or str(it.key).startswith("upload:")
        if uploaded:
            # nothing of an uploaded file's name or server path is saved: file names often hold a patient's name,
            # ID or birth date (DOE^JANE_123456_19620314.dcm), and the server path would let anyone holding the zip
            # fetch the original from the running app
            base_id, source = f"upload-{r['modality']}", "upload"
        else:
            base_id = Path(it.label.split("/")[-1]).name.split(".")[0]  # "demo/case01" -> case01
            source = str(r["source"])
        case = curation.CuratedCase(
            case_id=curation.unique_case_id(set_name, base_id, root), image=r["image"],
            counterfactual=r["counterfactual"], anomaly=r["anomaly"], mask=r["mask"], settings=r["settings"],
            seed=r["settings"]["seed"], model_version=r["model_version"], note=it.note, geometry=r["geometry"],
            spacing=r["spacing"], ground_truth=r.get("truth"), brain_mask=r["brain"],
            modality=r.get("modality_label") or r["modality"],     # "flair" stays "flair", not the grid's "mri"
            lesion_type=r.get("lesion_type") or "", location=r.get("location") or "",
            difficulty=r.get("difficulty") or "", healthy=bool(r.get("healthy")), source=source,
            slice_index=int(r["slice"]), full=r.get("full"), full_ground_truth=r.get("full_truth"))
        try:
            curation.save_case(set_name, case, root)
        except curation.CaseExistsError:  # someone saved that id a moment ago: take the next free one
            case.case_id = curation.unique_case_id(set_name, base_id, root)
            curation.save_case(set_name, case, root)
        r["saved_as"] = f"{set_name}/{case.case_id}"
        saved.append(case.case_id)
    archive = curation.zip_set(set_name, root)
    return set_name, saved, archive, len(curation.load_manifest(set_name, root)["cases"])
