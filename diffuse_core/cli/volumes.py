"""Whole scans on the command line (issue 34): ``diffuse-studio run INPUT --slices all|A-B`` (a volume run) and
``diffuse-studio batch DIR`` (an archive, on this machine or a Dask cluster).

``run`` without ``--slices`` is unchanged (one slice, its outputs and its stdout line); when that slice came from a
volume it adds a hint line on stderr. The engine (:mod:`diffuse_core.volumes`) yields progress; tqdm bars are drawn
here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffuse_core.cli.common import UserError, positive_int

VOLUME_OPTIONS = ("--slices", "--batch-size")


# ------------------------------------------------------------------------------------------- run --slices (a volume)
def add_volume_options(run_parser) -> None:
    """``--slices`` and ``--batch-size`` on the ``run`` subcommand; a volume run when ``--slices`` is given."""
    run_parser.add_argument("--slices", default=None, metavar="all|A-B",
                            help="a volume run: every brain slice of a NIfTI volume, DICOM series (folder or .zip) or "
                                 "BraTS case (all), or the slices A to B; writes counterfactual, anomaly and masks as "
                                 "volumes on the input's grid (and a DICOM SEG for DICOM input), resumable; without "
                                 "it one slice is run, as before")
    run_parser.add_argument("--batch-size", type=positive_int, default=None,
                            help="volume runs: slices per network batch (default: 8 on a CPU, from the free memory "
                                 "on a GPU); results depend on it and on --seed, never on a resume")
    one_slice = run_parser.get_default("func")
    run_parser.set_defaults(func=lambda args: _run(args, one_slice))


def _run(args, one_slice) -> int:
    if args.slices is None:
        if args.batch_size is not None:
            raise UserError("--batch-size applies to volume runs: add --slices all (or --slices A-B)")
        try:
            code = one_slice(args)
        except ValueError as err:
            if "pass a slice index" in str(err):
                raise UserError(f"{err}, or --slices all for the whole volume") from None
            raise
        _hint(args)
        return code
    return cmd_run_volume(args)


def _hint(args) -> None:
    """One stderr line when a volume was run as one slice (stdout stays as it was)."""
    import json

    try:
        result = json.loads((Path(args.out) / "result.json").read_text())
    except (OSError, ValueError):
        return
    n = int(result.get("num_slices") or 1)
    if n > 1:
        print(f"hint: {args.input} holds {n} slices and this ran slice {result.get('slice')} only; "
              f"--slices all runs every brain slice (or --slices A-B a range)", file=sys.stderr)


def _engine_options(args) -> dict:
    if args.gt is not None:
        raise UserError("--gt applies to one-slice runs; a BraTS case folder's labels are used by a volume run")
    return {"model_dir": args.model, "saliency_dir": args.saliency_models, "device": args.device, "k": args.k,
            "steps": args.steps, "percentile": args.percentile, "mask_from": args.mask_from, "solver": args.solver,
            "threshold": args.threshold, "intensity": args.intensity, "precision": args.precision,
            "variant": args.variant}


def cmd_run_volume(args) -> int:
    from tqdm.auto import tqdm

    from diffuse_core.volumes.batch import engine_for
    from diffuse_core.volumes.run import VolumeRunCancelled, iter_volume_run

    options = _engine_options(args)
    bar = None
    it = iter_volume_run(args.input, args.out, lambda modality: engine_for(options, modality), slices=args.slices,
                         seed=args.seed, batch_size=args.batch_size, window=args.window)
    try:
        while True:
            try:
                event = next(it)
            except StopIteration as stop:
                summary = stop.value
                break
            if event.phase == "slices":
                if bar is None:
                    bar = tqdm(total=event.total, desc="slices", unit="slice")
                bar.update(event.done - bar.n)
    except VolumeRunCancelled as err:
        raise UserError(str(err)) from None
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"diffuse-studio run: interrupted; the finished batches are kept in {args.out}/.partial: run the "
              f"same command again to resume", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    top = ", ".join(map(str, summary["top_slices"][:5])) or "none"
    print(f"wrote {args.out}: {summary['slices_processed']} of {summary['num_slices']} slices "
          f"({summary['slices_skipped_no_brain']} without brain skipped) in {summary['seconds']['total']:.1f} s on "
          f"{summary['settings']['device']}, batches of {summary['batch_size']}; anomaly volume "
          f"{summary['anomaly_volume_ml']:.2f} mL; top slices {top}")
    return 0


# ------------------------------------------------------------------------------------------------------------ batch
def add_batch(sub) -> None:
    """The ``batch`` subcommand, and ``--slices`` / ``--batch-size`` on ``run`` (registered before it)."""
    add_volume_options(sub.choices["run"])
    p = sub.add_parser("batch", help="volume runs over a folder of studies: manifest, resume, summary, gallery",
                       description="Run every study under DIR (NIfTI volumes, DICOM series folders or zips, BraTS case "
                                   "folders) through a volume run into --out/studies/<study>, with a manifest "
                                   "(--out/manifest.json) that makes a killed batch resume where it stopped, a summary "
                                   "table (summary.csv, summary.md: slices, anomaly volume in mL, top slices) and a "
                                   "gallery page (gallery.html). One machine by default; --scheduler ADDRESS sends the "
                                   "studies to an existing Dask cluster (the output folder must be shared storage).")
    p.add_argument("folder", metavar="DIR", help="the folder of studies")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reused to resume)")
    p.add_argument("--slices", default="all", metavar="all|A-B", help="slices of each study (default all)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a Dask distributed scheduler (tcp://host:8786); 'local:N' starts N local worker processes")
    p.add_argument("--batch-size", type=positive_int, default=None, help="slices per network batch (default 8 on a "
                                                                          "CPU; from free memory on a GPU)")
    p.add_argument("--mask-from", default="acat", choices=("acat", "gradcam", "gradient"))
    p.add_argument("--k", type=int, default=None, help="noise level K (default: the model card's)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the model card's)")
    p.add_argument("--percentile", type=float, default=None, help="the paper's mask rule at this percentile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None, help="anomaly threshold (default: the model card's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--model", default=None, metavar="DIR", help="denoiser folder (default: the installed one)")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    from tqdm.auto import tqdm

    from diffuse_core.volumes.batch import iter_batch

    options = {"model_dir": args.model, "device": args.device, "k": args.k, "steps": args.steps,
               "percentile": args.percentile, "mask_from": args.mask_from, "threshold": args.threshold}
    client = cluster = None
    if args.scheduler:
        from distributed import Client, LocalCluster

        if args.scheduler.startswith("local:"):
            cluster = LocalCluster(n_workers=positive_int(args.scheduler[6:]), threads_per_worker=1,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(args.scheduler, timeout=30)
    bar = None
    try:
        it = iter_batch(args.folder, args.out, options, slices=args.slices, seed=args.seed,
                        batch_size=args.batch_size, client=client)
        while True:
            try:
                event = next(it)
            except StopIteration as stop:
                rows = stop.value
                break
            if bar is None:
                bar = tqdm(total=event.total, initial=event.done, desc="studies", unit="study")
            else:
                bar.update(event.done - bar.n)
                if event.status == "failed":
                    bar.write(f"{event.study}: failed")
    except KeyboardInterrupt:
        print(f"diffuse-studio batch: interrupted; run the same command again to resume ({args.out}/manifest.json)",
              file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    done = sum(r["status"] == "done" for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"wrote {args.out}: {done} of {len(rows)} studies done, {len(failed)} failed; summary.md, summary.csv, "
          f"gallery.html")
    for r in failed:
        print(f"  {r['study']}: {r['error']}", file=sys.stderr)
    return 0 if not failed else 1
