"""Attention as ggml computes it on x86 AVX2+FMA+F16C, bit for bit: bitnet.cpp's llama.cpp fork and
upstream llama.cpp 0.3.36.

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

Upstream llama.cpp 0.3.36 (`build="llama.cpp"`; ggml-cpu at llama-cpp-python 0.3.36's vendored
llama.cpp 0c1e5709, built -O3 -march=native -std=gnu11/gnu++17 with GGML_LLAMAFILE, no AVX-512)
with the F32 KV cache our `llama.cpp` profile and the crossval worker use, no flash attention:

- the graph (src/llama-graph.cpp build_attn_mha): kq = mul_mat(k, q), soft_max_ext(kq, mask,
  1.0f/sqrtf(head_dim)) (src/models/bitnet.cpp), kqv = mul_mat(v, kq) with V stored transposed
  (v_trans without flash attention); n_kv is padded to a multiple of 256 (llama-kv-cache.cpp
  get_n_kv), the padding masked with -INF (F32 mask).
- Q.K (ggml-cpu.c ggml_compute_forward_mul_mat): src0 K is F32, so its vec_dot_type is F32 and
  q is never converted. llamafile_sgemm is tried only when src1 (q, a permuted view) is
  contiguous -- one token, or one head -- and refuses n < 2 (sgemm.cpp llamafile_sgemm), so
  every Q.K dot is `ggml_vec_dot_f32` (vec.cpp): four 8-lane FMA accumulators over blocks of
  32, reduced (a0+a2)+(a1+a3) (GGML_F32x8_REDUCE), then the 8 lanes by 128-bit halves and two
  horizontal adds into a float; elements past the last block of 32 added as `sumf += x*y`
  in float as gcc compiled it (objdump of the built libggml-cpu.so): the products 8 and then 4
  at a time (vmulps, rounded), added one by one in order; the last n % 4 as fused vfmadd231ss.
  Checked against libllama at head_dim 34, 40, 46 (tails) and 64, 128, 256 (none). With one
  head and 2+ tokens q is contiguous and tinyBLAS<8> takes Q.K, as P.V below.
- softmax (ops.cpp ggml_compute_forward_soft_max_f32, vec.cpp ggml_vec_soft_max_f32): the same
  arithmetic as the fork's (scale multiply, mask add, ggml_v_expf per 8 lanes, 8-lane float
  sums accumulated in double, times (float)(1.0/sum)).
- P.V: src1 (the probabilities) is contiguous: with 2+ rows tinyBLAS<8, __m256> takes F32 x F32
  when head_dim % 4 == 0 and n_kv % 8 == 0 (one 8-lane FMA accumulator per output over the
  keys, then hsum(__m256): the 8-lane float sum); with one row (n < 2) `ggml_vec_dot_f32` over
  the keys with F32 probabilities (no F16 step, unlike the fork).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
F64 = np.float64


def _H(hexfloat: str) -> np.float32:
    """A C hex-float constant as the float32 the C source means."""
    return F32(float.fromhex(hexfloat))


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fmaf on float32 arrays (see the module docstring); the loops below do the same with
    their inputs widened once and `acc[...] = x * y + acc` rounding on assignment."""
    return (a.astype(F64) * b.astype(F64) + c.astype(F64)).astype(F32)


def _hsum8(x: np.ndarray) -> np.ndarray:
    """The float sum of 8 lanes [..., 8] as AVX code reduces a __m256 with movehl/movehdup:
    x = hi + lo; ((x0 + x2) + (x1 + x3))."""
    h = (x[..., 4:] + x[..., :4]).astype(F32)
    return ((h[..., 0] + h[..., 2]) + (h[..., 1] + h[..., 3])).astype(F32)


def _vec_dot(x: np.ndarray, y: np.ndarray, tail: str) -> np.ndarray:
    """The GGML_SIMD AVX dot product over the last axis (x, y broadcast against each other):
    four 8-lane FMA accumulators over blocks of 32, reduced (a0+a2)+(a1+a3), the 8 lanes by
    128-bit halves and two horizontal adds. `tail`: how the elements past the last block of 32
    are added -- "double" (ggml_vec_dot_f16: float products summed in double) or "float"
    (ggml_vec_dot_f32's `sumf += x[i]*y[i]` as gcc compiled it in libggml-cpu.so: products in
    8- and then 4-lane vmulps, each added in order in float; the last (n % 4) as scalar FMAs)."""
    n = x.shape[-1]
    nb = n - n % 32
    shape = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    acc = np.zeros((*shape, 32), F32)  # accumulator j, lane l at 8 * j + l
    if nb:  # each input widened once; every FMA's double sum rounds to float on assignment
        xb = x[..., :nb].astype(F64).reshape(*x.shape[:-1], nb // 32, 32)
        yb = y[..., :nb].astype(F64).reshape(*y.shape[:-1], nb // 32, 32)
        for i in range(nb // 32):
            acc[...] = xb[..., i, :] * yb[..., i, :] + acc
    a = (acc[..., 0:8] + acc[..., 16:24]) + (acc[..., 8:16] + acc[..., 24:32])  # float32 adds
    t0 = a[..., :4] + a[..., 4:]  # _mm_add_ps(lo, hi)
    res = (t0[..., 0] + t0[..., 1]) + (t0[..., 2] + t0[..., 3])  # 2x hadd
    if tail == "float":
        plain = nb + (n - nb) // 4 * 4  # gcc vectorises the products 8 and then 4 at a time
        for i in range(nb, n):
            if i < plain:  # the product rounded to float, then added in order
                res = (res + (x[..., i] * y[..., i]).astype(F32)).astype(F32)
            else:  # the last (n % 4) elements: vfmadd231ss
                res = _fma(x[..., i], y[..., i], res)
        return res
    s = res.astype(F64)
    for i in range(nb, n):  # leftovers: float products summed in double
        s = s + (x[..., i] * y[..., i]).astype(F32).astype(F64)
    return s.astype(F32)


def vec_dot_f16(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f16 (GGML_SIMD, AVX): dot products over the last axis of F16-valued float32
    arrays (broadcast against each other), as float32."""
    return _vec_dot(x, y, "double")


def vec_dot_f32(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f32 (GGML_SIMD, AVX2+FMA; vec.cpp): dot products over the last axis of
    float32 arrays (broadcast against each other), as float32."""
    return _vec_dot(x, y, "float")


def tinyblas8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """llamafile's tinyBLAS<8, __m256> output C[j, i] = A[i] . B[j] for F32 (or F16 widened)
    rows: one 8-lane FMA accumulator per output, sequentially over the k axis in steps of 8,
    then hsum(__m256). a [..., M, K], b [..., N, K] (K a multiple of 8; leading axes broadcast);
    returns [..., N, M]. The tiling (RM x RN blocks, threads) changes no output's order."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    acc = np.zeros((*shape, b.shape[-2], a.shape[-2], 8), F32)
    a64, b64 = a.astype(F64), b.astype(F64)
    for i in range(0, a.shape[-1], 8):
        acc[...] = a64[..., None, :, i:i + 8] * b64[..., :, None, i:i + 8] + acc
    return _hsum8(acc)


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


#: the ggml builds this module reproduces (`attention(..., build=)`)
BUILDS = ("bitnet.cpp", "llama.cpp")


#: elements (float64) of the largest per-block product array attention() forms at once: heads
#: are batched up to this, so a decode step is a few array ops per layer, not per head
_BLOCK_ELEMS = 1 << 22


def scores(q: np.ndarray, k: np.ndarray, build: str = "bitnet.cpp") -> np.ndarray:
    """kq = mul_mat(k, q) as `build`'s ggml forms it, head by head: q [H, T, d] (already
    F16-valued for the fork), k [H, S, d] (each head's KV head); returns [H, T, S]."""
    return _scores(q, k, build, single_head=q.shape[0] == 1)


def _scores(q: np.ndarray, k: np.ndarray, build: str, single_head: bool) -> np.ndarray:
    t, d = q.shape[-2:]
    if build == "llama.cpp":
        if single_head and t >= 2 and d % 8 == 0:  # one head: q contiguous, tinyBLAS takes it
            return tinyblas8(k, q)
        return vec_dot_f32(q[..., :, None, :], k[..., None, :, :])
    return vec_dot_f16(q[..., :, None, :], k[..., None, :, :])


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int, build: str = "bitnet.cpp") -> np.ndarray:
    """softmax(q k^T / sqrt(d) + causal mask) v with grouped KV heads, ggml's way.

    q [T, H, d] float32 at positions pos0..; k, v [Hkv, S, d]: the cache (F16 values for
    `bitnet.cpp`, F32 for `llama.cpp`). Head h reads KV head h // (H / Hkv). `build`: whose
    ggml -- bitnet.cpp's fork (406a5036, F16 KV cache) or upstream llama.cpp 0.3.36 (F32 KV
    cache, no flash attention); see the module docstring. Returns [T, H*d].

    Every output element is computed on its own in ggml's order, so the heads sharing a KV
    head are batched together (rows [group, T]) and blocks of KV heads at a time: a decode step
    is a few array operations per layer, whatever the head count."""
    if build not in BUILDS:
        raise ValueError(f"unknown ggml build {build!r}; known: {', '.join(BUILDS)}")
    upstream = build == "llama.cpp"
    t, h, d = q.shape
    hkv, s, _ = k.shape
    group = h // hkv
    # the fork's n_kv is a multiple of 32, upstream's of 256 (get_n_kv); zero keys past 32 change
    # no sum (they add exact zeros to the same accumulators), so 32 stands for both
    sp = -(-s // 32) * 32
    kf = np.zeros((hkv, sp, d), F32)
    vt = np.zeros((hkv, d, sp), F32)  # V as the cache stores it without flash attention (v_trans)
    kf[:, :s] = k
    vt[:, :, :s] = v.transpose(0, 2, 1)
    qh = q.astype(F32).transpose(1, 0, 2).reshape(hkv, group * t, d)  # rows (head in group, token)
    if not upstream:
        qh = qh.astype(np.float16).astype(F32)  # q to the F16 cache's vec_dot_type
    mask = np.tile(np.arange(sp)[None, :] > (pos0 + np.arange(t))[:, None], (group, 1))  # [group*T, S']
    out = np.empty((hkv, group * t, d), F32)
    scale = float(F32(1.0) / np.sqrt(F32(d), dtype=F32))
    from bitnet.model import record as _record

    recording = _record._active is not None  # named intermediates (bitnet.model.record)
    if recording:
        scores_all = np.empty((hkv, group * t, s), F32)
        probs_all = np.empty((hkv, group * t, s), F32)
    rows = group * t
    step = max(1, min(hkv, _BLOCK_ELEMS // max(1, rows * sp * 32), _BLOCK_ELEMS // max(1, rows * d * 32)))
    for k0 in range(0, hkv, step):  # a block of KV heads at a time keeps the products small
        kv = slice(k0, min(hkv, k0 + step))
        kq = _scores(qh[kv], kf[kv], build, single_head=h == 1)  # [Hc, group*T, S']
        p = softmax(kq, scale, mask)
        if recording:  # what libllama's kq / kq_soft_max(_ext) tensors hold (F32, before any F16 step)
            scores_all[kv] = kq[..., :s]
            probs_all[kv] = p[..., :s]
        if upstream and (t == 1 or d % 4 != 0):
            # one row (tinyBLAS refuses n < 2), or tinyBLAS refusing m % 4 != 0: ggml_vec_dot_f32
            # per output over the keys, F32 probabilities
            out[kv] = vec_dot_f32(p[..., :, None, :], vt[kv][:, None, :, :])
        elif t == 1:  # the fork, one row: probabilities to F16, ggml_vec_dot_f16 over the keys
            out[kv] = vec_dot_f16(p.astype(np.float16).astype(F32)[..., :, None, :], vt[kv][:, None, :, :])
        else:  # tinyBLAS<8>: one 8-lane FMA accumulator per output, then the 8-lane float sum
            out[kv] = tinyblas8(vt[kv], p)
    if recording:
        _record.tap("attn_scores", scores_all.reshape(h, t, s).transpose(1, 0, 2))
        _record.tap("attn_probs", probs_all.reshape(h, t, s).transpose(1, 0, 2))
    return out.reshape(h, t, d).transpose(1, 0, 2).reshape(t, h * d)
