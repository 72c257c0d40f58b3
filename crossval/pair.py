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
    flips_decide,
    gate_layers,
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


def gate_family_of(engine: Engine, reference: Engine, model: Path) -> str | None:
    """The format family whose bounds judge this pair: the model's family under the numerics
    profile of our own engine when one side is ours, else the profile the reference (then the
    engine) claims, else the model's default profile. None when our loader cannot read the
    model (the comparison is then gated at the loosest, family-free bounds)."""
    from bitnet.engines.reference import ReferenceEngine
    from bitnet.errors import BitNetError
    from bitnet.model import BitNetModel
    from bitnet.model.profiles import PROFILES
    from crossval.compare import gate_family

    ours = [e.numerics for e in (engine, reference) if isinstance(e, ReferenceEngine)]
    claimed = [_info(e).numerics for e in (reference, engine)]
    numerics = next((n for n in [*ours, *claimed] if n in PROFILES), None)
    try:
        m = BitNetModel(model, profile=numerics, strict=False)
    except (BitNetError, OSError, ValueError):
        return None
    try:
        return gate_family(m)
    finally:
        m.close()


def layer_gate(engine: Engine, reference: Engine, ids: list[int], timeout: float) -> tuple[list, str]:
    """Per-layer teacher-forced metrics of a pair, and how they were taken: the engine's
    layers run on the reference's captured inputs when the engine can force its layers and the
    reference can capture, else the reference's layers on the engine's inputs (the same
    per-layer difference, measured from the other side). Raises _Broke("skipped") with both
    engines' reasons when neither direction is possible."""
    from bitnet.engines.protocol import check_layers
    from crossval.layers import metrics_of

    ce, cr = engine.capabilities, reference.capabilities
    # sub-layer forcing first (crossval.layers.sublayer_forced_layers): each sub-block on the
    # other side's own tensors, so no rounding flip crosses a boundary; whole layers otherwise
    for forcer, capturer, how in ((engine, reference, "the engine's sub-blocks on the reference's tensors"),
                                  (reference, engine, "the reference's sub-blocks on the engine's tensors")):
        if hasattr(forcer, "sublayer_forced") and hasattr(capturer, "named_outputs"):
            from crossval.layers import sublayer_metrics

            named = _timed("reference" if capturer is reference else "engine", lambda c=capturer: c.named_outputs(ids),
                           timeout)
            forced = _timed("engine" if forcer is engine else "reference",
                            lambda f=forcer, n=named: f.sublayer_forced(ids, n), timeout)
            return sublayer_metrics(forced, named, 1 + max(k[0] for k in named)), how
    if ce.layer_forcing and cr.layers:
        cap = check_layers(reference.spec, _timed("reference", lambda: reference.layer_outputs(ids), timeout), len(ids))
        forced = check_layers(engine.spec, _timed("engine", lambda: engine.forced_layer_outputs(ids, cap), timeout),
                              len(ids), len(cap))
        return metrics_of(forced, cap), ("the engine's layers on the reference's inputs (whole layers: "
                                         "no sub-block tensors on one side)")
    if cr.layer_forcing and ce.layers:
        cap = check_layers(engine.spec, _timed("engine", lambda: engine.layer_outputs(ids), timeout), len(ids))
        forced = check_layers(reference.spec, _timed("reference", lambda: reference.forced_layer_outputs(ids, cap),
                                                     timeout), len(ids), len(cap))
        return metrics_of(cap, forced), ("the reference's layers on the engine's inputs (whole layers: "
                                         "no sub-block tensors on one side)")
    why = "; ".join(f"{side} {e.spec}: layers {'yes' if c.layers else 'no'}, layer forcing "
                    f"{'yes' if c.layer_forcing else 'no (' + c.why_not.get('layer_forcing', 'not declared') + ')'}"
                    for side, e, c in (("engine", engine, ce), ("reference", reference, cr)))
    raise _Broke("skipped", f"per-layer gate needs one side that forces its layers and one that captures them ({why})")


def compare_engines(engine: Engine, reference: Engine, model: str | os.PathLike[str], ids: Sequence[int], *,
                    gate: str = "exact", n_greedy: int = 8, receipt: str | os.PathLike[str] | None = None,
                    timeout: float = PARITY_TIMEOUT_S, per_layer: bool = True,
                    end_to_end: str = "gate") -> EngineComparison:
    """The engine under test against the reference on `model`; "ours" in the result's fields
    is the engine under test. The logits are gated at the bounds of the model's format family
    (`gate_family_of`). With `per_layer` (default) and an `exact` gate, each layer is also
    gated teacher-forced (`layer_gate`), as for ours against libllama: where neither side
    offers the capabilities it needs the reason says the per-layer gate was not applied, and
    why. end_to_end="report" lets the per-layer verdict decide alone (deep models)."""
    if end_to_end not in ("gate", "report"):
        raise ValueError(f"end_to_end must be 'gate' or 'report', got {end_to_end!r}")
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
    family = gate_family_of(engine, reference, model)
    layers = None
    if per_layer:
        from crossval.parity import thresholds

        why = ""
        if family is None:
            why = "our loader cannot read the model, so its format family (and per-layer bounds) is unknown"
        elif "layer_max_rel_abs" not in thresholds(gate, family):
            why = f"the {gate!r} gate has no per-layer bounds (policies/parity.yml)"
        else:
            try:
                layers, how = layer_gate(engine, reference, ids, timeout)
            except _Broke as br:
                if br.verdict != "skipped":
                    return _finish(errored(br.reason, gate), engine, reference, model, ids, timings, receipt)
                why = br.reason
        if why:
            if end_to_end == "report":
                return _finish(errored(f"per-layer gate requested alone, but not applied: {why}", gate),
                               engine, reference, model, ids, timings, receipt)
            notes.append(f"per-layer gate not applied: {why}")
    result = compare(a, b, gate, greedy_ours=outs["engine"].greedy, greedy_ref=outs["reference"].greedy,
                     family=family, flips_decide=flips_decide(gate, family, layers is not None))
    if layers is not None:
        result = gate_layers(result, layers, end_to_end=end_to_end)
        result.reason += f" (per layer: {how})"
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
