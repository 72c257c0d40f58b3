"""The block rule shared by every blocked format: a tensor of n elements is n/block blocks of
block_bytes bytes, and a view of fewer bytes than that is refused with the multiple needed."""

from __future__ import annotations

import numpy as np

from bitnet.errors import FormatError


def raw_blocks(raw: np.ndarray, n: int, block: int, block_bytes: int, what: str) -> np.ndarray:
    """The tensor's bytes as [n/block, block_bytes] (a view; extra trailing bytes ignored)."""
    if n % block:
        raise FormatError(f"{what}: element count {n} is not a multiple of {block}")
    need = n // block * block_bytes
    r = np.asarray(raw, np.uint8)
    if r.size < need:
        raise FormatError(f"{what}: {r.size} bytes for {n} elements, need {need}")
    return r[:need].reshape(-1, block_bytes)
