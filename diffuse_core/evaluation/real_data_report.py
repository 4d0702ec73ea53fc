"""The real-data section of docs/results.md and its picture grid, from ``diffuse-studio real-data``'s results file.

:func:`markdown` turns the JSON of :func:`diffuse_core.evaluation.real_data.measure` into the section (every figure
read from the file, none typed); :func:`slice_grid` draws every reported slice: input with the expert outline,
the counterfactual, Dif-fuse's anomaly mask over the input, and the FLAIR threshold's, tumour-free slices included.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from diffuse_core.io.export import LESION_OUTLINE_RGB, outline, to_uint8

TILE = 160
HEADER = 40
PER_ROW = 2          # slices side by side in one row of the grid


def _pct(v) -> str:
    return f"{100.0 * float(v):.1f} %"


def _ci(d: dict, pct: bool = False) -> str:
    lo, hi = d["ci95_cases"]
    f = (lambda v: f"{100.0 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(lo)} to {f(hi)}"


def markdown(res: dict, grid_name: str | None = None) -> str:
    """The section's body (no heading): settings line, one table, the contrast and mask lines, the grid link."""
    s, d = res["settings"], res["data"]
    dice, lco, nf = res["dice"], res["dice_leave_case_out"], res["normal_flagged"]
    lines = [
        f"Measured {res['date']} at commit `{res['commit']}` on {res['hardware']} by `{res.get('command') or 'diffuse-studio real-data'}` "
        f"({res['seconds'] / 60:.0f} min). {d['tumour_slices']} tumour slices and {d['tumour_free_slices']} tumour-free "
        f"slices of {len(d['cases'])} BraTS 2015 cases ({d['per_case']} and {d['healthy_per_case']} per case), prepared "
        f"as `run` and the app prepare an upload (intensity `{s['intensity']}`), model grid {d['grid']}²; Dif-fuse at "
        f"the app's defaults (K {s['k']}, {s['steps']} steps, mask {_rule(s['mask_rule'])}, score `{s['score']}`, "
        f"threshold {s['threshold']:g} from SynthBrain validation, seed {s['seed']}). Intervals: 95 %, cases "
        f"resampled.",
        "",
        "| measure | Dif-fuse | FLAIR threshold (z > 1) | Dif-fuse - threshold |",
        "|---|---|---|---|",
        f"| tumour Dice, app defaults | {dice['dif_fuse']['mean']:.3f} ({_ci(dice['dif_fuse'])}) | "
        f"{dice['threshold']['mean']:.3f} ({_ci(dice['threshold'])}) | {dice['paired_gain']['mean']:+.3f} "
        f"({_ci(dice['paired_gain'])}) |",
        f"| tumour Dice, threshold chosen on the other cases | {lco['dif_fuse']['mean']:.3f} ({_ci(lco['dif_fuse'])}) | "
        f"{lco['threshold']['mean']:.3f} ({_ci(lco['threshold'])}) | {lco['paired_gain']['mean']:+.3f} "
        f"({_ci(lco['paired_gain'])}) |",
        f"| normal brain flagged, tumour-free slices (mean; max) | {_pct(nf['dif_fuse']['mean'])} "
        f"({_ci(nf['dif_fuse'], True)}); {_pct(nf['dif_fuse']['max'])} | {_pct(nf['threshold']['mean'])}; "
        f"{_pct(nf['threshold']['max'])} | |",
        "",
        f"- Lesion contrast the counterfactual keeps (0 = gone, 1 = untouched): median "
        f"{res['lesion_contrast_kept']['median']:.2f} ({res['lesion_contrast_kept']['ci95_cases'][0]:.2f} to "
        f"{res['lesion_contrast_kept']['ci95_cases'][1]:.2f}); above 0.55 on {res['lesion_contrast_kept']['above_0.55']}"
        f" of {res['lesion_contrast_kept']['n']} slices.",
        f"- Tumour-free slices with more than 5 % of the brain flagged: "
        f"{nf['dif_fuse']['slices_above_5pct']} of {d['tumour_free_slices']}; mean change of their brain "
        f"{res['normal_change']['mean']:.3f} (intensity units of [-1, 1]).",
        f"- Redrawn region: {_pct(res['mask_share_of_brain']['tumour'])} of the brain on tumour slices, "
        f"{_pct(res['mask_share_of_brain']['tumour_free'])} on tumour-free ones; it holds "
        f"{_pct(res['lesion_in_mask'])} of the tumour on average.",
    ]
    v = res.get("verdict")
    if v:
        lco = v["leave_case_out"]
        lines += [
            "",
            f"Slice verdict (tumour slice = abnormal, tumour-free = normal), score: {v['score']}; AUROC Dif-fuse "
            f"{v['auroc']['dif_fuse']:.2f}, FLAIR threshold {v['auroc']['threshold']:.2f}.",
            "",
            "| verdict threshold | Dif-fuse sensitivity | Dif-fuse specificity | FLAIR sensitivity | FLAIR specificity |",
            "|---|---|---|---|---|",
            f"| chosen on the other cases' tumour-free slices for {100 * lco['false_abnormal_rate']:.0f} % false "
            f"abnormal | {_rate(lco['dif_fuse'], 'sensitivity')} | {_rate(lco['dif_fuse'], 'specificity')} | "
            f"{_rate(lco['threshold'], 'sensitivity')} | {_rate(lco['threshold'], 'specificity')} |",
        ]
        if v.get("card"):
            c = v["card"]
            lines.append(f"| the app's ({c['threshold']:.3g}, chosen on healthy SynthBrain validation for "
                         f"{100 * c['false_abnormal_rate_on_synthbrain']:.0f} % false abnormal) | "
                         f"{_rate(c, 'sensitivity')} | {_rate(c, 'specificity')} | | |")
        if v.get("card_level_checked"):
            c, w = v["card_level_checked"], v["card_level_checked"]["withheld"]
            lines.append(f"| the app's, as the app calls (no call on {w['tumour_free']} tumour-free and {w['tumour']} "
                         f"tumour slices outside the healthy model's trained levels) | {_rate(c, 'sensitivity')} | "
                         f"{_rate(c, 'specificity')} | | |")
    if grid_name:
        lines += ["", f"Every reported slice (input with the expert outline in green, counterfactual, Dif-fuse's "
                      f"anomaly mask in red, the threshold's in blue): [{grid_name}]({grid_name})."]
    return "\n".join(lines) + "\n"


def _rate(d: dict, key: str) -> str:
    lo, hi = d[f"{key}_ci95_cases"]
    return f"{100 * d[key]:.0f} % ({100 * lo:.0f} to {100 * hi:.0f})"


def _rule(rule: dict) -> str:
    if rule.get("kind") == "percentile":
        return f"{rule['percentile']:g}th percentile (the paper's)"
    weight = " weighted by the classifier's P(diseased)" if rule.get("kind") == "weighted" else ""
    grown = f", grown by {rule['margin']} px" if rule.get("margin") else ""
    return f"saliency{weight} >= {rule['level']:g} x its maximum, at most {_pct(rule['max_share'])} of the brain{grown}"


def _grey(x: np.ndarray) -> np.ndarray:
    return np.repeat(to_uint8(x)[..., None], 3, 2)


def _tint(x: np.ndarray, mask: np.ndarray, rgb) -> np.ndarray:
    out = _grey(x).astype(np.float32)
    m = mask.astype(bool)
    out[m] = 0.45 * out[m] + 0.55 * np.asarray(rgb, np.float32)
    return out.astype(np.uint8)


def slice_grid(res: dict, path, zscore: float = 1.0) -> Path:
    """Every slice of ``res["_arrays"]`` (tumour slices first): input, counterfactual, Dif-fuse mask, threshold mask;
    written as an indexed-colour PNG."""
    from PIL import Image

    from diffuse_core.evaluation.baselines import zscore_maps

    a = res["_arrays"]
    z = zscore_maps(a["images"], a["brains"])
    order = sorted(range(len(a["ids"])), key=lambda i: (not a["lesions"][i].any(), a["ids"][i]))
    tiles = []
    for i in order:
        les = a["lesions"][i]
        cells = [outline(_grey(a["images"][i, 0]), les, LESION_OUTLINE_RGB),
                 outline(_grey(a["counterfactuals"][i, 0]), les, LESION_OUTLINE_RGB),
                 outline(_tint(a["images"][i, 0], a["maps"][i] > a["threshold"], (230, 40, 40)), les,
                         LESION_OUTLINE_RGB),
                 outline(_tint(a["images"][i, 0], z[i] > zscore, (40, 90, 230)), les, LESION_OUTLINE_RGB)]
        cells = [cv2.resize(c, (TILE, TILE), interpolation=cv2.INTER_CUBIC) for c in cells]
        label = np.full((18, 4 * TILE, 3), 255, np.uint8)
        cv2.putText(label, a["ids"][i].replace("brats_2013_", ""), (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (20, 20, 20), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([label, np.concatenate(cells, 1)], 0))
    gap = np.full((tiles[0].shape[0], 8, 3), 255, np.uint8)
    blank = np.full_like(tiles[0], 255)
    rows = []
    for r in range(0, len(tiles), PER_ROW):
        group = tiles[r:r + PER_ROW] + [blank] * (PER_ROW - len(tiles[r:r + PER_ROW]))
        rows.append(np.concatenate(sum(([t, gap] for t in group), [])[:-1], 1))
    head = np.full((HEADER, rows[0].shape[1], 3), 255, np.uint8)
    titles = ["input", "counterfactual", "Dif-fuse mask", f"threshold z > {zscore:g}"]
    for k in range(PER_ROW):
        for j, t in enumerate(titles):
            x = k * (4 * TILE + 8) + j * TILE + 6
            cv2.putText(head, t, (x, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (20, 20, 20), 1, cv2.LINE_AA)
    picture = np.concatenate([head] + rows, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
