"""The models of a run, for the case's modality: the healthy denoiser and the ACAT saliency pair.

CT cases run through the CT models where they are installed (``assets/ct``), everything else through the MRI
(FLAIR) ones; a CT case that has to run through the MRI model carries a note saying so. Folders given by the user
(``--model``, ``--saliency-models``, the app's environment) replace the shipped ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

OUT_OF_DOMAIN_CT = ("CT input, but no CT model is installed (assets/ct/ddpm): the MRI (FLAIR) model ran out of "
                    "domain; read the counterfactual with caution")


@dataclass
class RunModels:
    """A loaded denoiser (``.card`` holds its model card), the ACAT models (None where the mask comes from a file
    or a drawing) and where the denoiser came from."""

    denoiser: object
    saliency: object | None
    folder: str
    notes: tuple[str, ...] = ()
    level: object | None = None        # the slice-level estimator (models.level) where it reads this denoiser's input

    @property
    def card(self) -> dict:
        return getattr(self.denoiser, "card", None) or {}

    @property
    def version(self) -> str:
        return str(self.card.get("_version", self.folder))


SALIENCY_BESIDE = "saliency"      # a denoiser folder's own ACAT pair (an adapted model's): saliency/{autoencoder,
                                  # classifier}


def saliency_model_dirs(saliency_dir=None, modality: str | None = None, model_dir=None) -> tuple[Path, Path]:
    """(autoencoder, classifier) folders: ``saliency_dir/autoencoder`` and ``saliency_dir/classifier`` when given,
    else the pair the denoiser folder ``model_dir`` carries (``model_dir/saliency/``: a model adapted to a scanner
    brings the classifier adapted with it), else the shipped assets for ``modality`` (the CT pair for CT where
    installed, else the MRI pair; ACAT needs a matched pair, both of the modality or neither)."""
    from diffuse_core.models.registry import default_model_dir, is_installed, model_dir_for

    if saliency_dir:
        return Path(saliency_dir) / "autoencoder", Path(saliency_dir) / "classifier"
    beside = Path(model_dir) / SALIENCY_BESIDE if model_dir else None
    if beside is not None and is_installed(beside / "autoencoder") and is_installed(beside / "classifier"):
        return beside / "autoencoder", beside / "classifier"
    ae, clf = model_dir_for("autoencoder", modality), model_dir_for("classifier", modality)
    if ae.parent != clf.parent:
        ae, clf = default_model_dir("autoencoder"), default_model_dir("classifier")
    return ae, clf


def denoiser_dir(modality: str | None, model_dir=None) -> tuple[Path, tuple[str, ...]]:
    """The denoiser folder for a case of ``modality`` and the notes a result should carry about the choice."""
    from diffuse_core.models.registry import model_dir_for

    if model_dir:
        return Path(model_dir), ()
    folder = model_dir_for("ddpm", modality)
    ct_missing = str(modality or "").lower() == "ct" and folder == model_dir_for("ddpm", None)
    return folder, ((OUT_OF_DOMAIN_CT,) if ct_missing else ())


def read_card(folder) -> dict:
    """A model folder's card (an older folder's migrated, :func:`diffuse_core.models.card.read_card`) and grid,
    without loading the weights: the card with ``_grid`` = (resolution, channels) added; {} where the folder holds
    no readable config."""
    from diffuse_core.models.card import read_card as card_in

    try:
        unet = json.loads((Path(folder) / "config.json").read_text()).get("unet") or {}
        grid = (int(unet.get("resolution", 128)), int(unet.get("channels", 1)))
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    return {**card_in(folder), "_grid": grid}


def load_default_models(model_dir=None, saliency_dir=None, device="cpu", need_saliency: bool = True,
                        modality: str | None = None):
    """(denoiser, ACAT models or None), from the shipped assets for ``modality`` unless folders are given."""
    m = load_run_models(modality, model_dir=model_dir, saliency_dir=saliency_dir, device=device,
                        need_saliency=need_saliency)
    return m.denoiser, m.saliency


def load_run_models(modality: str | None, *, model_dir=None, saliency_dir=None, device="cpu",
                    need_saliency: bool = True) -> RunModels:
    """The :class:`RunModels` for a case of ``modality`` on ``device``."""
    from diffuse_core.models.denoiser import load_denoiser

    folder, notes = denoiser_dir(modality, model_dir)
    denoiser = load_denoiser(folder, device=device)
    saliency = None
    if need_saliency:
        from diffuse_core.saliency.dispatch import load_saliency_models

        saliency = load_saliency_models(*saliency_model_dirs(saliency_dir, modality, folder), device)
    return RunModels(denoiser=denoiser, saliency=saliency, folder=_shown_folder(folder), notes=notes,
                     level=level_estimator_for(getattr(denoiser, "card", None), device))


def level_estimator_for(denoiser_card: dict | None, device="cpu", check: bool = True):
    """The installed slice-level estimator for this denoiser's modality (``assets/level``, ``assets/ct/level``:
    :func:`diffuse_core.run.level_check.level_folder`) where it reads the slices the denoiser is given
    (:func:`diffuse_core.run.level_check.usable_with`; ``check`` False skips that), else None: no level check (a model
    trained on a folder of real slices, no estimator installed)."""
    from diffuse_core.models.checkpoint import load_level_estimator
    from diffuse_core.models.registry import is_installed
    from diffuse_core.run.level_check import level_folder, usable_with

    folder = level_folder(denoiser_card)
    if not is_installed(folder):
        return None
    try:
        estimator = load_level_estimator(folder, device)
    except (OSError, ValueError):
        return None
    return estimator if not check or usable_with(estimator.card, denoiser_card) else None


def _shown_folder(folder: Path) -> str:
    """A model folder as results name it: relative to the project (``assets/ddpm``) where it lies inside it."""
    from diffuse_core.models.registry import assets_root

    try:
        return str(Path("assets") / Path(folder).resolve().relative_to(assets_root().resolve()))
    except ValueError:
        return str(folder)
