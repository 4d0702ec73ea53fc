"""The ``diffuse-studio`` command line: ``run``, ``synth``, ``train``, ``evaluate``, ``app``.

Subcommand names, options and output file names are a contract that scripts and checks rely on. Heavy imports
happen inside each command so that ``--help`` is instant. Errors a user can fix are printed as one line on stderr
with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserError(Exception):
    """An error caused by the command's input, shown as one line."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


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
    p.add_argument("--k", type=int, default=500, help="noise level K in [1, 1000] (paper: 500)")
    p.add_argument("--percentile", type=float, default=90.0, help="saliency percentile for the mask (paper: 90)")
    p.add_argument("--steps", type=_positive_int, default=50, help="sampling steps spanning [0, K] (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw")
    p.add_argument("--variant", choices=["paper", "two-chain"], default="paper",
                   help="paper: one network call per step; two-chain: the authors' code, separate DDIM chain")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto = bf16 where the hardware has it natively")
    p.add_argument("--window", default=None, metavar="brain|stroke|subdural",
                   help="CT window preset (CT inputs only; default brain)")
    p.add_argument("--threshold", type=float, default=None,
                   help="anomaly-map binarisation threshold (default: the model card's, chosen on validation data)")
    p.add_argument("--model", default=None, metavar="DIR", help="denoiser folder (default: the shipped assets/ddpm)")
    p.add_argument("--saliency-models", default=None, metavar="DIR",
                   help="folder holding autoencoder/ and classifier/ (default: the shipped assets)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from tqdm.auto import tqdm

    from .workflow import run_file

    bar = None

    def progress(step):
        nonlocal bar
        if bar is None or bar.desc != step.phase:
            if bar is not None:
                bar.close()
            bar = tqdm(total=step.total, desc=step.phase, leave=False)
        bar.update(1)

    summary = run_file(args.input, out_dir=args.out, slice_index=args.slice, gt=args.gt, mask_from=args.mask_from,
                       k=args.k, percentile=args.percentile, steps=args.steps, seed=args.seed, variant=args.variant,
                       device=args.device, precision=args.precision, window=args.window, threshold=args.threshold,
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
    from .synthbrain import write_split

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
    p.add_argument("--pool", type=_positive_int, default=6000,
                   help="SynthBrain slices generated once into memory (default 6000)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=250)
    p.add_argument("--channels", default=None, help="DDPM UNet widths per level, e.g. 32,64,128,128")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from .training import train_model

    out = train_model(args)
    print(f"model saved in {out}")
    return 0


# -------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="diffuse-studio",
        description="Dif-fuse Studio: healthy counterfactuals and anomaly maps of brain slices (Dif-fuse method).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_run, _add_synth, _add_train]


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
