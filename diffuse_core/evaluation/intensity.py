"""How a real MRI's intensities reach the model, measured side by side on real BraTS FLAIR (issue: models v2).

The shipped models learnt SynthBrain's intensity scale (FLAIR white matter near -0.3, grey matter near 0, lesions up
to about 0.7). A real scan has arbitrary units, so the app must map it onto some scale first. Two ways
(:data:`diffuse_core.cases.INTENSITY_CHOICES`):

* ``percentile`` (the default): the brain's 1st and 99th percentiles to -1 and 1. On a tumour slice the 99th
  percentile sits in the tumour; on a normal slice it sits in normal cortex, which then reaches the brightness of
  SynthBrain's lesions.
* ``model``: one linear map that puts the brain's 10th-75th percentiles where the model's training slices have
  them (the card's ``intensity_reference``).

For each, on the same real slices (the tumour slices and tumour-free slices of ``evaluate --brats``) and the
shipped models at the card's settings and threshold, one seed: Dif-fuse Dice on the tumour slices (at the card's
threshold and at the best threshold, an oracle choice), pixel AUPRC, the share of the lesion inside the ACAT mask,
and the share of tumour-free brain the anomaly map flags. Beside them the FLAIR z-score threshold (the same under
both, a z-score does not see a linear map) and the realism AUROC of the real tumour-free slices against SynthBrain
(:mod:`diffuse_core.evaluation.realism`).

    python -m diffuse_core.evaluation.intensity --brats ../shared/real_cases/brats2015 --out intensity.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def compare(brats: str | Path, per_case: int = 4, healthy_per_case: int = 3, seed: int = 0, batch_size: int = 12,
            realism: bool = True, progress=print) -> dict:
    """The table of the module docstring as a dict keyed by intensity choice."""
    from diffuse_core.run.card import anomaly_threshold_of, intensity_reference_of
    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.settings import default_settings
    from diffuse_core.evaluation.baselines import ZSCORE_GRID, zscore_maps
    from diffuse_core.evaluation.protocol import (brats_set, choose_threshold, compute_saliency_maps, flagged_share,
                                                  masks_at, pixel_scores, scores)
    from diffuse_core.pipeline import run_batch

    denoiser, sal = load_default_models(None, None, "cpu")
    s = default_settings(denoiser)
    thr = anomaly_threshold_of(denoiser)
    reference = intensity_reference_of(denoiser)
    if reference is None:
        raise ValueError("the shipped model's card holds no intensity_reference")
    out = {"settings": {**s, "threshold": thr, "seed": seed, "reference": reference}}
    for name, ref in (("percentile", None), ("model", reference)):
        start = time.perf_counter()
        data = brats_set(brats, size=denoiser.config.resolution, per_case=per_case, healthy_per_case=healthy_per_case,
                         mri_reference=ref)
        dis = data.diseased
        compute_saliency_maps(data, sal, sources=("acat",))
        masks = masks_at(data, s["percentile"])["acat"]
        ano = np.concatenate([run_batch(denoiser, data.images[i:i + batch_size], masks[i:i + batch_size],
                                        data.brains[i:i + batch_size], k=s["k"], steps=s["steps"], seed=seed).anomalies
                              for i in range(0, len(data), batch_size)])
        les = data.lesions.astype(bool)
        row = {
            "dice_card_threshold": float(scores(ano[dis], data.lesions[dis], thr)[0].mean()),
            "dice_best_threshold": float(scores(ano[dis], data.lesions[dis],
                                                choose_threshold(ano[dis], data.lesions[dis]))[0].mean()),
            "auprc": float(pixel_scores(ano[dis], data.lesions[dis], data.brains[dis])["auprc"]),
            "healthy_flagged": float(flagged_share(ano[~dis], data.brains[~dis], thr).mean()),
            "mask_lesion_coverage": float(np.mean([(masks[i].astype(bool) & les[i]).sum() / les[i].sum()
                                                   for i in np.where(dis)[0]])),
            "n_tumour": int(dis.sum()), "n_tumour_free": int((~dis).sum()),
        }
        if name == "percentile":
            z = zscore_maps(data.images, data.brains)
            best_z = choose_threshold(z[dis], data.lesions[dis], grid=ZSCORE_GRID)
            row["flair_threshold_best_dice"] = float(scores(z[dis], data.lesions[dis], best_z)[0].mean())
            row["flair_threshold_best_z"] = float(best_z)
        if realism:
            from diffuse_core.evaluation.realism import measure

            r = measure(brats, mri_reference=ref, seed=seed)
            row["realism_auroc_cnn"], row["realism_auroc_histogram"] = r["cnn"]["auroc"], r["histogram"]["auroc"]
        row["seconds"] = time.perf_counter() - start
        out[name] = row
        if progress:
            progress(f"{name}: {json.dumps(row)}")
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brats", required=True, metavar="DIR")
    ap.add_argument("--no-realism", action="store_true", help="skip the realism AUROC (about 2 minutes each)")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    res = compare(args.brats, realism=not args.no_realism)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
