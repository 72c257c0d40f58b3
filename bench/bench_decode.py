"""Decode speed side by side, in one run: our engine (native and NumPy backends) vs upstream
llama.cpp (libllama through bench/bench_ref.c) on the same 2B-4T-shaped TQ2_0 `bitnet` model,
plus our engine on the I2_S `bitnet-b1.58` twin, and the ratio to the memory-bandwidth ceiling.
With --bitnet-cpp-dir (a local build of microsoft/BitNet: its libllama fork), also bitnet.cpp
vs our engine on I2_S models with arch `bitnet` and `bitnet-b1.58` (a fork that does not
register `bitnet-b1.58`, such as 406a5036, is recorded as unable to load it, not skipped silently).

Usage: python bench/bench_decode.py [--cpp-dir DIR] [--bitnet-cpp-dir DIR] [--tokens 16]
                                    [--prompt-tokens 16] [--skip-numpy] [--repeat 2]
                                    [--receipts DIR] [--bitnet-cpp-commit TEXT] [--weights mmap|memory]
Each engine runs --repeat times per model and reports its best prefill and best decode.

Fairness: on the C++ side the model load and the context creation sit outside the timed region;
only llama_decode is timed (the prompt in one batch, then each single-token step), as
llama-bench does; our side times Engine.generate's prefill and decode steps (model loaded
before). Both sides use the same K/V cache type (the numerics profile's: F32 for `llama.cpp`,
F16 for `bitnet.cpp`), no flash attention and the same OpenMP wait policy (our kernels' passive
one, unless OMP_WAIT_POLICY is set) and the same weights residency (--weights: `mmap`, the file
mapped, the default of both; `memory`, our BITNET_WEIGHTS=memory and libllama's use_mmap=false),
and the output names them per comparison. Each
C++ build is recorded: its commit (git, the setup stamp, or --*-commit), the ggml options of
its CMakeCache.txt and the CPU features it was compiled for (llama_print_system_info).
--receipts DIR also runs `bitnet benchmark` on each of our native models, writes the receipts
there and records whether `bitnet-verify-receipt` passes them.
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
OUT_DIR = [OUT]  # --models-dir
WAIT = ["PASSIVE"]  # OMP_WAIT_POLICY of the C++ child processes: set to ours in main()
PRESET = ["2b-4t-shape"]  # --preset (tiny: a smoke test of the bench itself, not a speed figure)
REPEAT = [2]  # runs per engine and model; each side reports its best
WEIGHTS = ["mmap"]  # --weights: where both engines keep the model file's bytes (mmap or memory)


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

    p = OUT_DIR[0] / f"{PRESET[0]}-{arch}-{fmt}{'-llama3vocab' if vocab else ''}.gguf"
    if not p.exists():
        OUT_DIR[0].mkdir(parents=True, exist_ok=True)
        synthesize(p, preset=PRESET[0], arch=arch, fmt=fmt, seed=0, vocab_gguf=vocab)
    return p


def ours(path: Path, backend: str, profile: str, prompt: list[int], n: int) -> dict:
    from bitnet.cli.backend_args import native_threads
    from bitnet.engine import Engine, SamplerConfig
    from bitnet.kernels import dispatch

    dispatch.set_backend(backend)
    e = Engine(path, profile=profile, weights=WEIGHTS[0])
    g = SamplerConfig(greedy=True)
    e.generate(prompt[:4], max_tokens=2, sampler=g, ignore_eog=True)
    runs = [e.generate(prompt, max_tokens=n, sampler=g, ignore_eog=True).timings for _ in range(REPEAT[0])]
    # best of REPEAT for each phase, as the libllama side takes the best of its runs
    return {"prefill_tok_s": max(len(prompt) / t.prefill_s for t in runs),
            "decode_tok_s": max(len(t.decode_step_s) / t.decode_s for t in runs),
            "bytes_per_token": e.model.bytes_per_token, "runs": len(runs),
            "threads": native_threads(backend) or 1, "kv_cache": np.dtype(e.model.profile.kv_dtype).name.replace("float", "f"),
            "flash_attn": False, "profile": e.model.profile.name, "weights": e.model.weights}


def llama_cpp(cpp_dir: str, path: Path, prompt: list[int], n: int, kv_f16: bool) -> dict:
    """libllama's decode speed, measured in a child process: upstream llama.cpp and the
    bitnet.cpp fork both ship a `libllama.so`, and one process can hold only one of them."""
    import subprocess

    cmd = [sys.executable, __file__, "--measure-ref", cpp_dir, str(path), ",".join(map(str, prompt)), str(n), str(REPEAT[0]),
           str(int(kv_f16)), WEIGHTS[0]]
    # the same OpenMP wait policy as our kernels' threads (passive unless the user set one): with
    # libgomp's spinning default a C++ engine collapses on a loaded machine (see bench_threads.py)
    env = {**os.environ, "OMP_WAIT_POLICY": WAIT[0]}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if p.returncode:
        raise SystemExit(f"measuring {cpp_dir} on {path} failed:\n{p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["omp_wait_policy"] = WAIT[0]
    r["gomp_spincount"] = env.get("GOMP_SPINCOUNT")
    return r


KV_F16 = {"llama.cpp": False, "bitnet.cpp": True}  # our profiles' K/V cache dtype (bitnet.model.profiles)


def _bench_module(cpp_dir: str):
    """bench_ref.c built against this build's own llama.h (the crossval shim's recipe)."""
    from bitnet.toolchain.ffi import build_shim
    from crossval.reference import locate

    ref = locate(cpp_dir, "--cpp-dir")
    cdef = """
    void *bb_load(const char *path, int use_mmap);
    void *bb_context(void *model, int n_ctx, int threads, int kv_f16, int flash);
    int bb_run(void *model, void *ctx, const int *ids, int n, int n_gen, int *out, double *t);
    const char *bb_system_info(void);
    void bb_free(void *model, void *ctx);
    """
    defines = ["-DBH_OLD_API"] if ref.api == "bitnet.cpp-fork" else []
    mod = build_shim("bitnet_bench_ref", (Path(__file__).with_name("bench_ref.c")).read_text(), cdef,
                     system_include_dirs=[ref.source / "include", ref.source / "ggml" / "include"],
                     library_dirs=[ref.libllama.parent], libraries=["llama"], extra_compile_args=["-O2", *defines])
    return ref, mod


def _measure_ref(cpp_dir: str, path: Path, prompt: list[int], n: int, kv_f16: bool) -> dict:
    ref, mod = _bench_module(cpp_dir)
    ffi, lib = mod.ffi, mod.lib
    threads = os.cpu_count() or 1
    model_h = lib.bb_load(str(path).encode(), int(WEIGHTS[0] == "mmap"))
    if model_h == ffi.NULL:
        from crossval.reference import load_failure_hint

        return {"error": f"libllama could not load {path.name}: {load_failure_hint(ref, path)}"}
    ctx = lib.bb_context(model_h, len(prompt) + n + 8, threads, int(kv_f16), 0)
    if ctx == ffi.NULL:
        lib.bb_free(model_h, ffi.NULL)
        return {"error": f"libllama could not create a context (kv_f16={kv_f16}, flash attention off)"}
    ids = np.asarray(prompt, np.int32)
    out = np.zeros(n, np.int32)
    t = np.zeros(2, np.float64)
    pi, po, pt = (ffi.cast(c, a.ctypes.data) for c, a in (("int *", ids), ("int *", out), ("double *", t)))
    if lib.bb_run(model_h, ctx, pi, len(prompt), 2, po, pt):  # warm-up
        raise SystemExit(f"libllama failed to decode {path}")
    runs = []
    for _ in range(REPEAT[0]):
        if lib.bb_run(model_h, ctx, pi, len(prompt), n, po, pt):
            raise SystemExit(f"libllama failed to decode {path}")
        runs.append((float(t[0]), float(t[1])))
    lib.bb_free(model_h, ctx)
    return {"prefill_tok_s": max(len(prompt) / p for p, _ in runs), "decode_tok_s": max(n / d for _, d in runs),
            "threads": threads, "kv_cache": "f16" if kv_f16 else "f32", "flash_attn": False, "runs": len(runs),
            "weights": WEIGHTS[0], "use_mmap": WEIGHTS[0] == "mmap",
            "timed": "llama_decode calls only (context created before)"}


def build_info(cpp_dir: str, commit: str | None = None) -> dict:
    """What the C++ engine is: its API, commit, the ggml/BitNet options of its CMakeCache.txt and
    the CPU features libllama reports it was compiled with."""
    import subprocess

    from crossval.reference import locate

    ref = locate(cpp_dir, "--cpp-dir")
    info: dict = {"dir": str(ref.root), "api": ref.api, "libllama": str(ref.libllama), "version": ref.version}
    for d in (ref.root, ref.source):
        g = subprocess.run(["git", "-C", str(d), "rev-parse", "HEAD"], capture_output=True, text=True)
        if g.returncode == 0 and str(d) not in info.get("git", {}):
            info.setdefault("git", {})[str(d)] = g.stdout.strip()
    if commit:
        info["commit_stated"] = commit
    cache = next((c for c in (ref.libllama.parents[i] / "CMakeCache.txt" for i in range(len(ref.libllama.parents)))
                  if c.is_file()), None)
    if cache:
        keep = ("GGML_NATIVE", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_AVX512", "GGML_AVX512_VNNI",
                "GGML_AVX_VNNI", "GGML_OPENMP", "GGML_LLAMAFILE", "BITNET_X86_TL2", "BITNET_ARM_TL1",
                "CMAKE_BUILD_TYPE", "CMAKE_C_COMPILER", "CMAKE_C_FLAGS")
        flags = {}
        for line in cache.read_text(errors="replace").splitlines():
            k, _, v = line.partition("=")
            name = k.split(":")[0]
            if name in keep:
                flags[name] = v
        info["cmake_cache"] = str(cache)
        info["cmake"] = flags
    p = subprocess.run([sys.executable, __file__, "--system-info", cpp_dir], capture_output=True, text=True, timeout=600)
    info["system_info"] = p.stdout.strip() if p.returncode == 0 else f"unavailable: {p.stderr.strip()[-300:]}"
    return info


def receipt_for(path: Path, backend: str, n: int, out_dir: Path) -> dict:
    """`bitnet benchmark` on the model (its own run, deterministic) into out_dir, then
    `bitnet-verify-receipt` on the file: whether it passes, and the receipt's own figures."""
    import subprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    rec = out_dir / f"{path.stem}-{backend}.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    b = subprocess.run([sys.executable, "-m", "bitnet", "benchmark", "--model", str(path), "--backend", backend,
                        "--tokens", str(n), "--deterministic", "--quiet", "--weights", WEIGHTS[0], "--out", str(rec)],
                       capture_output=True, text=True, env=env, timeout=3600)
    if b.returncode:
        return {"receipt": None, "error": (b.stderr or b.stdout).strip()[-500:]}
    v = subprocess.run([sys.executable, "-c", "from bitnet.cli.verify_receipt import console_main; console_main()",
                        str(rec)], capture_output=True, text=True, env=env, timeout=600)
    tp = json.loads(rec.read_text()).get("throughput", {})
    return {"receipt": str(rec), "verify_exit": v.returncode, "verify_passed": v.returncode == 0,
            "verify_output": v.stdout.strip()[-800:], "decode_tok_s": tp.get("decode_tok_s"),
            "prefill_tok_s": tp.get("prefill_tok_s")}


def _ratio(res: dict, ours_key: str, cpp_key: str, what: str) -> None:
    a, b = res.get(ours_key, {}), res.get(cpp_key, {})
    if f"{what}_tok_s" in a and f"{what}_tok_s" in b:
        res.setdefault("ratios", {})[f"{ours_key} / {cpp_key} {what}"] = a[f"{what}_tok_s"] / b[f"{what}_tok_s"]


def _pair(res: dict, ours_key: str, cpp_key: str, profile: str) -> None:
    """The settings both sides of one comparison ran with, side by side."""
    b = res.get(cpp_key, {})
    res.setdefault("settings", {})[f"{ours_key} vs {cpp_key}"] = {
        "kv_cache": {"ours": "f16" if KV_F16[profile] else "f32", "cpp": b.get("kv_cache")},
        "flash_attn": {"ours": False, "cpp": b.get("flash_attn")},
        "threads": {"ours": res[ours_key].get("threads"), "cpp": b.get("threads")},
        "omp_wait_policy": {"ours": res["ours"].get("omp_wait_policy"), "cpp": b.get("omp_wait_policy")},
        "gomp_spincount": {"ours": res["ours"].get("gomp_spincount"), "cpp": b.get("gomp_spincount")},
        "weights": {"ours": res[ours_key].get("weights"), "cpp": b.get("weights")}}
    for what in ("prefill", "decode"):
        _ratio(res, ours_key, cpp_key, what)


def main() -> None:
    if len(sys.argv) == 9 and sys.argv[1] == "--measure-ref":
        _, _, d, path, prompt, n, rep, kv, weights = sys.argv
        REPEAT[0] = int(rep)
        WEIGHTS[0] = weights
        print(json.dumps(_measure_ref(d, Path(path), [int(i) for i in prompt.split(",")], int(n), kv == "1")))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--system-info":
        m = _bench_module(sys.argv[2])[1]
        print(m.ffi.string(m.lib.bb_system_info()).decode())
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpp-dir", default=None, help="reference folder (python -m crossval.setup --print-dir)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--bitnet-cpp-dir", default=None, help="a microsoft/BitNet checkout with its build/ (optional)")
    ap.add_argument("--cpp-commit", default=None, help="the llama.cpp commit, recorded when the folder has no git")
    ap.add_argument("--bitnet-cpp-commit", default=None,
                    help="the BitNet + fork commits (e.g. '16da220 + 406a5036'), recorded when the folder has no git")
    ap.add_argument("--repeat", type=int, default=2, help="runs per engine and model; each reports its best")
    ap.add_argument("--models-dir", default=str(OUT), help="where the synthesized 2B-4T-shape models are kept")
    ap.add_argument("--receipts", default=None, metavar="DIR",
                    help="also write `bitnet benchmark` receipts of our native runs here and verify them")
    ap.add_argument("--preset", default="2b-4t-shape", help="synth preset of the models (tiny: a smoke test)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--weights", choices=("mmap", "memory"), default="mmap",
                    help="where BOTH engines keep the model file's bytes: mmap (the file mapped, both defaults) or "
                         "memory (ours: BITNET_WEIGHTS=memory, private memory with huge pages; libllama: "
                         "use_mmap=false); recorded per comparison and passed to the receipts' `bitnet benchmark`")
    args = ap.parse_args()
    WEIGHTS[0] = args.weights
    REPEAT[0] = max(1, args.repeat)
    OUT_DIR[0] = Path(args.models_dir)
    PRESET[0] = args.preset
    vocab = None
    for cand in (Path(args.cpp_dir) / "vocab" if args.cpp_dir else None, Path("../shared/vocab")):
        if cand and (cand / "ggml-vocab-llama-bpe.gguf").is_file():
            vocab = cand / "ggml-vocab-llama-bpe.gguf"
            break
    if (args.cpp_dir or args.bitnet_cpp_dir) and vocab is None:
        raise SystemExit("the C++ comparison needs ggml-vocab-llama-bpe.gguf (run python -m crossval.setup)")
    prompt = [(7 * i + 11) % 384 for i in range(args.prompt_tokens)]
    import datetime

    from bitnet.kernels.native import best_variant, native_status

    res: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg": list(os.getloadavg())},
                 "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                 "ours": {"native": native_status()[1], "variant": best_variant()}}
    from bitnet.kernels.native import wait_policy

    WAIT[0] = os.environ.get("OMP_WAIT_POLICY") or wait_policy().split(",")[0].split()[0].upper()
    res["ours"]["omp_wait_policy"] = wait_policy()
    # libgomp's spin count (it overrides the policy's, PASSIVE included): the C++ children
    # inherit it with the environment, so both sides spin alike; recorded per side
    res["ours"]["gomp_spincount"] = os.environ.get("GOMP_SPINCOUNT")
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
    ceiling_keys = ["ours_native_tq2_0", "ours_native_i2_s"]
    receipts = [(tq2, "ours_native_tq2_0"), (i2s, "ours_native_i2_s")]
    if args.cpp_dir:
        res["llama_cpp_build"] = build_info(args.cpp_dir, args.cpp_commit)
        res["llama_cpp_tq2_0"] = llama_cpp(args.cpp_dir, tq2, prompt, args.tokens, KV_F16["llama.cpp"])
        _pair(res, "ours_native_tq2_0", "llama_cpp_tq2_0", "llama.cpp")
        ceiling_keys.append("llama_cpp_tq2_0")
    if args.bitnet_cpp_dir:
        res["bitnet_cpp_build"] = build_info(args.bitnet_cpp_dir, args.bitnet_cpp_commit)
        i2s_up = model("bitnet", "i2_s", vocab)
        res["ours_native_i2_s_arch_bitnet"] = ours(i2s_up, "native", "bitnet.cpp", prompt, args.tokens)
        res["bitnet_cpp_i2_s_arch_bitnet"] = llama_cpp(args.bitnet_cpp_dir, i2s_up, prompt, args.tokens, KV_F16["bitnet.cpp"])
        _pair(res, "ours_native_i2_s_arch_bitnet", "bitnet_cpp_i2_s_arch_bitnet", "bitnet.cpp")
        res["bitnet_cpp_i2_s_arch_bitnet-b1.58"] = llama_cpp(args.bitnet_cpp_dir, i2s, prompt, args.tokens,
                                                             KV_F16["bitnet.cpp"])
        _pair(res, "ours_native_i2_s", "bitnet_cpp_i2_s_arch_bitnet-b1.58", "bitnet.cpp")
        ceiling_keys += ["ours_native_i2_s_arch_bitnet", "bitnet_cpp_i2_s_arch_bitnet",
                         "bitnet_cpp_i2_s_arch_bitnet-b1.58"]
        receipts.append((i2s_up, "ours_native_i2_s_arch_bitnet"))
    bpt = {"tq2_0": res["ours_native_tq2_0"]["bytes_per_token"], "i2_s": res["ours_native_i2_s"]["bytes_per_token"]}
    for k in ceiling_keys:
        r = res[k]
        if "decode_tok_s" not in r:
            continue
        r.setdefault("bytes_per_token", bpt["tq2_0" if "tq2_0" in k else "i2_s"])
        r["ceiling_tok_s"] = bw / r["bytes_per_token"]
        r["fraction_of_ceiling"] = r["decode_tok_s"] / r["ceiling_tok_s"]
    if args.receipts:
        for path, key in receipts:
            res[key]["receipt"] = receipt_for(path, "native", args.tokens, Path(args.receipts))
    res["machine"]["loadavg_after"] = list(os.getloadavg())
    text = json.dumps(res, indent=2)
    if args.json:
        from bitnet.files.atomic import atomic_write_text

        atomic_write_text(Path(args.json), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
