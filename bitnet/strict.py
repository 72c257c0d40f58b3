"""Strict mode: one switch that turns every fallback into an error.

`BITNET_STRICT_MODE=1` (or `--strict` / `strict=True` where a function takes it) makes the
loader refuse within-tolerance flavors and unknown tensor types, the model refuse missing
config keys it would otherwise default the way llama.cpp does, and the kernel dispatcher refuse
any path that would stage a full ternary weight as float.
"""

from __future__ import annotations

ENV = "BITNET_STRICT_MODE"


def strict_enabled(explicit: bool | None = None) -> bool:
    """An explicit argument wins; otherwise the environment decides."""
    if explicit is not None:
        return bool(explicit)
    from bitnet.settings import settings

    return settings().strict
