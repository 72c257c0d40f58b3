"""`libllama:DIR`: a llama.cpp or bitnet.cpp build through the crossval bridge (the cffi shim
in `crossval/shim.c`), every call in the crash-isolated worker process under the shared
timeout: a segfault or a hang in the C++ code is an engine error, never a dead pytest."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from bitnet.engines.protocol import (
    Capabilities,
    EngineError,
    EngineInfo,
    EngineOutput,
    RoundTripEngine,
    TimedRun,
    check_logits,
)
from bitnet.errors import ConfigError
from crossval.timeouts import PARITY_TIMEOUT_S

#: what each API generation loads (measured: crossval tests against llama.cpp of
#: llama-cpp-python 0.3.36, and the bitnet.cpp fork revisions we could build)
LOADS = {
    "upstream": (("bitnet", "f32"), ("bitnet", "f16"), ("bitnet", "tq1_0"), ("bitnet", "tq2_0")),
    "bitnet.cpp-fork": (("bitnet", "i2_s"), ("bitnet", "f32")),
}
NUMERICS = {"upstream": "llama.cpp", "bitnet.cpp-fork": "bitnet.cpp"}


def from_spec(spec: str, arg: str) -> LibllamaEngine:
    if not arg:
        raise ConfigError(f"{spec}: name the build, libllama:DIR (python -m crossval.setup --print-dir prints one)")
    return LibllamaEngine(spec, arg)


class LibllamaEngine(RoundTripEngine):
    kind = "libllama"

    def __init__(self, spec: str, cpp_dir: str, *, timeout: float = PARITY_TIMEOUT_S,
                 worker_argv: Sequence[str] | None = None):
        super().__init__(spec)
        self.cpp_dir = cpp_dir
        self.timeout = timeout
        self.worker_argv = worker_argv
        self._ref = None

    @property
    def ref(self):
        """The located build (BridgeError naming what was looked for); looked up on first use,
        so a build that breaks only in the worker still ends as an `error` verdict."""
        if self._ref is None:
            from crossval.reference import locate

            self._ref = locate(self.cpp_dir)
        return self._ref

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        from crossval.tl_build import tl_build

        tl = tl_build(self.ref)  # a bitnet.cpp build with lookup-table kernels computes that TL format too
        return Capabilities(logits=True, greedy=True, tokenize=True,
                            loads=LOADS[self.ref.api] + ((("bitnet", tl.flavor),) if tl else ()), layers=True,
                            why_not={"layer_forcing": "libllama runs its graph whole; its layers cannot be fed "
                                                      "another engine's inputs (its outputs are captured instead)"})

    def _run(self, **kw) -> dict:
        from crossval.runner import run_reference

        r = run_reference(self.cpp_dir, self._need_model(), timeout=self.timeout, worker_argv=self.worker_argv, **kw)
        if not r.ok:
            raise EngineError(f"{self.spec}: {r.error}")
        return r.data

    def evaluate(self, ids: Sequence[int], n_greedy: int = 0) -> EngineOutput:
        t0 = time.perf_counter()
        d = self._run(ids=[int(i) for i in ids], n_greedy=n_greedy)
        lg = check_logits(self.spec, d.get("logits"), len(ids))
        g = [int(i) for i in d.get("greedy", np.zeros(0, np.int32))]
        return EngineOutput(lg, g, time.perf_counter() - t0)

    def layer_outputs(self, ids: Sequence[int]) -> np.ndarray:
        """Every `l_out-N` through the graph eval callback (crossval/shim.c bh_eval_layers);
        a build whose graph names its layers otherwise declares the capability missing."""
        from bitnet.engines.protocol import CapabilityMissing, check_layers
        from bitnet.gguf.reader import GGUFReader
        from bitnet.model.config import read_config

        with GGUFReader(self._need_model()) as rd:
            cfg = read_config(rd, strict=False)
        d = self._run(ids=[int(i) for i in ids], layers={"n_layer": cfg.n_layer, "n_embd": cfg.n_embd})
        if "l_out" not in d:
            raise CapabilityMissing(f"engine {self.spec} cannot layers: {d.get('l_out_error', 'no l_out captured')}")
        return check_layers(self.spec, d["l_out"], len(ids), cfg.n_layer)

    def timed_greedy(self, ids: Sequence[int], n: int) -> TimedRun:
        """Greedy generation in the crash-isolated worker, which times the load, the prompt and
        every decode call itself (crossval/worker.py `_bench`): harness code around each
        libllama call, not llama.cpp's own perf counters."""
        import os

        threads = os.cpu_count() or 1
        from crossval.runner import run_reference

        r = run_reference(self.cpp_dir, self._need_model(), timeout=self.timeout, worker_argv=self.worker_argv,
                          n_threads=threads, bench={"ids": [int(i) for i in ids], "n_tokens": int(n)})
        if not r.ok:
            raise EngineError(f"{self.spec}: {r.error}")
        d = r.data
        where = "in the crash-isolated worker (crossval/worker.py), harness code"
        return TimedRun(
            [int(i) for i in d["bench_ids"]], float(d["load_s"]) + float(d["bench_run_s"]), load_s=float(d["load_s"]),
            prefill_s=float(d["bench_prefill_s"]), decode_step_s=[float(s) for s in d["bench_step_s"]],
            peak_rss_bytes=int(d["bench_peak_rss"]), threads=threads,
            how={"timings.load_s": f"perf_counter around llama's model load {where}",
                 "timings.prefill_s": f"perf_counter around the one prompt decode call {where}",
                 "timings.decode_step_s": f"perf_counter around each one-token decode call {where}",
                 "timings.total_s": f"the load plus perf_counter from the timed context's creation to after the "
                                    f"last step {where} (an untimed warm-up runs between them)",
                 "peak_rss_bytes": "ru_maxrss of the worker process that ran libllama (getrusage, the OS's figure)",
                 "threads": "n_threads the harness gave the llama context (os.cpu_count())"},
            why_not={"timings.prefill_cpu_s": "libllama runs its own thread pool: the calling thread's CPU time is "
                                              "not the work's", "timings.decode_step_cpu_s": "libllama runs its own "
                                              "thread pool: the calling thread's CPU time is not the work's"})

    def tokenize_many(self, texts, add_special: bool = False, parse_special: bool = False) -> list[list[int]]:
        d = self._run(texts=list(texts), add_special=add_special, parse_special=parse_special)
        return [d[f"tok_{i}"].tolist() for i in range(len(texts))]

    def describe(self) -> EngineInfo:
        from crossval.tl_build import tl_build

        tl = tl_build(self.ref)
        numerics = NUMERICS[self.ref.api] + (f"-{tl.flavor}" if tl and tl.flavor == "tl2" else "")
        return EngineInfo(self.spec, f"libllama ({self.ref.api}{', ' + tl.flavor.upper() + ' kernels' if tl else ''})",
                          self.ref.version, str(self.ref.libllama), numerics)
