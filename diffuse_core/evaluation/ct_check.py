"""Does a CT model earn its place? CT candidates against each other and the CT threshold, on the same slices.

A candidate is a denoiser folder and the folder of its ACAT pair (``autoencoder/`` and ``classifier/``); the MRI
models given a CT slice are what a CT case ran through before any CT model shipped, so they are the reference.
For each candidate, at the app's settings (the MRI card's K, percentile, steps; seed 0):

* the anomaly threshold is chosen on SynthBrain CT validation strokes (``n_val``), as the evaluation does;
* Dice on SynthBrain CT test strokes (``n_test``) with the candidate's ACAT mask and with the oracle mask (the true
  lesion dilated: the healthy model alone), and the share of each lesion the ACAT mask covers;
* the mean absolute change inside the brain on healthy CT test slices and the share of their brain flagged;
* per case, Dice on the teaching set's CT strokes, as the app reads them, and the flagged share of its healthy CT case.

The CT threshold (hypodensity z-score in the brain, :func:`~diffuse_core.evaluation.baselines.hypodensity_maps`),
its threshold chosen on the same validation slices, is measured beside them: the simplest honest baseline.

With ``--as-app`` each candidate instead runs as the app runs it: the one assembly of a run at its own card's K,
steps, mask rule and score (``--card NAME=JSON`` sets card entries for the measurement, e.g. another mask rule).

``python -m diffuse_core.evaluation.ct_check --out ct_check.json NAME=DDPM_DIR:SALIENCY_DIR ...``; with
``--write-card NAME`` the measured threshold, the settings and the comparison go into that candidate's cards (the
DDPM's ``anomaly_threshold``, ``recommended_settings`` and ``ct_check``; the ACAT pair's ``quality`` on CT).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from diffuse_core.core.redraw import mask_rule_of, score_of
from diffuse_core.evaluation.baselines import ZSCORE_GRID, hypodensity_maps, oracle_masks
from diffuse_core.evaluation.protocol import (EvalSet, choose_threshold, compute_saliency_maps, identity_change,
                                              masks_at, run_assembly_on_set, run_on_set, scores, synthbrain_set)


# anomaly thresholds tried on validation: finer and lower than the MRI grid (protocol.THRESHOLD_GRID starts at 0.02),
# because an early infarct is only a few HU darker than its tissue (about 0.1-0.2 of the [-1, 1] brain window)
CT_THRESHOLD_GRID = tuple(np.round(np.arange(0.005, 0.605, 0.005), 3))


def teaching_ct_set(set_name: str = "default", size: int = 128) -> EvalSet:
    """The CT cases of a teaching set, read the way the app's library reads them (stored already windowed in
    [-1, 1]: :func:`diffuse_core.cases.case_from_normalized`)."""
    from diffuse_core.cases import case_from_normalized
    from diffuse_core.data.teaching import list_cases

    cases = [c for c in list_cases(set_name) if c.modality == "ct"]
    if not cases:
        raise ValueError(f"teaching set {set_name!r} has no CT case")
    prepped = [case_from_normalized(c.image, c.mask, size=size, source=c.id, modality="ct", spacing=c.spacing)
               for c in cases]
    lesions = [p.ground_truth if p.ground_truth is not None else np.zeros_like(p.brain_mask) for p in prepped]
    return EvalSet(np.stack([p.image for p in prepped]).astype(np.float32), np.stack(lesions).astype(np.uint8),
                   np.stack([p.brain_mask for p in prepped]).astype(np.uint8), [c.lesion_type for c in cases],
                   [c.lesion_size for c in cases], [c.id for c in cases], f"teaching set {set_name} (CT)")


def _flagged(anomalies: np.ndarray, brains: np.ndarray, threshold: float) -> np.ndarray:
    return np.array([float((a > threshold)[b.astype(bool)].mean()) for a, b in zip(anomalies, brains)])


def _lesion_in_mask(masks: np.ndarray, lesions: np.ndarray) -> float:
    shares = [float((m & l).sum() / l.sum()) for m, l in zip(masks.astype(bool), lesions.astype(bool)) if l.any()]
    return float(np.mean(shares)) if shares else float("nan")


def compare(candidates: dict[str, tuple[Path, Path]], n_val: int = 16, n_test: int = 24, n_healthy: int = 8,
            settings: dict | None = None, batch_size: int = 16, device: str = "cpu", teaching: str = "default",
            seed: int = 0, keep: dict | None = None, as_app: bool = False,
            card_settings: dict[str, dict] | None = None) -> dict:
    """Measure every candidate (name -> (ddpm folder, saliency folder)) and the CT threshold on the same slices.
    ``keep`` (a dict) receives the teaching set (``"data"``) and, per method, its (counterfactuals, anomaly maps,
    threshold) there, for :func:`diffuse_core.evaluation.picture.real_data_grid`.

    ``as_app``: each candidate runs as the app runs it, through the one assembly of a run at its own card's settings
    (K, steps, mask rule, score; :func:`~diffuse_core.evaluation.protocol.run_assembly_on_set`) instead of the
    paper's percentile mask at ``settings``; ``card_settings`` (name -> card entries, e.g. ``mask_rule``, ``score``)
    replace those entries of a candidate's card for the measurement (nothing is written)."""
    from diffuse_core.run.settings import default_settings
    from diffuse_core.models.denoiser import load_denoiser
    from diffuse_core.saliency.dispatch import load_saliency_models

    val = synthbrain_set("val", n_val, modalities=("ct",), healthy_fraction=0.0)
    test = synthbrain_set("test", n_test, modalities=("ct",), healthy_fraction=0.0)
    healthy = synthbrain_set("test", n_healthy, base_seed=1, modalities=("ct",), healthy_fraction=1.0)
    teach = teaching_ct_set(teaching)
    sick = np.array([bool(l.any()) for l in teach.lesions])

    z = {name: hypodensity_maps(d.images, d.brains) for name, d in
         (("val", val), ("test", test), ("healthy", healthy), ("teaching", teach))}
    z_thr = choose_threshold(z["val"], val.lesions, grid=ZSCORE_GRID)
    out = {"slices": {"val": len(val), "test": len(test), "healthy": len(healthy), "teaching": teach.ids},
           "ct_threshold": {"threshold_from_val": z_thr,
                            "test_dice": float(scores(z["test"], test.lesions, z_thr)[0].mean()),
                            "healthy_flagged_share": float(_flagged(z["healthy"], healthy.brains, z_thr).mean()),
                            "teaching_dice": {i: float(d) for i, d, s in zip(
                                teach.ids, scores(z["teaching"], teach.lesions, z_thr)[0], sick) if s},
                            "teaching_healthy_flagged": {i: float(f) for i, f, s in zip(
                                teach.ids, _flagged(z["teaching"], teach.brains, z_thr), sick) if not s}},
           "candidates": {}}
    if keep is not None:
        keep["data"], keep["ct-threshold"] = teach, (teach.images, z["teaching"], z_thr)
    if settings is None:                     # the app's defaults: the MRI card's, the same for every candidate
        from types import SimpleNamespace

        from diffuse_core.models.checkpoint import read_config
        from diffuse_core.models.registry import default_model_dir

        settings = default_settings(SimpleNamespace(card=read_config(default_model_dir("ddpm")).get("card")))
    for name, (ddpm_dir, sal_dir) in candidates.items():
        t0 = time.perf_counter()
        den = load_denoiser(ddpm_dir, device=device)
        den.card = {**(den.card or {}), **((card_settings or {}).get(name) or {})}
        s = default_settings(den) if as_app else dict(settings)
        k, steps, pct = int(s["k"]), int(s["steps"]), float(s["percentile"])
        sal = load_saliency_models(Path(sal_dir) / "autoencoder", Path(sal_dir) / "classifier", device)
        sets = {"val": val.subset(np.arange(len(val))), "test": test.subset(np.arange(len(test))),
                "healthy": healthy.subset(np.arange(len(healthy))), "teaching": teach.subset(np.arange(len(teach)))}
        res, cfs, masks = {}, {}, {}
        for key, d in sets.items():            # subsets: each candidate's own saliency maps
            if as_app:
                ran = run_assembly_on_set(den, sal, d, seed=seed, batch_size=batch_size)
                cfs[key], res[key] = ran["counterfactuals"], ran["anomalies"]
                masks[key] = {"acat": ran["masks"], "oracle": oracle_masks(d.lesions, d.brains)}
                continue
            compute_saliency_maps(d, sal, sources=("acat",))
            masks[key] = masks_at(d, pct)
            cfs[key], res[key], _, _ = run_on_set("dif-fuse", den, d, masks[key], k, steps, seed, batch_size)
        thr = choose_threshold(res["val"], val.lesions, grid=CT_THRESHOLD_GRID)
        oracle = {"acat": masks["test"]["oracle"]}
        _, ano_o, _, _ = run_on_set("dif-fuse", den, sets["test"], oracle, k, steps, seed, batch_size)
        if keep is not None:
            keep[name] = (cfs["teaching"], res["teaching"], thr)
        t_dice = scores(res["teaching"], teach.lesions, thr)[0]
        t_flag = _flagged(res["teaching"], teach.brains, thr)
        out["candidates"][name] = {
            "ddpm": str(ddpm_dir), "saliency": str(sal_dir), "settings": {
                "k": k, "steps": steps, "percentile": pct, "seed": seed,
                **({"as_app": True, "mask_rule": mask_rule_of(den.card), "score": score_of(den.card)} if as_app else {})},
            "threshold_from_val": thr,
            "val_dice": float(scores(res["val"], val.lesions, thr)[0].mean()),
            "test_dice": float(scores(res["test"], test.lesions, thr)[0].mean()),
            "test_dice_oracle_mask": float(scores(ano_o, test.lesions, thr)[0].mean()),
            "acat_mask_share_of_lesion_test": _lesion_in_mask(masks["test"]["acat"], test.lesions),
            "healthy_change": identity_change(healthy.images, cfs["healthy"], healthy.brains),
            "healthy_flagged_share": float(_flagged(res["healthy"], healthy.brains, thr).mean()),
            "teaching_dice": {i: float(d) for i, d, s_ in zip(teach.ids, t_dice, sick) if s_},
            "teaching_healthy_flagged": {i: float(f) for i, f, s_ in zip(teach.ids, t_flag, sick) if not s_},
            "teaching_acat_share_of_lesion": {i: _lesion_in_mask(m[None], l[None]) for i, m, l, s_ in zip(
                teach.ids, masks["teaching"]["acat"], teach.lesions, sick) if s_},
            "seconds": round(time.perf_counter() - t0, 1)}
        print(name, json.dumps(out["candidates"][name]), file=sys.stderr, flush=True)
    return out


def write_cards(result: dict, name: str, command: str, hardware, n_saliency: int = 100) -> None:
    """Write candidate ``name``'s measured threshold, settings and the whole comparison into its DDPM card, and the
    ACAT pair's localisation and classifier accuracy on SynthBrain CT test slices into their cards."""
    from diffuse_core.evaluation.cards import measure_saliency_models, stamp, update_card
    from diffuse_core.saliency.dispatch import load_saliency_models

    c = result["candidates"][name]
    s = c["settings"]
    own = {"mask_rule": s["mask_rule"], "score": s["score"]} if s.get("as_app") else {}
    rule = ("the card's own K and steps, its mask rule and score as measured (run as the app runs it)" if own else
            "the MRI model's recommended settings (the app's defaults)")
    update_card(c["ddpm"], anomaly_threshold=c["threshold_from_val"], **own,
                recommended_settings={"k": s["k"], "percentile": s["percentile"], "steps": s["steps"],
                                      "rule": f"{rule}; the threshold chosen on SynthBrain CT validation strokes"},
                ct_check={"measured_on": stamp(), "hardware": hardware, "command": command, "shipped": name,
                          **result}, by="ct-check", command=command, hardware=hardware)
    sal = Path(c["saliency"])
    models = load_saliency_models(sal / "autoencoder", sal / "classifier", "cpu")
    q = measure_saliency_models(models, n=n_saliency, methods=("acat",), modalities=("ct",))
    stamps = {"by": "ct-check", "command": command, "device": "cpu"}
    update_card(sal / "classifier", quality={"measured_on": stamp(), **q["classifier"], "data": q["data"]}, **stamps)
    update_card(sal / "autoencoder", quality={"measured_on": stamp(), "data": q["data"], "saliency": {"acat": q["acat"]}},
                **stamps)


def merge(result: dict, earlier: dict) -> dict:
    """``result`` with the candidates of an ``earlier`` run on the same slices (the protocol is deterministic: the
    same slice lists and the same CT-threshold figures are checked) added before its own."""
    if earlier["slices"] != result["slices"] or earlier["ct_threshold"] != result["ct_threshold"]:
        raise ValueError("the earlier run measured other slices or settings: its candidates cannot join this table")
    return {**result, "candidates": {**earlier["candidates"], **result["candidates"]}}


def markdown(check: dict, shipped: str | None = None) -> list[str]:
    """The comparison as a results.md section (``check``: :func:`compare`'s result, or a CT card's ``ct_check``);
    ``shipped`` names the candidate that ships."""
    thr, cands = check["ct_threshold"], check["candidates"]
    teach = sorted(thr["teaching_dice"])
    n = check["slices"]
    when = f" ({check['measured_on']}, `{check.get('command', '')}`)" if check.get("measured_on") else ""
    lines = ["## CT: the CT model against the CT threshold and the MRI models", "",
             f"SynthBrain CT strokes: thresholds chosen on {n['val']} validation slices, Dice on {n['test']} test "
             f"slices; identity change and flagged share on {n['healthy']} healthy test slices; per-case Dice on the "
             f"teaching set's CT cases{when}. Oracle mask: the true lesion dilated 6 px (the healthy model alone).",
             "",
             "| method | test Dice | oracle-mask Dice | ACAT mask's share of lesion | healthy change | healthy flagged | "
             + " | ".join(teach) + " | healthy teaching case flagged |",
             "|---" * (7 + len(teach)) + "|"]
    healthy_case = ", ".join(f"{100 * v:.1f} %" for v in thr["teaching_healthy_flagged"].values()) or "-"
    lines.append(f"| CT threshold (z > {thr['threshold_from_val']:g}) | {thr['test_dice']:.3f} | - | - | - | "
                 f"{100 * thr['healthy_flagged_share']:.1f} % | "
                 + " | ".join(f"{thr['teaching_dice'][t]:.3f}" for t in teach) + f" | {healthy_case} |")
    for name, c in cands.items():
        label = f"Dif-fuse, {name}" + (" (shipped)" if name == shipped else "")
        hc = ", ".join(f"{100 * v:.1f} %" for v in c["teaching_healthy_flagged"].values()) or "-"
        lines.append(f"| {label} | {c['test_dice']:.3f} | {c['test_dice_oracle_mask']:.3f} | "
                     f"{c['acat_mask_share_of_lesion_test']:.2f} | {c['healthy_change']:.3f} | "
                     f"{100 * c['healthy_flagged_share']:.1f} % | "
                     + " | ".join(f"{c['teaching_dice'][t]:.3f}" for t in teach) + f" | {hc} |")
    return lines + [""]


def _candidate(spec: str) -> tuple[str, tuple[Path, Path]]:
    if "=" not in spec:
        raise ValueError(f"a candidate is NAME=DDPM_DIR[:SALIENCY_DIR], got {spec!r}")
    name, dirs = spec.split("=", 1)
    ddpm, _, sal = dirs.partition(":")
    ddpm_p = Path(ddpm)
    return name, (ddpm_p, Path(sal) if sal else ddpm_p.parent)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("candidates", nargs="+", metavar="NAME=DDPM_DIR[:SALIENCY_DIR]",
                   help="SALIENCY_DIR holds autoencoder/ and classifier/ (default: DDPM_DIR's parent)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument("--n-test", type=int, default=24)
    p.add_argument("--n-healthy", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--picture", type=Path, default=None, metavar="PNG",
                   help="draw the teaching set's CT strokes x (CT threshold, each candidate) into PNG")
    p.add_argument("--also", action="append", default=[], type=Path, metavar="JSON",
                   help="add the candidates of an earlier run's --out file (the same slices; checked)")
    p.add_argument("--write-card", default=None, metavar="NAME",
                   help="write the result into candidate NAME's model cards (DDPM, autoencoder, classifier)")
    p.add_argument("--hardware", default=None, help="what ran it, for the card (default: the CPU's name)")
    p.add_argument("--as-app", action="store_true",
                   help="run each candidate as the app does: the one assembly at its own card's settings (K, steps, "
                        "mask rule, score) instead of the paper's percentile mask at the MRI card's K and steps")
    p.add_argument("--card", action="append", default=[], metavar="NAME=JSON",
                   help="with --as-app: card entries to measure candidate NAME with, e.g. "
                        "'b={\"mask_rule\": {\"kind\": \"weighted\", \"level\": 0.2, \"max_share\": 0.5}, "
                        "\"score\": \"signed\"}' (nothing is written; repeatable)")
    a = p.parse_args(argv)
    overrides = {}
    for spec in a.card:
        name, _, text = spec.partition("=")
        if not text or name not in dict(_candidate(c) for c in a.candidates):
            p.error(f"--card {spec!r}: NAME=JSON for one of the candidates")
        overrides[name] = json.loads(text)
    if overrides and not a.as_app:
        p.error("--card needs --as-app (the paper's run has no mask rule or score to set)")
    from diffuse_core.models.device import pick_device

    keep = {}
    res = compare(dict(_candidate(c) for c in a.candidates), n_val=a.n_val, n_test=a.n_test,
                  n_healthy=a.n_healthy, batch_size=a.batch_size, device=pick_device(a.device), keep=keep,
                  as_app=a.as_app, card_settings=overrides)
    if a.picture:
        from diffuse_core.evaluation.picture import real_data_grid

        data = keep.pop("data")
        real_data_grid(data, keep, a.picture, labels={"ct-threshold": "CT threshold"}, rows=len(data))
    for earlier in a.also:
        res = merge(res, json.loads(earlier.read_text()))
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    if a.write_card:
        import torch

        from diffuse_core.train.trainer import hardware

        cmd = "python -m diffuse_core.evaluation.ct_check " + " ".join(argv if argv is not None else sys.argv[1:])
        write_cards(res, a.write_card, cmd, a.hardware or hardware(torch.device(pick_device(a.device))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
