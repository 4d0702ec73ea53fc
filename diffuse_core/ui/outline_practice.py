"""The Quiz tab's outline practice: the trainee paints where the lesion is and is scored (Dice, IoU) against the
expert's outline and the model's anomaly map."""

from __future__ import annotations

from diffuse_core.io.export import outline
from diffuse_core.studio.selection import load_selected
from diffuse_core.studio.settings import DEFAULTS
from diffuse_core.ui.errors import user_errors
from diffuse_core.ui.pictures import GT_COLOR, MODEL_COLOR, USER_COLOR, drawing_to_mask, grey_rgb, resize_mask

LEGEND = "Outlines: **red** = your drawing, **green** = the expert's lesion, **magenta** = the model's anomaly map."


@user_errors
def quiz_check(drawing, state, source, gallery_key, files, slice_index, channel, window, gt_file):
    """The trainee's drawing vs the ground truth and vs the model's anomaly map. -> (picture, markdown)."""
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.core.metrics import dice, iou

    lc = load_selected(source, gallery_key, files, slice_index, channel, window, gt_file)
    size = lc.case.image.shape[-1]
    drawn = drawing_to_mask(drawing, size)
    if not drawn.any():
        raise ValueError("draw where you think the lesion is first (use the brush on the slice)")
    truth = lc.case.ground_truth
    model = binarize(state["anomaly"], state["threshold"]) if state and state.get("key") == lc.key else None
    rgb = grey_rgb(lc.case.image[0])
    d = DEFAULTS["display_size"]
    outline(rgb, resize_mask(drawn, d), USER_COLOR, 2)
    if truth is not None:
        outline(rgb, resize_mask(truth, d), GT_COLOR, 2)
    if model is not None:
        outline(rgb, resize_mask(model, d), MODEL_COLOR, 1)
    lines = ["| Your drawing vs | Dice | IoU |", "|---|---|---|"]
    if truth is not None:
        lines.append(f"| ground truth (green) | **{dice(drawn, truth):.3f}** | {iou(drawn, truth):.3f} |")
    if model is not None:
        lines.append(f"| model's anomaly map (magenta) | **{dice(drawn, model):.3f}** | {iou(drawn, model):.3f} |")
    notes = []
    if truth is None:
        notes.append("This case has no ground-truth lesion mask" + (" (it is healthy: any drawing is a false alarm)"
                                                                    if lc.healthy else "") + ".")
    if model is None:
        notes.append("Run the model on this case (Explore → Run) to compare with its anomaly map too.")
    elif truth is not None:
        notes.append(f"For reference, the model's own Dice vs the ground truth: **{dice(model, truth):.3f}**.")
    md = "\n".join(lines) if len(lines) > 2 else ""
    return rgb, (md + "\n\n" + " ".join(notes)).strip() + "\n\n" + LEGEND
