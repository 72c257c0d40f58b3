"""Native CPU kernels (C, AVX2 with a scalar fallback, OpenMP over output rows) built with cffi
on first use through the project's one shim builder (bitnet.ffi, AC6), cached per source hash,
compiler and flags (`-march=native`: the cache is per machine).

`native_status()` says whether they built and why not; a missing compiler makes the dispatcher
fall back to NumPy, which receipts record (the kernel ids say `numpy`), and strict mode refuses.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from bitnet.errors import BridgeError

SOURCE = Path(__file__).with_name("kernels.c")
CDEF = """
void bn_set_force_scalar(int v);
int bn_has_avx2(void);
int bn_openmp(void);
void bn_quant_i8_s(const float *x, int64_t T, int64_t K, int8_t *q, float *s, int32_t *sums);
void bn_quant_q8k(const float *x, int64_t T, int64_t K, int8_t *q, float *d, int32_t *bsums);
int bn_gemm_i2s(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xs, const int32_t *xsum,
                int64_t T, float wscale, float *y, int threads);
int bn_gemm_tq2_q8k(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                    const int32_t *bsums, int64_t T, float *y, int threads);
int bn_gemm_tq1_q8k(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                    const int32_t *bsums, int64_t T, float *y, int threads);
int bn_gemm_f16(const uint16_t *w, int64_t rows, int64_t K, const float *x, int64_t T, float *y, int threads);
int bn_linear_i2s(const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T, float wscale,
                  float *y, int threads);
int bn_linear_tq_q8k(int tq1, const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T,
                     float *y, int threads);
"""
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-fast-math"]


@functools.cache
def _module():
    from bitnet.ffi import build_shim

    return build_shim("bitnet_native_kernels", SOURCE.read_text(), CDEF,
                      extra_compile_args=FLAGS, extra_link_args=["-fopenmp"])


def native_status() -> tuple[bool, str]:
    """(available, reason)."""
    try:
        m = _module()
    except BridgeError as e:
        return False, str(e)
    simd = "AVX2" if m.lib.bn_has_avx2() else "scalar"
    omp = "OpenMP" if m.lib.bn_openmp() else "single-threaded"
    return True, f"native kernels built ({simd}, {omp})"


def lib():
    return _module().lib


def ffi():
    return _module().ffi


def default_threads() -> int:
    v = os.environ.get("BITNET_THREADS")
    return int(v) if v else (os.cpu_count() or 1)
