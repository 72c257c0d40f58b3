"""GEMM (T tokens at once, as in prefill) per BitNet-2B-4T projection shape on the native
kernels, next to T single-token GEMVs on the same weight: what decoding each block's codes once
per group of tokens saves.

Usage: PYTHONPATH=. python bench/bench_gemm.py [--tokens 16] [--calls 20] [--formats tq2_0,tq1_0,i2_s]
Prints one JSON line per (shape, format): ms per GEMM call (cold: weights rotated through a
1 GiB pool so they come from DRAM; hot: one weight), ms per token, and the ratio to T GEMV
calls. A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_native import PROFILE, SHAPES, Pool, machine, packed, per_call  # noqa: E402

from bitnet.kernels.native import native_matmul, native_status  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats", default="tq2_0,tq1_0,i2_s")
    args = ap.parse_args()
    ok, why = native_status()
    if not ok:
        raise SystemExit(f"native kernels unavailable: {why}")
    print(json.dumps({"machine": machine(), "native": why, "tokens": args.tokens, "threads": args.threads}))
    pool = Pool(1024 << 20)
    rng = np.random.default_rng(0)
    T, th = args.tokens, args.threads
    for fmt in args.formats.split(","):
        for out, k in SHAPES:
            raw = packed(fmt, rng.integers(-1, 2, (out, k)).astype(np.int8))
            x = rng.standard_normal((T, k)).astype(np.float32)
            copies = pool.fill(raw)
            prof = PROFILE[fmt]
            cold = per_call(lambda i: native_matmul(x, copies[i % len(copies)], fmt, out, k, prof, th), args.calls)  # noqa: B023  (called within this iteration)
            hot = per_call(lambda i: native_matmul(x, raw, fmt, out, k, prof, th), args.calls)  # noqa: B023  (called within this iteration)
            gemv = per_call(lambda i: [native_matmul(x[t], raw, fmt, out, k, prof, th) for t in range(T)], max(3, args.calls // 4))  # noqa: B023  (called within this iteration)
            kid = native_matmul(x, raw, fmt, out, k, prof, th)[1]
            print(json.dumps({"shape": f"{out}x{k}", "format": fmt, "kernel_id": kid,
                              "gemm_cold_ms": round(cold * 1e3, 4), "gemm_hot_ms": round(hot * 1e3, 4),
                              "per_token_hot_ms": round(hot * 1e3 / T, 4), "t_gemv_hot_ms": round(gemv * 1e3, 4),
                              "speedup_vs_t_gemv": round(gemv / hot, 2)}), flush=True)


if __name__ == "__main__":
    main()
