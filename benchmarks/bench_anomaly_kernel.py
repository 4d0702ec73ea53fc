"""Which opening/closing kernel for the anomaly map? The paper opens and closes |x0 - x0_hat| with a 5 x 5 kernel on
256 x 256 slices; the shipped models work at 128 x 128, where that kernel spans twice the anatomy. One Dif-fuse run
per slice (paper walk, ACAT mask at the card's percentile, K and steps; the oracle mask beside it), then every kernel
applied to the same differences: each kernel's threshold chosen on the diseased validation slices (the evaluation's
grid), Dice on the SynthBrain test slices by lesion type and size, the share of healthy brain flagged, and for FLAIR
the real BraTS tumour slices (the ``evaluate --brats`` slices) and their tumour-free controls. The FLAIR z-score
threshold (CT: the hypodensity threshold) is measured beside them on the same slices.

    python benchmarks/bench_anomaly_kernel.py --brats ../shared/real_cases/brats2015 --cache cf.npz --out k.json
    python benchmarks/bench_anomaly_kernel.py --n-val 4 --n-test 4 --steps 3 --per-case 1   # quick
    python benchmarks/bench_anomaly_kernel.py --modality ct --out k_ct.json

With ``--cache`` the counterfactuals are kept in (or read back from) that file, so the kernels can be re-scored
without running the model again.

``--methods repaint,dif-fuse-gradient,...`` (FLAIR) also runs other methods of the evaluation on the same SynthBrain
validation and test slices (same seeds) and scores each at every kernel with its own validation threshold, so the
ranking of ``evaluate`` (measured at the paper's 5 x 5) can be redone at the card's kernel without a full run; each
method's counterfactuals join the cache as soon as they are computed.

``--test-seeds 2,3`` draws the test slices' walks again at those seeds (the evaluation's protocol uses three) for
Dif-fuse and each of ``--methods``, and reports at the card's kernel the Dice per seed and over the seeds, with each
method's threshold still the one chosen on validation (seed 0). ``--methods-figure`` draws the first test slices of
each lesion type with every method's counterfactual beside the input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCES = ("acat", "oracle")


def compute(args) -> dict[str, np.ndarray]:
    """Images, lesions, brains, lesion types/sizes and the counterfactuals of each set and mask source."""
    from diffuse_core.run.settings import default_settings
    from diffuse_core.evaluation.protocol import brats_set, compute_saliency_maps, masks_at, run_on_set, synthbrain_set
    from diffuse_core.models.denoiser import load_denoiser
    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.saliency.dispatch import load_saliency_models

    folder = default_model_dir("ddpm", "ct" if args.modality == "ct" else "mri")
    den = load_denoiser(folder)
    s = default_settings(den)
    k, steps, pct = int(s["k"]), int(args.steps or s["steps"]), float(s["percentile"])
    sal = load_saliency_models(folder.parent / "autoencoder", folder.parent / "classifier", "cpu")
    mods = (args.modality,)
    sets = {"val": synthbrain_set("val", args.n_val, modalities=mods, healthy_fraction=0.25),
            "test": synthbrain_set("test", args.n_test, modalities=mods, healthy_fraction=0.25)}
    if args.brats and args.modality == "flair":
        sets["brats"] = brats_set(args.brats, per_case=args.per_case, healthy_per_case=args.healthy_per_case)
    out: dict[str, np.ndarray] = {}
    for name, data in sets.items():
        t0 = time.perf_counter()
        compute_saliency_maps(data, sal, sources=("acat",))
        masks = masks_at(data, pct)
        for src in SOURCES:       # the evaluation's seeds: validation 0, test and BraTS 1
            method = "dif-fuse" if src == "acat" else "dif-fuse-oracle"
            cf, _, _, _ = run_on_set(method, den, data, masks, k, steps, 0 if name == "val" else 1, args.batch_size)
            out[f"{name}_{src}_cf"] = cf
        out[f"{name}_images"], out[f"{name}_lesions"], out[f"{name}_brains"] = data.images, data.lesions, data.brains
        out[f"{name}_types"], out[f"{name}_sizes"] = np.array(data.lesion_types), np.array(data.lesion_sizes)
        print(f"{name}: {len(data)} slices, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    out["settings"] = np.array(json.dumps({"k": k, "steps": steps, "percentile": pct, "model": str(folder)}))
    return out


def _flair_models(args):
    """The shipped FLAIR DDPM, its card's K, steps (or --steps) and mask percentile, and the ACAT pair beside it."""
    from diffuse_core.run.settings import default_settings
    from diffuse_core.models.denoiser import load_denoiser
    from diffuse_core.models.registry import default_model_dir
    from diffuse_core.saliency.dispatch import load_saliency_models

    folder = default_model_dir("ddpm", "mri")
    den = load_denoiser(folder)
    s = default_settings(den)
    sal = load_saliency_models(folder.parent / "autoencoder", folder.parent / "classifier", "cpu")
    return den, int(s["k"]), int(args.steps or s["steps"]), float(s["percentile"]), sal


def compute_methods(args, z: dict, methods: list[str], cache: Path | None) -> None:
    """Counterfactuals of other methods on the SynthBrain validation and test slices, into ``z`` (and the cache)."""
    from diffuse_core.evaluation.methods import MASK_SOURCE, REGISTRY
    from diffuse_core.evaluation.protocol import compute_saliency_maps, masks_at, run_on_set, synthbrain_set

    unknown = [m for m in methods if m not in REGISTRY or REGISTRY[m].walk is None]
    if unknown:
        raise SystemExit(f"--methods: {', '.join(unknown)} not a method with a walk (see evaluation.methods)")
    todo = [m for m in methods if f"test_{m}_cf" not in z]
    if not todo:
        return
    den, k, steps, pct, sal = _flair_models(args)
    sources = tuple(sorted({MASK_SOURCE[m] for m in todo if m in MASK_SOURCE} - {"oracle"}))
    sets = {"val": synthbrain_set("val", args.n_val, healthy_fraction=0.25),
            "test": synthbrain_set("test", args.n_test, healthy_fraction=0.25)}
    for name, data in sets.items():
        if not np.array_equal(data.images, z[f"{name}_images"]):
            raise SystemExit(f"--methods: the {name} slices differ from the cache's (same --n-val/--n-test?)")
        compute_saliency_maps(data, sal, sources=sources)
    masks = {name: masks_at(data, pct) for name, data in sets.items()}
    for m in todo:
        for name, data in sets.items():
            t0 = time.perf_counter()
            cf, _, _, _ = run_on_set(m, den, data, masks[name], k, steps, 0 if name == "val" else 1, args.batch_size)
            z[f"{name}_{m}_cf"] = cf
            print(f"{m} {name}: {len(data)} slices, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if cache is not None:
            np.savez_compressed(cache, **z)


def compute_test_seeds(args, z: dict, methods: list[str], seeds: list[int], cache: Path | None) -> None:
    """The test slices again at other sampling seeds (the evaluation's protocol draws three), for Dif-fuse (ACAT
    mask) and each of ``methods``: the counterfactuals join ``z`` (and the cache) as ``test_<source>_cf_s<seed>``."""
    from diffuse_core.evaluation.methods import MASK_SOURCE
    from diffuse_core.evaluation.protocol import compute_saliency_maps, masks_at, run_on_set, synthbrain_set

    todo = [(m, seed) for seed in seeds for m in ["dif-fuse", *methods] if f"test_{_source(m)}_cf_s{seed}" not in z]
    if not todo:
        return
    den, k, steps, pct, sal = _flair_models(args)
    data = synthbrain_set("test", args.n_test, healthy_fraction=0.25)
    if not np.array_equal(data.images, z["test_images"]):
        raise SystemExit("--test-seeds: the test slices differ from the cache's (same --n-test?)")
    sources = tuple(sorted({MASK_SOURCE[m] for m, _ in todo if m in MASK_SOURCE} - {"oracle"}))
    compute_saliency_maps(data, sal, sources=sources)
    masks = masks_at(data, pct)
    for m, seed in todo:
        t0 = time.perf_counter()
        cf, _, _, _ = run_on_set(m, den, data, masks, k, steps, seed, args.batch_size)
        z[f"test_{_source(m)}_cf_s{seed}"] = cf
        print(f"{m} test seed {seed}: {len(data)} slices, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
        if cache is not None:
            np.savez_compressed(cache, **z)


def _source(method: str) -> str:
    """The cache's name for a method's counterfactuals (Dif-fuse with the ACAT mask is the cache's "acat")."""
    return "acat" if method == "dif-fuse" else method


def score_test_seeds(z, methods: list[str], seeds: list[int], kernel: int) -> dict:
    """At the card's kernel, each method's validation threshold (validation seed 0) applied to the test slices of
    every seed: Dice per seed, the mean over seeds, and the paired difference to Dif-fuse of the per-slice Dice
    averaged over the seeds."""
    from diffuse_core.core.metrics import dice
    from diffuse_core.evaluation.protocol import THRESHOLD_GRID, choose_threshold, paired_difference

    les = {n: z[f"{n}_lesions"] for n in ("val", "test")}
    dis = {n: les[n].reshape(len(les[n]), -1).any(axis=1) for n in les}
    per_slice: dict = {}
    out: dict = {"seeds": [1, *seeds], "kernel": kernel}
    for m in ["dif-fuse", *methods]:
        src = _source(m)
        val = anomaly_maps(z, "val", src, kernel)
        thr = choose_threshold(val[dis["val"]], les["val"][dis["val"]], grid=THRESHOLD_GRID)
        rows = []
        for seed in out["seeds"]:
            a = anomaly_maps(z, "test", src, kernel) if seed == 1 else _maps_of(z, f"test_{src}_cf_s{seed}", kernel)
            rows.append([dice(x > thr, lab) for x, lab in zip(a[dis["test"]], les["test"][dis["test"]])])
        rows = np.array(rows)
        per_slice[m] = rows.mean(axis=0)
        out[m] = {"threshold_from_val": thr, "test_dice_per_seed": [round(float(r.mean()), 4) for r in rows],
                  "test_dice_mean": round(float(rows.mean()), 4),
                  "test_dice_sd_over_seeds": round(float(rows.mean(axis=1).std(ddof=1)), 4) if len(rows) > 1
                  else None}
        if m != "dif-fuse":
            out[m]["paired_vs_dif_fuse"] = paired_difference(per_slice[m], per_slice["dif-fuse"])
    return out


def _maps_of(z, key: str, kernel: int) -> np.ndarray:
    from diffuse_core.core.anomaly import clean_anomaly_map

    diff = np.abs(z["test_images"] - z[key]).mean(axis=1)
    return np.stack([clean_anomaly_map(d, kernel) * (b > 0) for d, b in zip(diff, z["test_brains"])])


def anomaly_maps(z, name: str, src: str, kernel: int) -> np.ndarray:
    """The cleaned anomaly maps of one set and counterfactual source at one kernel, inside the brain."""
    from diffuse_core.core.anomaly import clean_anomaly_map

    diff = np.abs(z[f"{name}_images"] - z[f"{name}_{src}_cf"]).mean(axis=1)
    return np.stack([clean_anomaly_map(d, kernel) * (b > 0) for d, b in zip(diff, z[f"{name}_brains"])])


def score_methods(z, kernels: list[int], methods: list[str], card_kernel: int) -> dict:
    """Each method at each kernel: validation threshold, SynthBrain test Dice (by type and size), healthy flagged;
    and at the card's kernel the paired difference to Dif-fuse (ACAT mask) on the same test slices."""
    from diffuse_core.core.metrics import dice
    from diffuse_core.evaluation.protocol import THRESHOLD_GRID, choose_threshold, paired_difference

    les = {n: z[f"{n}_lesions"] for n in ("val", "test")}
    dis = {n: les[n].reshape(len(les[n]), -1).any(axis=1) for n in les}

    def test_dice(src, kernel):
        a = {n: anomaly_maps(z, n, src, kernel) for n in ("val", "test")}
        thr = choose_threshold(a["val"][dis["val"]], les["val"][dis["val"]], grid=THRESHOLD_GRID)
        d = np.array([dice(x > thr, lab) for x, lab in zip(a["test"], les["test"])])
        flagged = [(x > thr)[b > 0].mean() for x, b in zip(a["test"][~dis["test"]], z["test_brains"][~dis["test"]])]
        val_d = float(np.mean([dice(x > thr, lab) for x, lab in zip(a["val"][dis["val"]], les["val"][dis["val"]])]))
        return thr, val_d, d[dis["test"]], float(np.mean(flagged)) if flagged else None

    out: dict = {}
    _, _, ref, _ = test_dice("acat", card_kernel)
    types, sizes = z["test_types"][dis["test"]], z["test_sizes"][dis["test"]]
    for m in methods:
        out[m] = {}
        for kernel in kernels:
            thr, val_d, d, flagged = test_dice(m, kernel)
            r = {"threshold_from_val": thr, "val_dice": round(val_d, 4), "test_dice": round(float(d.mean()), 4),
                 "test_healthy_flagged": None if flagged is None else round(flagged, 4)}
            for group in sorted(set(types) | set(sizes)):
                r[f"test_dice_{group}"] = round(float(d[(types == group) | (sizes == group)].mean()), 4)
            if kernel == card_kernel:
                r["paired_vs_dif_fuse"] = paired_difference(d, ref)
            out[m][f"kernel_{kernel}"] = r
    return out


def score(z, kernels: list[int], modality: str) -> dict:
    """Each kernel's validation threshold and its Dice / flagged shares on every set."""
    from diffuse_core.core.metrics import dice
    from diffuse_core.evaluation.baselines import ZSCORE_GRID, hypodensity_maps, zscore_maps
    from diffuse_core.evaluation.protocol import choose_threshold, paired_difference

    from diffuse_core.evaluation.ct_check import CT_THRESHOLD_GRID
    from diffuse_core.evaluation.protocol import THRESHOLD_GRID

    grid = CT_THRESHOLD_GRID if modality == "ct" else THRESHOLD_GRID    # the grids evaluate and ct_check choose on
    names = [n for n in ("val", "test", "brats") if f"{n}_images" in z]
    les = {n: z[f"{n}_lesions"] for n in names}
    dis = {n: les[n].reshape(len(les[n]), -1).any(axis=1) for n in names}

    def rates(a, thr, name):
        d = np.array([dice(x > thr, lab) for x, lab in zip(a, les[name])])
        healthy = [(x > thr)[b > 0].mean() for x, b in zip(a[~dis[name]], z[f"{name}_brains"][~dis[name]])]
        return d, (float(np.mean(healthy)) if healthy else None)

    res: dict = {"settings": json.loads(str(z["settings"])), "kernels": {}}
    per_slice: dict = {}
    for src in SOURCES:
        for kernel in kernels:
            a = {n: anomaly_maps(z, n, src, kernel) for n in names}
            thr = choose_threshold(a["val"][dis["val"]], les["val"][dis["val"]], grid=grid)
            r: dict = {"threshold_from_val": thr}
            for n in names:
                d, flagged = rates(a[n], thr, n)
                r[f"{n}_dice"] = round(float(d[dis[n]].mean()), 4)
                r[f"{n}_healthy_flagged"] = None if flagged is None else round(flagged, 4)
                per_slice[(src, kernel, n)] = d[dis[n]]
            for group in sorted(set(z["test_types"][dis["test"]]) | set(z["test_sizes"][dis["test"]])):
                sel = (z["test_types"][dis["test"]] == group) | (z["test_sizes"][dis["test"]] == group)
                r[f"test_dice_{group}"] = round(float(per_slice[(src, kernel, "test")][sel].mean()), 4)
            res["kernels"][f"{src}_{kernel}"] = r
    paper = 5 if 5 in kernels else kernels[0]
    for kernel in kernels:
        if kernel != paper:
            res["kernels"][f"acat_{kernel}"]["paired_vs_paper_kernel"] = {
                n: paired_difference(per_slice[("acat", kernel, n)], per_slice[("acat", paper, n)]) for n in names
                if n != "val"}
    baseline = zscore_maps if modality == "flair" else hypodensity_maps
    bv = baseline(z["val_images"][dis["val"]], z["val_brains"][dis["val"]])
    bthr = choose_threshold(bv, les["val"][dis["val"]], grid=ZSCORE_GRID)
    res["threshold_baseline"] = {"threshold_from_val": bthr}
    for n in names:
        d, flagged = rates(baseline(z[f"{n}_images"], z[f"{n}_brains"]), bthr, n)
        res["threshold_baseline"][f"{n}_dice"] = round(float(d[dis[n]].mean()), 4)
        res["threshold_baseline"][f"{n}_healthy_flagged"] = None if flagged is None else round(flagged, 4)
        if n != "val":
            for kernel in kernels:
                res["kernels"][f"acat_{kernel}"].setdefault("paired_vs_threshold_baseline", {})[n] = \
                    paired_difference(per_slice[("acat", kernel, n)], d[dis[n]])
    for n in names:       # the change a healthy slice undergoes does not depend on the kernel
        cf, img, br = z[f"{n}_acat_cf"], z[f"{n}_images"], z[f"{n}_brains"]
        ch = [np.abs(img[i] - cf[i]).mean(axis=0)[br[i] > 0].mean() for i in np.where(~dis[n])[0]]
        res[f"{n}_healthy_change"] = round(float(np.mean(ch)), 4) if ch else None
    res["slices"] = {n: {"diseased": int(dis[n].sum()), "healthy": int((~dis[n]).sum())} for n in names}
    return res


def figure(z, path: str, kernels=(5, 3), thresholds=None) -> None:
    """The first two diseased SynthBrain test slices of each lesion type (id order, not picked by result): input,
    counterfactual, and the anomaly map binarised at each kernel's validation threshold, expert outline in green."""
    import cv2

    from diffuse_core.core.anomaly import clean_anomaly_map
    from diffuse_core.core.metrics import dice
    from diffuse_core.io.export import LESION_OUTLINE_RGB, outline, to_uint8

    types, les = z["test_types"], z["test_lesions"]
    diseased = les.reshape(len(les), -1).any(axis=1)
    rows = [i for t in sorted(set(types[diseased])) for i in np.where(diseased & (types == t))[0][:2]]
    tile, gap, head = 256, 4, 44

    def grey(a):
        return np.repeat(to_uint8(a)[..., None], 3, 2)

    def title(lines):
        bar = np.full((head, tile, 3), 255, np.uint8)
        for j, line in enumerate(lines):
            cv2.putText(bar, line, (6, 18 + 20 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
        return bar

    titles = [["Input", "(expert outline green)"], ["Counterfactual", "(the same for every kernel)"]]
    titles += [[f"Anomaly, {k}x{k} kernel", f"red: > {thresholds[k]:.2f} (val. threshold)"] for k in kernels]
    out_rows = [np.concatenate(sum([[title(t), np.full((head, gap, 3), 255, np.uint8)] for t in titles], [])[:-1], 1)]
    for i in rows:
        img, cf, lab, brain = z["test_images"][i, 0], z["test_acat_cf"][i, 0], les[i], z["test_brains"][i]
        tiles = [outline(grey(img), lab, LESION_OUTLINE_RGB), outline(grey(cf), lab, LESION_OUTLINE_RGB)]
        diff = np.abs(z["test_images"][i] - z["test_acat_cf"][i]).mean(axis=0)
        for k in kernels:
            ano = clean_anomaly_map(diff, k) * (brain > 0)
            hit = ano > thresholds[k]
            t = grey(img).astype(np.float32)
            t[hit] = 0.45 * t[hit] + 0.55 * np.array([235, 40, 40], np.float32)       # flagged: red
            t = outline(t.astype(np.uint8), lab, LESION_OUTLINE_RGB)
            t = cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST)
            cv2.putText(t, f"{types[i]}  Dice {dice(hit, lab):.2f}", (6, tile - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(t)
        tiles = [t if t.shape[0] == tile else cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST)
                 for t in tiles]
        row = sum([[t, np.full((tile, gap, 3), 255, np.uint8)] for t in tiles], [])[:-1]
        out_rows += [np.full((gap, out_rows[0].shape[1], 3), 255, np.uint8), np.concatenate(row, 1)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(out_rows, 0), cv2.COLOR_RGB2BGR))


def methods_figure(z, path: str, methods: list[str]) -> None:
    """The first two diseased SynthBrain test slices of each lesion type (id order, not picked by result): the input
    with the lesion outlined (green) and each method's counterfactual (test seed 1), as a greyscale-plus-green PNG."""
    import cv2
    from PIL import Image

    types, les = z["test_types"], z["test_lesions"]
    diseased = les.reshape(len(les), -1).any(axis=1)
    rows = [i for t in sorted(set(types[diseased])) for i in np.where(diseased & (types == t))[0][:2]]
    labels = {"acat": "Dif-fuse (ACAT mask)", "repaint": "RePaint (ACAT mask)", "anoddpm": "AnoDDPM-style",
              "dif-fuse-gradient": "Dif-fuse (gradient mask)", "oracle": "Dif-fuse (oracle mask)"}
    cols = [None, "acat", *methods]
    tile, gap, head = 200, 4, 28
    width = len(cols) * tile + (len(cols) - 1) * gap
    grey = [np.full((head, width), 255, np.uint8)]
    green = [np.zeros((head, width), bool)]
    for j, c in enumerate(cols):
        cv2.putText(grey[0], "Input (lesion outlined)" if c is None else labels.get(c, c), (j * (tile + gap) + 4, 19),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, 20, 1, cv2.LINE_AA)
    for i in rows:
        g_row, o_row = [], []
        for c in cols:
            a = z["test_images"][i, 0] if c is None else z[f"test_{c}_cf"][i, 0]
            t = cv2.resize(np.clip((a + 1) * 127.5, 0, 255).astype(np.uint8), (tile, tile),
                           interpolation=cv2.INTER_LINEAR)
            o = np.zeros((tile, tile), np.uint8)
            if c is None:
                big = cv2.resize(les[i].astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(o, contours, -1, 1, 1)
                cv2.putText(t, str(types[i]), (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_AA)
            g_row += [t, np.full((tile, gap), 255, np.uint8)]
            o_row += [o > 0, np.zeros((tile, gap), bool)]
        grey += [np.full((gap, width), 255, np.uint8), np.concatenate(g_row[:-1], 1)]
        green += [np.zeros((gap, width), bool), np.concatenate(o_row[:-1], 1)]
    g, o = np.concatenate(grey, 0), np.concatenate(green, 0)
    index = (g.astype(np.uint16) * 254 // 255).astype(np.uint8)        # 255 greys, the last palette entry green
    index[o] = 255
    img = Image.fromarray(index, mode="P")
    img.putpalette([v for k in range(255) for v in (k * 255 // 254,) * 3] + [40, 200, 40])
    img.save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", choices=("flair", "ct"), default="flair")
    ap.add_argument("--kernels", default="1,3,5,7")
    ap.add_argument("--n-val", type=int, default=32, help="a quarter healthy (the evaluation's 24 diseased of 32)")
    ap.add_argument("--n-test", type=int, default=80, help="a quarter healthy (the evaluation's 60 + 20)")
    ap.add_argument("--brats", default=None, help="BraTS folder (FLAIR only)")
    ap.add_argument("--per-case", type=int, default=4)
    ap.add_argument("--healthy-per-case", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="default: the card's")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cache", default=None, help="npz of the counterfactuals: read if present, else written")
    ap.add_argument("--out", default=None)
    ap.add_argument("--figure", default=None, help="PNG: test slices with the 5x5 and 3x3 maps side by side")
    ap.add_argument("--methods-figure", default=None, help="PNG: test slices and each method's counterfactual")
    ap.add_argument("--test-seeds", default="", help="FLAIR: more sampling seeds for the test slices (e.g. 2,3; "
                    "the first is 1): Dif-fuse and --methods again, Dice per seed and over seeds at the card's kernel")
    ap.add_argument("--methods", default="", help="FLAIR: other methods to run and score the same way (comma list)")
    args = ap.parse_args()

    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        z = dict(np.load(cache))
    else:
        z = compute(args)
        if cache is not None:
            np.savez_compressed(cache, **z)
    kernels = [int(k) for k in args.kernels.split(",")]
    res = score(z, kernels, args.modality)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods:
        if args.modality != "flair":
            raise SystemExit("--methods: FLAIR only")
        compute_methods(args, z, methods, cache)
        from diffuse_core.core.anomaly import anomaly_kernel_of
        from diffuse_core.models.checkpoint import read_config
        from diffuse_core.models.registry import default_model_dir

        card_kernel = anomaly_kernel_of(read_config(default_model_dir("ddpm", "mri")).get("card"))
        res["methods"] = score_methods(z, kernels, methods, card_kernel)
    seeds = [int(x) for x in args.test_seeds.split(",") if x.strip()]
    if seeds:
        if args.modality != "flair":
            raise SystemExit("--test-seeds: FLAIR only")
        if 1 in seeds:
            raise SystemExit("--test-seeds: seed 1 is the test slices' first seed already")
        compute_test_seeds(args, z, methods, seeds, cache)
        from diffuse_core.core.anomaly import anomaly_kernel_of
        from diffuse_core.models.checkpoint import read_config
        from diffuse_core.models.registry import default_model_dir

        kernel = anomaly_kernel_of(read_config(default_model_dir("ddpm", "mri")).get("card"))
        res["test_seeds"] = score_test_seeds(z, methods, seeds, kernel)
    if args.methods_figure:
        methods_figure(z, args.methods_figure, methods)
    if args.figure:
        figure(z, args.figure, thresholds={k: res["kernels"][f"acat_{k}"]["threshold_from_val"] for k in (5, 3)})
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
