"""Machine fingerprint: read from the machine, never assumed."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

import numpy as np


def _cpuinfo() -> tuple[str, list[str]]:
    model: str = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = val.strip()
            elif key in ("flags", "Features") and not flags:
                flags = sorted(val.split())
    except OSError:
        pass
    return model or "unknown", flags


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def fingerprint(gpu: dict | None = None) -> dict:
    """OS, Python, NumPy, CPU model and flags, cores, memory; `gpu` when a GPU ran."""
    cpu, flags = _cpuinfo()
    out = {
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count() or 1,
        "memory_bytes": _memory_bytes(),
    }
    if gpu is not None:
        out["gpu"] = gpu
    return out


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if platform.system() == "Darwin" else r * 1024)
