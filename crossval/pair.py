"""Any engine against any other: load both, evaluate the same ids under the shared timeout,
gate the logits with `crossval.parity.compare`, and (optionally) write the parity receipt that
names both engines.

Verdicts: an engine that breaks (crash, hang, malformed answer, refusing the model) makes the
comparison `error`, saying which side; a needed capability an engine declares missing makes it
`skipped` with the engine's reason. Neither is ever a pass.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bitnet.engines.protocol import CapabilityMissing, Engine, EngineError, EngineInfo, EngineOutput
from bitnet.errors import BitNetError
from crossval.parity import (
    ParityResult,
    compare,
    errored,
    parity_receipt,
    skipped,
    write_parity_receipt,
)
from crossval.timeouts import PARITY_TIMEOUT_S


@dataclass
class EngineComparison:
    result: ParityResult
    engine: EngineInfo | None = None
    reference: EngineInfo | None = None
    timings: dict = field(default_factory=dict)
    receipt: Path | None = None

    @property
    def verdict(self) -> str:
        return self.result.verdict

    @property
    def passed(self) -> bool:
        return self.result.passed


class _Broke(Exception):
    def __init__(self, verdict: str, reason: str):
        super().__init__(reason)
        self.verdict, self.reason = verdict, reason


def _timed(side: str, fn: Callable, timeout: float):
    """Run fn() in a worker thread under the shared timeout; errors become _Broke(verdict)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(fn)
    try:
        return fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise _Broke("error", f"{side}: ran past the {timeout:g} s timeout") from None
    except CapabilityMissing as e:
        raise _Broke("skipped", f"{side}: {e}") from None
    except (EngineError, BitNetError, OSError) as e:
        raise _Broke("error", f"{side}: {e}" if isinstance(e, EngineError) else f"{side}: {type(e).__name__}: {e}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _info(engine: Engine) -> EngineInfo:
    try:
        return engine.describe()
    except BitNetError as e:  # a receipt still names the side by its spec
        return EngineInfo(engine.spec, "unknown", "unknown", f"describe failed: {e}", "unknown")


def compare_engines(engine: Engine, reference: Engine, model: str | os.PathLike[str], ids: Sequence[int], *,
                    gate: str = "exact", n_greedy: int = 8, receipt: str | os.PathLike[str] | None = None,
                    timeout: float = PARITY_TIMEOUT_S) -> EngineComparison:
    """The engine under test against the reference on `model`; "ours" in the result's fields
    is the engine under test."""
    ids = [int(i) for i in ids]
    model = Path(model)
    for e in (engine, reference):  # adapters with their own process limit get the shared one unless set
        if getattr(e, "timeout", 0) is None:
            e.timeout = timeout
    timings: dict = {"timeout_s": timeout}
    outs: dict[str, EngineOutput] = {}
    notes: list[str] = []
    try:
        for side, e in (("engine", engine), ("reference", reference)):
            t0 = time.perf_counter()
            _timed(side, lambda e=e: e.load(model), timeout)
            try:
                outs[side] = _timed(side, lambda e=e, n=n_greedy: e.evaluate(ids, n), timeout)
            except _Broke as b:
                if b.verdict != "skipped" or not n_greedy:
                    raise
                # no greedy on this side: compare the logits alone, and say so
                notes.append(f"greedy not compared: {b.reason}")
                n_greedy = 0
                outs[side] = _timed(side, lambda e=e: e.evaluate(ids, 0), timeout)
                for o in outs.values():
                    o.greedy = []
            timings[f"{side}_s"] = time.perf_counter() - t0
    except _Broke as b:
        result = (skipped if b.verdict == "skipped" else errored)(b.reason, gate)
        return _finish(result, engine, reference, model, ids, timings, receipt)
    a, b = outs["engine"].logits, outs["reference"].logits
    if a.shape != b.shape:
        return _finish(errored(f"logits shapes differ: engine {list(a.shape)}, reference {list(b.shape)} "
                               f"(vocab: engine {a.shape[1]}, reference {b.shape[1]})", gate),
                       engine, reference, model, ids, timings, receipt)
    result = compare(a, b, gate, greedy_ours=outs["engine"].greedy, greedy_ref=outs["reference"].greedy)
    if notes:
        result.reason = "; ".join([result.reason, *notes]) if result.reason else "; ".join(notes)
    return _finish(result, engine, reference, model, ids, timings, receipt)


def _finish(result: ParityResult, engine: Engine, reference: Engine, model: Path, ids: list[int], timings: dict,
            receipt) -> EngineComparison:
    c = EngineComparison(result, _info(engine), _info(reference), timings)
    if receipt is not None and model.is_file():
        corrections = [x for e in (engine, reference) for x in getattr(e, "corrections", [])]
        c.receipt = write_parity_receipt(receipt, parity_receipt(
            result, model=model, prompt_ids=ids, engine=c.engine.to_dict(), reference=c.reference.to_dict(),
            timings=timings, corrections=corrections))
    return c
