"""From a file on disk to a written Dif-fuse result: load, prepare, mask, sample, score, export.

This is what ``diffuse-studio run`` and the app's upload path do, as plain functions over the engine:
:func:`prepare_case` (any supported file -> a slice on the model's grid, with its brain mask and ground truth),
:func:`mask_for_case` (saliency method or mask file -> binary mask m), :func:`run_file` (all of it, writing the
outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffuse_core.core.masks import DEFAULT_PERCENTILE, mask_from_saliency

SALIENCY_CHOICES = ("acat", "gradcam", "gradient")
DEFAULT_ANOMALY_THRESHOLD = 0.15  # used only when a model card carries none (intensity units of [-1, 1] images)


if TYPE_CHECKING:
    from diffuse_core.io.full_resolution import FullResolution

@dataclass
class CaseInput:
    """One slice ready for the model. ``image`` (C, R, R) in [-1, 1] (background -1); masks (R, R) uint8."""

    image: np.ndarray
    brain_mask: np.ndarray
    ground_truth: np.ndarray | None
    geometry: object | None          # preprocess.Geometry: the way back to the input's grid
    source: str
    slice_index: int
    num_slices: int
    modality: str                    # "mri" | "ct"
    spacing: tuple[float, float]     # (row, col) pixel spacing of the input slice in mm
    channel_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    affine: np.ndarray | None = None  # 4x4 canonical RAS affine (mm) of the input slice (NIfTI / BraTS), else None
    original_image: np.ndarray | None = None   # (C, H0, W0) the slice at the input's size, normalised as ``image``
    original_brain: np.ndarray | None = None   # (H0, W0) uint8
    original_truth: np.ndarray | None = None   # (H0, W0) uint8 ground truth at the input's size
    last_full: tuple | None = field(default=None, repr=False, compare=False)   # (result, its FullResolution)

    def full_resolution(self, result) -> FullResolution:
        """``result`` (a pipeline result on the model grid) at the input's size (:mod:`diffuse_core.io.full_resolution`).
        The last result's is kept: the summary, the record and the panels of one run all ask for it."""
        from diffuse_core.io.full_resolution import to_input_grid

        if self.last_full is not None and self.last_full[0] is result:
            return self.last_full[1]
        if self.original_image is None or self.geometry is None:
            full = to_input_grid(self.image, self.brain_mask, None, result.counterfactual, result.anomaly,
                                 result.mask, result.saliency)
        else:
            full = to_input_grid(self.original_image, self.original_brain, self.geometry, result.counterfactual,
                                 result.anomaly, result.mask, result.saliency)
        self.last_full = (result, full)
        return full

    @property
    def truth_at_input_size(self) -> np.ndarray | None:
        """The ground truth on the grid :meth:`full_resolution` returns."""
        return self.original_truth if self.original_image is not None and self.geometry is not None \
            else self.ground_truth


def _teaching_case_of(source):
    """The teaching case (:func:`diffuse_core.data.teaching.case_of_image_file`) ``source`` (a path, or an image
    loaded from one) is the image file of, else None."""
    from diffuse_core.data.teaching import case_of_image_file

    path = source if isinstance(source, (str, Path)) else getattr(source, "source", None)
    if not isinstance(path, (str, Path)) or not str(path).lower().endswith((".nii", ".nii.gz")):
        return None
    return case_of_image_file(path)


def _is_brats_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    names = [p.name.lower() for p in path.iterdir() if p.is_file()]
    return any(".nii" in n for n in names) and any(("flair" in n) for n in names)


def prepare_case(source, slice_index: int | None = None, size: int = 128, channels: int = 1, gt=None,
                 window: str | None = None, modality: str | None = None, mri_reference: dict | None = None
                 ) -> CaseInput:
    """Load ``source`` (path or array) and put one slice on the model's ``size`` x ``size`` grid.

    A BraTS-layout case folder gives FLAIR (1 channel) or FLAIR/T1/T1c/T2 (4 channels) with its whole-tumour label
    as ground truth; without ``slice_index`` the slice with the largest tumour is taken. ``gt`` is an optional
    ground-truth mask file or array on the input's grid. ``mri_reference`` (:func:`intensity_reference_of` a model):
    MRI intensities matched to the model's training data instead of stretched between the 1st and 99th percentiles.
    """
    from diffuse_core.io.brats import load_brats_case
    from diffuse_core.io.image import load_image, load_mask
    from diffuse_core.io.preprocess import prepare_slice, to_model_grid

    notes: list[str] = []
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is not None and _is_brats_folder(path):
        mods = ("flair",) if channels == 1 else ("flair", "t1", "t1c", "t2")
        case = load_brats_case(path, modalities=mods)
        if slice_index is None:
            tumour = case.tumour_slices()
            if tumour:
                areas = [int(case.label_slice(z).sum()) for z in tumour]
                slice_index = tumour[int(np.argmax(areas))]
                notes.append(f"slice {slice_index} chosen: the largest tumour cross-section")
            else:
                slice_index = case.num_slices // 2
        raw, label, brain = case.slice(slice_index)
        prepared = prepare_slice(raw, size=size, modality="mri", brain_mask=brain, mri_reference=mri_reference)
        full_truth = label if gt is None else load_mask(gt, slice_index=slice_index)
        truth = to_model_grid(full_truth, size=size, order=0)[0] if full_truth is not None else None
        return CaseInput(prepared.image, prepared.brain_mask, None if truth is None else (truth > 0).astype(np.uint8),
                         prepared.geometry, str(path), int(slice_index), case.num_slices, "mri", case.spacing,
                         tuple(mods), tuple(notes), case.slice_affine(slice_index), prepared.original_image,
                         prepared.original_brain_mask,
                         None if full_truth is None else (np.asarray(full_truth) > 0).astype(np.uint8))

    teaching_case = _teaching_case_of(source)
    if teaching_case is not None:              # read as the app reads it: normalised already, the manifest's modality
        full_truth = None
        if gt is not None:
            like = source if hasattr(source, "data") else load_image(source)
            full_truth = (np.asarray(load_mask(gt, slice_index=0, like=like)) > 0).astype(np.uint8)
        case = case_from_normalized(teaching_case.image, full_truth, size=size, channels=channels,
                                    source=str(getattr(source, "source", source)),
                                    modality=teaching_case.modality.lower(), spacing=teaching_case.spacing)
        case.notes = tuple(notes) + (f"teaching-set case {teaching_case.set_name}/{teaching_case.id} "
                                     f"({teaching_case.modality.upper()}, from its manifest): its stored intensities "
                                     "are used as they are, as in the app",)
        if window is not None:
            case.notes += (f"window {window!r} not applied: the set stores this case with its display window "
                           "already applied",)
        if modality is not None and modality.lower() != teaching_case.modality.lower():
            case.notes += (f"modality {modality!r} not used: the set's manifest says "
                           f"{teaching_case.modality.upper()}",)
        return case
    loaded = load_image(source, slice_index=slice_index)
    if loaded.data.shape[0] != channels:
        if channels == 1:
            notes.append(f"the input has {loaded.data.shape[0]} channels: the first ({loaded.channel_names[0]}) is used")
            loaded.data = loaded.data[:1]
            loaded.channel_names = loaded.channel_names[:1]
        else:
            raise ValueError(f"the model expects {channels} channels (FLAIR, T1, T1c, T2), the input has "
                             f"{loaded.data.shape[0]}")
    prepared = prepare_slice(loaded, size=size, modality=modality, window=window, mri_reference=mri_reference)
    truth = full_truth = None
    if gt is not None:
        full_truth = (np.asarray(load_mask(gt, slice_index=loaded.slice_index, like=loaded)) > 0).astype(np.uint8)
        truth = (to_model_grid(full_truth, size=size, order=0)[0] > 0).astype(np.uint8)
    return CaseInput(prepared.image, prepared.brain_mask, truth, prepared.geometry, loaded.source,
                     loaded.slice_index, loaded.num_slices, prepared.modality, loaded.spacing,
                     tuple(loaded.channel_names), tuple(notes), loaded.slice_affine(), prepared.original_image,
                     prepared.original_brain_mask, full_truth)


def mask_for_case(case: CaseInput, mask_from="acat", percentile: float = DEFAULT_PERCENTILE,
                  saliency_models=None, device="cpu", seed: int = 0,
                  rule: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Dif-fuse mask m (R, R) uint8 and the saliency map it came from (R, R) float32 in [0, 1].

    ``mask_from`` is a saliency method (:data:`SALIENCY_CHOICES`, needing ``saliency_models``), a file, or an array.
    A binary file/array is used as the mask itself; any other map is treated as a saliency map and thresholded:
    by ``rule`` (a model card's ``mask_rule``, :func:`diffuse_core.core.redraw.redrawn_mask`) where given, else at
    ``percentile`` (the paper's rule).
    """
    if isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES:
        from diffuse_core.saliency.dispatch import compute_saliency

        if saliency_models is None:
            raise ValueError(f"--mask-from {mask_from} needs the ACAT autoencoder and classifier")
        saliency = compute_saliency(mask_from, case.image, saliency_models, brain_mask=case.brain_mask)
    else:
        if isinstance(mask_from, (str, Path)):
            from diffuse_core.io.image import load_image

            p = Path(mask_from)
            if not p.exists():
                raise FileNotFoundError(f"--mask-from {mask_from}: no such file; use acat, gradcam, gradient or a "
                                        f"mask file")
            z = case.slice_index if case.num_slices > 1 else None
            try:
                raw = load_image(p, slice_index=z).data[0]
            except ValueError as err:
                if "constant" not in str(err):
                    raise
                from diffuse_core.io.image import load_mask

                raw = load_mask(p, slice_index=z).astype(np.float32)  # an all-empty mask file
        else:
            raw = np.asarray(mask_from, np.float32)
            if raw.ndim == 3:
                raw = raw[0]
        from diffuse_core.io.preprocess import to_model_grid

        size = case.image.shape[-1]
        if raw.shape != (size, size):
            if case.geometry is None or raw.shape != tuple(case.geometry.original_shape):
                raise ValueError(f"the mask file is {raw.shape[0]}x{raw.shape[1]} but the image is "
                                 f"{'x'.join(map(str, case.geometry.original_shape)) if case.geometry else size}")
        values = np.unique(raw)
        binary = len(values) <= 2
        if raw.shape != (size, size):
            raw = to_model_grid(raw, size=size, order=0 if binary else 1)[0]
        if binary:
            m = (raw > raw.min()).astype(np.uint8) if len(values) == 2 else np.zeros_like(raw, np.uint8)
            return (m & case.brain_mask.astype(np.uint8)).astype(np.uint8), m.astype(np.float32)
        saliency = np.clip(raw - raw.min(), 0, None)
        saliency = saliency / max(float(saliency.max()), 1e-8)
    saliency = np.asarray(saliency, np.float32) * case.brain_mask
    from_method = isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES
    if rule is None or rule.get("kind") == "percentile" or not from_method:   # a saliency file: the paper's rule
        pct = rule["percentile"] if rule is not None and rule.get("kind") == "percentile" else percentile
        return mask_from_saliency(saliency, case.brain_mask, pct), saliency
    from diffuse_core.core.redraw import needs_probability, redrawn_mask

    p = None
    if needs_probability(rule):
        from diffuse_core.saliency.dispatch import diseased_probability

        p = diseased_probability(case.image, saliency_models)
    return redrawn_mask(saliency, case.brain_mask, rule, p), saliency


def case_from_normalized(image, ground_truth=None, size: int = 128, channels: int = 1, source: str = "<array>",
                         modality: str = "mri", spacing=(1.0, 1.0)) -> CaseInput:
    """A slice that is already normalised (a teaching or curated case: (C, H, W) or (H, W) in [-1, 1], background
    -1) on the model's ``size`` x ``size`` grid, intensities unchanged. ``ground_truth`` (H, W) is binarised (> 0)
    and resampled alike (an empty one becomes None); the brain mask is
    :func:`diffuse_core.core.brain.brain_mask_from_image` of the result. A multi-channel slice gives its first channel
    to a 1-channel model. ``spacing`` is the slice's (row, col) pixel size in mm as stored."""
    from diffuse_core.core.brain import brain_mask_from_image
    from diffuse_core.io.orientation import check_spacing
    from diffuse_core.io.preprocess import to_model_grid

    img = np.asarray(image, np.float32)
    img = img[None] if img.ndim == 2 else img
    if img.shape[0] != channels:
        if channels != 1:
            raise ValueError(f"this case has {img.shape[0]} channel(s) but the model expects {channels}")
        img = img[:1]
    truth = None if ground_truth is None else (np.asarray(ground_truth) > 0).astype(np.uint8)
    truth = truth if truth is not None and truth.any() else None
    geometry = None
    if img.shape[1:] != (size, size):
        img, geometry = to_model_grid(img, size=size, order=1, pad_value=-1.0)
        if truth is not None:
            truth = to_model_grid(truth, size=size, order=0, pad_value=0)[0]
    img = np.clip(img, -1, 1).astype(np.float32)
    return CaseInput(image=img, brain_mask=brain_mask_from_image(img), ground_truth=truth, geometry=geometry,
                     source=str(source), slice_index=0, num_slices=1, modality="ct" if modality == "ct" else "mri",
                     spacing=check_spacing(spacing), channel_names=("image",))


def saliency_model_dirs(saliency_dir=None, modality: str | None = None) -> tuple[Path, Path]:
    """(autoencoder, classifier) folders: ``saliency_dir/autoencoder`` and ``saliency_dir/classifier`` when given,
    else the shipped assets for ``modality`` (:func:`diffuse_core.models.registry.model_dir_for`: the CT models for
    CT where installed, else the MRI ones)."""
    from diffuse_core.models.registry import model_dir_for

    if saliency_dir:
        return Path(saliency_dir) / "autoencoder", Path(saliency_dir) / "classifier"
    ae, clf = model_dir_for("autoencoder", modality), model_dir_for("classifier", modality)
    if ae.parent != clf.parent:          # ACAT needs a matched pair: both of the modality or neither
        from diffuse_core.models.registry import default_model_dir

        ae, clf = default_model_dir("autoencoder"), default_model_dir("classifier")
    return ae, clf


def load_default_models(model_dir=None, saliency_dir=None, device="cpu", need_saliency: bool = True,
                        modality: str | None = None):
    """The denoiser and (optionally) the ACAT models, from the shipped assets for ``modality`` (the CT models for
    "ct" where installed, else the MRI ones) unless folders are given."""
    from diffuse_core.models.denoiser import load_denoiser
    from diffuse_core.models.registry import model_dir_for

    denoiser = load_denoiser(model_dir or model_dir_for("ddpm", modality), device=device)
    saliency_models = None
    if need_saliency:
        from diffuse_core.saliency.dispatch import load_saliency_models

        ae, clf = saliency_model_dirs(saliency_dir, modality)
        saliency_models = load_saliency_models(ae, clf, device)
    return denoiser, saliency_models


def _verdict(result, denoiser):
    from diffuse_core.core.verdict import verdict_of

    return verdict_of(result.anomaly, result.brain_mask, getattr(denoiser, "card", None))


def anomaly_threshold_of(denoiser) -> float:
    """The binarisation threshold stored in the model card (chosen on validation data), or the fallback."""
    t = (denoiser.card or {}).get("anomaly_threshold")
    return float(t) if t is not None else DEFAULT_ANOMALY_THRESHOLD


INTENSITY_CHOICES = ("auto", "tissue", "percentile", "model")
"""How MRI intensities reach the model. "auto" (the default): the model's own preparation, its card's
``input_normalisation`` ("tissue" for a model trained on the tissue scale, else "percentile"). "tissue": air -> -1
and the brain's tissue peak -> the card's ``tissue_scale`` level (:func:`diffuse_core.io.intensity.tissue_scale`),
the preparation SynthBrain training slices get too, robust to bright lesions. "percentile" stretches the brain's
1st-99th percentiles to [-1, 1] (the default until wave 3); "model" matches the brain's 10th-75th percentiles to
where the model's training data has them (the card's ``intensity_reference``). Measured on real BraTS FLAIR:
docs/results.md, real-data section."""


def _card(denoiser) -> dict:
    """A denoiser's card, or the card itself (a dict read from config.json without loading the weights)."""
    return denoiser if isinstance(denoiser, dict) else (getattr(denoiser, "card", None) or {})


def intensity_reference_of(denoiser) -> dict | None:
    """The model card's intensity reference (its training slices' brain percentiles), or None."""
    ref = _card(denoiser).get("intensity_reference")
    return ref if isinstance(ref, dict) and ref.get("values") else None


def input_normalisation_of(denoiser) -> str:
    """How the model's SynthBrain training slices were scaled (the card's ``input_normalisation``): "absolute" (as
    SynthBrain renders them; models without the field), "percentile" (stretched) or "tissue" (the tissue scale).
    Evaluations that feed SynthBrain arrays directly put them on this scale first
    (:func:`diffuse_core.train.data.normalise_slices`)."""
    return str(_card(denoiser).get("input_normalisation") or "absolute")


def tissue_scale_of(denoiser) -> dict:
    """The card's ``tissue_scale`` over the default :data:`diffuse_core.io.intensity.TISSUE_SCALE`."""
    from diffuse_core.io.intensity import TISSUE_SCALE

    given = _card(denoiser).get("tissue_scale")
    return {**TISSUE_SCALE, **(given if isinstance(given, dict) else {})}


def resolve_intensity(denoiser, intensity: str | None) -> str:
    """``intensity`` with "auto" / None resolved to the model's own preparation."""
    if intensity in (None, "auto"):
        return "tissue" if input_normalisation_of(denoiser) == "tissue" else "percentile"
    if intensity not in INTENSITY_CHOICES:
        raise ValueError(f"unknown intensity {intensity!r}: choose one of {', '.join(INTENSITY_CHOICES)}")
    return intensity


def mri_reference_for(denoiser, intensity: str | None) -> dict | None:
    """The reference :func:`prepare_case` needs for ``intensity`` (:data:`INTENSITY_CHOICES`); ValueError if the
    model has none."""
    intensity = resolve_intensity(denoiser, intensity)
    if intensity == "percentile":
        return None
    if intensity == "tissue":
        return tissue_scale_of(denoiser)
    ref = intensity_reference_of(denoiser)
    if ref is None:
        raise ValueError("this model's card holds no intensity_reference: use --intensity percentile, or write one "
                         "with `python -m diffuse_core.train.data --reference MODEL_DIR`")
    return ref


PAPER_SETTINGS = {"k": 500, "percentile": DEFAULT_PERCENTILE, "steps": 50}   # paper Sec. IV-D; steps: ours
SETTING_RANGES = {"k": (1, 1000), "percentile": (1.0, 99.0), "steps": (1, 1000)}


def default_settings(denoiser) -> dict:
    """K, percentile, steps and solver to run with when none are given: the model card's ``recommended_settings``
    (chosen on validation data by ``diffuse-studio evaluate --write-cards``; what the app starts from), else the
    paper's (solver "ddim")."""
    from diffuse_core.core.sampler import SOLVERS

    out = dict(PAPER_SETTINGS)
    rec = (getattr(denoiser, "card", None) or {}).get("recommended_settings") or {}
    for key, (low, high) in SETTING_RANGES.items():
        try:
            value = float(rec[key])
        except (KeyError, TypeError, ValueError):
            continue
        if low <= value <= high:
            out[key] = value if key == "percentile" else int(value)
    out["solver"] = rec["solver"] if rec.get("solver") in SOLVERS else "ddim"
    return out


def run_file(source, out_dir, *, slice_index=None, gt=None, mask_from="acat", k: int | None = None,
             percentile: float | None = None, steps: int | None = None, seed: int = 0, variant: str = "paper",
             device="auto", precision: str = "auto", window=None, threshold: float | None = None,
             model_dir=None, saliency_dir=None, callback: Callable | None = None, intensity: str = "auto",
             solver: str | None = None) -> dict:
    """Dif-fuse on one file, written to ``out_dir`` (see :func:`diffuse_core.io.export.write_result`).

    The summary's ``timings`` split the run in seconds: ``saliency`` (the mask), ``inversion`` and ``sampling`` (the
    walk), ``post`` (anomaly map, scores, writing the files) and ``total``, from the loaded slice to the written result
    (loading the models and the file excluded). ``k``, ``percentile`` and ``steps`` left None come from
    :func:`default_settings` (the model card's, as in the app), and so does ``solver``. ``intensity`` (:data:`INTENSITY_CHOICES`) says how MRI
    intensities are normalised."""
    import time

    from diffuse_core.io.image import load_image

    if isinstance(source, (str, Path)) and not _is_brats_folder(Path(source)):
        source = load_image(source, slice_index=slice_index)  # refuse a bad or oversized file before loading models
    from diffuse_core.core.anomaly import binarize
    from diffuse_core.models.device import pick_device
    from diffuse_core.io.export import write_result, write_summary
    from diffuse_core.core.metrics import dice, iou
    from diffuse_core.pipeline import run_counterfactual
    from diffuse_core.core.schedule import validate_noise_level

    if percentile is not None and not 0.0 < float(percentile) < 100.0:
        raise ValueError(f"percentile must lie strictly between 0 and 100 (the paper uses 90), got {percentile}")
    if intensity not in INTENSITY_CHOICES:
        raise ValueError(f"unknown intensity {intensity!r}: choose one of {', '.join(INTENSITY_CHOICES)}")
    validate_noise_level(500 if k is None else k, 50 if steps is None else steps, 1000)
    dev = pick_device(device)
    need_saliency = isinstance(mask_from, str) and mask_from in SALIENCY_CHOICES
    denoiser, sal_models = load_default_models(model_dir, saliency_dir, dev, need_saliency)
    given = {"k": k, "percentile": percentile, "steps": steps}
    chosen = default_settings(denoiser)
    k = chosen["k"] if k is None else k
    percentile = chosen["percentile"] if percentile is None else percentile
    steps = chosen["steps"] if steps is None else steps
    validate_noise_level(k, steps, denoiser.schedule.num_train_timesteps)
    case = prepare_case(source, slice_index, size=denoiser.config.resolution, channels=denoiser.config.channels,
                        gt=gt, window=window, mri_reference=mri_reference_for(denoiser, intensity))
    from diffuse_core.models.registry import model_dir_for

    used_model = str(model_dir) if model_dir else "assets/ddpm"
    if case.modality == "ct" and (model_dir is None or saliency_dir is None):
        if model_dir_for("ddpm", "ct") != model_dir_for("ddpm", None):   # a CT model is installed: use it for CT
            denoiser, sal_models = load_default_models(model_dir, saliency_dir, dev, need_saliency, modality="ct")
            used_model = str(model_dir) if model_dir else "assets/ct/ddpm"
            chosen = default_settings(denoiser)                             # the CT card's defaults
            k, percentile, steps = (chosen[n] if given[n] is None else given[n] for n in ("k", "percentile", "steps"))
            validate_noise_level(k, steps, denoiser.schedule.num_train_timesteps)
            if (denoiser.config.resolution, denoiser.config.channels) != case.image.shape[-1:] + case.image.shape[:1]:
                case = prepare_case(source, slice_index, size=denoiser.config.resolution,
                                    channels=denoiser.config.channels, gt=gt, window=window)
        elif model_dir is None:
            case.notes = tuple(case.notes) + ("CT input, but no CT model is installed (assets/ct/ddpm): the MRI "
                                              "(FLAIR) model ran out of domain; read the counterfactual with caution",)
    from diffuse_core.core.redraw import mask_rule_of

    rule = mask_rule_of(denoiser.card, given["percentile"])      # a --percentile asks for the paper's rule
    start = time.perf_counter()
    mask, saliency = mask_for_case(case, mask_from, percentile, sal_models, dev, seed, rule=rule)
    saliency_seconds = time.perf_counter() - start
    result = run_counterfactual(denoiser, case.image, mask, callback=callback, brain_mask=case.brain_mask, k=k,
                                steps=steps, seed=seed, variant=variant, precision=precision, saliency=saliency,
                                solver=chosen["solver"] if solver is None else solver)
    walked = time.perf_counter()
    thr = anomaly_threshold_of(denoiser) if threshold is None else float(threshold)
    full = case.full_resolution(result)                 # every output at the input's size
    predicted = binarize(full.anomaly, thr)
    truth = case.truth_at_input_size
    extra = {
        "input": case.source, "slice": case.slice_index, "num_slices": case.num_slices, "modality": case.modality,
        "channels": list(case.channel_names), "spacing_mm": list(case.spacing), "mask_from": str(mask_from),
        "percentile": percentile if rule["kind"] == "percentile" else None, "mask_rule": rule,
        "mask_share": float(mask[case.brain_mask.astype(bool)].mean()) if case.brain_mask.any() else 0.0,
        "score": (denoiser.card or {}).get("score") or "abs",
        "verdict": None if _verdict(result, denoiser) is None else _verdict(result, denoiser).to_dict(),
        "intensity": resolve_intensity(denoiser, intensity) if case.modality == "mri" else None,
        "threshold": thr, "anomaly_pixels": int(predicted.sum()),
        "dice": None if truth is None else dice(predicted, truth),
        "iou": None if truth is None else iou(predicted, truth),
        "dice_model_grid": None if case.ground_truth is None else dice(binarize(result.anomaly, thr), case.ground_truth),
        "output_size": list(full.shape), "model_grid": int(denoiser.config.resolution),
        "model": used_model, "model_steps": (denoiser.card.get("training") or {}).get("steps_done"),
        "notes": list(case.notes),
    }
    out = Path(out_dir)
    summary = write_result(result, out, extra=extra, ground_truth=truth, spacing=case.spacing, affine=case.affine,
                           full=full)
    end = time.perf_counter()
    # the pipeline's own post-processing plus scoring and writing; the file is rewritten with the final split
    timings = {"saliency": saliency_seconds, "inversion": result.timings.get("inversion", 0.0),
               "sampling": result.timings.get("sampling", 0.0),
               "post": result.timings.get("post", 0.0) + (end - walked), "total": end - start}
    summary["timings"] = {name: round(float(s), 4) for name, s in timings.items()}
    write_summary(summary, out)
    return summary
