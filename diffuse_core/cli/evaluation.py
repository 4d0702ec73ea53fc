"""``diffuse-studio evaluate``: Dif-fuse against its ablations and peers on SynthBrain (and BraTS), the report, and
what the model cards take from it (``--write-cards``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffuse_core.cli.common import UserError, positive_int


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="Dif-fuse against its ablations and peers: tables, sweeps, figures",
                       description="Run every method on SynthBrain validation/test slices (and optionally real BraTS "
                                   "cases) and write results.md, results_per_slice.csv and Plotly figures into --docs.")
    p.add_argument("--quick", action="store_true",
                   help="the stated subset on the shipped weights, within 30 minutes on 2 CPU cores: the app's "
                        "Dif-fuse, its paper-mask and oracle-mask runs, ACAT alone and the FLAIR threshold on 48 test "
                        "slices (a quarter healthy), 16 validation slices, seed 0, no sweeps; written to "
                        "docs/results/evaluation_quick.json and its region of results.md (sizes, seeds and methods "
                        "given explicitly win)")
    p.add_argument("--n-val", type=positive_int, default=None, help="validation slices (threshold choice; a quarter "
                                                                      "healthy; default 32)")
    p.add_argument("--n-test", type=positive_int, default=None, help="test slices (a quarter healthy; default 80)")
    p.add_argument("--seeds", default=None,
                   help="sampling seeds (comma-separated, default 0,1,2) for Dif-fuse and its oracle-mask run; the "
                        "other methods use the first (all of them with --every-seed)")
    p.add_argument("--every-seed", action="store_true", help="every method runs with every seed (the full run)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes sharing the methods and sweeps (each with --threads threads, default the cores "
                        "shared out); their results are kept and the run resumes from them, so the same command "
                        "continues after an interruption")
    p.add_argument("--part", default=None, metavar="I/N", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=None, help="noise level (default: the model card's, as in the app)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps over [0, K] (default: the model card's, as in the app)")
    p.add_argument("--percentile", type=float, default=None,
                   help="saliency percentile of the mask (default: the model card's, as in the app)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the K x percentile and steps sweeps")
    p.add_argument("--brats", default=None, metavar="DIR", help="folder of BraTS-layout cases for a real-data check")
    p.add_argument("--brats-per-case", type=positive_int, default=None,
                   help="tumour slices per BraTS case (default 4; --quick: 1)")
    p.add_argument("--brats-healthy-per-case", type=positive_int, default=None,
                   help="tumour-free slices per BraTS case (default 2; --quick: 1)")
    p.add_argument("--docs", default="docs", metavar="DIR", help="where results.md and the figures go")
    p.add_argument("--model", default=None, metavar="DIR")
    p.add_argument("--saliency-models", default=None, metavar="DIR")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="slices per sampler batch (larger is faster on a GPU; the numbers do not depend on it)")
    p.add_argument("--write-cards", action="store_true",
                   help="also measure the classifier and saliency on held-out slices, draw DDPM samples from noise, "
                        "and write these and Dif-fuse's numbers (with its validation threshold) into the model cards")
    p.add_argument("--n-cards", type=positive_int, default=200,
                   help="held-out slices for the classifier/ACAT card and for judging the DDPM's samples")
    p.add_argument("--n-samples", type=positive_int, default=16, help="DDPM samples drawn from pure noise per sampler")
    p.add_argument("--sweeps-only", action="store_true",
                   help="only the validation sweeps (K x percentile, steps) and the app defaults they recommend; with "
                        "--write-cards, store just recommended_settings in the DDPM card")
    p.add_argument("--saliency-only", action="store_true",
                   help="only measure the classifier and the saliency methods on held-out slices; with --write-cards "
                        "store them in the classifier and autoencoder cards (after retraining either)")
    p.add_argument("--samples-only", action="store_true",
                   help="only draw the DDPM's samples from pure noise (DDPM and DDIM grids in --docs, judged against "
                        "held-out slices); with --write-cards, store just that block in the DDPM card")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from diffuse_core.models.device import pick_device
    from diffuse_core.evaluation.methods import ALL_METHODS, METHODS
    from diffuse_core.evaluation.report import EvalSettings, command_line, run_evaluation
    from diffuse_core.run.models import load_default_models
    from diffuse_core.run.settings import default_settings

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    args.device = str(device)                  # the device the card writes record as their hardware
    denoiser, sal = load_default_models(args.model, args.saliency_models, device, need_saliency=not args.samples_only)
    if args.sweeps_only and args.samples_only:
        raise UserError("--sweeps-only and --samples-only are separate runs: choose one")
    from diffuse_core.evaluation.report import QUICK_METHODS, QUICK_SIZES

    quick = QUICK_SIZES if args.quick else {"n_val": 32, "n_test": 80, "seeds": (0, 1, 2)}
    args.n_val = quick["n_val"] if args.n_val is None else args.n_val
    args.n_test = quick["n_test"] if args.n_test is None else args.n_test
    args.seeds = ",".join(map(str, quick["seeds"])) if args.seeds is None else args.seeds
    default_methods = QUICK_METHODS if args.quick else METHODS
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else default_methods
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(ALL_METHODS)}")
    defaults = default_settings(denoiser)      # the app's settings unless given: the numbers are for what users run
    args.k = defaults["k"] if args.k is None else args.k
    args.steps = defaults["steps"] if args.steps is None else args.steps
    args.percentile = defaults["percentile"] if args.percentile is None else args.percentile
    s = EvalSettings(n_val=args.n_val, n_test=args.n_test, seeds=tuple(int(x) for x in args.seeds.split(",")),
                     k=args.k, steps=args.steps, percentile=args.percentile, methods=methods, brats_dir=args.brats,
                     precision=args.precision, batch_size=args.batch_size, command=command_line())
    if args.every_seed:
        s.all_seed_methods = methods
    # the sweep's grid holds the run's own (the app's) setting: every cell is compared with it
    s.sweep_k = tuple(sorted({*s.sweep_k, int(s.k)}))
    s.sweep_percentiles = tuple(sorted({*s.sweep_percentiles, float(s.percentile)}))
    if args.quick:                   # the stated subset (QUICK_SIZES, QUICK_METHODS): no sweeps, its own results file
        s.name, s.sweep_k, s.sweep_steps, s.brats_per_case, s.brats_healthy_per_case = "evaluation_quick", (), (), 1, 1
        s.png_figures = False
    if args.brats_per_case:
        s.brats_per_case = args.brats_per_case
    if args.brats_healthy_per_case:
        s.brats_healthy_per_case = args.brats_healthy_per_case
    if args.no_sweeps:
        s.sweep_k, s.sweep_steps = (), ()
    if args.write_cards and args.quick:
        raise UserError("--write-cards needs a full run: drop --quick (quick numbers must not go into model cards)")
    if args.part:
        s.part = _share(args.part)
        run_evaluation(denoiser, sal, s, args.docs, progress=lambda t: print(f"[{args.part}] {t}", file=sys.stderr))
        return 0
    if args.workers > 1 and not (args.sweeps_only or args.samples_only):
        import os
        import time

        from diffuse_core.evaluation.report import cpu_seconds

        s.extra.update(t_start=time.perf_counter(), cpu_start=cpu_seconds(),
                       load_at_start=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
        import torch

        # what is left (the real-data pass, the pictures, the cards) runs here alone: on every worker's threads
        torch.set_num_threads(_run_shares(args))
    if args.sweeps_only:
        return _sweeps_only(args, denoiser, sal, s)
    if args.saliency_only:
        if not args.write_cards:
            raise UserError("--saliency-only measures for the cards: add --write-cards")
        _write_saliency_cards(args, sal, always=True)
        return 0
    if args.samples_only:
        from diffuse_core.models.registry import default_model_dir

        _write_sample_quality(args, denoiser, Path(args.model) if args.model else default_model_dir("ddpm"))
        return 0
    result = run_evaluation(denoiser, sal, s, args.docs, progress=lambda t: print(t, file=sys.stderr))
    best = max(result["methods"], key=lambda m: result["methods"][m]["dice"])
    print(f"wrote {args.docs}/results/{s.name}.json and its region of {args.docs}/results.md "
          f"({result['wall_seconds'] / 60:.1f} min); best Dice {result['methods'][best]['dice']:.3f} ({best})")
    if args.write_cards:
        _write_cards(args, denoiser, sal, result)
    return 0


def _share(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--part {text}: expected I/N, e.g. 0/2") from None
    if not 0 <= i < n:
        raise UserError(f"--part {text}: I must lie in 0..N-1")
    return i, n


def _run_shares(args) -> int:
    """``--workers N``: N copies of this command, each computing one share of the methods and sweeps (``--part
    i/N``) and keeping it beside the run; the run itself then finds them all kept and writes the results. Returns the
    threads the workers used together."""
    import os
    import subprocess

    n = int(args.workers)
    threads = args.threads or max(1, (os.cpu_count() or 1) // n)
    base = [sys.executable, "-c", "import sys; from diffuse_core.cli import main; sys.exit(main())", *args.argv,
            "--workers", "1", "--threads", str(threads)]
    print(f"evaluate: {n} workers, {threads} thread(s) each", file=sys.stderr)
    procs = [subprocess.Popen([*base, "--part", f"{i}/{n}"]) for i in range(n)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    failed = [f"{i}/{n} (exit {c})" for i, c in enumerate(codes) if c != 0]
    if failed:
        raise UserError(f"evaluation share(s) {', '.join(failed)} failed; what finished is kept: run the same command "
                        "again to resume")
    return min(n * threads, os.cpu_count() or 1)


def _write_cards(args, denoiser, sal, result: dict) -> None:
    """Measured quality into the three model cards (see :mod:`diffuse_core.evaluation.cards`)."""
    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.evaluation.cards import merged_recommendation, recommended_settings, stamp, update_card

    ddpm_dir = Path(args.model) if args.model else default_model_dir("ddpm")
    clf_dir, ae_dir = _write_saliency_cards(args, sal)
    samples = _write_sample_quality(args, denoiser, ddpm_dir)
    ours = result["methods"].get("dif-fuse")
    quality = {"measured_on": stamp(), "samples_from_noise": samples, "evaluation": f"{args.docs}/results.md"}
    if ours:
        s = result["settings"]
        quality["dif_fuse"] = {"k": s["k"], "percentile": s["percentile"], "steps": s["steps"],
                               "dice": ours["dice"], "dice_se": ours["dice_se"], "iou": ours["iou"],
                               "iou_se": ours["iou_se"], "threshold_from_validation": ours["threshold"],
                               "identity_mean_abs_change_in_brain": ours["identity_change"],
                               "n_test_diseased": result["n_test_diseased"],
                               "n_test_healthy": result["n_test_healthy"], "seeds": list(s["seeds"])}
    updates = {"quality": quality}
    # None clears an older recommendation that these sweeps could not confirm (the app then uses the paper's settings)
    updates["recommended_settings"] = merged_recommendation(_card_block(ddpm_dir, "recommended_settings"),
                                                            recommended_settings(result))
    if ours:
        updates["anomaly_threshold"] = ours["threshold"]
    update_card(ddpm_dir, updates, by="evaluate", device=args.device)
    print(f"wrote quality into {clf_dir}, {ae_dir} and {ddpm_dir} model cards; samples in {samples['png']}")


def _sweeps_only(args, denoiser, sal, s) -> int:
    """Validation sweeps and the settings they recommend (:func:`~diffuse_core.evaluation.cards.recommended_settings`)."""
    import json

    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.evaluation.cards import merged_recommendation, recommended_settings, update_card
    from diffuse_core.evaluation.report import run_validation_sweeps, validation_set

    val = validation_set(denoiser, sal, s, progress=lambda t: print(t, file=sys.stderr))
    sweeps = run_validation_sweeps(denoiser, val, s, progress=lambda t: print(t, file=sys.stderr))
    for k, row in zip(s.sweep_k, sweeps.get("k_percentile", [])):
        print(f"K={k}: " + "  ".join(f"{p:g}th {d:.3f}" for p, d in zip(s.sweep_percentiles, row)))
    if "steps" in sweeps:
        print("steps: " + "  ".join(f"{n} {d:.3f}" for n, d in zip(sweeps["steps"]["steps"], sweeps["steps"]["dice"])))
    rec = recommended_settings({"settings": {k: v for k, v in s.__dict__.items() if k != "extra"}, "sweeps": sweeps})
    print("recommended: " + (json.dumps(rec) if rec else "none (the sweeps do not hold the evaluation's K and percentile)"))
    if args.write_cards and rec:
        ddpm_dir = Path(args.model) if args.model else default_model_dir("ddpm")
        rec = merged_recommendation(_card_block(ddpm_dir, "recommended_settings"), rec)
        update_card(ddpm_dir, {"recommended_settings": {**rec, "command": s.command,
                                                        "n_validation_diseased": int(val.diseased.sum())}},
                    by="evaluate", device=args.device)
        print(f"wrote recommended_settings into the {ddpm_dir} model card")
    return 0


def _write_saliency_cards(args, sal, always: bool = False) -> tuple[Path, Path]:
    """The classifier's and the saliency methods' quality on held-out SynthBrain slices into their cards (measured
    again only when their weights, the number of slices or the percentile changed, unless ``always``); returns the
    (classifier, autoencoder) folders."""
    from diffuse_core.evaluation.cards import measure_saliency_models, stamp, update_card, weights_digest
    from diffuse_core.models.registry import default_model_dir

    sal_root = Path(args.saliency_models) if args.saliency_models else None
    ae_dir = sal_root / "autoencoder" if sal_root else default_model_dir("autoencoder")
    clf_dir = sal_root / "classifier" if sal_root else default_model_dir("classifier")
    # The classifier/ACAT numbers depend only on those two models: measured again only when their weights, the
    # number of slices or the percentile changed since the cards were written (retraining the DDPM alone is common).
    measured_for = {"weights_sha256": {"classifier": weights_digest(clf_dir), "autoencoder": weights_digest(ae_dir)},
                    "n": args.n_cards, "percentile": args.percentile}
    if not always and all(_card_block(d, "quality").get("measured_for") == measured_for for d in (clf_dir, ae_dir)):
        print("classifier and saliency cards already hold numbers for these weights; kept", file=sys.stderr)
        return clf_dir, ae_dir
    print("measuring the classifier and the saliency methods on held-out slices", file=sys.stderr)
    q = measure_saliency_models(sal, n=args.n_cards, percentile=args.percentile)
    c = q["classifier"]
    print(f"classifier: accuracy {c['accuracy']:.3f}, AUROC {c['auroc']:.3f} on {args.n_cards} held-out slices; ACAT "
          f"share of the lesion in its {args.percentile:g}th-percentile mask {q['acat']['lesion_share']:.3f}")
    update_card(clf_dir, {"quality": {"measured_on": stamp(), "measured_for": measured_for, "data": q["data"],
                                      **q["classifier"]}}, by="evaluate", device=args.device)
    update_card(ae_dir, {"quality": {"measured_on": stamp(), "measured_for": measured_for, "data": q["data"],
                                     "saliency": {m: q[m] for m in ("acat", "gradcam", "gradient")}}},
                by="evaluate", device=args.device)
    print(f"wrote quality into the {clf_dir} and {ae_dir} model cards")
    return clf_dir, ae_dir


def _write_sample_quality(args, denoiser, ddpm_dir: Path) -> dict:
    """Draw and judge samples from pure noise (:func:`~diffuse_core.evaluation.cards.measure_samples`); print a line
    per sampler; with --samples-only --write-cards also store them in the DDPM card (the rest of it stays)."""
    from diffuse_core.evaluation.cards import measure_samples, stamp, update_card

    samples = measure_samples(denoiser, args.docs, n=args.n_samples, n_reference=args.n_cards)
    for sampler in ("ddpm", "ddim"):
        q = samples[sampler]
        print(f"{q['sampler']}: {q['clean']}/{q['n']} clean, {q['grainy']} grainy, {q['grey_background']} grey "
              f"background -> {q['png']}")
    if args.samples_only and args.write_cards:
        quality = dict(_card_block(ddpm_dir, "quality"))
        quality["samples_from_noise"] = {"measured_on": stamp(), **samples}
        update_card(ddpm_dir, {"quality": quality}, by="evaluate", device=args.device)
        print(f"wrote the samples from noise into the {ddpm_dir} model card")
    return samples


def _card_block(model_dir: Path, key: str) -> dict:
    """One block of a model folder's card (``quality``, ``recommended_settings``), {} where it has none."""
    from diffuse_core.models.checkpoint import read_config

    try:
        return read_config(model_dir).get("card", {}).get(key, {}) or {}
    except (OSError, ValueError):
        return {}
