"""The app's tests on tiny untrained models: the models, one torch thread while they run, and the environment that
points the app at them. Imported by the tests (``from tiny_app import ...``); no tests here."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEACHING_SETS = ROOT / "teaching_sets"


def tiny_models(assets: Path, resolution: int, card: dict | None = None) -> Path:
    """A tiny untrained DDPM (its card ``card``) and tiny ACAT autoencoder and classifier under ``assets``."""
    from diffuse_core.models.autoencoder import AutoencoderConfig, new_autoencoder
    from diffuse_core.models.checkpoint import save
    from diffuse_core.models.classifier import ClassifierConfig, new_classifier
    from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser

    save_denoiser(new_denoiser(DenoiserConfig(resolution=resolution, block_channels=(16, 32),
                                              attention_levels=(False, True), norm_num_groups=8,
                                              attention_head_dim=8)),
                  assets / "ddpm", card=card)
    save(new_autoencoder(AutoencoderConfig(resolution=resolution, widths=(8, 16), latent_channels=4)),
         assets / "autoencoder")
    save(new_classifier(ClassifierConfig(resolution=resolution, widths=(8, 16))), assets / "classifier")
    return assets


@contextmanager
def one_torch_thread():
    """Torch on one thread inside (tiny models run fastest so), the former count restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def app_env(monkeypatch, tmp_path: Path, assets: Path, teaching_root: Path = TEACHING_SETS) -> None:
    """The app's environment for a test: models from ``assets``, teaching sets from ``teaching_root``, curated cases
    and data under ``tmp_path``, the CPU."""
    monkeypatch.setenv("DIFFUSE_ASSETS", str(assets))
    monkeypatch.setenv("DIFFUSE_TEACHING_ROOT", str(teaching_root))
    monkeypatch.setenv("DIFFUSE_CURATED_ROOT", str(tmp_path / "curated"))
    monkeypatch.setenv("DIFFUSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIFFUSE_DEVICE", "cpu")


def tiny_flair_ddpm(folder: Path, **card) -> Path:
    """A tiny untrained 128 x 128 FLAIR DDPM in ``folder`` whose card holds the app's settings (a 2-step walk from K
    100, the tissue scale, the weighted mask, the signed score) and ``card``'s entries."""
    from diffuse_core.models.denoiser import DenoiserConfig, new_denoiser, save_denoiser

    cfg = DenoiserConfig(channels=1, resolution=128, block_channels=(8, 16), attention_levels=(False, True),
                         norm_num_groups=4, attention_head_dim=8)
    save_denoiser(new_denoiser(cfg, seed=0), folder, card={
        "anomaly_threshold": 0.15, "input_normalisation": "tissue", "score": "signed",
        "mask_rule": {"kind": "weighted", "level": 0.2, "max_share": 0.5},
        "recommended_settings": {"k": 100, "percentile": 90.0, "steps": 2},
        "data": {"generator": "SynthBrain", "modalities": ["flair"]}, **card})
    return folder
