"""Run the C++ side in a worker subprocess under the shared timeout (AC4); a crash or a hang
becomes an `error` outcome with the signal or the timeout, never an exception in the caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossval.timeouts import PARITY_TIMEOUT_S


@dataclass
class ReferenceRun:
    ok: bool
    error: str | None = None
    data: dict = field(default_factory=dict)


def _last_words(stderr: str) -> str:
    """What the worker said: its one line for a typed error; for an unexpected exception, the
    exception line of the traceback (the frames are noise in a verdict's reason)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        return f"{lines[-1].strip()} (a bug in the worker: run python -m crossval.worker to see the traceback)"
    return " ".join(lines)[-800:]


def run_reference(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], *, ids: Sequence[int] = (),
                  n_greedy: int = 0, texts: Sequence[str] = (), add_special: bool = False,
                  parse_special: bool = False, n_threads: int | None = None, runs: Sequence[dict] = (),
                  layers: dict | None = None, trace: dict | None = None, bench: dict | None = None,
                  prompt_mode: str = "batch",
                  timeout: float = PARITY_TIMEOUT_S, worker_argv: Sequence[str] | None = None) -> ReferenceRun:
    """`worker_argv` replaces `python -m crossval.worker` (tests use it to plant crashes);
    `runs` ({"ids", "n_greedy"} each) evaluates many prompts in one worker (keys suffixed `_j`);
    `trace` ({"ids", "names", "decode_last"}) copies out every named graph tensor (crossval.trace);
    `bench` ({"ids", "n_tokens"}) times a greedy run in the worker (`bitnet benchmark --engine`);
    `prompt_mode="stepwise"` feeds the prompt one token per llama_decode through the KV cache
    (the path a chat takes token by token) instead of one batch; no per-layer capture then."""
    from bitnet.errors import BitNetError
    from crossval.tl_build import check_model

    try:  # a TL file the build computes from other tiles gives garbage, not an error: refuse it here
        check_model(cpp_dir, model)
    except BitNetError as e:
        return ReferenceRun(False, str(e))
    runs = [{"ids": [int(i) for i in r["ids"]], "n_greedy": int(r.get("n_greedy", 0))} for r in runs]
    n_ctx = max([len(ids) + n_greedy, 8, len((trace or {}).get("ids", ()))]
                + [len(r["ids"]) + r["n_greedy"] for r in runs]
                + ([len(bench["ids"]) + int(bench["n_tokens"]) + 1] if bench else []))
    with tempfile.TemporaryDirectory(prefix="bitnet-crossval-") as tmp:
        req = Path(tmp) / "req.json"
        out = Path(tmp) / "out.npz"
        req.write_text(json.dumps({
            "cpp_dir": str(cpp_dir), "model": str(model), "ids": [int(i) for i in ids], "n_greedy": n_greedy, "runs": runs,
            "layers": layers, "trace": trace, "bench": bench, "prompt_mode": prompt_mode,
            "texts": list(texts), "add_special": add_special, "parse_special": parse_special,
            "n_ctx": n_ctx, "n_threads": n_threads or os.cpu_count() or 1,
        }))
        argv = list(worker_argv) if worker_argv else [sys.executable, "-m", "crossval.worker"]
        try:
            p = subprocess.run([*argv, str(req), str(out)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return ReferenceRun(False, f"timeout: the C++ worker ran past {timeout:g} s and was killed")
        if p.returncode < 0:
            try:
                name = signal.Signals(-p.returncode).name
            except ValueError:
                name = f"signal {-p.returncode}"
            return ReferenceRun(False, f"crash: the C++ worker died with {name}; stderr: {p.stderr.strip()[-400:]}")
        if p.returncode != 0:
            return ReferenceRun(False, f"the C++ worker exited {p.returncode}: {_last_words(p.stderr)}")
        with np.load(out) as z:
            data = {k: z[k] for k in z.files}
        return ReferenceRun(True, None, data)
