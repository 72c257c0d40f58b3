"""Byte-table decoding of 2-bit ternary codes straight to float32, for exact integer kernels.

A packed byte holds four 2-bit codes; a table of its 256 possible values gives the four
integer values (`code - 1`: -1, 0, +1, and 2 for the unused code 3, exactly what
`decode_rows` yields for it) as float32 in one `np.take`. The values come out in the order the
byte holds them, so a row's columns are a permutation of the elements: a kernel that only
forms exact integer dot products (every partial sum an integer below 2^24, see
`bitnet.kernels.numpy_kernels.EXACT_K_LIMIT`) permutes the activations the same way and gets
the same integers as the natural order. No int8 copy, no unpacking pass, no cache: the packed
bytes are what is read on every call.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def code_table(shifts: tuple[int, ...]) -> np.ndarray:
    """float32 [256, len(shifts)]: entry [b, i] = ((b >> shifts[i]) & 3) - 1."""
    b = np.arange(256, dtype=np.int32)
    t = np.stack([((b >> s) & 3) - 1 for s in shifts], axis=-1).astype(np.float32)
    t.setflags(write=False)
    return t


def gather(table: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """float32 [*packed.shape, table.shape[1]]: the table row of every byte."""
    return np.take(table, packed, axis=0)


@functools.lru_cache(maxsize=64)
def block_perm(k: int, block: int, groups: int, lanes: int) -> np.ndarray:
    """The element order of byte-major decoding: K is cut in blocks of `block`; within a
    block the element `groups * lanes`-tiled as [group, lane] (natural) is held by byte `lane`
    at code position `group`, so the decoded order is [lane, group]. Returns intp [K] with
    perm[j] = the element column j holds."""
    sub = groups * lanes
    p = np.arange(k, dtype=np.intp).reshape(k // block, block // sub, groups, lanes).swapaxes(2, 3).reshape(-1)
    p.setflags(write=False)
    return p


@functools.cache
def f16_table() -> np.ndarray:
    """float32 [65536]: every F16 bit pattern widened as `astype(np.float32)` widens it (NaN
    payloads included: the table is built by that very cast)."""
    t = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    t.setflags(write=False)
    return t


def widen_f16(part: np.ndarray) -> np.ndarray:
    """F16 array -> float32, bit for bit `part.astype(np.float32)`, through a 256 KB table
    (NumPy's scalar F16 cast is the slow part of an F16 lm_head GEMV)."""
    return np.take(f16_table(), np.ascontiguousarray(part).view(np.uint16))
