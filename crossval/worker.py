"""The C++ side of a comparison, run in its own process (`python -m crossval.worker REQ OUT`):
a crash or hang in libllama kills this process, not pytest.

REQ is a JSON file: {"cpp_dir", "model", "ids", "n_greedy", "runs", "layers", "texts", "n_ctx",
"n_threads", "bench", "prompt_mode"}; "layers" ({"n_layer", "n_embd"}) adds `l_out` [n_layer, T,
n_embd], every layer's output captured through libllama's graph eval callback; "trace" ({"ids",
"names", "decode_last"}) adds every graph tensor with one of those base names (crossval.trace):
trace_names, trace_ops, trace_ne [k, 4], trace_offsets, trace_data (F32, ggml order),
trace_logits. With "layers" and "n_greedy" also `decode_l_out` [n_layer, n, n_embd], every
layer's output at each teacher-forced decode step; "prompt_mode" "stepwise" decodes the prompt
one token at a time (no `l_out` then).
OUT receives an .npz: logits [T, V], greedy ids [n] and the teacher-forced decode-step logits
[n, V] along them, n_vocab, per-text token ids, library facts; for each of "runs" (a list of
{"ids", "n_greedy"}, one model load for many prompts) the same keys suffixed `_j`.
"bench" ({"ids", "n_tokens"}: bitnet benchmark --engine libllama:DIR) adds `bench_ids`,
`bench_prefill_s`, `bench_step_s`, `bench_run_s` and `bench_peak_rss`, timed here (`_bench`).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    req_path, out_path = argv
    req = json.loads(open(req_path, encoding="utf-8").read())
    from bitnet.errors import BitNetError
    from crossval.reference import load_failure_hint, locate, shim_for

    try:  # a typed error is one line for the parent to show, never a traceback
        ref = locate(req["cpp_dir"], req.get("option", "--bitnet-cpp-dir"))
        mod = shim_for(ref)
    except BitNetError as e:
        print(str(e), file=sys.stderr)
        return 2
    ffi, lib = mod.ffi, mod.lib
    t0 = time.perf_counter()
    h = lib.bh_load(req["model"].encode(), int(req.get("n_ctx", 0)), int(req.get("n_threads", 2)), 0)
    if h == ffi.NULL:
        print(f"libllama could not load {req['model']}: {load_failure_hint(ref, req['model'])}", file=sys.stderr)
        return 3
    load_s = time.perf_counter() - t0
    n_vocab = lib.bh_n_vocab(h)
    result: dict[str, np.ndarray] = {"n_vocab": np.array(n_vocab), "load_s": np.array(load_s),
                                     "api": np.array(ref.api), "libllama": np.array(str(ref.libllama)),
                                     "version": np.array(ref.version)}
    tr = req.get("trace")
    if tr:
        rc = _trace(ffi, lib, h, n_vocab, tr, result)
        if rc:
            return rc
    ids = [int(i) for i in req.get("ids") or []]
    lay = req.get("layers")
    stepwise = req.get("prompt_mode", "batch") == "stepwise"
    if ids and lay and tr and not stepwise and not tr.get("decode_last") and [int(i) for i in tr["ids"]] == ids:
        _layers_from_trace(result, int(lay["n_layer"]), len(ids), int(lay["n_embd"]))
    if ids and lay and not stepwise and "l_out" not in result and "l_out_error" not in result:
        # per-layer capture (graph eval callback): logits and every l_out-N
        a = np.asarray(ids, np.int32)
        logits = np.zeros((a.size, n_vocab), np.float32)
        out = np.zeros((int(lay["n_layer"]), a.size, int(lay["n_embd"])), np.float32)
        got = lib.bh_eval_layers(h, ffi.cast("int *", a.ctypes.data), int(a.size), int(lay["n_layer"]),
                                 int(lay["n_embd"]), ffi.cast("float *", logits.ctypes.data),
                                 ffi.cast("float *", out.ctypes.data))
        if got == int(lay["n_layer"]):
            result["logits"] = logits  # the same one-batch evaluation bh_eval does, with the callback
            result["l_out"] = out
        else:  # an engine whose graph names its layers otherwise: end to end only, and say so
            result["l_out_error"] = np.array(f"{got} of {lay['n_layer']} l_out-N tensors captured (negative: "
                                             "decode error; -4: a tensor of unexpected shape or type)")
    if ids:
        rc = _evaluate(ffi, lib, h, n_vocab, ids, int(req.get("n_greedy", 0)), result, "",
                       lay if "l_out" in result else None, stepwise)
        if rc:
            return rc
    for j, run in enumerate(req.get("runs") or []):  # calibration: many prompts, one load
        rc = _evaluate(ffi, lib, h, n_vocab, [int(i) for i in run["ids"]], int(run.get("n_greedy", 0)), result, f"_{j}")
        if rc:
            return rc
    if req.get("bench"):  # bitnet benchmark --engine libllama:DIR
        rc = _bench(ffi, lib, h, req["bench"], result)
        if rc:
            return rc
    for i, text in enumerate(req.get("texts") or []):
        raw = text.encode("utf-8")
        buf = np.zeros(len(raw) * 2 + 16, np.int32)
        n = lib.bh_tokenize(h, raw, len(raw), ffi.cast("int *", buf.ctypes.data), buf.size,
                            bool(req.get("add_special", False)), bool(req.get("parse_special", False)))
        if n < 0:
            print(f"llama_tokenize failed for text {i} ({n})", file=sys.stderr)
            return 4
        result[f"tok_{i}"] = buf[:n].copy()
    lib.bh_free(h)
    from bitnet.files.atomic import atomic_open

    with atomic_open(out_path) as fh:  # a killed worker leaves no half-written .npz behind
        np.savez(fh, **result)
    return 0


def _evaluate(ffi, lib, h, n_vocab: int, ids_list: list[int], n_greedy: int, result: dict, suffix: str,
              lay: dict | None = None, stepwise: bool = False) -> int:
    """Prompt logits of every position (one batch), then `n_greedy` teacher-forced decode steps
    along the reference's greedy path: `greedy` [n], `decode_logits` [n, V] (step s fed greedy[s]).
    `stepwise`: the prompt one token per decode instead (bh_eval_stepwise), the same keys."""
    ids = np.asarray(ids_list, np.int32)
    if stepwise:
        logits = np.zeros((ids.size, n_vocab), np.float32)
        g = np.zeros(n_greedy, np.int32)
        dec = np.zeros((n_greedy, n_vocab), np.float32)
        t0 = time.perf_counter()
        rc = lib.bh_eval_stepwise(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), n_greedy,
                                  ffi.cast("int *", g.ctypes.data), ffi.cast("float *", logits.ctypes.data),
                                  ffi.cast("float *", dec.ctypes.data))
        if rc != 0:
            print(f"llama_decode failed token by token ({rc})", file=sys.stderr)
            return 4
        result["logits" + suffix] = logits
        result["eval_s" + suffix] = np.array(time.perf_counter() - t0)
        if n_greedy:
            result["greedy" + suffix] = g
            result["decode_logits" + suffix] = dec
        return 0
    if "logits" + suffix not in result:  # (the per-layer capture already evaluated the prompt)
        logits = np.zeros((ids.size, n_vocab), np.float32)
        t0 = time.perf_counter()
        rc = lib.bh_eval(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), ffi.cast("float *", logits.ctypes.data))
        if rc != 0:
            print(f"llama_decode failed ({rc})", file=sys.stderr)
            return 4
        result["logits" + suffix] = logits
        result["eval_s" + suffix] = np.array(time.perf_counter() - t0)
    if n_greedy and lay:
        return _decode_steps_layers(ffi, lib, h, n_vocab, ids, n_greedy, lay, result)
    if n_greedy:
        g = np.zeros(n_greedy, np.int32)
        dec = np.zeros((n_greedy, n_vocab), np.float32)
        rc = lib.bh_decode_steps(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), n_greedy,
                                 ffi.cast("int *", g.ctypes.data), ffi.cast("float *", dec.ctypes.data))
        if rc != 0:
            print(f"greedy decode steps failed ({rc})", file=sys.stderr)
            return 4
        result["greedy" + suffix] = g
        result["decode_logits" + suffix] = dec
    return 0


def _decode_steps_layers(ffi, lib, h, n_vocab: int, ids: np.ndarray, n_greedy: int, lay: dict, result: dict) -> int:
    """The teacher-forced decode steps with every layer's output of each step captured
    (`decode_l_out` [n_layer, n, n_embd]); a build whose graph names its layers otherwise gets
    `decode_l_out_error` and the steps' logits alone."""
    n_layer, n_embd = int(lay["n_layer"]), int(lay["n_embd"])
    g = np.zeros(n_greedy, np.int32)
    dec = np.zeros((n_greedy, n_vocab), np.float32)
    out = np.zeros((n_greedy, n_layer, n_embd), np.float32)
    got = lib.bh_decode_steps_layers(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), n_greedy, n_layer, n_embd,
                                     ffi.cast("int *", g.ctypes.data), ffi.cast("float *", dec.ctypes.data),
                                     ffi.cast("float *", out.ctypes.data))
    if got in (-1, -2, -3):
        print(f"greedy decode steps failed ({got})", file=sys.stderr)
        return 4
    result["greedy"] = g
    result["decode_logits"] = dec
    if got == n_greedy * n_layer:
        result["decode_l_out"] = np.ascontiguousarray(out.transpose(1, 0, 2))
    else:
        result["decode_l_out_error"] = np.array(f"{got} of {n_greedy * n_layer} decode-step l_out-N rows captured "
                                                "(-4: a tensor of unexpected shape or type)")
    return 0


def _layers_from_trace(result: dict, n_layer: int, T: int, n_embd: int) -> None:
    """The per-layer capture's keys (logits, l_out) from a trace of the same ids: the same
    one-batch evaluation bh_eval_layers makes, so it is not made twice."""
    names = [str(x) for x in result["trace_names"]]
    out = np.zeros((n_layer, T, n_embd), np.float32)
    got = set()
    for i, name in enumerate(names):  # the last node named l_out-N is the layer's output
        if name.startswith("l_out-") and name[6:].isdigit() and int(name[6:]) < n_layer:
            ne = result["trace_ne"][i]
            if int(np.prod(ne)) != T * n_embd:
                continue
            off = int(result["trace_offsets"][i])
            out[int(name[6:])] = result["trace_data"][off:off + T * n_embd].reshape(T, n_embd)
            got.add(int(name[6:]))
    if len(got) == n_layer:
        result["logits"] = result["trace_logits"]
        result["l_out"] = out


def _trace(ffi, lib, h, n_vocab: int, tr: dict, result: dict) -> int:
    """One forward pass with the named tensors copied out (shim bh_trace)."""
    ids = np.asarray([int(i) for i in tr["ids"]], np.int32)
    decode_last = bool(tr.get("decode_last"))
    logits = np.zeros((1 if decode_last else ids.size, n_vocab), np.float32)
    t0 = time.perf_counter()
    t = lib.bh_trace(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), int(decode_last),
                     ",".join(tr["names"]).encode(), ffi.cast("float *", logits.ctypes.data))
    if t == ffi.NULL:
        print("llama context for the trace could not be made", file=sys.stderr)
        return 4
    try:
        status = lib.bh_trace_status(t)
        if status != 0:
            print(f"llama_decode failed during the trace ({status})", file=sys.stderr)
            return 4
        n = lib.bh_trace_count(t)
        names, ops, ne, offs = [], [], np.zeros((n, 4), np.int64), np.zeros(n, np.int64)
        nb, ob = ffi.new("char[64]"), ffi.new("char[24]")
        ne_c, off_c = ffi.new("long long[4]"), ffi.new("long long *")
        for i in range(n):
            lib.bh_trace_record(t, i, nb, ob, ne_c, off_c)
            names.append(ffi.string(nb).decode())
            ops.append(ffi.string(ob).decode())
            ne[i] = list(ne_c)
            offs[i] = off_c[0]
        data = np.zeros(int(lib.bh_trace_size(t)), np.float32)
        lib.bh_trace_copy(t, ffi.cast("float *", data.ctypes.data))
        result.update(trace_names=np.array(names), trace_ops=np.array(ops), trace_ne=ne, trace_offsets=offs,
                      trace_data=data, trace_logits=logits, trace_unsupported=np.array(lib.bh_trace_unsupported(t)),
                      trace_s=np.array(time.perf_counter() - t0))
    finally:
        lib.bh_trace_free(t)
    return 0


def _bench(ffi, lib, h, bench: dict, result: dict) -> int:
    """Greedy generation timed by this (harness) code around each libllama call: prefill is one
    `bh_ctx_step` over the prompt (its argmax is the first token); decode step s feeds token s
    through the KV cache and takes the argmax of its logits, as `bitnet benchmark` times its own
    engine (one timed forward per generated token), after an untimed warm-up in a context of its
    own. Peak RSS is this worker's, read from the OS."""
    import resource

    ids = np.asarray([int(i) for i in bench["ids"]], np.int32)
    n = int(bench["n_tokens"])
    best = ffi.new("int *")
    warm = lib.bh_ctx_new(h, int(ids.size) + 2)  # warm-up, not timed: graph allocation, thread pool, caches
    if warm != ffi.NULL:
        if lib.bh_ctx_step(h, warm, ffi.cast("int *", ids.ctypes.data), int(ids.size), 0, best) == 0:
            lib.bh_ctx_step(h, warm, best, 1, int(ids.size), best)
        lib.bh_ctx_free(warm)
    t_run = time.perf_counter()
    ctx = lib.bh_ctx_new(h, int(ids.size) + n + 1)
    if ctx == ffi.NULL:
        print("llama context creation failed", file=sys.stderr)
        return 4
    tokens, steps = [], []
    try:
        t = time.perf_counter()
        rc = lib.bh_ctx_step(h, ctx, ffi.cast("int *", ids.ctypes.data), int(ids.size), 0, best)
        result["bench_prefill_s"] = np.array(time.perf_counter() - t)
        pos = int(ids.size)
        for _ in range(n):
            if rc != 0:
                break
            tok = np.asarray([best[0]], np.int32)
            tokens.append(int(tok[0]))
            t = time.perf_counter()
            rc = lib.bh_ctx_step(h, ctx, ffi.cast("int *", tok.ctypes.data), 1, pos, best)
            steps.append(time.perf_counter() - t)
            pos += 1
    finally:
        lib.bh_ctx_free(ctx)
    if rc != 0:
        print(f"llama_decode failed during the timed run ({rc})", file=sys.stderr)
        return 4
    result["bench_run_s"] = np.array(time.perf_counter() - t_run)  # context + prefill + steps
    result["bench_ids"] = np.asarray(tokens, np.int32)
    result["bench_step_s"] = np.asarray(steps, np.float64)
    result["bench_peak_rss"] = np.array(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
