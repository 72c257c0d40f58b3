"""Benchmark: open a large GGUF and list its tensors; stream-write a large model.

Usage: python bench/bench_gguf.py [--model PATH] [--format i2_s] [--vocab VOCAB.gguf] [--repeat 20]

Without --model it writes the `2b-4t-shape` synthetic model (>= 1 GB) into bench/out/ first and
reports the write throughput. The open benchmark reports the median wall time of
`GGUFReader(path)` + listing every tensor's name/shape/type/bytes, and the page faults it took:
tensor data is mmapped, so any read of it would show up as faults far above the header's pages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

from bitnet.gguf import GGUFReader


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_open(path: Path, repeat: int) -> dict:
    times, faults = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        with GGUFReader(path) as r:
            rows = [(t.name, t.shape, t.type_name, t.nbytes) for t in r.tensors]
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        times.append(dt)
        faults.append((r1.ru_minflt - r0.ru_minflt) + (r1.ru_majflt - r0.ru_majflt))
    with GGUFReader(path) as r:
        header = r.data_start
        data = r.file_size - r.data_start
    return {
        "file_bytes": path.stat().st_size,
        "tensors": len(rows),
        "header_bytes": header,
        "data_bytes": data,
        "open_list_s_median": statistics.median(times),
        "open_list_s_min": min(times),
        "page_faults_median": statistics.median(faults),
        "page_faults_if_all_data_read": data // resource.getpagesize(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--format", default=None)
    ap.add_argument("--vocab", type=Path, help="vocab GGUF for realistic metadata (e.g. ggml-vocab-llama-bpe.gguf)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    result: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}}
    path = args.model
    if path is None:
        from bitnet.quant.encoders import FORMATS
        from bitnet.synth import synthesize

        fmt = args.format or ("i2_s" if "i2_s" in FORMATS else "f16")
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"2b-4t-shape-{fmt}.gguf"
        t0 = time.perf_counter()
        synthesize(path, preset="2b-4t-shape", arch="bitnet-b1.58", fmt=fmt, seed=0, vocab_gguf=args.vocab)
        dt = time.perf_counter() - t0
        size = path.stat().st_size
        result["write"] = {"format": fmt, "bytes": size, "seconds": dt, "MB_per_s": size / dt / 1e6}
    result["open"] = bench_open(path, args.repeat)
    result["model"] = str(path)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
