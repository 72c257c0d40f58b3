"""Registers the native kernels with the dispatcher (backend "native").

A native kernel takes the float activations, quantizes them in C with the profile's quantizer
(bit-identical to bitnet.quant.activations) and returns (y, kernel_id) where the id names the
variant that ran: `i2s_x86_avxvnni_gemv`, `i2s_x86_avx2_gemv`, `i2s_x86_scalar_gemv`, `tq2_0_avx2_gemv`, ... Pairs it
does not cover (other flavors and profiles) return None, and the dispatcher falls back to NumPy
outside strict mode.
"""

from __future__ import annotations

import numpy as np

from bitnet.errors import ConfigError
from bitnet.native import default_threads, ffi, lib, native_status, variant_name
from bitnet.quant import dispatch
from bitnet.quant.weights import PackedWeight

_ok, _why = native_status()
if not _ok:
    raise ImportError(f"native kernels unavailable: {_why}")

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


_FFI, _LIB = ffi(), lib()


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
    return y, f"i2s_x86_{_variant(v)}_{_op(t)}"


def _tq(tq1: int, tag: str):
    def kernel(x: np.ndarray, w: PackedWeight):
        t = x.shape[0]
        y = np.empty((t, w.out_features), np.float32)
        v = _LIB.bn_linear_tq_q8k(tq1, _wptr(w, "uint8_t *"), w.out_features, w.in_features,
                                  _FFI.cast("float *", x.ctypes.data), t, _FFI.cast("float *", y.ctypes.data), THREADS[0])
        return y, f"{tag}_{_variant(v)}_{_op(t)}"
    return kernel


def _f16(x: np.ndarray, w: PackedWeight):
    t = x.shape[0]
    y = np.empty((t, w.out_features), np.float32)
    v = _LIB.bn_gemm_f16(_wptr(w, "uint16_t *"), w.out_features, w.in_features, _FFI.cast("float *", x.ctypes.data),
                         t, _FFI.cast("float *", y.ctypes.data), THREADS[0])
    return y, f"f16_f32act_{_variant(v)}_{_op(t)}"


_TQ2, _TQ1 = _tq(0, "tq2_0"), _tq(1, "tq1_0")


def select(w: PackedWeight, act: str):
    if w.flavor == "i2_s" and w.layout == "x86" and act == "per-token-absmax":
        return _i2s
    if w.flavor == "tq2_0" and act == "q8_k-block256":
        return _TQ2
    if w.flavor == "tq1_0" and act == "q8_k-block256":
        return _TQ1
    if w.flavor == "f16" and act == "none":
        return _f16
    return None


dispatch.BACKENDS["native"] = select
limit_blas_threads()
