"""GEMV (T = 1) per BitNet-2B-4T projection shape: the native kernels vs an exact NumPy int path
vs a float32 BLAS GEMV, 1 and 2 threads, against the machine's memory bandwidth, and (when the
crossval reference build of llama.cpp is in the cache) ggml's own TQ2_0/TQ1_0 x Q8_K vec_dot.

Usage: PYTHONPATH=. python bench/bench_native.py [--calls 40] [--pool-mb 1024] [--json out.json]

Two regimes per kernel:
  hot  - the same weight every call (it stays in the cache hierarchy after the first call;
         this VM reports a 260 MiB L3, larger than every 2B-4T matrix);
  cold - each call takes the next of many copies of the weight laid out in a --pool-mb buffer
         (larger than the L3), so the packed bytes come from DRAM, as in a real decode step
         that streams 1.2 GB of weights per token.
GB/s = packed weight bytes / time per call (activations and outputs not counted).
Ceilings: a single-thread np.copyto of 1 GiB (reported as read+write GB/s and as read GB/s),
and a C streaming read (AVX2 loads, OpenMP) at 1 and 2 threads: the most a GEMV that reads
each weight byte once can reach.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitnet.kernels.native import native_matmul, native_status, reference  # noqa: E402

SHAPES = ((2560, 2560), (640, 2560), (6912, 2560), (2560, 6912))  # (out, in)
FORMATS = ("i2_s", "tq2_0", "tq1_0")
PROFILE = {"i2_s": "per-token-absmax", "tq2_0": "q8_k-block256", "tq1_0": "q8_k-block256"}
GGML_TYPE = {"tq1_0": 34, "tq2_0": 35}

STREAM_C = r"""
#include <stdint.h>
#include <immintrin.h>
/* sum of all bytes as 64-bit lanes: every byte is read once, nothing is written */
int64_t bn_stream(const uint8_t *p, int64_t n, int threads) {
    int64_t total = 0;
    #pragma omp parallel for num_threads(threads) reduction(+:total) schedule(static)
    for (int64_t c = 0; c < n / 4096; c++) {
        __m256i a = _mm256_setzero_si256();
        for (int i = 0; i < 4096; i += 128) {
            const __m256i *q = (const __m256i *) (p + c * 4096 + i);
            __m256i v = _mm256_xor_si256(_mm256_xor_si256(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1)),
                                         _mm256_xor_si256(_mm256_loadu_si256(q + 2), _mm256_loadu_si256(q + 3)));
            a = _mm256_add_epi64(a, _mm256_sad_epu8(v, _mm256_setzero_si256()));
        }
        total += _mm256_extract_epi64(a, 0) + _mm256_extract_epi64(a, 1) + _mm256_extract_epi64(a, 2) + _mm256_extract_epi64(a, 3);
    }
    return total;
}
"""

GGML_C = r"""
#include <stdint.h>
#include "ggml.h"
#include "ggml-cpu.h"
static int ready = 0;
size_t gg_row_size(int type, int64_t k) { return ggml_row_size((enum ggml_type) type, k); }
size_t gg_act_size(int type, int64_t k) {
    return ggml_row_size(ggml_get_type_traits_cpu((enum ggml_type) type)->vec_dot_type, k);
}
/* what ggml's mul_mat does for one token: quantize the activations to vec_dot_type (Q8_K),
 * then vec_dot per weight row; rows split over threads */
void gg_gemv(int type, const uint8_t *w, int64_t out, int64_t k, const float *x, float *y, int threads, uint8_t *xq) {
    if (!ready) { ggml_cpu_init(); ready = 1; }
    const struct ggml_type_traits_cpu *tr = ggml_get_type_traits_cpu((enum ggml_type) type);
    ggml_get_type_traits_cpu(tr->vec_dot_type)->from_float(x, xq, k);
    const size_t rs = ggml_row_size((enum ggml_type) type, k);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < out; r++) tr->vec_dot((int) k, y + r, 0, w + r * rs, 0, xq, 0, 1);
}
"""
GGML_CDEF = """
size_t gg_row_size(int type, int64_t k);
size_t gg_act_size(int type, int64_t k);
void gg_gemv(int type, const uint8_t *w, int64_t out, int64_t k, const float *x, float *y, int threads, uint8_t *xq);
"""


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


STAT = [statistics.median]


def per_call(fn, calls: int) -> float:
    """seconds of one call (median, or min with --stat min), after a warm-up call"""
    fn(0)
    ts = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i + 1)
        ts.append(time.perf_counter() - t0)
    return STAT[0](ts)


def packed(fmt: str, t: np.ndarray) -> np.ndarray:
    out, k = t.shape
    if fmt == "i2_s":
        from bitnet.quant import i2s

        return i2s.pack(t, 0.5)
    from bitnet.quant import tq

    return (tq.ternary_tq2_0 if fmt == "tq2_0" else tq.ternary_tq1_0)(t, 0.5)


class Pool:
    """copies of one packed tensor every `stride` bytes in a buffer larger than the L3"""

    def __init__(self, nbytes: int) -> None:
        self.buf = np.empty(nbytes, np.uint8)

    def fill(self, raw: np.ndarray) -> list[np.ndarray]:
        stride = (raw.size + 4095) // 4096 * 4096
        n = self.buf.size // stride
        v = self.buf[: n * stride].reshape(n, stride)
        v[:, : raw.size] = raw
        return [v[i, : raw.size] for i in range(n)]


def ceilings(pool_mb: int) -> dict:
    src = np.ones(1 << 30, np.uint8)
    dst = np.empty_like(src)
    t = min(_t(lambda: np.copyto(dst, src)) for _ in range(5))
    res = {"copy_rw_GBps": 2 * src.size / t / 1e9, "copy_read_GBps": src.size / t / 1e9}
    dst = None  # free the 1 GiB before the streaming test
    try:
        from bitnet.toolchain.ffi import build_shim

        m = build_shim("bitnet_bench_stream", STREAM_C, "int64_t bn_stream(const uint8_t *p, int64_t n, int threads);",
                       extra_compile_args=["-O3", "-mavx2", "-fopenmp"], extra_link_args=["-fopenmp"])
        p = m.ffi.from_buffer("uint8_t[]", src)
        for th in (1, 2):
            t = min(_t(lambda th=th: m.lib.bn_stream(p, src.size, th)) for _ in range(5))
            res[f"stream_read_{th}t_GBps"] = src.size / t / 1e9
    except Exception as e:  # no compiler: the copy figure stays
        res["stream_read_error"] = str(e)[:200]
    return res


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ggml_shim():
    from bitnet.files.cache import cache_dir
    from bitnet.toolchain.ffi import build_shim

    roots = sorted(cache_dir("reference").glob("llama.cpp-*/llama.cpp"))
    for root in reversed(roots):
        inc, lib = root / "ggml" / "include", root / "build" / "bin"
        if (inc / "ggml-cpu.h").is_file() and list(lib.glob("libggml-cpu.so*")):
            return build_shim("bitnet_bench_ggml", GGML_C, GGML_CDEF, system_include_dirs=[inc],
                              library_dirs=[lib], libraries=["ggml-cpu", "ggml-base"],
                              extra_compile_args=["-O2", "-fopenmp"], extra_link_args=["-fopenmp"]), root.parent.name
    return None, "no llama.cpp reference build in the cache (bitnet crossval builds one)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--pool-mb", type=int, default=1024)
    ap.add_argument("--json", help="write all rows to this file")
    ap.add_argument("--no-ggml", action="store_true")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="per-call statistic; min = best case on a shared, noisy machine")
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy int path")
    args = ap.parse_args()
    STAT[0] = min if args.stat == "min" else statistics.median
    ok, why = native_status()
    if not ok:
        sys.exit(f"native kernels unavailable: {why}")
    from threadpoolctl import threadpool_limits

    head = {"machine": machine(), "native": why, "loadavg_before": os.getloadavg()[0], "stat": args.stat, "python": platform.python_version(), "numpy": np.__version__,
            **ceilings(args.pool_mb)}
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in head.items()}))
    gg, gg_why = (None, "skipped") if args.no_ggml else ggml_shim()
    head["ggml"] = gg_why
    pool = Pool(args.pool_mb << 20)
    fpool = Pool(args.pool_mb << 20)
    rows = []
    rng = np.random.default_rng(0)
    for out, k in SHAPES:
        t = rng.integers(-1, 2, (out, k)).astype(np.int8)
        x = rng.standard_normal((1, k)).astype(np.float32)
        shape_rows = []
        for fmt in FORMATS:
            raw = packed(fmt, t)
            nbytes = {"i2_s": out * k // 4, "tq2_0": out * k // 256 * 66, "tq1_0": out * k // 256 * 54}[fmt]
            copies = pool.fill(raw)
            row = {"shape": f"{out}x{k}", "format": fmt, "packed_bytes": nbytes, "f32_bytes": out * k * 4}
            for th in (1, 2):
                for mode in ("hot", "cold"):
                    def call(i, th=th, mode=mode, raw=raw, copies=copies, fmt=fmt, x=x, out=out, k=k):
                        w = raw if mode == "hot" else copies[i % len(copies)]
                        return native_matmul(x, w, fmt, out, k, PROFILE[fmt], th)
                    sec = per_call(call, args.calls)
                    row[f"native_{mode}_{th}t_ms"] = sec * 1e3
                    row[f"native_{mode}_{th}t_GBps"] = nbytes / sec / 1e9
            row["kernel_id"] = call(0)[1]
            row["scaling_2t_over_1t_cold"] = row["native_cold_1t_ms"] / row["native_cold_2t_ms"]
            if "stream_read_2t_GBps" in head:
                row["cold_2t_of_stream_ceiling"] = row["native_cold_2t_GBps"] / head["stream_read_2t_GBps"]
            row["cold_2t_of_copy_read"] = row["native_cold_2t_GBps"] / head["copy_read_GBps"]
            if not args.no_numpy:
                sec = per_call(lambda i, raw=raw, fmt=fmt, x=x, out=out, k=k: reference.matmul(x, raw, fmt, out, k), 3)
                row["numpy_int_ms"] = sec * 1e3
                row["numpy_int_GBps"] = nbytes / sec / 1e9
            if gg is not None and fmt in GGML_TYPE:
                ty = GGML_TYPE[fmt]
                assert gg.lib.gg_row_size(ty, k) * out == nbytes
                xq = np.zeros(gg.lib.gg_act_size(ty, k), np.uint8)
                y = np.empty(out, np.float32)
                pw, px, py, pq = (gg.ffi.from_buffer("uint8_t[]", raw), gg.ffi.from_buffer("float[]", x),
                                  gg.ffi.from_buffer("float[]", y), gg.ffi.from_buffer("uint8_t[]", xq))
                pc = [gg.ffi.from_buffer("uint8_t[]", c) for c in copies]
                for th in (1, 2):
                    for mode in ("hot", "cold"):
                        def gcall(i, th=th, mode=mode, pw=pw, pc=pc, ty=ty, out=out, k=k, px=px, py=py, pq=pq):
                            gg.lib.gg_gemv(ty, pw if mode == "hot" else pc[i % len(pc)], out, k, px, py, th, pq)
                        sec = per_call(gcall, args.calls)
                        row[f"ggml_{mode}_{th}t_ms"] = sec * 1e3
                gcall(0, 2, "hot")
                ours = native_matmul(x, raw, fmt, out, k, PROFILE[fmt])[0][0]
                row["ggml_max_rel_diff"] = float(np.max(np.abs(ours - y)) / max(np.max(np.abs(y)), 1e-30))
                row["native_vs_ggml_cold_2t"] = row["ggml_cold_2t_ms"] / row["native_cold_2t_ms"]  # >1: ours faster
                row["native_vs_ggml_cold_1t"] = row["ggml_cold_1t_ms"] / row["native_cold_1t_ms"]
            shape_rows.append(row)
        # float32 BLAS GEMV last: OpenBLAS's worker threads keep spinning for a while after a
        # call and would steal the second core from the OpenMP threads measured above
        # float32 BLAS GEMV, hot and cold
        wf = (t.astype(np.float32) * 0.5)
        fcopies = [c.view(np.float32).reshape(out, k) for c in fpool.fill(wf.view(np.uint8).reshape(-1))]
        blas = {}
        for th in (1, 2):
            with threadpool_limits(limits=th, user_api="blas"):
                blas[f"hot_{th}t"] = per_call(lambda i, wf=wf, x=x: wf @ x[0], args.calls)
                blas[f"cold_{th}t"] = per_call(lambda i, fc=fcopies, x=x: fc[i % len(fc)] @ x[0], args.calls)
        del fcopies
        time.sleep(1.0)
        for row in shape_rows:
            for th in (1, 2):
                row[f"blas_f32_cold_{th}t_ms"] = blas[f"cold_{th}t"] * 1e3
                row[f"blas_f32_hot_{th}t_ms"] = blas[f"hot_{th}t"] * 1e3
            row["native_vs_blas_cold_1t"] = row["blas_f32_cold_1t_ms"] / row["native_cold_1t_ms"]  # speed-up
            row["native_vs_blas_cold_2t"] = row["blas_f32_cold_2t_ms"] / row["native_cold_2t_ms"]
            rows.append(row)
            print(json.dumps({a: (float(f"{b:.4g}") if isinstance(b, float) else b) for a, b in row.items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"head": head, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
