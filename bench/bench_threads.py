"""Tiny-model decode with and without competing busy processes, per thread count and OpenMP
wait policy: does the native backend survive a loaded machine?

Each configuration is a fresh `python -m bitnet benchmark --backend native` process (the wait
policy is read once when libgomp loads), run --repeat times; the table shows the median and
best decode tok/s. "busy" starts --competitors processes that spin on the CPU (`while True:
pass`) for the duration of that block.

    python bench/bench_threads.py [--tokens 64] [--repeat 3] [--competitors 1]
                                  [--threads default,1,2] [--wait passive,active] [--model M]

`--threads default` is what a user gets without --threads; `--wait active` sets
OMP_WAIT_POLICY=ACTIVE (libgomp's spinning, the behaviour before issue 15), `passive` leaves it
unset (the harness then loads libgomp passive). Prints a markdown table and the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DECODE = re.compile(r"decode ([0-9.]+) tok/s")


def spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def decode_rate(tokens: int, threads: str, wait: str, model: str | None) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if wait == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    elif wait.startswith("spin"):  # spinN: libgomp spins N rounds after a region, then sleeps
        env["GOMP_SPINCOUNT"] = wait[4:]
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, "-m", "bitnet", "benchmark", "--backend", "native", "--deterministic",
            "--tokens", str(tokens)]
    if threads != "default":
        argv += ["--threads", threads]
    if model:
        argv += ["--model", model]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    m = DECODE.search(p.stdout)
    if p.returncode != 0 or not m:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--competitors", type=int, default=1)
    ap.add_argument("--threads", default="default,1,2")
    ap.add_argument("--wait", default="passive,active")
    ap.add_argument("--model")
    a = ap.parse_args(argv)
    rows = []
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()}", flush=True)
    for load in ("idle", "busy"):
        procs = [spinner() for _ in range(a.competitors)] if load == "busy" else []
        try:
            time.sleep(0.5 if procs else 0)
            for wait in a.wait.split(","):
                for threads in a.threads.split(","):
                    r = [decode_rate(a.tokens, threads, wait, a.model) for _ in range(a.repeat)]
                    rows.append((load, wait, threads, statistics.median(r), max(r)))
                    print(f"{load:>5} {wait:>8} threads={threads:<8} median {rows[-1][3]:7.1f}  "
                          f"best {rows[-1][4]:7.1f} tok/s  ({', '.join(f'{x:.1f}' for x in r)})", flush=True)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    print(f"\nload average at end: {os.getloadavg()}")
    print(f"\n| load ({a.competitors} spinning competitor{'s' if a.competitors != 1 else ''} when busy) "
          "| wait policy | --threads | decode tok/s median | best |")
    print("| --- | --- | --- | --- | --- |")
    for load, wait, threads, med, best in rows:
        print(f"| {load} | {wait} | {threads} | {med:.1f} | {best:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
