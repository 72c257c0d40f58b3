"""Measure the figures a CPU allowlist entry (policies/cpu-allowlist.yml) is derived from, on
the machine this runs on:

- the copy bandwidth of one thread (bitnet.receipts.probe, best of --repeats probes);
- the fastest decode step of each NumPy kernel of the default tiny model, per call: one decode
  step at a time, the kernel log reset before each, the minimum of the per-step means over
  --steps steps (a minimum, so a loaded machine's preemptions drop out).

    python bench/cpu_bounds.py [--steps 200] [--repeats 5] [--bw-headroom 4] [--floor-headroom 3]

Prints the measurements and the entry they give: bandwidth bound = --bw-headroom x the
measured copy bandwidth per thread; per-call floors = measured minimum / --floor-headroom.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from bitnet.kernels import dispatch
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.model.bitnet_model import BitNetModel
from bitnet.receipts.machine import fingerprint
from bitnet.receipts.probe import measure_bandwidth
from bitnet.synth.default import default_model_path

#: kernels whose per-call time is dispatch overhead more than work, so a floor measured on the
#: smallest model bounds every model (attention grows with the context: not floored)
FLOORED = ("get_rows_", "rms_norm_", "rope_", "ffn_relu2_")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bw-headroom", type=float, default=4.0)
    ap.add_argument("--floor-headroom", type=float, default=3.0)
    a = ap.parse_args()
    fp = fingerprint()
    bw = max(measure_bandwidth(1, 256, 5)["bytes_per_s"] for _ in range(a.repeats))
    dispatch.set_backend("numpy")
    model = BitNetModel(default_model_path())
    cache = model.new_cache(a.steps + 2)
    model.forward(np.array([1]), cache, 0, all_logits=False)
    best: dict[str, float] = defaultdict(lambda: float("inf"))
    for pos in range(1, a.steps + 1):
        KERNEL_LOG.reset()
        model.forward(np.array([pos % model.config.n_vocab]), cache, pos, all_logits=False)
        for k in KERNEL_LOG.snapshot():
            best[k.id] = min(best[k.id], k.seconds / k.calls)
    print(f"cpu: {fp['cpu']!r}, {fp['cores']} cores")
    print(f"copy bandwidth, 1 thread, best of {a.repeats} probes: {bw:.4g} B/s")
    for kid, s in sorted(best.items()):
        print(f"  {kid}: fastest per-call mean over {a.steps} steps {s:.4g} s")
    print("entry:")
    print(f"  max_bytes_per_s_per_thread: {a.bw_headroom * bw:.3g}")
    print("  min_call_seconds:")
    for kid, s in sorted(best.items()):
        if kid.startswith(FLOORED):
            print(f"    {kid}: {s / a.floor_headroom:.3g}")


if __name__ == "__main__":
    main()
