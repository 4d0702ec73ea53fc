"""Compare candidate healthy DDPMs on the same slices, to decide which (if any) replaces the shipped one.

For each candidate denoiser (same ACAT models, same slices, Dif-fuse's paper walk at K 500, 50 steps, percentile
90, seed 0): the anomaly threshold chosen on SynthBrain validation, then Dice on real BraTS FLAIR tumour slices
(the ``evaluate --brats`` slices) with the ACAT mask and with an oracle mask (the true lesion dilated by 6 px, the
healthy model's share of the error), and the mean absolute change inside the brain on healthy SynthBrain slices. The
FLAIR z-score threshold baseline (threshold chosen on the same validation slices) is measured beside them.

Real normal brain: the share of the tumour-free BraTS slices' brain each candidate flags (the false alarms a trainee
reading a normal real scan sees). A candidate trained on percentile-stretched SynthBrain (card
``input_normalisation``) gets its SynthBrain slices stretched the same way (and their ACAT masks computed on them);
the BraTS slices are prepared as the app prepares them for every candidate. Because the two scales differ, the
healthy change is given on the model's own scale and on the app's (``healthy_change_app_scale``: the absolute
scale's change times the stretch's gain, :func:`~diffuse_core.evaluation.protocol.app_scale_factors`).

``python -m diffuse_core.evaluation.candidates --brats DIR --out pick.json NAME=FOLDER ...``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from diffuse_core.core.defaults import PAPER_K, PAPER_PERCENTILE, PAPER_STEPS
from diffuse_core.evaluation.baselines import ZSCORE_GRID, oracle_masks, zscore_maps
from diffuse_core.evaluation.protocol import (app_scale_factors, brats_set, choose_threshold, compute_saliency_maps,
                                              flagged_share, masks_at, normalised_set, run_on_set,
                                              scores, synthbrain_set)

def compare(candidates: dict[str, Path], brats_dir: str, saliency_dir=None, device="cpu", n_val: int = 16,
            n_healthy: int = 16, k: int = PAPER_K, steps: int = PAPER_STEPS, percentile: float = PAPER_PERCENTILE, batch_size: int = 64,
            per_case: int = 4, size: int = 128, samples_dir: str | Path | None = None,
            healthy_per_case: int = 3) -> dict:
    from diffuse_core.run.card import input_normalisation_of
    from diffuse_core.models.denoiser import load_denoiser
    from diffuse_core.saliency.dispatch import load_saliency_models

    root = Path(saliency_dir) if saliency_dir else None
    sal = load_saliency_models(root / "autoencoder" if root else None, root / "classifier" if root else None, device)
    val_abs = synthbrain_set("val", n_val, size=size, healthy_fraction=0.25)
    healthy_abs = synthbrain_set("val", n_healthy, base_seed=1, size=size, healthy_fraction=1.0)
    real = brats_set(brats_dir, size=size, per_case=per_case, healthy_per_case=healthy_per_case)
    brats, controls = real.subset(np.where(real.diseased)[0]), real.subset(np.where(~real.diseased)[0])
    for data in (brats, controls):
        compute_saliency_maps(data, sal, sources=("acat",))
    m_brats = masks_at(brats, percentile)
    m_controls = masks_at(controls, percentile)
    oracle = {"acat": oracle_masks(brats.lesions, brats.brains)}
    lesion_in_mask = [float((m & l).sum() / max(1, l.sum())) for m, l in zip(m_brats["acat"], brats.lesions)]
    # the healthy change on the scale the app shows a slice (its brain's 1st-99th percentiles to [-1, 1])
    to_app = app_scale_factors(healthy_abs.images, healthy_abs.brains)

    synth: dict[str, tuple] = {}

    def synthbrain_sets(normalisation: str):
        """Validation (diseased) and healthy sets on a scale, with their ACAT masks (computed once per scale)."""
        if normalisation not in synth:
            val, healthy = normalised_set(val_abs, normalisation), normalised_set(healthy_abs, normalisation)
            for data in (val, healthy):
                compute_saliency_maps(data, sal, sources=("acat",))
            val_d = val.subset(np.where(val.diseased)[0])
            synth[normalisation] = (val_d, {s: v[val.diseased] for s, v in masks_at(val, percentile).items()},
                                    healthy, masks_at(healthy, percentile))
        return synth[normalisation]

    val_d0 = val_abs.subset(np.where(val_abs.diseased)[0])
    z_val, z_brats = zscore_maps(val_d0.images, val_d0.brains), zscore_maps(brats.images, brats.brains)
    z_thr = choose_threshold(z_val, val_d0.lesions, grid=ZSCORE_GRID)
    out = {"slices": {"val_diseased": len(val_d0), "healthy": len(healthy_abs), "brats": len(brats),
                      "brats_tumour_free": len(controls)},
           "settings": {"k": k, "steps": steps, "percentile": percentile, "seed": 0},
           "acat_mask_share_of_lesion_brats": float(np.mean(lesion_in_mask)),
           "flair_threshold": {"threshold_from_val": z_thr,
                               "brats_dice": float(scores(z_brats, brats.lesions, z_thr)[0].mean()),
                               "brats_dice_at_1.0": float(scores(z_brats, brats.lesions, 1.0)[0].mean())},
           "candidates": {}}
    for name, folder in candidates.items():
        t0 = time.perf_counter()
        den = load_denoiser(folder, device=device)
        norm = input_normalisation_of(den)
        val_d, m_val, healthy, m_healthy = synthbrain_sets(norm)
        _, ano_val, _, _ = run_on_set("dif-fuse", den, val_d, m_val, k, steps, 0, batch_size)
        thr = choose_threshold(ano_val, val_d.lesions)
        _, ano_b, _, _ = run_on_set("dif-fuse", den, brats, m_brats, k, steps, 0, batch_size)
        _, ano_o, _, _ = run_on_set("dif-fuse", den, brats, oracle, k, steps, 0, batch_size)
        cf_h, ano_h, _, _ = run_on_set("dif-fuse", den, healthy, m_healthy, k, steps, 0, batch_size)
        _, ano_c, _, _ = run_on_set("dif-fuse", den, controls, m_controls, k, steps, 0, batch_size)
        change = np.array([np.abs(healthy.images[i] - cf_h[i]).mean(axis=0)[healthy.brains[i].astype(bool)].mean()
                           for i in range(len(healthy))])
        dice_val, dice_b = scores(ano_val, val_d.lesions, thr)[0], scores(ano_b, brats.lesions, thr)[0]
        dice_o = scores(ano_o, brats.lesions, thr)[0]
        out["candidates"][name] = {
            "folder": str(folder), "input_normalisation": norm, "threshold_from_val": thr,
            "val_dice": float(dice_val.mean()),
            "brats_dice": float(dice_b.mean()),
            "brats_dice_oracle_mask": float(dice_o.mean()),
            # per slice, in the same order for every candidate: for paired comparisons (evaluation.candidates.paired)
            "per_slice": {"val_dice": [round(float(v), 4) for v in dice_val],
                          "brats_dice": [round(float(v), 4) for v in dice_b],
                          "brats_dice_oracle_mask": [round(float(v), 4) for v in dice_o],
                          "healthy_change": [round(float(v), 5) for v in change]},
            "healthy_change": float(change.mean()),                 # protocol.identity_change, kept per slice
            "healthy_change_app_scale": float(np.mean(change * (to_app if norm == "absolute" else 1.0))),
            "healthy_flagged_share": float(np.mean([(a > thr)[b.astype(bool)].mean()
                                                    for a, b in zip(ano_h, healthy.brains)])),
            "brats_tumour_free_flagged_share": float(flagged_share(ano_c, controls.brains, thr).mean())
            if len(controls) else None,
            "seconds": round(time.perf_counter() - t0, 1)}
        if samples_dir is not None:
            from diffuse_core.evaluation.cards import measure_samples

            q = measure_samples(den, Path(samples_dir) / name, n_reference=48)
            out["candidates"][name]["samples_from_noise"] = {
                s: {"grey_background": q[s]["grey_background"], "grainy": q[s]["grainy"]} for s in ("ddpm", "ddim")}
        print(name, json.dumps(out["candidates"][name]), file=sys.stderr, flush=True)
    return out


def paired(result: dict, a: str, b: str, n_boot: int = 10000, seed: int = 0) -> dict:
    """Candidate ``a`` minus ``b`` per measure on the same slices (a result written by :func:`compare` with per-slice
    values; both candidates may come from different runs of it on the same slices): the mean difference, its 95 %
    bootstrap interval over slices and a verdict (:func:`diffuse_core.evaluation.protocol.paired_difference`)."""
    from diffuse_core.evaluation.protocol import paired_difference

    out = {}
    for key in result["candidates"][a]["per_slice"]:
        d = paired_difference(result["candidates"][a]["per_slice"][key], result["candidates"][b]["per_slice"][key],
                              n=n_boot, seed=seed)
        out[key] = {"mean": round(d["mean"], 4), "ci95": [round(float(v), 4) for v in d["ci"]], "n": d["n"],
                    "verdict": d["verdict"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("candidates", nargs="+", metavar="NAME=FOLDER")
    p.add_argument("--brats", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument("--n-healthy", type=int, default=16)
    p.add_argument("--per-case", type=int, default=4)
    p.add_argument("--healthy-per-case", type=int, default=3,
                   help="tumour-free slices per BraTS case: the share of real normal brain each candidate flags")
    p.add_argument("--steps", type=int, default=PAPER_STEPS)
    p.add_argument("--samples", default=None, metavar="DIR", help="also draw 16 samples from noise per candidate")
    a = p.parse_args(argv)
    from diffuse_core.models.device import pick_device

    cands = dict(c.split("=", 1) for c in a.candidates)
    res = compare({k: Path(v) for k, v in cands.items() if Path(v, "config.json").is_file()}, a.brats,
                  device=pick_device(a.device), n_val=a.n_val, n_healthy=a.n_healthy, batch_size=a.batch_size,
                  per_case=a.per_case, steps=a.steps, samples_dir=a.samples,
                  healthy_per_case=a.healthy_per_case)
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
