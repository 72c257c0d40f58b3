"""Attention as bitnet.cpp's ggml (llama.cpp fork, x86 AVX2+FMA+F16C) computes it, bit for bit.

Why: with int8 activations every projection input is rounded to a 1/127 grid, so a one-ulp
difference in the attention output flips a rounding now and then, and the flip grows through
the layers. On files where the attention is sharp (head_dim 128, big q/k) that floor reached
cosine 0.99997 after position 0 against bitnet.cpp (exact at position 0, where attention is
the identity); per op, the only differences left were summation orders and the rounding of
the softmax. So the bitnet.cpp profiles do what the fork's ggml does (its ggml/src/ggml.c and
llamafile/sgemm.cpp, read at 406a5036):

- Q.K (`ggml_mul_mat(k, q)`, K from the F16 cache): q is a permuted view, so llamafile is
  skipped; q is converted to F16 (the vec_dot_type) and each dot is `ggml_vec_dot_f16`: four
  8-lane FMA accumulators over blocks of 32, reduced (a0+a2)+(a1+a3), then the 8 lanes by
  128-bit halves and two horizontal adds; the result through double to float.
- softmax (`ggml_soft_max_ext`): kq * (1/sqrtf(head_dim)) in float, the mask added, the max
  subtracted, `ggml_v_expf` (the AVX2 polynomial, not libm expf) per 8 lanes, each 8-lane
  chunk summed in float ((v0+v4)+(v2+v6))+((v1+v5)+(v3+v7)) and the chunks in double; then
  every value times (float)(1.0 / sum).
- P.V (`ggml_mul_mat(v, kq)`): with 2+ rows llamafile's tinyBLAS<8> (F16 V widened, F32
  probabilities): one 8-lane FMA accumulator per output over the keys, then the same 8-lane
  float sum as the softmax chunks; with one row (tinyBLAS needs n >= 2) the probabilities are
  converted to F16 and `ggml_vec_dot_f16` runs as for Q.K.

An FMA is emulated in double: the product of two floats is exact there and the sum rounds to
float once (a second rounding only when the exact sum needs more than 53 bits: vanishingly rare).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
F64 = np.float64
#: bound on the float64 elements one 32-wide FMA step of Q.K holds per head batch (16 MB):
#: a decode step's heads go in one batch, a long prefill's a few at a time
HEAD_BATCH_ELEMENTS = 1 << 21


def _H(hexfloat: str) -> np.float32:
    """A C hex-float constant as the float32 the C source means."""
    return F32(float.fromhex(hexfloat))


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (a.astype(F64) * b.astype(F64) + c.astype(F64)).astype(F32)


def _hsum8(x: np.ndarray) -> np.ndarray:
    """The float sum of 8 lanes [..., 8] as AVX code reduces a __m256 with movehl/movehdup:
    x = hi + lo; ((x0 + x2) + (x1 + x3))."""
    h = (x[..., 4:] + x[..., :4]).astype(F32)
    return ((h[..., 0] + h[..., 2]) + (h[..., 1] + h[..., 3])).astype(F32)


def vec_dot_f16(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f16 (GGML_SIMD, AVX): dot products over the last axis of F16-valued float32
    arrays (broadcast against each other), as float32."""
    n = x.shape[-1]
    nb = n - n % 32
    shape = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    acc = np.zeros((*shape, 4, 8), F32)
    for i in range(0, nb, 32):
        acc = _fma(x[..., i:i + 32].reshape(*x.shape[:-1], 4, 8), y[..., i:i + 32].reshape(*y.shape[:-1], 4, 8), acc)
    a = ((acc[..., 0, :] + acc[..., 2, :]).astype(F32) + (acc[..., 1, :] + acc[..., 3, :]).astype(F32)).astype(F32)
    t0 = (a[..., :4] + a[..., 4:]).astype(F32)  # _mm_add_ps(lo, hi)
    res = ((t0[..., 0] + t0[..., 1]).astype(F32) + (t0[..., 2] + t0[..., 3]).astype(F32)).astype(F32)  # 2x hadd
    s = res.astype(F64)
    for i in range(nb, n):  # leftovers: float products summed in double
        s = s + (x[..., i] * y[..., i]).astype(F32).astype(F64)
    return s.astype(F32)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, F32).view(np.int32)


def _float(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b, np.int32).view(F32)


def v_expf(x: np.ndarray) -> np.ndarray:
    """ggml_v_expf for __m256 (AVX2 + FMA), lane by lane on float32 (ggml.c)."""
    x = np.asarray(x, F32)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        r = F32(_H("0x1.8p23"))
        z = _fma(x, np.full_like(x, _H("0x1.715476p+0")), np.full_like(x, r))
        n = (z - r).astype(F32)
        b = _fma(-n, np.full_like(x, _H("0x1.7f7d1cp-20")), _fma(-n, np.full_like(x, _H("0x1.62e4p-1")), x))
        e = (_bits(z).astype(np.int64) << 23).astype(np.int64)
        e = ((e + 2**31) % 2**32 - 2**31).astype(np.int32)  # 32-bit shift, wrapping as the lane does
        k = _float((e.astype(np.int64) + _bits(np.asarray(F32(1))).item() + 2**31) % 2**32 - 2**31)
        c = np.abs(n) > 126
        u = (b * b).astype(F32)
        j = _fma(_fma(_fma(np.full_like(x, _H("0x1.0e4020p-7")), b, np.full_like(x, _H("0x1.573e2ep-5"))), u,
                      _fma(np.full_like(x, _H("0x1.555e66p-3")), b, np.full_like(x, _H("0x1.fffdb6p-2")))),
                 u, (F32(_H("0x1.ffffecp-1")) * b).astype(F32))
        out = _fma(k, j, k)
        if c.any():
            g = np.where(n <= 0, np.int64(0x82000000), np.int64(0))
            s1 = _float(((g + 0x7F000000) + 2**31) % 2**32 - 2**31)
            s2 = _float(((e.astype(np.int64) - g) + 2**31) % 2**32 - 2**31)
            d = np.abs(n) > 192
            big = np.where(d, (s1 * s1).astype(F32), (_fma(s2, j, s2) * s1).astype(F32))
            out = np.where(c, big, out)
    return out.astype(F32)


def softmax(kq: np.ndarray, scale: float, mask: np.ndarray) -> np.ndarray:
    """ggml_soft_max_ext over the last axis (a multiple of 8 long; masked entries -inf)."""
    w = (kq * F32(scale)).astype(F32)
    w = np.where(mask, F32(-np.inf), w).astype(F32)
    mx = w.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        val = v_expf((w - mx).astype(F32))
    s = _hsum8(val.reshape(*val.shape[:-1], -1, 8)).astype(F64).sum(axis=-1, keepdims=True)
    return (val * (1.0 / s).astype(F32)).astype(F32)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int) -> np.ndarray:
    """softmax(q k^T / sqrt(d) + causal mask) v with grouped KV heads, ggml's way.

    q [T, H, d] float32 at positions pos0..; k, v [Hkv, S, d] holding F16 values (the cache).
    Head h reads KV head h // (H / Hkv). Returns [T, H*d]."""
    t, h, d = q.shape
    hkv, s, _ = k.shape
    group = h // hkv
    sp = -(-s // 32) * 32  # the fork's n_kv is a multiple of 32; the padding is masked
    kf = np.zeros((hkv, sp, d), F32)
    vf = np.zeros((hkv, sp, d), F32)
    kf[:, :s] = k.astype(F32)
    vf[:, :s] = v.astype(F32)
    qh = q.transpose(1, 0, 2).astype(np.float16).astype(F32)  # [H, T, d], q to the vec_dot_type
    mask = (np.arange(sp)[None, :] > (pos0 + np.arange(t))[:, None])  # [T, S']
    out = np.empty((h, t, d), F32)
    scale = float(F32(1.0) / np.sqrt(F32(d), dtype=F32))
    from bitnet.model import record as _record

    recording = _record._active is not None  # named intermediates (bitnet.model.record)
    if recording:
        scores_all = np.empty((h, t, s), F32)
        probs_all = np.empty((h, t, s), F32)
    # heads in batches (every op is element-wise or a per-row reduction over the last axis,
    # so a batch computes each head exactly as one head alone would): one batch for a decode
    # step, fewer heads per batch where [T, S'] is large, to bound the float64 temporaries
    hb = max(1, min(h, HEAD_BATCH_ELEMENTS // max(1, t * sp * 32)))
    for h0 in range(0, h, hb):
        h1 = min(h0 + hb, h)
        kv = np.arange(h0, h1) // group
        kq = vec_dot_f16(qh[h0:h1, :, None, :], kf[kv][:, None, :, :])  # [hb, T, S']
        p = softmax(kq, scale, mask)
        if recording:  # what libllama's kq / kq_soft_max_ext tensors hold (F32, before any F16 step)
            scores_all[h0:h1] = kq[..., :s]
            probs_all[h0:h1] = p[..., :s]
        vt = vf[kv].transpose(0, 2, 1)  # [hb, d, S']
        if t == 1:  # one row: probabilities to F16, ggml_vec_dot_f16 over the keys
            out[h0:h1] = vec_dot_f16(p.astype(np.float16).astype(F32)[:, :, None, :], vt[:, None, :, :])
        else:  # tinyBLAS<8>: one 8-lane FMA accumulator per output, then the 8-lane float sum
            acc = np.zeros((h1 - h0, t, d, 8), F32)
            for i in range(0, sp, 8):
                acc = _fma(vt[:, None, :, i:i + 8], p[:, :, None, i:i + 8], acc)
            out[h0:h1] = _hsum8(acc)
    if recording:
        _record.tap("attn_scores", scores_all.transpose(1, 0, 2))
        _record.tap("attn_probs", probs_all.transpose(1, 0, 2))
    return out.transpose(1, 0, 2).reshape(t, h * d)
