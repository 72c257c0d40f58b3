"""GEMV per 2B-4T shape: NumPy reference kernels on packed weights vs a cached int8 copy vs a
float32 BLAS GEMV, and the native kernels when they build.

Usage: python bench/bench_gemv.py [--repeat 3] [--formats i2_s,tq2_0,...]
Prints the machine (lscpu model name, cores, NumPy's BLAS) then one JSON line per
(shape, format): ms per call, GB/s of packed weight read, ratio to a float32 BLAS GEMV of the
same shape, the same for the cached-int8 path, and the peak Python-heap memory (tracemalloc)
of one call on each path. A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import tracemalloc

import numpy as np

from bitnet.kernels import dispatch
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.quant.encoders import FORMATS
from bitnet.quant.weights import PackedWeight

SHAPES = ((2560, 2560), (640, 2560), (6912, 2560), (2560, 6912))  # (out, in)
#: format -> (PackedWeight flavor, I2_S layout, activation profile of its engine)
FLAVORS = {
    "i2_s": ("i2_s", "x86", "per-token-absmax"),
    "i2_s_arm": ("i2_s", "arm", "per-token-absmax"),
    "tq2_0": ("tq2_0", "x86", "q8_k-block256"),
    "tq1_0": ("tq1_0", "x86", "q8_k-block256"),
    "bitnet32": ("bitnet32", "x86", "per-token-absmax"),
    "qk256": ("qk256", "x86", "per-token-absmax"),
}


def machine() -> dict:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor()
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {}).get("name", "?")
    return {"cpu": model, "cores": os.cpu_count(), "numpy": np.__version__, "blas": blas}


def timed(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def weight(fmt: str, t: np.ndarray) -> tuple[PackedWeight, str]:
    out, k = t.shape
    flavor, layout, prof = FLAVORS[fmt]
    wf = FORMATS[fmt]
    raw = wf.encode(t, 0.5 if wf.holds_scale else 1.0)
    if flavor == "i2_s":
        return PackedWeight("w", flavor, out, k, raw[: out * k // 4], scale=0.5, layout=layout), prof
    return PackedWeight("w", flavor, out, k, raw), prof


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--formats", default=",".join(FLAVORS))
    args = ap.parse_args()
    from bitnet.kernels.backends import status

    native = status("native")[0]
    print(json.dumps({"machine": machine(), "native_backend": native}))
    rng = np.random.default_rng(0)
    for out, k in SHAPES:
        t = rng.integers(-1, 2, (out, k)).astype(np.int8)
        x = rng.standard_normal((1, k)).astype(np.float32)
        wf = t.astype(np.float32) * 0.5
        blas = timed(lambda wf=wf, x=x: wf @ x[0], args.repeat * 5)
        for fmt in args.formats.split(","):
            w, prof = weight(fmt, t)
            row = {"shape": f"{out}x{k}", "format": fmt, "packed_bytes": w.nbytes, "f32_blas_ms": blas * 1e3,
                   "f32_bytes": out * k * 4}
            dispatch.set_backend("numpy")
            call = lambda w=w, x=x, prof=prof: dispatch.matmul(x, w, prof)  # noqa: E731
            d = timed(call, args.repeat)
            row.update(numpy_packed_ms=d * 1e3, numpy_packed_GBps=w.nbytes / d / 1e9, numpy_vs_blas=d / blas,
                       numpy_packed_peak_bytes=peak_bytes(call))
            if native:
                dispatch.set_backend("native")
                try:
                    KERNEL_LOG.reset()
                    d = timed(call, args.repeat * 20)
                    # what actually ran: a format without a native kernel falls back to NumPy
                    ran = sorted(r.id for r in KERNEL_LOG.snapshot())
                    row.update(native_ms=d * 1e3, native_GBps=w.nbytes / d / 1e9, native_vs_blas=d / blas,
                               native_kernel=",".join(ran))
                except Exception as e:  # a format the native backend lacks: say so, keep going
                    row.update(native_error=type(e).__name__)
                dispatch.set_backend("numpy")
            w.cache_int8()
            d = timed(call, args.repeat)
            row.update(numpy_int8_cache_ms=d * 1e3, numpy_int8_cache_bytes=int(w.int8_cache.nbytes),
                       numpy_int8_cache_vs_blas=d / blas, numpy_int8_cache_peak_bytes=peak_bytes(call))
            print(json.dumps({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
