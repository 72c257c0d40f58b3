"""The C++ side of a comparison, run in its own process (`python -m crossval.worker REQ OUT`):
a crash or hang in libllama kills this process, not pytest.

REQ is a JSON file: {"cpp_dir", "model", "ids", "n_greedy", "runs", "layers", "texts", "n_ctx",
"n_threads", "prompt_mode"}; "layers" ({"n_layer", "n_embd"}) adds `l_out` [n_layer, T,
n_embd], every layer's output captured through libllama's graph eval callback; "prompt_mode"
"stepwise" decodes the prompt one token at a time (no `l_out` then).
OUT receives an .npz: logits [T, V], greedy ids [n] and the teacher-forced decode-step logits
[n, V] along them, n_vocab, per-text token ids, library facts; for each of "runs" (a list of
{"ids", "n_greedy"}, one model load for many prompts) the same keys suffixed `_j`.
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
    ids = [int(i) for i in req.get("ids") or []]
    lay = req.get("layers")
    stepwise = req.get("prompt_mode", "batch") == "stepwise"
    if ids and lay and not stepwise:  # per-layer capture (graph eval callback): logits and every l_out-N
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
        rc = _evaluate(ffi, lib, h, n_vocab, ids, int(req.get("n_greedy", 0)), result, "", stepwise)
        if rc:
            return rc
    for j, run in enumerate(req.get("runs") or []):  # calibration: many prompts, one load
        rc = _evaluate(ffi, lib, h, n_vocab, [int(i) for i in run["ids"]], int(run.get("n_greedy", 0)), result, f"_{j}")
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
              stepwise: bool = False) -> int:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
