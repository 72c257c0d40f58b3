"""The non-matmul operations of the forward pass, each matching ggml's CPU arithmetic where a
profile asks for it (RMSNorm as ggml sums it, iterative float rope angles through libm's
cosf/sinf, rope rotations as gcc contracts them into FMAs, SiLU through ggml_v_expf, and with
`ggml=True` the whole attention of bitnet.model.ggml_attention)."""

from __future__ import annotations

import numpy as np

from bitnet.model import record as _record


def rms_norm_ggml_sum(x: np.ndarray) -> np.ndarray:
    """sum(x^2) over the last axis [..., 1] as ggml_compute_forward_rms_norm_f32 forms it (both
    upstream 0.3.36's ggml-cpu/ops.cpp and bitnet.cpp's fork, ggml/src/ggml.c): each square
    rounded to float, then `sum += (ggml_float)(x*x)` in double from 0.0, left to right. NumPy's
    .sum is pairwise (8 lanes per block), a different rounding; np.add.accumulate is the
    sequential loop, so its last column is ggml's sum bit for bit (0.0 + s0 == s0: no square is
    -0.0)."""
    sq = np.square(np.asarray(x, np.float32)).astype(np.float64)
    if sq.shape[-1] == 0:
        return np.zeros((*sq.shape[:-1], 1))
    return np.add.accumulate(sq, axis=-1)[..., -1:]


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, ggml: bool = False) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w, the mean summed in double and the scale formed in float.
    `ggml=False` (the reference profile): squares and mean in double, NumPy's pairwise sum.
    `ggml=True` (profile knob rms_ggml): ggml_compute_forward_rms_norm_f32's arithmetic --
    squares in float, summed in double in order, mean to float, + eps in float, (x*scale)*w."""
    if ggml:  # profile knob rms_ggml: ggml's own arithmetic, bit for bit (rms_norm_ggml_sum)
        x = np.asarray(x, np.float32)
        mean = (rms_norm_ggml_sum(x) / x.shape[-1]).astype(np.float32)
        scale = (np.float32(1.0) / np.sqrt((mean + np.float32(eps)).astype(np.float32))).astype(np.float32)
        return ((x * scale).astype(np.float32) * w).astype(np.float32)
    mean = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    scale = (1.0 / np.sqrt((mean + eps).astype(np.float32))).astype(np.float32)
    return (x * scale * w).astype(np.float32)


def _libm_f(name: str):
    import ctypes
    import ctypes.util

    f = getattr(ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6"), name)
    f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.frompyfunc(lambda t: f(float(t)), 1, 1)


_LIBM: dict[str, np.ufunc] = {}


def libm(name: str, x: np.ndarray) -> np.ndarray:
    """The C library's float function (cosf, sinf) on every element: what ggml's rope cache
    calls. numpy's float32 cos/sin and a correctly rounded double cos both differ from glibc's
    in the last bit now and then (measured: ~10 of 2304 angles)."""
    if name not in _LIBM:
        _LIBM[name] = _libm_f(name)
    x = np.asarray(x, np.float32)
    return np.asarray(_LIBM[name](x), np.float32).reshape(x.shape)


def rope_angles(positions: np.ndarray, head_dim: int, theta: float, iterative_f32: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of shape [T, head_dim/2] for NEOX rope.

    ggml builds the angles as pos * s^i with s = powf(base, -2/n_dims), multiplying by s once
    per pair in float; the exact form is pos * base^(-2i/n_dims)."""
    half = head_dim // 2
    pos = positions.astype(np.float32)
    if iterative_f32:
        s = np.float32(np.power(np.float32(theta), np.float32(-2.0) / np.float32(head_dim), dtype=np.float32))
        ang = np.empty((len(pos), half), np.float32)
        cur = pos.copy()
        for i in range(half):  # the loop is over head_dim/2 scalars per position, not weights
            ang[:, i] = cur
            cur = (cur * s).astype(np.float32)
        if iterative_f32 == "libm":  # bitnet.cpp profiles: the C library's cosf/sinf, as ggml calls them
            return libm("cosf", ang), libm("sinf", ang)
        return np.cos(ang), np.sin(ang)
    inv = np.power(float(theta), -np.arange(half, dtype=np.float64) * 2.0 / head_dim)
    ang64 = positions.astype(np.float64)[:, None] * inv[None, :]
    return np.cos(ang64).astype(np.float32), np.sin(ang64).astype(np.float32)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fmaf(a, b, c) on float32 arrays (the double product is exact, the sum rounds once)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, fma: bool = False) -> np.ndarray:
    """Rotate pairs (i, i + head_dim/2) of x [T, heads, head_dim] (rotate_half / GGML NEOX).
    ggml writes `x0*cos - x1*sin` and `x0*sin + x1*cos`; gcc (GNU C, -march=native, FMA)
    contracts each into fmaf(x0, cos|sin, -(x1*sin) | x1*cos): measured bit-exact against
    bitnet.cpp's rope on every element, where the plain float form missed 1 in 4."""
    half = x.shape[-1] // 2
    x0, x1 = np.asarray(x[..., :half], np.float32), np.asarray(x[..., half:], np.float32)
    c, s = cos[:, None, :].astype(np.float32), sin[:, None, :].astype(np.float32)
    if not fma:  # `fma` (bitnet.cpp profiles): the contracted form below
        return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1).astype(np.float32)
    return np.concatenate([_fma(x0, c, -(x1 * s).astype(np.float32)), _fma(x0, s, (x1 * c).astype(np.float32))],
                          axis=-1).astype(np.float32)


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int, *,
                     q_f16: bool = False, probs_f16: bool = False, ggml: bool | str = False) -> np.ndarray:
    """softmax(q k^T / sqrt(d) + causal mask) v with grouped KV heads.

    q [T, H, d] at absolute positions pos0..pos0+T-1; k, v [Hkv, S, d] for positions 0..S-1.
    Head h reads KV head h // (H / Hkv), as ggml's broadcasting mul_mat does. Returns [T, H*d].
    `ggml`: bit for bit as a ggml build computes it (bitnet.model.ggml_attention): True or
    "bitnet.cpp" for the fork (it rounds q, and with one row the probabilities, to F16 itself),
    "llama.cpp" for upstream 0.3.36 (F32 throughout; `q_f16` still rounds q first, as a profile
    asking for it would).
    """
    if ggml:
        from bitnet.model.ggml_attention import attention

        build = "bitnet.cpp" if ggml is True else str(ggml)
        if build == "llama.cpp" and q_f16:
            q = np.asarray(q, np.float32).astype(np.float16).astype(np.float32)
        return attention(q, k, v, pos0, build)
    t, h, d = q.shape
    hkv, s, _ = k.shape
    group = h // hkv
    qh = q.transpose(1, 0, 2)  # [H, T, d]
    if q_f16:
        qh = qh.astype(np.float16).astype(np.float32)
    qg = qh.reshape(hkv, group * t, d)
    kf = k.astype(np.float32)
    raw = qg @ kf.transpose(0, 2, 1)  # [Hkv, group*T, S]
    if _record._active is not None:  # named intermediates (bitnet.model.record): only when recording
        _record.tap("attn_scores", raw.reshape(h, t, s).transpose(1, 0, 2))
    scores = raw.reshape(hkv, group, t, s) / np.float32(np.sqrt(d))
    mask = np.arange(s)[None, :] > (pos0 + np.arange(t))[:, None]  # [T, S]
    scores = np.where(mask, -np.inf, scores).astype(np.float32)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    if probs_f16:
        p = p.astype(np.float16).astype(np.float32)
    if _record._active is not None:
        _record.tap("attn_probs", p.reshape(h, t, s).transpose(1, 0, 2))
    out = p.reshape(hkv, group * t, s) @ v.astype(np.float32)  # [Hkv, group*T, d]
    return out.reshape(h, t, d).transpose(1, 0, 2).reshape(t, h * d).astype(np.float32)


def relu2(x: np.ndarray) -> np.ndarray:
    r = np.maximum(x, 0)
    return (r * r).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x))).astype(np.float32)


def silu_ggml(x: np.ndarray, expf=None) -> np.ndarray:
    """ggml_vec_silu_f32 on AVX2: x / (1 + ggml_v_expf(-x)) per 8 lanes, libm's expf for a tail.
    `expf`: another implementation of ggml_v_expf with the same bits (the native backend passes
    its C one, bitnet.kernels.native.backend.v_expf: ~12x faster on an FFN row)."""
    from bitnet.model.ggml_attention import v_expf as _v_expf

    v_expf = expf or _v_expf
    x = np.asarray(x, np.float32)
    n = x.shape[-1]
    nb = n - n % 8
    e = np.empty_like(x)
    e[..., :nb] = v_expf(-x[..., :nb])
    if nb < n:
        e[..., nb:] = libm("expf", -x[..., nb:])
    return (x / (np.float32(1.0) + e).astype(np.float32)).astype(np.float32)


FFN_ACT = {"relu2": relu2, "silu": silu}
#: the bitnet.cpp profiles' activations (`attn_ggml`): SiLU as the fork's AVX2 ggml computes it
FFN_ACT_GGML = {"relu2": relu2, "silu": silu_ggml}
