"""Decode speed side by side, in one run: our engine (native and NumPy backends) vs upstream
llama.cpp (libllama through the crossval shim) on the same 2B-4T-shaped TQ2_0 `bitnet` model,
plus our engine on the I2_S `bitnet-b1.58` twin, and the ratio to the memory-bandwidth ceiling.
With --bitnet-cpp-dir (a local build of microsoft/BitNet: its libllama fork), also bitnet.cpp
vs our engine on one I2_S model with arch `bitnet` (the only BitNet arch that fork loads).

Usage: python bench/bench_decode.py [--cpp-dir DIR] [--bitnet-cpp-dir DIR] [--tokens 16]
                                    [--prompt-tokens 16] [--skip-numpy] [--repeat 2]
Each engine runs --repeat times per model and reports its best prefill and best decode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import cpu_model  # noqa: E402

OUT = Path("bench/out")
REPEAT = [2]  # runs per engine and model; each side reports its best


def copy_bandwidth(n_bytes: int = 1 << 30, repeat: int = 5) -> float:
    """Bytes moved per second by a large memcpy (read + write both counted)."""
    a = np.ones(n_bytes // 8, np.float64)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(repeat))
    return 2 * a.nbytes / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def model(arch: str, fmt: str, vocab: Path | None) -> Path:
    """The 2B-4T-shaped model; with the real LLaMA-3 vocabulary (128256 tokens) so that
    libllama, which requires token_embd rows == vocabulary size, loads it too."""
    from bitnet.synth import synthesize

    p = OUT / f"2b-4t-shape-{arch}-{fmt}{'-llama3vocab' if vocab else ''}.gguf"
    if not p.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        synthesize(p, preset="2b-4t-shape", arch=arch, fmt=fmt, seed=0, vocab_gguf=vocab)
    return p


def ours(path: Path, backend: str, profile: str, prompt: list[int], n: int) -> dict:
    from bitnet.engine import Engine, SamplerConfig
    from bitnet.kernels import dispatch

    dispatch.set_backend(backend)
    e = Engine(path, profile=profile)
    g = SamplerConfig(greedy=True)
    e.generate(prompt[:4], max_tokens=2, sampler=g, ignore_eog=True)
    runs = [e.generate(prompt, max_tokens=n, sampler=g, ignore_eog=True).timings for _ in range(REPEAT[0])]
    # best of REPEAT for each phase, as the libllama side takes the best of its runs
    return {"prefill_tok_s": max(len(prompt) / t.prefill_s for t in runs),
            "decode_tok_s": max(len(t.decode_step_s) / t.decode_s for t in runs),
            "bytes_per_token": e.model.bytes_per_token, "runs": len(runs)}


def llama_cpp(cpp_dir: str, path: Path, prompt: list[int], n: int) -> dict:
    """libllama's decode speed, measured in a child process: upstream llama.cpp and the
    bitnet.cpp fork both ship a `libllama.so`, and one process can hold only one of them."""
    import subprocess

    cmd = [sys.executable, __file__, "--measure-ref", cpp_dir, str(path), ",".join(map(str, prompt)), str(n), str(REPEAT[0])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode:
        raise SystemExit(f"measuring {cpp_dir} on {path} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _measure_ref(cpp_dir: str, path: Path, prompt: list[int], n: int) -> dict:
    from crossval.reference import locate, shim_for

    mod = shim_for(locate(cpp_dir))
    ffi, lib = mod.ffi, mod.lib
    threads = os.cpu_count() or 1
    h = lib.bh_load(str(path).encode(), len(prompt) + n + 8, threads, 0)
    if h == ffi.NULL:
        raise SystemExit(f"libllama could not load {path}")
    ids = np.asarray(prompt, np.int32)
    out = np.zeros(n + 1, np.int32)
    pi = ffi.cast("int *", ids.ctypes.data)
    po = ffi.cast("int *", out.ctypes.data)
    lib.bh_greedy(h, pi, len(prompt), 2, po)  # warm-up
    t1 = min(_timed(lambda: lib.bh_greedy(h, pi, len(prompt), 1, po)) for _ in range(REPEAT[0]))
    tn = min(_timed(lambda: lib.bh_greedy(h, pi, len(prompt), n + 1, po)) for _ in range(REPEAT[0]))
    lib.bh_free(h)
    # greedy(1) = context + prefill + sampling; greedy(n+1) adds n single-token decodes
    return {"prefill_tok_s": len(prompt) / t1, "decode_tok_s": n / (tn - t1), "threads": threads}


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--measure-ref":
        _, _, d, path, prompt, n, rep = sys.argv
        REPEAT[0] = int(rep)
        print(json.dumps(_measure_ref(d, Path(path), [int(i) for i in prompt.split(",")], int(n))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpp-dir", default=None, help="reference folder (python -m crossval.setup --print-dir)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--bitnet-cpp-dir", default=None, help="a microsoft/BitNet checkout with its build/ (optional)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per engine and model; each reports its best")
    args = ap.parse_args()
    REPEAT[0] = max(1, args.repeat)
    vocab = None
    for cand in (Path(args.cpp_dir) / "vocab" if args.cpp_dir else None, Path("../shared/vocab")):
        if cand and (cand / "ggml-vocab-llama-bpe.gguf").is_file():
            vocab = cand / "ggml-vocab-llama-bpe.gguf"
            break
    if args.cpp_dir and vocab is None:
        raise SystemExit("the llama.cpp comparison needs ggml-vocab-llama-bpe.gguf (run python -m crossval.setup)")
    prompt = [(7 * i + 11) % 384 for i in range(args.prompt_tokens)]
    res: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count()}}
    bw = copy_bandwidth()
    res["copy_bandwidth_bytes_per_s"] = bw
    tq2 = model("bitnet", "tq2_0", vocab)
    i2s = model("bitnet-b1.58", "i2_s", vocab)
    res["ours_native_tq2_0"] = ours(tq2, "native", "llama.cpp", prompt, args.tokens)
    res["ours_native_i2_s"] = ours(i2s, "native", "bitnet.cpp", prompt, args.tokens)
    if not args.skip_numpy:
        rep, REPEAT[0] = REPEAT[0], 1  # the NumPy engine is slow: one run of 2 tokens
        res["ours_numpy_i2_s"] = ours(i2s, "numpy", "bitnet.cpp", prompt, 2)
        REPEAT[0] = rep
    if args.cpp_dir:
        res["llama_cpp_tq2_0"] = llama_cpp(args.cpp_dir, tq2, prompt, args.tokens)
        res["ratio_native_vs_llama_cpp_decode"] = res["ours_native_tq2_0"]["decode_tok_s"] / res["llama_cpp_tq2_0"]["decode_tok_s"]
    ceiling_keys = ["ours_native_tq2_0", "ours_native_i2_s"]
    if args.bitnet_cpp_dir:
        i2s_up = model("bitnet", "i2_s", vocab)
        res["ours_native_i2_s_arch_bitnet"] = ours(i2s_up, "native", "bitnet.cpp", prompt, args.tokens)
        res["bitnet_cpp_i2_s"] = llama_cpp(args.bitnet_cpp_dir, i2s_up, prompt, args.tokens)
        res["ratio_native_vs_bitnet_cpp_decode"] = (res["ours_native_i2_s_arch_bitnet"]["decode_tok_s"]
                                                    / res["bitnet_cpp_i2_s"]["decode_tok_s"])
        ceiling_keys.append("ours_native_i2_s_arch_bitnet")
    for k in ceiling_keys:
        r = res[k]
        r["ceiling_tok_s"] = bw / r["bytes_per_token"]
        r["fraction_of_ceiling"] = r["decode_tok_s"] / r["ceiling_tok_s"]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
