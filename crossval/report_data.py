"""What a parity report shows, gathered in one record (`ReportData`) from a comparison: the
parity receipt's facts (engines, model digest, gate, every position, layers, trace), the top-k
tables `crossval.parity.compare` kept, and the token pieces that make those tables readable.

crossval.report renders it; nothing here draws. Building the record from the receipt dict
(written or not) keeps the page and the receipt saying the same thing.

The divergence map is fed by the receipt's `trace` (crossval's op-by-op localisation:
`{"version": 1, "arch", "ops": [{"layer", "op", "ref_name", "one_minus_cos", "rel_max_abs",
"ok", "teacher_forced": {...} | None}, ...], "first_divergent": {"layer", "op"} | None}`).
When a comparison has no trace but has the per-layer teacher-forced gate (crossval.layers),
`trace_from_layers` turns those layer outputs into the same shape, one op (`l_out`) per layer,
so the map shows what was measured; with neither, the page says there is no trace.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

TRACE_VERSION = 1
#: where the map's data came from
TRACE_SOURCES = ("trace", "layers", "none")


@dataclass
class ReportData:
    verdict: str
    reason: str
    gate: str  # the parity gate profile (exact / cross)
    family: str | None
    bounds: dict
    engine: dict | None  # EngineInfo.to_dict(): spec, name, version, build, numerics
    reference: dict | None
    model: dict  # path, sha256, bytes
    prompt_ids: list[int]
    positions: list[dict]  # PositionMetrics as dicts
    first_divergence: int | None
    decode_positions: list[dict] = field(default_factory=list)
    decode_first_divergence: int | None = None
    decode_tokens: list[int] = field(default_factory=list)
    greedy: dict = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)
    layer_first_divergence: int | None = None
    trace: dict | None = None
    trace_source: str = "none"
    topk: list[dict] = field(default_factory=list)
    #: token id -> its text piece (for the top-k tables), when the model's tokenizer loads
    pieces: dict[int, str] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    created_at: str = ""
    tool: dict = field(default_factory=dict)
    arch: str = "unknown"
    #: a line saying why a capability is absent for this pair (decode steps, layers)
    notes: list[str] = field(default_factory=list)

    @property
    def first_divergent_op(self) -> dict | None:
        return (self.trace or {}).get("first_divergent")


def trace_from_layers(layers: list[dict], first_divergence: int | None, layer_bounds: dict,
                      arch: str = "unknown") -> dict:
    """The per-layer teacher-forced metrics (crossval.layers.LayerMetrics as dicts) in the trace
    shape: one op `l_out` per layer. Those metrics are teacher-forced only (our layer on the
    reference's input), so `teacher_forced` holds them and the free-running fields are NaN (not
    measured); `ok` is the layer gate's judgement under `layer_bounds` (policies/parity.yml
    `layer_max_*`)."""
    checks = (("max_rel_abs", "layer_max_rel_abs"), ("max_one_minus_cos", "layer_max_one_minus_cos"),
              ("median_rel_abs", "layer_max_median_rel_abs"))
    ops = []
    for x in layers:
        ok = all(b not in layer_bounds or (x.get(m) is not None and x[m] <= layer_bounds[b]) for m, b in checks)
        ops.append({"layer": int(x["layer"]), "op": "l_out", "ref_name": f"l_out-{int(x['layer'])}",
                    "one_minus_cos": math.nan, "rel_max_abs": math.nan, "ok": ok,
                    "teacher_forced": {"one_minus_cos": float(x["max_one_minus_cos"]),
                                       "rel_max_abs": float(x["max_rel_abs"]), "ok": ok}})
    first = {"layer": int(first_divergence), "op": "l_out"} if first_divergence is not None else None
    return {"version": TRACE_VERSION, "arch": arch, "ops": ops, "first_divergent": first}


def _arch(model: Path) -> str:
    try:
        from bitnet.gguf.reader import GGUFReader

        with GGUFReader(model) as rd:
            return str(rd.architecture or "unknown")
    except Exception:  # the report is written for broken models too; the arch is a label
        return "unknown"


def _pieces(model: Path, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    try:
        from bitnet.tokenizer import load_tokenizer

        tok = load_tokenizer(model)
        return {i: tok.token_to_piece(i, special=True).decode("utf-8", "replace") for i in sorted(ids)}
    except Exception:  # a model without a usable tokenizer: the tables show ids alone
        return {}


def _layer_bounds(gate: str, family: str | None) -> dict:
    from bitnet.errors import BitNetError
    from crossval.parity import thresholds

    try:
        th = thresholds(gate, family)
    except BitNetError:
        return {}
    return {k: v for k, v in th.items() if k.startswith("layer_")}


def from_receipt(receipt: dict, *, topk: list[dict] | None = None, pieces: dict[int, str] | None = None,
                 arch: str = "unknown", notes: list[str] | None = None) -> ReportData:
    """A report from a parity receipt (crossval.parity.parity_receipt; schema 2.x). The
    receipt's `trace` feeds the map when present, else its per-layer section."""
    gate_sec = receipt.get("gate") or {}
    layers_sec = receipt.get("layers") or {}
    decode = receipt.get("decode") or {}
    layers = list(layers_sec.get("positions") or [])
    trace, source = receipt.get("trace"), "trace"
    if not trace:
        trace, source = None, "none"
        if layers:
            bounds = _layer_bounds(receipt.get("profile", "exact"), gate_sec.get("family"))
            trace = trace_from_layers(layers, layers_sec.get("first_divergence"), bounds, arch)
            source = "layers"
    return ReportData(
        verdict=receipt["verdict"], reason=receipt.get("reason", ""), gate=receipt.get("profile", ""),
        family=gate_sec.get("family"), bounds=dict(gate_sec.get("bounds") or {}),
        engine=receipt.get("engine"), reference=receipt.get("reference"), model=dict(receipt.get("model") or {}),
        prompt_ids=[int(i) for i in receipt.get("prompt_ids", [])], positions=list(receipt.get("positions", [])),
        first_divergence=receipt.get("first_divergence"), decode_positions=list(decode.get("positions") or []),
        decode_first_divergence=decode.get("first_divergence"), decode_tokens=list(decode.get("tokens") or []),
        greedy=dict(receipt.get("greedy") or {}), layers=layers,
        layer_first_divergence=layers_sec.get("first_divergence"), trace=trace, trace_source=source,
        topk=list(topk or []), pieces=dict(pieces or {}), timings=dict(receipt.get("timings") or {}),
        created_at=receipt.get("created_at", ""), tool=dict(receipt.get("tool") or {}),
        arch=(trace or {}).get("arch") or arch, notes=list(notes or []))


def report_data(comparison, model: str | os.PathLike[str], ids, *, notes: list[str] | None = None) -> ReportData:
    """The report of one comparison (crossval.pair.EngineComparison): from the receipt it wrote,
    or from the receipt it would write (the model digest is computed then)."""
    from crossval.parity import parity_receipt

    model = Path(model)
    c = comparison
    if c.receipt is not None:
        receipt = json.loads(Path(c.receipt).read_text(encoding="utf-8"))
    else:
        from bitnet.engines.protocol import EngineInfo

        unknown = EngineInfo("unknown", "unknown", "unknown", "unknown", "unknown").to_dict()
        receipt = parity_receipt(c.result, model=model, prompt_ids=[int(i) for i in ids],
                                 engine=c.engine.to_dict() if c.engine else unknown,
                                 reference=c.reference.to_dict() if c.reference else unknown, timings=c.timings)
    trace = getattr(c.result, "trace", None) or getattr(c, "trace", None)
    if trace and not receipt.get("trace"):
        receipt["trace"] = trace
    topk = list(getattr(c.result, "topk", []) or [])
    ids_shown = {int(r["id"]) for t in topk for side in ("reference", "engine") for r in t[side]}
    ids_shown |= {int(t) for t in (receipt.get("greedy") or {}).get("engine") or []}
    ids_shown |= {int(t) for t in (receipt.get("greedy") or {}).get("reference") or []}
    return from_receipt(receipt, topk=topk, pieces=_pieces(model, ids_shown), arch=_arch(model), notes=notes)
