"""Device choice, made once at the edge (CLI, app) and passed into the engine."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` takes CUDA when a GPU is visible and the CPU otherwise; ``cuda`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX-512 BF16 flags in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read(1 << 16)
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_autocast(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA GPUs that support it and on CPUs with native bf16; None (float32) otherwise."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto`` | ``bf16`` | ``fp32`` -> the autocast dtype (None = plain float32)."""
    if precision == "auto":
        return default_autocast(device)
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    raise ValueError(f"unknown precision {precision!r}: choose auto, bf16 or fp32")
