"""Decoding 2-bit ternary codes straight to float32, for exact integer kernels.

A packed byte holds four 2-bit codes. Two ways to float32 without an int8 pass:

- `lanes`: the byte is copied into the four lanes of a uint32 (one multiply by 0x01010101) and
  each lane masked to its own code, so lane L holds `code_L << shift_L`; widened to float32
  that is `code * 2^shift` (0..192), and a kernel divides the activations by the same power of
  two (exact for int8 values) and subtracts the activation sum for the `- 1` of `code - 1`.
  Four SIMD passes per chunk, no gather: the fast path for the flat layouts.
- `code_table` + `gather`: a table of the 256 byte values gives the four values `code - 1`
  (-1, 0, +1, and 2 for the unused code 3, exactly what `decode_rows` yields for it) in one
  `np.take`; used where the lanes are rows, not columns (I2_S `x86_1x4`).

Either way the values come out in the order the byte holds them, so a row's columns are a
permutation of the elements: a kernel that only forms exact integer dot products (every partial
sum an integer below 2^24, see `bitnet.kernels.numpy_kernels.EXACT_K_LIMIT`) permutes the
activations the same way and gets the same integers as the natural order. No int8 copy, no
cache: the packed bytes are what is read on every call.
"""

from __future__ import annotations

import functools
import sys
import threading

import numpy as np

#: the lane trick reads a uint32's bytes in memory order: lane L is byte L on little-endian hosts
LANES_OK = sys.byteorder == "little"


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


_scratch = threading.local()


def _buffer(name: str, n: int, dtype: type) -> np.ndarray:
    """A per-thread scratch buffer of at least n elements (reused: fresh multi-MB arrays per
    chunk cost a page fault per 4 KB, about as much as the decoding itself)."""
    b = getattr(_scratch, name, None)
    if b is None or b.size < n:
        b = np.empty(max(n, 1), dtype)
        setattr(_scratch, name, b)
    return b[:n]


def lanes(packed: np.ndarray, mask: int) -> np.ndarray:
    """float32 [..., 4 * packed.shape[-1]]: lane L of each byte is `byte & mask_L`, where
    mask_L is byte L of `mask` (the bits of the code that lane keeps). The result lives in a
    per-thread scratch buffer: valid until this thread's next call."""
    x = _buffer("u32", packed.size, np.uint32).reshape(packed.shape)
    np.multiply(packed, np.uint32(0x01010101), out=x, dtype=np.uint32)
    x &= np.uint32(mask)
    u8 = x.view(np.uint8)
    out = _buffer("f32", u8.size, np.float32).reshape(u8.shape)
    np.copyto(out, u8)
    return out


@functools.lru_cache(maxsize=64)
def lane_div(k: int, shifts: tuple[int, int, int, int]) -> np.ndarray:
    """float32 [K]: 2^shift of every column of `lanes` output (column 4p + L: lane L)."""
    d = np.tile(np.array([1 << s for s in shifts], np.float32), k // 4)
    d.setflags(write=False)
    return d


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
