"""GEMV per 2B-4T shape: NumPy reference kernels on packed weights vs a cached int8 copy vs a
float32 BLAS GEMV, and the native kernels when they build.

Usage: python bench/bench_gemv.py [--repeat 3]
Prints one JSON line per (shape, format): ms per call, GB/s of packed weight read, ratio to
float32 BLAS.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bitnet.quant import dispatch, i2s, tq
from bitnet.quant.weights import PackedWeight

SHAPES = ((2560, 2560), (640, 2560), (6912, 2560), (2560, 6912))  # (out, in)


def timed(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def weight(fmt: str, t: np.ndarray) -> tuple[PackedWeight, str]:
    out, k = t.shape
    if fmt == "i2_s":
        raw = i2s.pack(t, 0.5)
        return PackedWeight("w", "i2_s", out, k, raw[: out * k // 4], scale=0.5), "per-token-absmax"
    enc = tq.ternary_tq2_0 if fmt == "tq2_0" else tq.ternary_tq1_0
    return PackedWeight("w", fmt, out, k, enc(t, 0.5)), "q8_k-block256"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    try:
        import bitnet.native.backend  # noqa: F401

        native = True
    except ImportError:
        native = False
    rng = np.random.default_rng(0)
    for out, k in SHAPES:
        t = rng.integers(-1, 2, (out, k)).astype(np.int8)
        x = rng.standard_normal((1, k)).astype(np.float32)
        wf = t.astype(np.float32) * 0.5
        blas = timed(lambda wf=wf, x=x: wf @ x[0], args.repeat * 5)
        for fmt in ("i2_s", "tq2_0", "tq1_0"):
            w, prof = weight(fmt, t)
            row = {"shape": f"{out}x{k}", "format": fmt, "packed_bytes": w.nbytes, "f32_blas_ms": blas * 1e3}
            dispatch.set_backend("numpy")
            d = timed(lambda w=w, x=x, prof=prof: dispatch.matmul(x, w, prof), args.repeat)
            row.update(numpy_packed_ms=d * 1e3, numpy_packed_GBps=w.nbytes / d / 1e9, numpy_vs_blas=d / blas)
            if native:
                dispatch.set_backend("native")
                d = timed(lambda w=w, x=x, prof=prof: dispatch.matmul(x, w, prof), args.repeat * 20)
                row.update(native_ms=d * 1e3, native_GBps=w.nbytes / d / 1e9, native_vs_blas=d / blas)
            dispatch.set_backend("numpy")
            w.cache_int8()
            d = timed(lambda w=w, x=x, prof=prof: dispatch.matmul(x, w, prof), args.repeat)
            row.update(numpy_int8_cache_ms=d * 1e3, numpy_int8_cache_bytes=int(w.int8_cache.nbytes))
            print(json.dumps({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in row.items()}))


if __name__ == "__main__":
    main()
