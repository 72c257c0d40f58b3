"""Where the project keeps things it builds for itself (the default model, native builds)."""

from __future__ import annotations

import os
from pathlib import Path

from bitnet import __version__


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


def default_model_path() -> Path:
    """The embedded default model: the `tiny` synthetic model (seed 0, I2_S when available),
    built once per project version into the cache. Its weights are random."""
    from bitnet.quant.encoders import FORMATS
    from bitnet.synth import synthesize

    fmt = "i2_s" if "i2_s" in FORMATS else "f32"
    path = cache_dir("models") / f"default-tiny-bitnet-b1.58-{fmt}-seed0-v{__version__}.gguf"
    if not path.is_file():
        synthesize(path, preset="tiny", arch="bitnet-b1.58", fmt=fmt, seed=0)
    return path
