"""How many slices go through the network at once.

On a GPU the batch is sized from the free memory (:func:`batch_size_for_memory`, measured by
:func:`cuda_free_bytes`). What one more slice costs in a batch was measured on the CPU (no GPU was at hand): one more
128 x 128 slice adds about 77 MiB to the peak resident memory of a batch (the ACAT mask with autograd, the walk, and
the full-size post-processing of a 512 x 512 slice; ``benchmarks/results/volume_memory.json``).
:data:`BYTES_PER_SLICE_128` budgets 256 MiB, over three times that, for what a GPU's allocator and cuDNN workspaces
add; it scales with the pixel count. On a CPU more than a few slices per batch buys little and costs memory:
:data:`CPU_BATCH`.
"""

from __future__ import annotations

__all__ = ["BYTES_PER_SLICE_128", "CPU_BATCH", "MAX_BATCH", "auto_batch_size", "batch_size_for_memory",
           "cuda_free_bytes"]

BYTES_PER_SLICE_128 = 256 * 2**20   # GPU memory one 128 x 128 single-channel slice may need in a batch, with margin
CPU_BATCH = 8                       # slices per batch on a CPU
MAX_BATCH = 64                      # never more (beyond this a GPU is busy anyway, and a cancel waits too long)
RESERVE_FRACTION = 0.1              # of the free memory left alone (other processes, cuDNN workspaces)


def batch_size_for_memory(free_bytes: int, size: int = 128, channels: int = 1, precision: str = "fp32") -> int:
    """Slices per batch that fit in ``free_bytes`` of accelerator memory: at least 1, at most :data:`MAX_BATCH`.
    bf16/fp16 halve the activations."""
    per = BYTES_PER_SLICE_128 * (int(size) / 128) ** 2 * max(1, int(channels)) ** 0.5
    if precision in ("bf16", "fp16"):
        per /= 2
    usable = max(0.0, float(free_bytes) * (1.0 - RESERVE_FRACTION))
    return int(max(1, min(MAX_BATCH, usable // per)))


def cuda_free_bytes(device) -> int | None:
    """Free memory of a CUDA ``device`` in bytes (None for other devices)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


def auto_batch_size(device, size: int = 128, channels: int = 1, precision: str = "fp32") -> int:
    """:data:`CPU_BATCH` on a CPU; on a GPU what its free memory holds (:func:`batch_size_for_memory`)."""
    free = cuda_free_bytes(device)
    if free is None:
        return CPU_BATCH
    return batch_size_for_memory(free, size, channels, precision)
