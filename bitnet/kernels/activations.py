"""Activation quantization profiles: what each engine does to activations before a ternary
matmul. Both are exact transcriptions of the C, operation by operation, in NumPy.

- `per-token-absmax` — bitnet.cpp `quantize_row_i8_s` (llama.cpp fork, `ggml-quants.c`, at
  fork commit 40ed0f29): `max = max(1e-5, max|x|)` in double, `s = (float)(127 / max)`,
  `q = nearest_int(x * s)` with the product in float and rounding half to even (the 1.5*2^23
  trick), clamped to [-128, 127]; plus the row sum of q. Dequantized: `x ~ q / s`.
  (Older fork revisions used C `round()`, half away from zero; ties differ only there.)
- `q8_k-block256` — llama.cpp `quantize_row_q8_K_ref` (`ggml-quants.c`; the x86 CPU backend
  calls the same reference): per block of 256, `max` = the signed value of largest magnitude
  (the first one on ties), `iscale = -127 / max` in float, `q = min(127, nearest_int(iscale*x))`,
  `d = 1 / iscale`, `bsums` = sums of 16-element groups; an all-zero block stores d = 0.
  Dequantized: `x ~ q * d`.
- `tl2-lut` — bitnet.cpp's TL2 LUT path (`per_tensor_quant` and `three_lut_ctor` /
  `two_lut_ctor` in `utils/codegen_tl2.py`, microsoft/BitNet 16da220), per token:
  `max = max|x|` in float (NO 1e-5 floor), `s = 127 / max` in float, `q = round(x * s)` half to
  even (`_mm256_round_ps` nearest), no clamp (|x*s| <= 127 by construction). The same as
  `per-token-absmax` except on an all-zero row, where the C divides by zero (s = inf, NaN
  products): refused here rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.errors import FormatError

QK_K = 256


@dataclass(frozen=True)
class QuantizedRows:
    """int8 activations and how to undo the scaling.

    `scale` is per row ([T]) for per-token profiles and per 256-block ([T, K/256]) for Q8_K;
    `divide` says whether the integer dot product is divided (per-token: q / s) or multiplied
    (Q8_K: q * d) by it."""

    profile: str
    q: np.ndarray  # int8 [T, K]
    scale: np.ndarray  # float32 [T] or [T, K/256]
    sums: np.ndarray  # int32 [T] (row sums) or [T, K/16] (bsums)
    divide: bool


def per_token_absmax(x: np.ndarray) -> QuantizedRows:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise FormatError(f"activations must be [T, K], got shape {x.shape}")
    mx = np.maximum(np.abs(x).max(axis=1).astype(np.float64), 1e-5) if x.shape[1] else np.full(x.shape[0], 1e-5)
    s = (127.0 / mx).astype(np.float32)  # division in double, then to float, as `float s = 127 / max`
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)  # float product, half-even
    return QuantizedRows("per-token-absmax", q, s, q.sum(axis=1, dtype=np.int32), divide=True)


def fused_round_ties(x: np.ndarray) -> np.ndarray:
    """x with its `per-token-absmax` rounding ties broken as bitnet.cpp's compiled C breaks them.

    `quantize_row_i8_s` calls `nearest_int(x[i] * s)`, i.e. `(x*s + 12582912.f)` read as bits;
    gcc (GNU C, -march=native with FMA) fuses that multiply-add, so the exact product is rounded
    once, never the float product: where float(x*s) is exactly k + 0.5 but x*s is not, the C
    rounds toward the exact value, not to even. Measured on bitnet.cpp 406a5036: one such
    element in a 768-wide row moved that token's projections by 3e-4 relative (1-cos 3e-4 on
    its logits). Rather than a second quantizer, the few tie elements are moved one ulp toward
    their exact side, so every backend's ordinary float rounding lands where the C lands; the
    row's absmax (the scale) is never touched."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or not x.size:
        return x
    mx = np.maximum(np.abs(x).max(axis=1).astype(np.float64), 1e-5)
    s = (127.0 / mx).astype(np.float32)
    p = (x * s[:, None]).astype(np.float32)
    tie = (p - np.floor(p)) == 0.5
    if not tie.any():
        return x
    exact = x.astype(np.float64) * s.astype(np.float64)[:, None]
    out = x.copy()
    up, down = tie & (exact > p), tie & (exact < p)
    out[up] = np.nextafter(x[up], np.float32(np.inf))
    out[down] = np.nextafter(x[down], np.float32(-np.inf))
    return out


def q8_k(x: np.ndarray) -> QuantizedRows:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise FormatError(f"activations must be [T, K], got shape {x.shape}")
    t, k = x.shape
    if k % QK_K:
        raise FormatError(f"Q8_K: row length {k} is not a multiple of {QK_K}")
    b = x.reshape(t, k // QK_K, QK_K)
    idx = np.abs(b).argmax(axis=-1)[..., None]  # argmax returns the first maximum, like `>`
    mx = np.take_along_axis(b, idx, axis=-1)[..., 0]  # signed value of largest magnitude
    zero = mx == 0
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, 0, np.float32(-127.0) / np.where(zero, 1, mx)).astype(np.float32)
        d = np.where(zero, 0, np.float32(1.0) / np.where(zero, 1, iscale)).astype(np.float32)
    q = np.minimum(127, np.rint(iscale[..., None] * b)).astype(np.int8)
    bsums = q.reshape(t, k // 16, 16).sum(axis=-1, dtype=np.int32)
    return QuantizedRows("q8_k-block256", q.reshape(t, k), d, bsums, divide=False)


def tl2_lut(x: np.ndarray) -> QuantizedRows:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise FormatError(f"activations must be [T, K], got shape {x.shape}")
    mx = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    if (mx == 0).any():
        raise FormatError(f"tl2-lut: activation row {int(np.argmin(mx))} is all zero; bitnet.cpp's "
                          "per_tensor_quant divides by zero there (127 / 0), which is not modelled")
    s = (np.float32(127.0) / mx.astype(np.float32)).astype(np.float32)
    q = np.rint(x * s[:, None]).astype(np.int8)  # |x * s| <= 127: no clamp, as in the C
    return QuantizedRows("tl2-lut", q, s, q.sum(axis=1, dtype=np.int32), divide=True)


PROFILES = {"per-token-absmax": per_token_absmax, "q8_k-block256": q8_k, "tl2-lut": tl2_lut}


def quantize_activations(x: np.ndarray, profile: str) -> QuantizedRows:
    try:
        return PROFILES[profile](x)
    except KeyError:
        raise FormatError(f"unknown activation profile {profile!r}; known: {', '.join(PROFILES)}") from None
