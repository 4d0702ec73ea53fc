"""The ``diffuse-studio`` command line: ``run``, ``synth``, ``train``, ``evaluate``, ``app``, ``models``, ``adapt``,
``real-data`` (those two in :mod:`diffuse_core.cli.real_scans`), ``batch`` and ``run --slices`` (volume runs, in
:mod:`diffuse_core.cli.volumes`).

Subcommand names, options and output file names are a contract that scripts and checks rely on. Heavy imports
happen inside each command so that ``--help`` is instant. Errors a user can fix are printed as one line on stderr
with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from diffuse_core.cli.common import UserError, positive_int as _positive_int  # noqa: E402


# --------------------------------------------------------------------------------------------------------- run
def _add_run(sub) -> None:
    p = sub.add_parser("run", help="healthy counterfactual and anomaly map of one slice",
                       description="Run Dif-fuse on one slice and write counterfactual.png, saliency.png, mask.png, "
                                   "anomaly.png, overlay.png, counterfactual.nii.gz and result.json into --out.")
    p.add_argument("input", metavar="INPUT",
                   help="NIfTI (.nii/.nii.gz), DICOM file or series folder, PNG/JPEG/TIFF, .npy, or a BraTS-layout "
                        "case folder")
    p.add_argument("--slice", type=int, default=None, metavar="Z",
                   help="axial slice index for volumes (for a BraTS case folder: default = largest tumour slice)")
    p.add_argument("--gt", default=None, metavar="MASKFILE", help="ground-truth lesion mask: adds Dice and IoU")
    p.add_argument("--mask-from", default="acat", metavar="acat|gradcam|gradient|MASKFILE",
                   help="saliency method for the mask, or a file holding a binary mask or a saliency map "
                        "(default: acat)")
    p.add_argument("--k", type=int, default=None,
                   help="noise level K in [1, 1000] (default: the model card's recommended K, as in the app; paper: 500)")
    p.add_argument("--percentile", type=float, default=None,
                   help="redraw the saliency above this percentile of the brain (the paper's mask; paper: 90); "
                        "default: the model card's mask rule, as in the app")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="sampling steps spanning [0, K] (default: the model card's, as in the app; else 50)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw")
    p.add_argument("--variant", choices=["paper", "two-chain"], default="paper",
                   help="paper: one network call per step; two-chain: the authors' code, separate DDIM chain")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto = bf16 where the hardware has it natively")
    p.add_argument("--window", default=None, metavar="brain|stroke|subdural",
                   help="CT window preset (CT inputs only; default brain)")
    p.add_argument("--solver", default=None, choices=("ddim", "dpm-solver++", "ddim-refined"),
                   help="deterministic updates (inversion, and the walk back outside the mask): ddim, the paper's; "
                        "dpm-solver++ (second order, same network calls); ddim-refined (DDIM whose inversion is "
                        "refined by a fixed-point step, one more call per inversion step: the walk back returns "
                        "closer to the input); default: the model card's, as in the app")
    p.add_argument("--intensity", default="auto", choices=("auto", "tissue", "percentile", "model"),
                   help="MRI only: auto (default) = the model's own preparation (its card's input_normalisation); "
                        "tissue = air to -1 and the brain's tissue peak to the card's level (robust to bright "
                        "lesions); percentile = the brain's 1st-99th percentiles stretched to [-1, 1]; model = its "
                        "10th-75th percentiles matched to the training data")
    p.add_argument("--threshold", type=float, default=None,
                   help="anomaly-map binarisation threshold (default: the model card's, chosen on validation data)")
    p.add_argument("--model", default=None, metavar="DIR", help="denoiser folder (default: the shipped assets/ddpm)")
    p.add_argument("--saliency-models", default=None, metavar="DIR",
                   help="folder holding autoencoder/ and classifier/ (default: the shipped assets)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from tqdm.auto import tqdm

    from diffuse_core.run.files import run_file

    bar, phase = None, None

    def progress(step):
        # the phase is tracked here, not read back from the bar: a disabled tqdm (TQDM_DISABLE=1, no terminal)
        # keeps no attributes
        nonlocal bar, phase
        if bar is None or phase != step["phase"]:
            if bar is not None:
                bar.close()
            bar, phase = tqdm(total=step["total"], desc=step["phase"], leave=False), step["phase"]
        bar.update(1)

    summary = run_file(args.input, out_dir=args.out, slice_index=args.slice, gt=args.gt, mask_from=args.mask_from,
                       k=args.k, percentile=args.percentile, steps=args.steps, seed=args.seed, variant=args.variant,
                       device=args.device, precision=args.precision, window=args.window, threshold=args.threshold,
                       intensity=args.intensity, solver=args.solver,
                       model_dir=args.model, saliency_dir=args.saliency_models, callback=progress)
    if bar is not None:
        bar.close()
    dice = "" if summary.get("dice") is None else f"  Dice {summary['dice']:.3f}  IoU {summary['iou']:.3f}"
    print(f"wrote {args.out}: {summary['network_calls']} network calls in {summary['seconds']:.1f} s on "
          f"{summary['device']}{dice}")
    return 0


# ------------------------------------------------------------------------------------------------------- synth
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a SynthBrain split (NIfTI images and masks, PNG previews, index.csv)")
    p.add_argument("--preset", default="flair", help="flair, t1, t2, t1c, ct, or mri4 (flair,t1,t1c,t2 stacked)")
    p.add_argument("--n", type=_positive_int, default=100, help="number of slices")
    p.add_argument("--seed", type=int, default=0, help="base seed (same seed, same bytes)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (128 default, 256 supported)")
    p.add_argument("--healthy-fraction", type=float, default=0.5)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    from diffuse_core.data.synthbrain import write_split

    index = write_split(args.out, preset=args.preset, n=args.n, seed=args.seed, split=args.split, size=args.size,
                        healthy_fraction=args.healthy_fraction)
    print(f"wrote {args.n} slices and {index}")
    return 0


# ------------------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the healthy DDPM, the ACAT autoencoder or the classifier",
                       description="Train one model with a progress bar and periodic checkpoints; re-running the same "
                                   "command resumes from --out/checkpoint.pt. Multi-GPU: accelerate launch -m "
                                   "diffuse_core train ddpm ...")
    p.add_argument("model", choices=["ddpm", "autoencoder", "classifier"])
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default: assets/<model>)")
    p.add_argument("--steps", type=_positive_int, default=None, help="total optimiser steps")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--modalities", default="flair", help="comma-separated SynthBrain modalities (channels)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="train on a folder of real slices or BraTS-layout cases instead of SynthBrain")
    p.add_argument("--pool", type=_positive_int, default=None,
                   help="SynthBrain slices generated once into memory (default 6000 for ddpm, 4000 for the "
                        "autoencoder and the classifier)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=250)
    p.add_argument("--channels", default=None, help="DDPM UNet widths per level, e.g. 32,64,128,128")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="without a checkpoint in --out, start from these saved weights of the same model and "
                        "architecture (e.g. assets/ddpm) and continue their step count; the optimiser restarts")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="DDPM: stop after M minutes of training in this invocation and save "
                        "the weights; a cosine learning rate follows the box")
    p.add_argument("--normalise", choices=["absolute", "percentile", "tissue"], default="absolute",
                   help="DDPM on SynthBrain: train on the slices as rendered (absolute scale), stretched as the "
                        "app once prepared a real MRI (brain 1st-99th percentile to [-1, 1]) or on the tissue scale (air -1, "
                        "tissue peak -0.2; the same preparation run and the app give a real MRI); saved in the card")
    p.add_argument("--prediction", choices=["epsilon", "v_prediction"], default=None,
                   help="DDPM: what the UNet predicts, the noise (the paper's) or v (accurate at high noise); saved "
                        "with the weights, so every sampler reads it (default: the --init-from model's, else epsilon)")
    p.add_argument("--min-snr", type=float, default=None, metavar="GAMMA",
                   help="DDPM: min-SNR loss weighting (Hang et al. 2023; they use 5); default: the paper's plain loss")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="DDPM: constant, or a warm-up then a cosine decay to 5 %% of --lr")
    p.add_argument("--realism", default="default", metavar="EFFECTS",
                   help="SynthBrain's realism: default (what the shipped models saw), scanner (the scanner effects "
                        "that narrowed the measured domain gap, and lesion shapes as real scans show them), or "
                        "effects joined by commas (docs/research/2026-12-06-synthbrain-realism.md); saved in the card")
    p.add_argument("--augment", action="store_true",
                   help="DDPM: scanner augmentation of the healthy slices (contrast, bias field, noise, blur; "
                        "how the shipped FLAIR model's v-prediction stage was trained)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from diffuse_core.train.commands import TrainCommand, train_model

    try:
        channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
    except ValueError:
        raise UserError(f"--channels expects comma-separated integers such as 32,64,128,128, "
                        f"got {args.channels!r}") from None
    _check_steps_left(args)
    cmd = TrainCommand(model=args.model, out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, size=args.size,
                       modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
                       data=args.data, pool=args.pool, checkpoint_every=args.checkpoint_every, channels=channels,
                       resume=not args.no_resume, init_from=args.init_from, threads=args.threads,
                       normalise=args.normalise, prediction=args.prediction, min_snr_gamma=args.min_snr,
                       lr_schedule=args.lr_schedule, augment=args.augment, max_minutes=args.max_minutes,
                       realism=args.realism)
    out = train_model(cmd)
    print(f"model saved in {out}")
    return 0


def _check_steps_left(args) -> None:
    """--steps counts all the optimiser steps; a run started from --init-from continues the count its weights record,
    so asking for no more than that would train nothing and save the old weights again: say so instead."""
    from diffuse_core.models.checkpoint import read_config, steps_done
    from diffuse_core.train.trainer import CHECKPOINT_NAME

    if args.init_from is None or args.steps is None:
        return
    if not args.no_resume and (Path(args.out) / CHECKPOINT_NAME).is_file():
        return                                  # a checkpoint in --out is resumed; --init-from is not used
    try:
        done = steps_done(read_config(args.init_from).get("card") or {})[0]
    except (OSError, ValueError):
        return                                  # the trainer reports an unreadable --init-from with its own reason
    if args.steps <= done:
        raise UserError(f"--steps {args.steps} is the total step count and {args.init_from} records {done} steps "
                        f"already: nothing to train (for {args.steps} more, ask --steps {done + args.steps})")


# ---------------------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="Dif-fuse against its ablations and peers: tables, sweeps, figures",
                       description="Run every method on SynthBrain validation/test slices (and optionally real BraTS "
                                   "cases) and write results.md, results_per_slice.csv and Plotly figures into --docs.")
    p.add_argument("--quick", action="store_true",
                   help="the stated subset on the shipped weights, about 15 minutes on one CPU core: the app's "
                        "Dif-fuse, its paper-mask and oracle-mask runs, ACAT alone and the FLAIR threshold on 48 test "
                        "slices (a quarter healthy), 16 validation slices, seed 0, no sweeps; written to "
                        "docs/results/evaluation_quick.json and its region of results.md (sizes, seeds and methods "
                        "given explicitly win)")
    p.add_argument("--n-val", type=_positive_int, default=None, help="validation slices (threshold choice; a quarter "
                                                                      "healthy; default 32)")
    p.add_argument("--n-test", type=_positive_int, default=None, help="test slices (a quarter healthy; default 80)")
    p.add_argument("--seeds", default=None,
                   help="sampling seeds (comma-separated, default 0,1,2) for Dif-fuse and its oracle-mask run; the "
                        "other methods use the first (all of them with --every-seed)")
    p.add_argument("--every-seed", action="store_true", help="every method runs with every seed (the full run)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--k", type=int, default=None, help="noise level (default: the model card's, as in the app)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="sampling steps over [0, K] (default: the model card's, as in the app)")
    p.add_argument("--percentile", type=float, default=None,
                   help="saliency percentile of the mask (default: the model card's, as in the app)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the K x percentile and steps sweeps")
    p.add_argument("--brats", default=None, metavar="DIR", help="folder of BraTS-layout cases for a real-data check")
    p.add_argument("--docs", default="docs", metavar="DIR", help="where results.md and the figures go")
    p.add_argument("--model", default=None, metavar="DIR")
    p.add_argument("--saliency-models", default=None, metavar="DIR")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--batch-size", type=_positive_int, default=8,
                   help="slices per sampler batch (larger is faster on a GPU; the numbers do not depend on it)")
    p.add_argument("--write-cards", action="store_true",
                   help="also measure the classifier and saliency on held-out slices, draw DDPM samples from noise, "
                        "and write these and Dif-fuse's numbers (with its validation threshold) into the model cards")
    p.add_argument("--n-cards", type=_positive_int, default=200,
                   help="held-out slices for the classifier/ACAT card and for judging the DDPM's samples")
    p.add_argument("--n-samples", type=_positive_int, default=16, help="DDPM samples drawn from pure noise per sampler")
    p.add_argument("--sweeps-only", action="store_true",
                   help="only the validation sweeps (K x percentile, steps) and the app defaults they recommend; with "
                        "--write-cards, store just recommended_settings in the DDPM card")
    p.add_argument("--samples-only", action="store_true",
                   help="only draw the DDPM's samples from pure noise (DDPM and DDIM grids in --docs, judged against "
                        "held-out slices); with --write-cards, store just that block in the DDPM card")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
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
    if args.quick:                   # the stated subset (QUICK_SIZES, QUICK_METHODS): no sweeps, its own results file
        s.name, s.sweep_k, s.sweep_steps, s.brats_per_case, s.brats_healthy_per_case = "evaluation_quick", (), (), 1, 1
        s.png_figures = False
    if args.no_sweeps:
        s.sweep_k, s.sweep_steps = (), ()
    if args.write_cards and args.quick:
        raise UserError("--write-cards needs a full run: drop --quick (quick numbers must not go into model cards)")
    if args.sweeps_only:
        return _sweeps_only(args, denoiser, sal, s)
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


def _write_cards(args, denoiser, sal, result: dict) -> None:
    """Measured quality into the three model cards (see :mod:`diffuse_core.evaluation.cards`)."""
    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.evaluation.cards import measure_saliency_models, recommended_settings, stamp, update_card, weights_digest

    ddpm_dir = Path(args.model) if args.model else default_model_dir("ddpm")
    sal_root = Path(args.saliency_models) if args.saliency_models else None
    ae_dir = sal_root / "autoencoder" if sal_root else default_model_dir("autoencoder")
    clf_dir = sal_root / "classifier" if sal_root else default_model_dir("classifier")
    # The classifier/ACAT numbers depend only on those two models: measured again only when their weights, the
    # number of slices or the percentile changed since the cards were written (retraining the DDPM alone is common).
    measured_for = {"weights_sha256": {"classifier": weights_digest(clf_dir), "autoencoder": weights_digest(ae_dir)},
                    "n": args.n_cards, "percentile": args.percentile}
    if all(_card_quality(d).get("measured_for") == measured_for for d in (clf_dir, ae_dir)):
        print("classifier and saliency cards already hold numbers for these weights; kept", file=sys.stderr)
    else:
        print("measuring the classifier and the saliency methods on held-out slices", file=sys.stderr)
        q = measure_saliency_models(sal, n=args.n_cards, percentile=args.percentile)
        update_card(clf_dir, {"quality": {"measured_on": stamp(), "measured_for": measured_for, "data": q["data"],
                                          **q["classifier"]}}, by="evaluate", device=args.device)
        update_card(ae_dir, {"quality": {"measured_on": stamp(), "measured_for": measured_for, "data": q["data"],
                                         "saliency": {m: q[m] for m in ("acat", "gradcam", "gradient")}}},
                    by="evaluate", device=args.device)
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
    updates["recommended_settings"] = recommended_settings(result)
    if ours:
        updates["anomaly_threshold"] = ours["threshold"]
    update_card(ddpm_dir, updates, by="evaluate", device=args.device)
    print(f"wrote quality into {clf_dir}, {ae_dir} and {ddpm_dir} model cards; samples in {samples['png']}")


def _sweeps_only(args, denoiser, sal, s) -> int:
    """Validation sweeps and the settings they recommend (:func:`~diffuse_core.evaluation.cards.recommended_settings`)."""
    import json

    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.evaluation.cards import recommended_settings, update_card
    from diffuse_core.evaluation.report import run_validation_sweeps, validation_set

    if s.k not in s.sweep_k or float(s.percentile) not in s.sweep_percentiles:
        raise UserError(f"--k {s.k} and --percentile {s.percentile:g} must be on the sweep's grid (K "
                        f"{', '.join(map(str, s.sweep_k))}; percentiles {', '.join(f'{p:g}' for p in s.sweep_percentiles)})"
                        ": the sweep compares every cell with that setting")
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
        update_card(ddpm_dir, {"recommended_settings": {**rec, "command": s.command,
                                                        "n_validation_diseased": int(val.diseased.sum())}},
                    by="evaluate", device=args.device)
        print(f"wrote recommended_settings into the {ddpm_dir} model card")
    return 0


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
        quality = dict(_card_quality(ddpm_dir))
        quality["samples_from_noise"] = {"measured_on": stamp(), **samples}
        update_card(ddpm_dir, {"quality": quality}, by="evaluate", device=args.device)
        print(f"wrote the samples from noise into the {ddpm_dir} model card")
    return samples


def _card_quality(model_dir: Path) -> dict:
    from diffuse_core.models.checkpoint import read_config

    try:
        return read_config(model_dir).get("card", {}).get("quality", {}) or {}
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------------------- app
def _add_app(sub) -> None:
    p = sub.add_parser("app", help="start the Gradio teaching app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (needs network)")
    p.set_defaults(func=_cmd_app)


def _cmd_app(args) -> int:
    try:
        from diffuse_core.ui.launch import launch
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "gradio":
            raise
        raise UserError("the app needs gradio, which is not installed: pip install -e . (or pip install gradio)") \
            from None
    launch(host=args.host, port=args.port, share=args.share)
    return 0


# ------------------------------------------------------------------------------------------------------ models
def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the installed models: kind, modality, training steps, folder")
    p.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args) -> int:
    import json

    from diffuse_core.core.anomaly import anomaly_kernel_of
    from diffuse_core.models.checkpoint import read_config, steps_done
    from diffuse_core.models.registry import assets_root, installed_models

    found = installed_models()
    rows = []
    for m in found:
        card = read_config(m.folder).get("card") or {}
        rows.append({"kind": m.kind, "modality": m.modality, "for_cases": "ct" if m.folder.parent.name == "ct" else "mri",
                     "steps": steps_done(card)[0], "anomaly_threshold": card.get("anomaly_threshold"),
                     "anomaly_kernel": anomaly_kernel_of(card) if m.kind == "ddpm" else None,
                     "folder": str(m.folder)})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print(f"no model installed under {assets_root()}: train one with `diffuse-studio train`")
        return 0
    print(f"{'kind':<12}{'cases':<7}{'trained on':<12}{'steps':>8}  {'threshold':<10}{'kernel':<8}folder")
    for r in rows:
        thr = "-" if r["anomaly_threshold"] is None else f"{r['anomaly_threshold']:g}"
        kernel = "-" if r["anomaly_kernel"] is None else f"{r['anomaly_kernel']}x{r['anomaly_kernel']}"
        print(f"{r['kind']:<12}{r['for_cases']:<7}{r['modality'] or '?':<12}{r['steps']:>8}  {thr:<10}{kernel:<8}"
              f"{r['folder']}")
    if not any(r["for_cases"] == "ct" for r in rows):
        print("no CT model installed: CT cases run through the MRI models (out of domain; results say so)")
    return 0


# -------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from diffuse_core import __version__

    parser = argparse.ArgumentParser(
        prog="diffuse-studio",
        description="Dif-fuse Studio: healthy counterfactuals and anomaly maps of brain slices (Dif-fuse method).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS + _more_subcommands():
        add(sub)
    return parser


def _more_subcommands() -> list:
    from diffuse_core.cli.real_scans import add_adapt, add_real_data
    from diffuse_core.cli.volumes import add_batch

    return [add_adapt, add_real_data, add_batch]


_SUBCOMMANDS = [_add_run, _add_synth, _add_train, _add_evaluate, _add_app, _add_models]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError) as err:
        print(f"diffuse-studio {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffuse-studio {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
