"""The native backend (row "native" of bitnet.kernels.backends): status, activate, select.

A native kernel takes the float activations, quantizes them in C with the profile's quantizer
(bit-identical to bitnet.kernels.activations) and returns (y, kernel_id) where the id names the
variant that ran: `i2s_x86_avxvnni_gemv`, `i2s_x86_avx2_gemv`, `i2s_x86_scalar_gemv`, `tq2_0_avx2_gemv`, ... Pairs it
does not cover (other flavors and profiles) return None, and the dispatcher falls back to NumPy
outside strict mode.

Importing this module does nothing: `activate()` (called when a run selects the backend) builds
the kernels and caps BLAS threads (see limit_blas_threads).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bitnet.errors import ConfigError
from bitnet.kernels.ids import KernelId
from bitnet.kernels.native import default_threads, ffi, lib, native_status, variant_name
from bitnet.quant.weights import PackedWeight

THREADS: list[int] = [default_threads()]


def limit_blas_threads() -> None:
    """With the native backend the heavy math runs in our OpenMP threads; OpenBLAS's own
    threads (busy-waiting after each small attention matmul) would compete with them for the
    same cores. threadpoolctl finds the BLAS NumPy links and caps it at one thread."""
    from threadpoolctl import threadpool_limits

    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")


_BLAS_LIMIT = None


def set_threads(n: int) -> None:
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    THREADS[0] = n


def _p(a: np.ndarray, ctype: str):
    return ffi().cast(ctype, a.ctypes.data)


def quant_i8_s(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, k = x.shape
    q, s, sums = np.empty((t, k), np.int8), np.empty(t, np.float32), np.empty(t, np.int32)
    lib().bn_quant_i8_s(_p(x, "float *"), t, k, _p(q, "int8_t *"), _p(s, "float *"), _p(sums, "int32_t *"))
    return q, s, sums


def quant_q8k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, k = x.shape
    q, d, bs = np.empty((t, k), np.int8), np.empty((t, k // 256), np.float32), np.empty((t, k // 16), np.int32)
    lib().bn_quant_q8k(_p(x, "float *"), t, k, _p(q, "int8_t *"), _p(d, "float *"), _p(bs, "int32_t *"))
    return q, d, bs


_variant = variant_name

_FFI: Any = None  # set by activate()
_LIB: Any = None


def status() -> tuple[bool, str]:
    return native_status()


def activate() -> None:
    """Build (or load) the kernels and cap BLAS threads; idempotent."""
    global _FFI, _LIB
    if _LIB is None:
        _FFI, _LIB = ffi(), lib()
        limit_blas_threads()


def _wptr(w: PackedWeight, ctype: str):
    """The weight's C pointer, made once per tensor (the mmap view does not move)."""
    p = w.__dict__.get("_native_ptr")
    if p is None:
        raw = np.ascontiguousarray(w.raw)
        p = (_FFI.cast(ctype, raw.ctypes.data), raw)  # keep raw alive with the pointer
        w.__dict__["_native_ptr"] = p
    return p[0]


def _op(t: int) -> str:
    return "gemv" if t == 1 else "gemm"


def _i2s(x: np.ndarray, w: PackedWeight):
    t = x.shape[0]
    y = np.empty((t, w.out_features), np.float32)
    v = _LIB.bn_linear_i2s(_wptr(w, "uint8_t *"), w.out_features, w.in_features, _FFI.cast("float *", x.ctypes.data),
                           t, float(np.float32(w.scale)), _FFI.cast("float *", y.ctypes.data), THREADS[0])
    return y, KernelId("i2s_x86", "", _op(t), "native", _variant(v))


def _tq(tq1: int, tag: str):
    def kernel(x: np.ndarray, w: PackedWeight):
        t = x.shape[0]
        y = np.empty((t, w.out_features), np.float32)
        v = _LIB.bn_linear_tq_q8k(tq1, _wptr(w, "uint8_t *"), w.out_features, w.in_features,
                                  _FFI.cast("float *", x.ctypes.data), t, _FFI.cast("float *", y.ctypes.data), THREADS[0])
        return y, KernelId(tag, "", _op(t), "native", _variant(v))
    return kernel


def _f16(x: np.ndarray, w: PackedWeight):
    t = x.shape[0]
    y = np.empty((t, w.out_features), np.float32)
    v = _LIB.bn_gemm_f16(_wptr(w, "uint16_t *"), w.out_features, w.in_features, _FFI.cast("float *", x.ctypes.data),
                         t, _FFI.cast("float *", y.ctypes.data), THREADS[0])
    return y, KernelId("f16", "f32act", _op(t), "native", _variant(v))


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, ggml: bool = False) -> np.ndarray:
    """bitnet.model.ops.rms_norm in C, bit for bit (NumPy's pairwise float64 sum, then the same
    float steps; with `ggml`, ggml's float squares summed in order, bn_rms_norm_ggml): one call
    instead of the ~10 NumPy passes and temporaries per row."""
    x = np.ascontiguousarray(x, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    t, d = x.reshape(-1, x.shape[-1]).shape
    y = np.empty_like(x)
    if ggml:
        _LIB.bn_rms_norm_ggml(_FFI.cast("float *", x.ctypes.data), t, d, _FFI.cast("float *", w.ctypes.data),
                              float(np.float32(eps)), _FFI.cast("float *", y.ctypes.data))
        return y
    if _LIB.bn_rms_norm(_FFI.cast("float *", x.ctypes.data), t, d, _FFI.cast("float *", w.ctypes.data), float(eps),
                        _FFI.cast("float *", y.ctypes.data)):
        raise MemoryError("native rms_norm could not allocate its row buffer")
    return y


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """bitnet.model.ops.rope_neox in C (x [T, H, hd], cos/sin [T, hd/2]), bit for bit."""
    x, cos, sin = _f32(x), _f32(cos), _f32(sin)
    t, h, hd = x.shape
    y = np.empty_like(x)
    _LIB.bn_rope_neox(_FFI.cast("float *", x.ctypes.data), t, h, hd, _FFI.cast("float *", cos.ctypes.data),
                      _FFI.cast("float *", sin.ctypes.data), _FFI.cast("float *", y.ctypes.data))
    return y


def relu2_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """relu(gate)^2 * up (bitnet.model.ops.relu2, then the product) in C, bit for bit."""
    gate, up = _f32(gate), _f32(up)
    y = np.empty_like(gate)
    _LIB.bn_relu2_mul(_FFI.cast("float *", gate.ctypes.data), _FFI.cast("float *", up.ctypes.data), gate.size,
                      _FFI.cast("float *", y.ctypes.data))
    return y


def _kv_rows(a: np.ndarray) -> np.ndarray:
    """A cache view [Hkv, S, d] whose rows are contiguous (the cache's own views are: the
    head stride is the capacity), else a contiguous copy."""
    it = a.itemsize
    if a.strides[2] == it and a.strides[1] == a.shape[2] * it and a.strides[0] % it == 0 and a.strides[0] > 0:
        return a
    return np.ascontiguousarray(a)


def attention_ggml(q: np.ndarray, K: np.ndarray, V: np.ndarray, pos0: int, *, build: str = "bitnet.cpp",
                   taps: bool = False, variant: str = "auto"
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """bitnet.model.ggml_attention.attention(q, K, V, pos0, build) in C, bit for bit
    (attention.c): q [T, H, d] f32, K, V [Hkv, S, d] F16 or F32 (the cache's views, read in
    place). `build`: "bitnet.cpp" (the fork: q rounded to F16, one row's probabilities too) or
    "llama.cpp" (upstream 0.3.36: q as given, F32 dots with their float tail). Returns (out
    [T, H*d], scores, probs) with scores/probs [T, H, S] (the recording taps) when `taps`, else
    None. `variant` "scalar" forces the portable C (tests), "auto" the best compiled in (after
    the environment's cap, read when the kernels were built)."""
    if build not in ("bitnet.cpp", "llama.cpp"):
        raise ConfigError(f"attention: unknown ggml build {build!r}; known: bitnet.cpp, llama.cpp")
    q = _f32(q)
    t, h, d = q.shape
    hkv, s, dk = K.shape
    if V.shape != K.shape or V.dtype != K.dtype or dk != d or h % hkv or K.dtype not in (np.float16, np.float32):
        raise ConfigError(f"attention: q {q.shape}, K {K.shape} {K.dtype}, V {V.shape} {V.dtype} do not fit")
    K, V = _kv_rows(K), _kv_rows(V)
    if K.strides != V.strides:
        K, V = np.ascontiguousarray(K), np.ascontiguousarray(V)
    out = np.empty((t, h * d), np.float32)
    scores = np.empty((h, t, s), np.float32) if taps else None
    probs = np.empty((h, t, s), np.float32) if taps else None
    null = _FFI.NULL
    v = _LIB.bn_attn_ggml(_FFI.cast("float *", q.ctypes.data), t, h, d, _FFI.cast("void *", K.ctypes.data),
                          _FFI.cast("void *", V.ctypes.data), hkv, s, K.strides[0] // K.itemsize,
                          int(K.dtype == np.float16), int(pos0), float(np.float32(1.0) / np.sqrt(np.float32(d))),
                          int(build == "bitnet.cpp"), int(build == "llama.cpp"), _FFI.cast("float *", out.ctypes.data),
                          null if scores is None else _FFI.cast("float *", scores.ctypes.data),
                          null if probs is None else _FFI.cast("float *", probs.ctypes.data),
                          THREADS[0], 1 if variant == "scalar" else -1)  # -1: the dispatcher's cap
    variant_name(v)  # MemoryError when the C side could not allocate
    if scores is not None and probs is not None:  # taps asked for
        return out, scores.transpose(1, 0, 2), probs.transpose(1, 0, 2)
    return out, None, None


def v_expf(x: np.ndarray, variant: str = "auto") -> np.ndarray:
    """bitnet.model.ggml_attention.v_expf in C (ggml's AVX2 exp, lane by lane), bit for bit;
    `variant` "scalar" forces the portable lanes."""
    x = _f32(x)
    y = np.empty_like(x)
    _LIB.bn_v_expf(_FFI.cast("float *", x.ctypes.data), x.size, _FFI.cast("float *", y.ctypes.data),
                   1 if variant == "scalar" else -1)
    return y


_TQ2, _TQ1 = _tq(0, "tq2_0"), _tq(1, "tq1_0")


#: (format tag, activation profile) -> native kernel; the tag is the format's kernel-id word
#: (`Format.tag`: I2_S adds its layout, and only the x86 layout has a C kernel)
KERNELS = {
    ("i2s_x86", "per-token-absmax"): _i2s,
    ("tq2_0", "q8_k-block256"): _TQ2,
    ("tq1_0", "q8_k-block256"): _TQ1,
    ("f16", "none"): _f16,
}


def select(w: PackedWeight, act: str):
    return KERNELS.get((w.format.tag(w), act))

