"""Benchmark: prefill and decode speed of the NumPy engine, peak RSS, time per component.

Usage: python bench/bench_engine.py [--model M.gguf | --preset tiny|2b-4t-shape] [--format i2_s]
           [--prompt-tokens 32] [--decode-tokens 16] [--profile P] [--backend numpy|native]

Without --model, the synthetic model of the preset is written into bench/out/ first (reused on
later runs). Per-component time comes from the kernel dispatcher's log, i.e. from the kernels
that actually ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import cpu_model  # noqa: E402

from bitnet.engine import Engine, SamplerConfig  # noqa: E402
from bitnet.kernels.runlog import KERNEL_LOG  # noqa: E402


def component(kernel_id: str) -> str:
    for key, name in (("attention", "attention"), ("rope", "rope"), ("rms_norm", "norms"),
                      ("lm_head", "lm_head"), ("get_rows", "embedding"), ("ffn_", "ffn_activation")):
        if key in kernel_id:
            return name
    return "projections"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--format", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--backend", default="numpy", choices=("numpy", "native"))
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    path = args.model
    if path is None:
        from bitnet.quant.encoders import FORMATS
        from bitnet.synth import synthesize

        fmt = args.format or ("i2_s" if "i2_s" in FORMATS else "f32")
        path = args.out / f"{args.preset}-bitnet-b1.58-{fmt}.gguf"
        if not path.exists():
            args.out.mkdir(parents=True, exist_ok=True)
            synthesize(path, preset=args.preset, arch="bitnet-b1.58", fmt=fmt, seed=0)
    from bitnet.kernels import dispatch

    dispatch.set_backend(args.backend)
    engine = Engine(path, profile=args.profile)
    prompt = [int(i) % engine.model.config.n_vocab for i in range(1, args.prompt_tokens + 1)]
    greedy = SamplerConfig(greedy=True)
    engine.generate(prompt[:4], max_tokens=2, sampler=greedy, ignore_eog=True)  # warm-up
    KERNEL_LOG.reset()
    t0 = time.perf_counter()
    r = engine.generate(prompt, max_tokens=args.decode_tokens, sampler=greedy, ignore_eog=True)
    wall = time.perf_counter() - t0
    t = r.timings
    per = defaultdict(float)
    for rec in KERNEL_LOG.snapshot():
        per[component(rec.id)] += rec.seconds
    print(json.dumps({
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "model": str(path), "backend": args.backend, "weight_bytes": engine.model.weight_bytes,
        "bytes_per_token": engine.model.bytes_per_token, "profile": r.profile,
        "prompt_tokens": len(prompt), "decode_tokens": len(r.ids),
        "load_s": engine.load_s, "prefill_s": t.prefill_s, "decode_s": t.decode_s, "wall_s": wall,
        "prefill_tok_s": len(prompt) / t.prefill_s,
        "decode_tok_s": len(t.decode_step_s) / t.decode_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds_by_component": dict(sorted(per.items(), key=lambda kv: -kv[1])),
        "kernels": [vars(k) for k in KERNEL_LOG.snapshot()],
    }, indent=2))


if __name__ == "__main__":
    main()
