"""The converter's typed error."""

from __future__ import annotations

from bitnet.errors import BitNetError


class CheckpointError(BitNetError, ValueError):
    """An HF checkpoint cannot be converted: missing file or config key, unsupported arch,
    a tensor missing or of the wrong shape or dtype, a malformed safetensors file. The message
    names the file and tensor."""
