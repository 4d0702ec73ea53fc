"""The README's hero figure: a shipped teaching case through the shipped models, four panels in one small PNG.

``python -m diffuse_core.evaluation.hero_figure`` runs a case of ``teaching_sets/default`` (default
``case05_flair_stroke``, an easy stroke) through :func:`diffuse_core.run.files.run_file` (what ``diffuse-studio run --gt``
runs, the model card's settings, seed 0, on the CPU) and writes

- ``docs/hero.png``: input with the expert's outline (green) | ACAT saliency | healthy counterfactual | anomaly map
  over the input (the Dif-fuse mask in cyan);
- ``docs/results/hero_figure.json``: the case, the settings, Dice/IoU against the outline, the run's seconds, the date,
  the commit (and whether the code or models differed from it), the hardware and the command; the README's caption is
  generated from it (:mod:`diffuse_core.evaluation.docs_tables`, region ``hero``).

From ten seconds to a minute on two CPU cores, depending on what else runs there. Run it from a clean checkout
of a commit (e.g. ``git worktree add``) so that ``commit`` names the code that made the figure; the file records whether
the code or models differed from it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

PANEL = 200          # pixels per panel side
LABELS = ("input + expert outline", "ACAT saliency", "healthy counterfactual", "anomaly map over input")


def _git(root: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _panel(rgb: np.ndarray, label: str) -> np.ndarray:
    img = cv2.resize(rgb, (PANEL, PANEL), interpolation=cv2.INTER_CUBIC)
    strip = np.zeros((22, PANEL, 3), np.uint8)
    cv2.putText(strip, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, img], axis=0)


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"could not read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def make_hero(root: Path, case_id: str = "case05_flair_stroke", seed: int = 0, device: str = "cpu",
              out_png: Path | None = None, out_json: Path | None = None, command: str | None = None) -> dict:
    """Run the case, write the PNG and the results file, return the results file's content."""
    import torch

    from diffuse_core.cases import prepare_case
    from diffuse_core.run.files import run_file
    from diffuse_core.io.export import LESION_OUTLINE_RGB, outline, to_uint8

    root = Path(root)
    set_dir = root / "teaching_sets" / "default"
    manifest = json.loads((set_dir / "manifest.json").read_text())
    case = next(c for c in manifest["cases"] if c["id"] == case_id)
    image, mask = set_dir / case["image"], set_dir / case["mask"]
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_file(str(image), tmp, gt=str(mask), seed=seed, device=device)
        prepared = prepare_case(str(image), gt=str(mask))
        grey = np.repeat(to_uint8(prepared.image[0])[..., None], 3, axis=2)
        if prepared.ground_truth is not None:
            outline(grey, prepared.ground_truth, LESION_OUTLINE_RGB)
        panels = [grey] + [_read_rgb(Path(tmp, n)) for n in ("saliency.png", "counterfactual.png", "overlay.png")]
    panels = [p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=2) for p in panels]
    figure = np.concatenate([_panel(p, label) for p, label in zip(panels, LABELS)], axis=1)
    out_png = Path(out_png or root / "docs" / "hero.png")
    out_json = Path(out_json or root / "docs" / "results" / "hero_figure.json")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {out_png}")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "diffuse_core", "assets", "teaching_sets")
    cores = os.cpu_count() or 0
    cpu, ran_on = _cpu_name(), summary.get("device", device)
    doc = {
        "name": "hero_figure",
        "command": command or "python -m diffuse_core.evaluation.hero_figure",
        "measured_on": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "code_differs_from_commit": None if dirty is None else bool(dirty),
        "hardware": {"summary": f"{cpu}, {cores} cores, torch {torch.__version__}, {ran_on}",
                     "cpu": cpu, "cores": cores, "torch": torch.__version__, "device": ran_on,
                     "torch_threads": torch.get_num_threads()},
        "case": {"set": "teaching_sets/default", "id": case_id, "lesion_type": case["lesion_type"],
                 "difficulty": case["difficulty"], "modality": case["modality"]},
        "model": summary.get("model"),
        "settings": {"k": summary["k"], "steps": summary["steps"], "percentile": summary["percentile"], "seed": seed,
                     "threshold": summary["threshold"], "variant": summary.get("variant"), "mask_from": "acat",
                     "mask_rule": summary.get("mask_rule")},
        "result": {"dice": summary["dice"], "iou": summary["iou"], "anomaly_pixels": summary["anomaly_pixels"],
                   "seconds": (summary.get("timings") or {}).get("total"),
                   "network_calls": summary.get("network_calls")},
        "png": out_png.relative_to(root).as_posix() if out_png.is_relative_to(root) else str(out_png),
    }
    out_json.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", default="case05_flair_stroke", help="a case id of teaching_sets/default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--root", type=Path, default=Path("."))
    a = p.parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    doc = make_hero(a.root, a.case, a.seed, a.device,
                    command=" ".join(["python -m diffuse_core.evaluation.hero_figure", *args]))
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
