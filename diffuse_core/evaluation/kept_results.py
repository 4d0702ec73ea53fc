"""The results an evaluation keeps on disk while it runs (:class:`_Parts`), keyed by what they depend on
(:func:`_fingerprint`), so that the same command started again resumes at its first unfinished method, and
``--workers`` shares meet each other's work (:mod:`diffuse_core.evaluation.report`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffuse_core.evaluation.results_page import json_safe


def results_key(denoiser, s, saliency_models=None) -> str:
    """What a saved method result depends on: the settings (not the command line, nor which other methods run: a
    method's own seeds are checked with its result, nor the real-data pass, which runs after the kept results and is
    never kept), the denoiser's card and the saliency models' weights (a retrained classifier changes every region)."""
    import hashlib
    import json

    keep = {k: v for k, v in s.__dict__.items() if k not in ("command", "extra", "png_figures", "synth_grid",
                                                              "methods", "all_seed_methods", "part", "brats_dir",
                                                              "brats_per_case", "brats_healthy_per_case")}
    text = json.dumps(json_safe({"settings": keep, "card": denoiser.card or {}}), sort_keys=True, default=str)
    h = hashlib.sha256(text.encode())
    for name in ("autoencoder", "classifier"):
        model = getattr(saliency_models, name, None)
        if model is not None:
            for key, tensor in sorted(model.state_dict().items()):
                h.update(key.encode())
                h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class KeptResults:
    """Each finished method's numbers (and its grid pictures) kept on disk while an evaluation runs, so the same
    command started again after an interruption resumes at the first unfinished method; removed once the run is
    written. Kept per fingerprint: other settings or other weights start afresh."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint

    def load(self, method: str, seeds=None):
        """The kept (summary, rows, grid) of ``method`` (run with ``seeds``, when given), or None."""
        import json

        path = self.folder / f"{method}.json"
        if not path.is_file():
            return None
        doc = json.loads(path.read_text())
        if doc.get("fingerprint") != self.fingerprint:
            return None
        if seeds is not None and doc.get("seeds") != [int(x) for x in seeds]:
            return None
        arrays = self.folder / f"{method}.npz"
        grid = dict(np.load(arrays)) if arrays.is_file() else None
        return doc["summary"], doc["rows"], grid

    def save(self, method: str, summary: dict, rows: list, grid: dict | None, seeds=None) -> None:
        import json

        self.folder.mkdir(parents=True, exist_ok=True)
        if grid is not None:
            np.savez_compressed(self.folder / f"{method}.npz", **grid)
        tmp = self.folder / f"{method}.json.tmp{os.getpid()}"
        doc = {"fingerprint": self.fingerprint, "summary": summary, "rows": rows}
        if seeds is not None:
            doc["seeds"] = [int(x) for x in seeds]
        tmp.write_text(json.dumps(json_safe(doc)))
        os.replace(tmp, self.folder / f"{method}.json")

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
