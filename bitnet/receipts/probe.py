"""Memory-bandwidth probe: measured by `bitnet benchmark` in the same run as the receipt, so the
verifier can bound the decode bytes/s by what this machine's memory actually did.

Method (recorded in the receipt): `threads` Python threads each copy their own slice of a
float64 buffer with `numpy.copyto` (which releases the GIL); best of `repeats`; bytes counted
are read + write. A copy, not a read-only sum, because NumPy's reductions are single-threaded
and compute-bound on some CPUs; the verifier's `probe_margin` allows for a read-only stream
being somewhat faster than a copy.
"""

from __future__ import annotations

import threading
import time

import numpy as np

DEFAULT_MIB = 256


def measure_bandwidth(threads: int = 1, mib: int = DEFAULT_MIB, repeats: int = 5) -> dict:
    if threads < 1 or mib < 1 or repeats < 1:
        raise ValueError("threads, mib and repeats must be >= 1")
    n = (mib << 20) // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.zeros_like(src)  # both touched before timing: page faults are not bandwidth
    bounds = np.linspace(0, n, threads + 1).astype(int)

    def copy(i: int) -> None:
        np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]])

    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    moved = 2 * src.nbytes
    return {
        "method": f"numpy.copyto of a {mib} MiB float64 buffer split over {threads} thread(s), best of {repeats}; "
                  "bytes = read + write",
        "bytes_per_s": moved / best,
        "threads": threads,
        "buffer_bytes": int(src.nbytes),
        "seconds": best,
    }
