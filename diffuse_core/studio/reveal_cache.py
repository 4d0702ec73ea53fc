"""Counterfactuals of teaching cases kept on disk, so that a quiz's reveal is instant on a CPU (issue: teaching v2).

A run of a library case depends only on the case, the models and the settings, so its result is computed once and
read back afterwards. An entry is ``<folder>/<settings key>/<case id>.npz`` holding the run's arrays (model grid,
float16 maps) and ``meta.json`` beside them; the settings key names the denoiser's version (its weights' hash), the
ACAT models' weights hash, K, percentile, steps, seed and walk (and the anomaly map's opening/closing kernel where
the card sets one other than the paper's 5), so a retrained model or other settings never meet an old entry. Where
entries are looked up, in order:

1. ``<teaching set>/counterfactuals/<key>/``: shipped with a set (read-only; written only by
   ``python -m diffuse_core.studio.reveal_cache SET``, a maintainer's step);
2. ``<data folder>/reveal_cache/<library kind>/<set>/<key>/``: computed by the app the first time (writable).

The threshold that binarises the anomaly map is not stored: it is read from the model card at reveal time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path

import numpy as np

from diffuse_core.pipeline import CounterfactualResult

log = logging.getLogger(__name__)

SHIPPED_FOLDER = "counterfactuals"
_ARRAYS = ("image", "counterfactual", "mask", "anomaly", "brain_mask", "saliency")
_LOCK = threading.Lock()
_DIGESTS: dict = {}


def _weights_digest(folder: Path) -> str:
    """First 10 hex digits of the SHA-256 of ``folder/model.safetensors`` (memoised by size and mtime)."""
    path = Path(folder) / "model.safetensors"
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if memo in _DIGESTS:
            return _DIGESTS[memo]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _LOCK:
        _DIGESTS[memo] = h.hexdigest()[:10]
    return _DIGESTS[memo]


def settings_key(modality: str, k: int, percentile: float, steps: int, seed: int, variant: str = "paper",
                 mask_from: str = "acat", solver: str = "ddim") -> str:
    """The folder name of one model version and one set of settings, e.g.
    ``ddpm-3f2a9c01d2_acat-77aa01bc3e_k500_p90_s25_seed0_paper`` (``..._paper_m3`` for a card whose anomaly maps
    are opened and closed with a 3 x 3 kernel)."""
    from diffuse_core.core.anomaly import MORPHOLOGY_KERNEL, anomaly_kernel_of
    from diffuse_core.models.checkpoint import read_config
    from diffuse_core.studio.model_store import MODELS

    ddpm_dir = MODELS.ddpm_dir(modality)
    ddpm = _weights_digest(ddpm_dir)
    kernel = anomaly_kernel_of(read_config(ddpm_dir).get("card"))
    ae, clf = MODELS.saliency_dirs(modality)
    acat = hashlib.sha256((_weights_digest(ae) + _weights_digest(clf)).encode()).hexdigest()[:10]
    key = f"ddpm-{ddpm}_{mask_from}-{acat}_k{int(k)}_p{float(percentile):g}_s{int(steps)}_seed{int(seed)}_{variant}"
    if solver != "ddim":                          # the paper's solver keeps the keys the shipped cache was made with
        key += f"_{solver}"
    if kernel != MORPHOLOGY_KERNEL:               # so does the paper's kernel
        key += f"_m{kernel}"
    card = read_config(ddpm_dir).get("card") or {}
    rule, score = card.get("mask_rule"), card.get("score")
    if rule and rule.get("kind") != "percentile":  # the card's region and score make other masks and maps
        key += f"_{rule['kind'][0]}{rule.get('level', 0):g}"
    if score and score != "abs":
        key += f"_{score}"
    if card.get("input_normalisation") == "tissue":
        key += "_tissue"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", key)


def _library_parts(case_key: str) -> tuple[str, str, str]:
    kind, _, rest = str(case_key).partition("/")
    set_name, _, case_id = rest.partition("/")
    for part in (kind, set_name, case_id):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", part or ""):
            raise ValueError(f"not a library case key: {case_key!r}")
    return kind, set_name, case_id


def shipped_folder(case_key: str) -> Path | None:
    """Where a shipped set keeps its precomputed results (None for curated sets)."""
    from diffuse_core.studio.library import teaching_root

    kind, set_name, _ = _library_parts(case_key)
    return teaching_root() / set_name / SHIPPED_FOLDER if kind == "teaching" else None


def writable_folder(case_key: str) -> Path:
    """Where the app keeps the results it computed for a set (under the app's data folder)."""
    from diffuse_core.data.curation import data_dir

    kind, set_name, _ = _library_parts(case_key)
    return data_dir() / "reveal_cache" / kind / set_name


def load(case_key: str, key: str) -> CounterfactualResult | None:
    """The stored result of ``case_key`` under settings ``key``, or None (a damaged entry is logged and ignored)."""
    _, _, case_id = _library_parts(case_key)
    for base in (shipped_folder(case_key), writable_folder(case_key)):
        if base is None:
            continue
        path = base / key / f"{case_id}.npz"
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
                meta = json.loads(str(arrays.pop("meta")))
            return CounterfactualResult(
                image=arrays["image"].astype(np.float32), counterfactual=arrays["counterfactual"].astype(np.float32),
                mask=arrays["mask"].astype(np.uint8), anomaly=arrays["anomaly"].astype(np.float32),
                brain_mask=arrays["brain_mask"].astype(np.uint8),
                saliency=arrays["saliency"].astype(np.float32) if "saliency" in arrays else None,
                k=int(meta["k"]), steps=int(meta["steps"]), variant=str(meta["variant"]), seed=int(meta["seed"]),
                network_calls=int(meta["network_calls"]), seconds=float(meta["seconds"]), device=str(meta["device"]),
                extras={"from_cache": str(path.parent.name)})
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring a damaged cached result %s: %s", path, err)
    return None


def store(case_key: str, key: str, result: CounterfactualResult, folder: Path | None = None) -> Path:
    """Write ``result`` for ``case_key`` under settings ``key`` (atomically: a killed write leaves no entry);
    ``folder`` overrides the writable folder (the maintainer's precompute writes into the shipped set)."""
    _, _, case_id = _library_parts(case_key)
    base = (folder if folder is not None else writable_folder(case_key)) / key
    base.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in _ARRAYS:
        a = getattr(result, name)
        if a is None:
            continue
        a = np.asarray(a)
        arrays[name] = a.astype(np.uint8) if name in ("mask", "brain_mask") else a.astype(np.float16)
    meta = {"k": result.k, "steps": result.steps, "variant": result.variant, "seed": result.seed,
            "network_calls": result.network_calls, "seconds": round(float(result.seconds), 3),
            "device": result.device}
    final = base / f"{case_id}.npz"
    tmp = base / f".{case_id}.{os.getpid()}.{threading.get_ident()}.npz"
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, final)
    return final


def same_input(result: CounterfactualResult, lc) -> bool:
    """Whether a stored result was computed from the slice case ``lc`` holds now (its input, kept in float16): a
    regenerated teaching case never meets the reveal of the slice it replaced."""
    a, b = np.asarray(result.image, np.float32), np.asarray(lc.case.image, np.float32)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=2e-3))


def _app_key(lc) -> str:
    """The settings key of a run of ``lc`` at the app's defaults with the ACAT mask (what the quiz reveals)."""
    from diffuse_core.studio.settings import DEFAULTS

    from diffuse_core.studio.model_store import k_for_modality

    return settings_key(lc.case.modality, k_for_modality(DEFAULTS["k"], lc.case.modality), DEFAULTS["percentile"],
                        DEFAULTS["steps"], DEFAULTS["seed"], DEFAULTS["variant"], solver=DEFAULTS["solver"])


def _run(lc) -> CounterfactualResult:
    """Run ``lc`` as the app does at its defaults with the ACAT mask."""
    from diffuse_core.studio.runs import run_case

    result = None
    for item in run_case(lc, "acat"):
        if item["kind"] == "result":
            result = item["result"]
    return result


def result_for_case(lc) -> CounterfactualResult:
    """The result of library case ``lc`` (a :class:`~diffuse_core.studio.library.LoadedCase`) at the app's
    defaults with the ACAT mask: read from the cache, else computed once and stored."""
    key = _app_key(lc)
    hit = load(lc.key, key)
    if hit is not None and same_input(hit, lc):
        return hit
    result = _run(lc)
    try:
        store(lc.key, key, result)
    except OSError as err:                # a read-only data folder: the reveal still works, only slower next time
        log.warning("cannot keep the result of %s: %s", lc.key, err)
    return result


def precompute(set_name: str, progress=print) -> list[Path]:
    """Compute and store (in the shipped set's own folder) the result of every case of teaching set ``set_name``
    at the app's defaults: what makes the first quiz on a fresh Space instant."""
    from diffuse_core.studio.library import list_library, load_library_case
    from diffuse_core.studio.model_store import apply_recommended_defaults

    apply_recommended_defaults()       # the settings the app starts from, hence the ones its quiz looks up
    written = []
    entries = [e for e in list_library() if e.key.startswith(f"teaching/{set_name}/")]
    if not entries:
        raise ValueError(f"no shipped teaching set {set_name!r}")
    for i, e in enumerate(entries):
        lc = load_library_case(e.key)
        key = _app_key(lc)
        shipped = shipped_folder(e.key) / key / f"{e.key.rsplit('/', 1)[1]}.npz"
        result = load(e.key, key)                  # an entry the app already computed is the same result
        if result is not None and same_input(result, lc) and shipped.is_file():
            written.append(shipped)                # shipped and still of this case's slice: kept as it is
            progress(f"{i + 1}/{len(entries)} {e.key}: kept {shipped}")
            continue
        if result is None or not same_input(result, lc):
            result = _run(lc)                      # none yet, or of a slice the set has since regenerated
        written.append(store(e.key, key, result, folder=shipped_folder(e.key)))
        progress(f"{i + 1}/{len(entries)} {e.key} -> {written[-1]}")
    return written


if __name__ == "__main__":   # python -m diffuse_core.studio.reveal_cache default
    import sys

    precompute(sys.argv[1] if len(sys.argv) > 1 else "default")
