"""Registers the native kernels with the dispatcher (backend "native").

A native kernel takes the float activations, quantizes them in C with the profile's quantizer
(bit-identical to bitnet.quant.activations) and returns (y, kernel_id) where the id names the
variant that ran: `i2s_x86_avx2_gemv`, `i2s_x86_scalar_gemv`, `tq2_0_avx2_gemv`, ... Pairs it
does not cover (other flavors and profiles) return None, and the dispatcher falls back to NumPy
outside strict mode.
"""

from __future__ import annotations

import numpy as np

from bitnet.errors import ConfigError
from bitnet.native import default_threads, ffi, lib, native_status
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


def _variant(v: int) -> str:
    return "avx2" if v == 1 else "scalar"


def _i2s(x: np.ndarray, w: PackedWeight):
    q, s, sums = quant_i8_s(x)
    y = np.empty((x.shape[0], w.out_features), np.float32)
    raw = np.ascontiguousarray(w.raw)
    v = lib().bn_gemm_i2s(_p(raw, "uint8_t *"), w.out_features, w.in_features, _p(q, "int8_t *"), _p(s, "float *"),
                          _p(sums, "int32_t *"), x.shape[0], float(np.float32(w.scale)), _p(y, "float *"), THREADS[0])
    return y, f"i2s_x86_{_variant(v)}_{'gemv' if x.shape[0] == 1 else 'gemm'}"


def _tq(fn_name: str, tag: str):
    def kernel(x: np.ndarray, w: PackedWeight):
        q, d, bs = quant_q8k(x)
        y = np.empty((x.shape[0], w.out_features), np.float32)
        raw = np.ascontiguousarray(w.raw)
        v = getattr(lib(), fn_name)(_p(raw, "uint8_t *"), w.out_features, w.in_features, _p(q, "int8_t *"),
                                    _p(d, "float *"), _p(bs, "int32_t *"), x.shape[0], _p(y, "float *"), THREADS[0])
        return y, f"{tag}_{_variant(v)}_{'gemv' if x.shape[0] == 1 else 'gemm'}"
    return kernel


def _f16(x: np.ndarray, w: PackedWeight):
    y = np.empty((x.shape[0], w.out_features), np.float32)
    raw = np.ascontiguousarray(w.raw).view(np.uint16)
    v = lib().bn_gemm_f16(_p(raw, "uint16_t *"), w.out_features, w.in_features, _p(x, "float *"), x.shape[0],
                          _p(y, "float *"), THREADS[0])
    return y, f"f16_f32act_{_variant(v)}_{'gemv' if x.shape[0] == 1 else 'gemm'}"


def select(w: PackedWeight, act: str):
    if w.flavor == "i2_s" and w.layout == "x86" and act == "per-token-absmax":
        return _i2s
    if w.flavor == "tq2_0" and act == "q8_k-block256":
        return _tq("bn_gemm_tq2_q8k", "tq2_0")
    if w.flavor == "tq1_0" and act == "q8_k-block256":
        return _tq("bn_gemm_tq1_q8k", "tq1_0")
    if w.flavor == "f16" and act == "none":
        return _f16
    return None


dispatch.BACKENDS["native"] = select
limit_blas_threads()
