"""``diffuse-studio adapt``, ``calibrate-verdict`` and ``real-data``: the healthy model on a user's real scans."""

from __future__ import annotations

import sys
from pathlib import Path

from diffuse_core.cli.common import UserError, positive_int
from diffuse_core.evaluation.adapt import DEFAULT_LR as DEFAULT_ADAPT_LR
from diffuse_core.evaluation.adapt import DEFAULT_MINUTES as DEFAULT_ADAPT_MINUTES
from diffuse_core.train.saliency import ADAPT_CLF


# ------------------------------------------------------------------------------------------- calibrate-verdict
def add_calibrate_verdict(sub) -> None:
    p = sub.add_parser("calibrate-verdict", help="choose the normal/abnormal verdict's threshold on your own scans",
                       description="Choose the slice verdict's threshold on the normal slices of a folder of YOUR scans "
                                   "(image files with an index.csv 'healthy' column, plain image files taken as normal, "
                                   "or BraTS-layout cases), holding whole cases out to measure it (false-abnormal rate "
                                   "on their normal slices; sensitivity on their labelled lesion slices, else on "
                                   "SynthBrain validation lesions), and write a new model folder whose card holds it. "
                                   "Use it with run --model OUT, or put OUT under the app's data folder's models/.")
    p.add_argument("--data", required=True, metavar="DIR", help="the folder of your slices (normal ones at least)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder for the calibrated model")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="the MRI model to calibrate (default: the installed one; an adapted model works too)")
    p.add_argument("--holdout", type=float, default=0.34, help="share of cases (or files) held out (default 0.34)")
    p.add_argument("--false-abnormal", type=float, default=0.05,
                   help="the share of normal slices the threshold may call abnormal (default 0.05)")
    p.add_argument("--per-group", type=positive_int, default=8,
                   help="at most this many normal (and lesion) slices per case or file, evenly spaced (default 8)")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="also write the record (JSON) here, e.g. docs/results/verdict_on_scans.json for the docs")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_calibrate_verdict)


def cmd_calibrate_verdict(args) -> int:
    from diffuse_core.core.verdict import MIN_SENSITIVITY
    from diffuse_core.evaluation.scanner_verdict import calibrate_on_scans
    from diffuse_core.models.device import pick_device

    said = []

    def say(stage: str, fraction: float) -> None:          # each stage once (it is told each scored batch)
        if not said or said[-1] != stage:
            said.append(stage)
            print(f"calibrate-verdict: {stage}", file=sys.stderr)

    rec = calibrate_on_scans(args.data, args.out, args.model, holdout=args.holdout,
                             false_abnormal=args.false_abnormal, per_group=args.per_group,
                             device=pick_device(args.device), on_progress=say)
    if args.record:
        write_record(rec, args.record)
    before = rec["base_false_abnormal_rate_held_out"]
    was = "" if before is None else f" (the model's own threshold {rec['base_threshold']:.3f}: {100 * before:.0f} %)"
    print(f"verdict threshold {rec['threshold']:.3f} chosen on {rec['chosen_on']['normal_slices']} normal slices; "
          f"held-out cases: {100 * rec['false_abnormal_rate_held_out']:.0f} % of "
          f"{rec['held_out']['normal_slices']} normal slices called abnormal{was}, "
          f"{100 * rec['sensitivity']:.0f} % of {rec['sensitivity_measured_on']['n']} lesion slices called abnormal "
          f"({rec['sensitivity_measured_on']['source']}); written {args.out}")
    if not rec["verdict_used"]:
        print(f"note: under the {100 * MIN_SENSITIVITY:.0f} % sensitivity a verdict needs, so the app withholds it "
              f"for this model", file=sys.stderr)
    return 0


def write_record(rec: dict, path) -> None:
    """A command's record (JSON) where ``--record`` says, with the command line as typed (the docs quote it)."""
    import json

    from diffuse_core.evaluation.report import command_line

    rec["command"] = command_line() or rec["command"]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rec, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------------- adapt
def add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="adapt the healthy model to your scanner's normal slices",
                       description="Adapt the installed MRI model (or --model) to a folder of NORMAL slices (image "
                                   "files, a teaching/curated set, or BraTS-layout cases: their tumour-free slices): "
                                   "its ACAT classifier learns that they are normal (and not once a SynthBrain lesion "
                                   "is pasted in); --minutes N also fine-tunes the DDPM. Whole cases are held out, "
                                   "and the new model folder's card states the false flags (and lesion Dice) on them "
                                   "before and after. Use it with run --model OUT or DIFFUSE_MODEL_DIR=OUT "
                                   "diffuse-studio app.")
    p.add_argument("--data", required=True, metavar="DIR", help="the folder of normal slices")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder for the adapted model")
    p.add_argument("--model", default=None, metavar="DIR", help="the model to start from (default: the installed one)")
    p.add_argument("--minutes", type=float, default=DEFAULT_ADAPT_MINUTES,
                   help="also fine-tune the DDPM for this many minutes (default 0: the classifier alone; measured on "
                        "real scans, a DDPM fine-tune made the model keep tumours); the measurements come on top")
    p.add_argument("--holdout", type=float, default=0.2, help="share of cases (or files) held out (default 0.2)")
    p.add_argument("--holdout-cases", default=None, metavar="A,B",
                   help="hold out the cases (or files) whose names contain these, instead (e.g. pat0002,pat0003)")
    p.add_argument("--measure", type=positive_int, default=24, help="held-out slices measured (default 24)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--lr", type=float, default=None, metavar="RATE",
                   help=f"peak learning rate (cosine over the budget; default {DEFAULT_ADAPT_LR:g})")
    p.add_argument("--classifier-steps", type=int, default=None, metavar="N",
                   help=f"steps adapting the ACAT classifier first (default {ADAPT_CLF['steps']}; 0 keeps the "
                        f"installed one)")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="also write the record (JSON) here, e.g. docs/results/adapt_on_scans.json for the docs")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args) -> int:
    from diffuse_core.models.device import pick_device
    from diffuse_core.evaluation.adapt import AdaptCancelled, adapt

    from tqdm.auto import tqdm

    bars = []                         # made at the first report, after the arguments were checked

    def progress(stage: str, fraction: float) -> bool:
        if not bars:
            bars.append(tqdm(total=100, desc="adapt", unit="%", dynamic_ncols=True))
        bar = bars[0]
        bar.set_postfix_str(stage)
        bar.update(max(0, int(100 * fraction) - bar.n))
        return False

    try:
        rec = adapt(args.data, args.out, args.model, minutes=args.minutes, holdout=args.holdout,
                    n_measure=args.measure, batch_size=args.batch_size, device=pick_device(args.device),
                    on_progress=progress, **({} if args.lr is None else {"lr": args.lr}),
                    classifier=None if args.classifier_steps is None else {"steps": args.classifier_steps},
                    holdout_cases=[c.strip() for c in args.holdout_cases.split(",") if c.strip()]
                    if args.holdout_cases else None)
    except AdaptCancelled as err:
        raise UserError(str(err)) from None
    finally:
        for bar in bars:
            bar.close()
    if args.record:
        write_record(rec, args.record)
    b, a = rec["false_flags_before"]["mean"], rec["false_flags_after"]["mean"]
    what = (f"classifier {rec['classifier']['steps']} steps" if rec.get("classifier") else "") + (
        f"{', ' if rec.get('classifier') else ''}DDPM {rec['steps']} steps" if rec["steps"] else "")
    print(f"adapted model saved in {args.out}: {what or 'nothing trained'} on {rec['trained_on']} slices in "
          f"{rec['seconds'] / 60:.1f} min; normal brain flagged on {rec['measured_on']} held-out slices "
          f"{100 * b:.1f} % -> {100 * a:.1f} %" + calls_line(rec) + lesion_dice_line(rec))
    return 0


def calls_line(rec: dict) -> str:
    """"; called abnormal B of N -> A of N" on the held-out normal slices (the app's verdict), or nothing."""
    b, a = rec.get("normal_called_abnormal_before"), rec.get("normal_called_abnormal_after")
    if not b or not a:
        return ""
    return f", called abnormal {b['abnormal']} of {b['called']} -> {a['abnormal']} of {a['called']}"


def lesion_dice_line(rec: dict) -> str:
    """"; lesion Dice on N held-out lesion slices B -> A", or a reminder that nothing checked the lesions."""
    b, a = rec.get("lesion_dice_before"), rec.get("lesion_dice_after")
    if not b or not a:
        return "; no labelled lesion slices were held out: check it still finds lesions before you trust it"
    return f"; lesion Dice on {b['n']} held-out lesion slices {b['mean']:.2f} -> {a['mean']:.2f}"


# ------------------------------------------------------------------------------------------------------ real-data
def add_real_data(sub) -> None:
    p = sub.add_parser("real-data", help="Dif-fuse on real BraTS FLAIR slices beside the FLAIR threshold: the "
                                         "real-data section of docs/results.md",
                       description="Measure Dif-fuse at the app's defaults on real BraTS cases (tumour and tumour-"
                                   "free slices) beside the FLAIR z-score threshold, with case-level intervals; "
                                   "write the results file, the picture grid of every slice and (with --write-docs) "
                                   "the generated sections of README/docs.")
    p.add_argument("--brats", required=True, metavar="DIR", help="a folder of BraTS-layout cases")
    p.add_argument("--out", default="docs/results/real_data.json", help="results file (JSON)")
    p.add_argument("--grid", default="docs/real_data_grid.png", help="picture of every reported slice")
    p.add_argument("--model", default=None, metavar="DIR", help="the DDPM (default: the installed MRI model)")
    p.add_argument("--saliency-models", default=None, metavar="DIR",
                   help="a folder holding autoencoder/ and classifier/, ACAT's models (default: the shipped ones)")
    p.add_argument("--intensity", default="auto", choices=("auto", "tissue", "percentile", "model"))
    p.add_argument("--per-case", type=positive_int, default=4, help="tumour slices per case (default 4)")
    p.add_argument("--healthy-per-case", type=int, default=3, help="tumour-free slices per case (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--write-docs", action="store_true", help="regenerate the README/docs tables from the results")
    p.set_defaults(func=cmd_real_data)


def cmd_real_data(args) -> int:
    from diffuse_core.evaluation.real_data import measure, write
    from diffuse_core.evaluation.real_data_report import slice_grid
    from diffuse_core.evaluation.report import command_line
    from diffuse_core.models.device import pick_device

    if not Path(args.brats).is_dir():
        raise UserError(f"--brats {args.brats}: not a folder")
    res = measure(args.brats, model_dir=args.model, saliency_dir=args.saliency_models, device=pick_device(args.device),
                  per_case=args.per_case,
                  healthy_per_case=args.healthy_per_case, intensity=args.intensity, keep_arrays=True)
    res["command"] = command_line()
    slice_grid(res, args.grid)
    res["grid"] = str(args.grid)
    write(res, args.out)
    d, n = res["dice"], res["normal_flagged"]["dif_fuse"]
    print(f"real data: Dice {d['dif_fuse']['mean']:.3f} vs threshold {d['threshold']['mean']:.3f}; normal brain "
          f"flagged {100 * n['mean']:.1f} % (max {100 * n['max']:.1f} %); lesion contrast kept "
          f"{res['lesion_contrast_kept']['median']:.2f}; written {args.out}, {args.grid}")
    if args.write_docs:
        from diffuse_core.evaluation.docs_tables import main as write_tables

        write_tables([])
    return 0
