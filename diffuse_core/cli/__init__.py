"""The ``diffuse-studio`` command line: ``run``, ``synth``, ``train``, ``evaluate`` (in :mod:`diffuse_core.cli.evaluation`),
``app``, ``models``, ``adapt``, ``real-data`` (those two in :mod:`diffuse_core.cli.real_scans`), ``batch`` and
``run --slices`` (volume runs, in :mod:`diffuse_core.cli.volumes`).

Subcommand names, options and output file names are a contract that scripts and checks rely on. Heavy imports
happen inside each command so that ``--help`` is instant. Errors a user can fix are printed as one line on stderr
with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from diffuse_core.cli.common import UserError, positive_int as _positive_int  # noqa: E402
from diffuse_core.cli.evaluation import add_evaluate  # noqa: E402


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
    p.add_argument("--grid", default=None, metavar="PNG",
                   help="also draw a picture: the first 6 seeds of the split drawn with a lesion (outlined), each "
                        "beside its healthy counterpart (docs/synthbrain_grid.png is made this way)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    from diffuse_core.data.synthbrain import write_split

    index = write_split(args.out, preset=args.preset, n=args.n, seed=args.seed, split=args.split, size=args.size,
                        healthy_fraction=args.healthy_fraction)
    print(f"wrote {args.n} slices and {index}")
    if args.grid:
        from diffuse_core.data.synthbrain import pairs_grid

        print(f"wrote {pairs_grid(args.split, args.grid, preset=args.preset, seed=args.seed, size=args.size)}")
    return 0


# ------------------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the healthy DDPM, the ACAT autoencoder or the classifier, or the slice-level "
                                     "estimator",
                       description="Train one model with a progress bar and periodic checkpoints; re-running the same "
                                   "command resumes from --out/checkpoint.pt. Multi-GPU: accelerate launch -m "
                                   "diffuse_core train ddpm ...")
    p.add_argument("model", choices=["ddpm", "autoencoder", "classifier", "level"])
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
                   help="SynthBrain slices: train on them as rendered (absolute scale), stretched as the "
                        "app once prepared a real MRI (brain 1st-99th percentile to [-1, 1]) or on the tissue scale (air -1, "
                        "tissue peak -0.2; the same preparation run and the app give a real MRI, and so the ACAT "
                        "models' input with a tissue-scale DDPM); saved in the card")
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
    p.add_argument("--paired", action="store_true",
                   help="classifier: batches of SynthBrain diseased slices each beside its own healthy counterpart "
                        "(same level, anatomy and scanner), so that only the lesion tells them apart")
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
                       realism=args.realism, paired=args.paired)
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
    from diffuse_core.cli.real_scans import add_adapt, add_calibrate_verdict, add_real_data
    from diffuse_core.cli.volumes import add_batch

    return [add_adapt, add_calibrate_verdict, add_real_data, add_batch]


_SUBCOMMANDS = [_add_run, _add_synth, _add_train, add_evaluate, _add_app, _add_models]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)      # as given (evaluate --workers starts copies)
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
