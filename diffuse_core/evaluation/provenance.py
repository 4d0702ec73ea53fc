"""Where a measurement ran: the commit of the code and a one-line hardware summary, for every results file."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def commit_id() -> str:
    """The short commit of the working tree the code runs from, or "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware_summary(device) -> str:
    """"AMD EPYC, 2 cores (bf16 autocast)" on a CPU; the device's name otherwise."""
    from diffuse_core.models.device import cpu_has_fast_bf16

    if str(device) != "cpu":
        return str(device)
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores" + (" (bf16 autocast)" if cpu_has_fast_bf16() else " (fp32)")
