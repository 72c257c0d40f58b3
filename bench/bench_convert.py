"""Peak memory and time of `bitnet convert` on a 2B-4T-shape HF checkpoint.

Usage: python bench/bench_convert.py [--dir bench/out/hf-2b-4t-shape] [--types i2_s,tq2_0]
                                     [--absmean auto|torch|exact] [--keep]

Writes a synthetic bf16 master-weight checkpoint of microsoft/bitnet-b1.58-2B-4T's shape
(`bitnet.convert.synthetic`, ~4.8 GB; reused when already there), then converts it once per
type in a fresh subprocess and reports that child's peak RSS (getrusage ru_maxrss) and wall
time as JSON lines. The target (issue 18) is a peak under 4 GB: conversion streams tensor by
tensor, never the whole model in float. The output GGUFs are deleted unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def peak_rss_of(argv: list[str]) -> tuple[int, float, int]:
    """(peak RSS bytes, seconds, exit code) of one child process (Linux: ru_maxrss in KiB)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.execvp(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_maxrss * 1024, time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("bench/out/hf-2b-4t-shape"))
    ap.add_argument("--types", default="i2_s,tq2_0")
    ap.add_argument("--absmean", default="auto")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    if not (a.dir / "model.safetensors").is_file():
        from bitnet.convert.synthetic import write_checkpoint

        t0 = time.perf_counter()
        write_checkpoint(a.dir, "2b-4t-shape", dtype="bf16", seed=0, tied=True)
        print(f"# wrote {a.dir} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ck_bytes = sum(p.stat().st_size for p in a.dir.iterdir())
    for typ in a.types.split(","):
        out = a.dir.parent / f"converted-{typ}.gguf"
        rss, dt, rc = peak_rss_of([sys.executable, "-m", "bitnet", "convert", str(a.dir), str(out), "--type", typ,
                                   "--absmean", a.absmean, "-q"])
        row = {"type": typ, "absmean": a.absmean, "exit": rc, "peak_rss_bytes": rss, "peak_rss_gib": round(rss / 2**30, 3),
               "seconds": round(dt, 1), "checkpoint_bytes": ck_bytes,
               "gguf_bytes": out.stat().st_size if out.exists() else None, "cpus": os.cpu_count(),
               "loadavg": os.getloadavg()}
        print(json.dumps(row))
        if not a.keep and out.exists():
            out.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
