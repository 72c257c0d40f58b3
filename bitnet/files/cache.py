"""Where the project keeps things it builds for itself (the default model, native builds)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$BITNET_CACHE_DIR`, else `$XDG_CACHE_HOME/bitnet-harness`, else `~/.cache/bitnet-harness`."""
    root = os.environ.get("BITNET_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bitnet-harness"
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
