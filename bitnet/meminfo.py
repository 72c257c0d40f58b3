"""The kernel's `MemAvailable`, read in one place.

Both memory-hungry options check it before they allocate, so a run that would not fit is
refused with a typed error instead of swapping or being killed halfway: the NumPy backend's
decoded weight copies (`bitnet.kernels.numpy_cache`) and the GGUF reader's `memory` residency
(`bitnet.gguf.reader`). It lives outside both layers because the gguf layer must not import
from kernels (data flows gguf -> quant -> model -> engine).
"""

from __future__ import annotations

from pathlib import Path


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes, or None where the kernel does not say (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
