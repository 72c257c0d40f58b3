"""`BITNET_NUMPY_CACHE`: decoded weight copies for the NumPy backend, opt-in and memory-checked.

The NumPy kernels decode every call by default (`bitnet.quant.lut`: packed bytes -> float32 in
one table gather per byte; F16 -> float32 through a 65536-entry table) and hold nothing beyond
the mapped file. A run that wants more speed and has the memory can keep decoded copies:

- `int8`: every ternary projection's values as int8 (`PackedWeight.cache_int8`, 4x its packed
  2-bit bytes) and every F16/BF16 matrix (the lm_head) as float32 (`cache_f32`, 2x);
- `f32`: the ternary projections as float32 too (16x their packed bytes).

Both give the same bytes of output as decoding per call: the kernels multiply the same integer
values (exact in float32 BLAS, any summation order) and the same widened floats in the same
BLAS calls. The kernel ids say `i8cache` / `f32cache` and count the copies' bytes, so a receipt
cannot present a cached run as a packed-weight one.

The copies are built when the model loads, after checking the total against the kernel's
`MemAvailable`: a run that would not fit is refused with a `ConfigError` naming the need, what
is available and the smaller setting, instead of swapping or being killed halfway.
"""

from __future__ import annotations

from collections.abc import Iterable

from bitnet.errors import ConfigError
from bitnet.meminfo import mem_available
from bitnet.quant.weights import PackedWeight

MODES = ("off", "int8", "f32")
#: memory left free after the copies (page cache for the mapped file, the run's own buffers)
HEADROOM = 1 << 30


def cache_bytes(weights: Iterable[PackedWeight], mode: str) -> int:
    """Bytes the copies of `mode` would add for these weights."""
    total = 0
    for w in weights:
        n = w.out_features * w.in_features
        if w.is_ternary:
            total += n if mode == "int8" else 4 * n if mode == "f32" else 0
        elif w.flavor in ("f16", "bf16") and mode != "off":
            total += 4 * n
    return total


def apply(weights: list[PackedWeight], mode: str, *, what: str, available: int | None = None) -> int:
    """Build the copies of `mode` for `weights` (a model's projections and lm_head); returns
    the bytes added. ConfigError when `mode` is unknown or the copies would not fit."""
    if mode not in MODES:
        raise ConfigError(f"BITNET_NUMPY_CACHE={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        return 0
    need = cache_bytes(weights, mode)
    avail = mem_available() if available is None else available
    if avail is not None and need + HEADROOM > avail:
        smaller = "" if mode == "int8" else (f"; BITNET_NUMPY_CACHE=int8 needs "
                                             f"{cache_bytes(weights, 'int8') / 1e9:.2f} GB")
        raise ConfigError(f"BITNET_NUMPY_CACHE={mode}: the decoded copies of {what} need {need / 1e9:.2f} GB "
                          f"plus {HEADROOM / 2**30:.0f} GiB headroom; MemAvailable is {avail / 1e9:.2f} GB"
                          f"{smaller}; BITNET_NUMPY_CACHE=off decodes per call and needs none")
    for w in weights:
        if w.is_ternary and mode == "int8":
            w.cache_int8()
        elif w.is_ternary or w.flavor in ("f16", "bf16"):
            w.cache_f32()
    return need
