"""Where the project keeps things it builds for itself (the default model, native builds)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$BITNET_CACHE_DIR`, else `$XDG_CACHE_HOME/bitnet-harness`, else `~/.cache/bitnet-harness`."""
    from bitnet.settings import settings

    root = settings().cache_dir
    if root:
        base = root
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bitnet-harness"
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
