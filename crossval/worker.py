"""The C++ side of a comparison, run in its own process (`python -m crossval.worker REQ OUT`):
a crash or hang in libllama kills this process, not pytest.

REQ is a JSON file: {"cpp_dir", "model", "ids", "n_greedy", "texts", "n_ctx", "n_threads"}.
OUT receives an .npz: logits [T, V], greedy ids, n_vocab, per-text token ids, library facts.
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
    ids = np.asarray(req.get("ids") or [], np.int32)
    if ids.size:
        logits = np.zeros((ids.size, n_vocab), np.float32)
        t0 = time.perf_counter()
        rc = lib.bh_eval(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), ffi.cast("float *", logits.ctypes.data))
        if rc != 0:
            print(f"llama_decode failed ({rc})", file=sys.stderr)
            return 4
        result["logits"] = logits
        result["eval_s"] = np.array(time.perf_counter() - t0)
        n_greedy = int(req.get("n_greedy", 0))
        if n_greedy:
            g = np.zeros(n_greedy, np.int32)
            rc = lib.bh_greedy(h, ffi.cast("int *", ids.ctypes.data), int(ids.size), n_greedy, ffi.cast("int *", g.ctypes.data))
            if rc != 0:
                print(f"greedy generation failed ({rc})", file=sys.stderr)
                return 4
            result["greedy"] = g
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
    np.savez(out_path, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
