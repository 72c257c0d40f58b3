"""The embedded default model: what `bitnet run` and `bitnet inspect` use when no model is given."""

from __future__ import annotations

from pathlib import Path

from bitnet import __version__
from bitnet.files.cache import cache_dir


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
