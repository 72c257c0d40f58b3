"""Where it diverges: op-by-op tracing of our engine against a reference (issue 17).

Both sides record every intermediate of one forward pass by name: ours through
`bitnet.model.record` (our stable op names, `LAYER_OPS`), libllama through the graph eval
callback (`bh_trace` in crossval/shim.c copies every tensor the graph names `attn_norm-N`,
`Qcur-N`, ..., `result_output` out as F32). `NAME_MAPS` pairs the two per reference build and
architecture; docs/reference/parity.md prints it.

The walk goes through the ops in graph order and compares each with the reference's value
(per position: 1-cos, max|d| over max|ref|, the median of that over positions) at the format
family's per-layer bounds (policies/parity.yml `layer_*`). Each layer is also run
*teacher-forced*: our layer i on the reference's own `l_out` of layer i-1 (crossval.layers),
every op of it recorded and compared the same way. A real bug then fails teacher-forced at the
op where it sits, at any depth; a rounding flip that grows through the layers fails only
free-running (`amplification`). `first_divergent` is the first op, in graph order, that fails
teacher-forced (or, for ops with no teacher-forced run, free-running).

The reference may be our own unmodified engine (the planted-fault tests; no C++ needed) or a
libllama build (`trace_libllama`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitnet.errors import BridgeError, ConfigError
from bitnet.model.record import HEAD_OPS, LAYER_OPS, TAIL_OPS, recording
from crossval.timeouts import PARITY_TIMEOUT_S

TRACE_VERSION = 1

Key = tuple[int | None, str]  # (layer or None, our op name)


@dataclass(frozen=True)
class RefName:
    """Where the reference's graph holds one of our ops: tensor base name(s) in priority order
    (the first one captured wins; `-N` is appended inside layers), the ggml ops the node may
    be (duplicates of a name, e.g. `Qcur-0` before and after rope, are told apart by op), and
    the layout of its values."""

    names: tuple[str, ...]
    ops: tuple[str, ...] = ()  # ggml_op_desc of the node; empty: any op except views
    layout: str = "rows"  # "rows": [..., T] in ggml order; "kq": [n_kv, T, H], sliced to S


_PROJ = ("MUL_MAT", "MUL")
_COMMON = {
    "embed": RefName(("inp_embd",)),
    "attn_norm": RefName(("attn_norm",)),
    "q_proj": RefName(("Qcur",), _PROJ),
    "k_proj": RefName(("Kcur",), _PROJ),
    "v_proj": RefName(("Vcur",), _PROJ),
    "q_rope": RefName(("Qcur",), ("ROPE",)),
    "k_rope": RefName(("Kcur",), ("ROPE",)),
    "attn_scores": RefName(("kq",), ("MUL_MAT",), "kq"),
    "attn_out": RefName(("kqv_out",)),
    "attn_sub_norm": RefName(("attn_sub_norm",)),
    "attn_residual": RefName(("ffn_inp",)),
    "ffn_norm": RefName(("ffn_norm",)),
    "ffn_gate": RefName(("ffn_gate_s", "ffn_gate")),
    "ffn_up": RefName(("ffn_up_s", "ffn_up")),
    "ffn_gated": RefName(("ffn_sub_out",)),
    "ffn_sub_norm": RefName(("ffn_sub_norm",)),
    "ffn_down": RefName(("ffn_down",)),
    "l_out": RefName(("l_out",)),
    "result_norm": RefName(("result_norm",)),
    "logits": RefName(("result_output",)),
}
#: (libllama API, general.architecture) -> our op name -> where the reference's graph holds it.
#: Read from the graph builders: upstream llama.cpp 0.3.36 src/models/bitnet.cpp with
#: src/llama-graph.cpp (build_qkv, build_attn_mha, build_ffn), and bitnet.cpp's fork
#: 406a5036 src/llama.cpp (build_bitnet, llm_build_kqv, llm_build_ffn). A name given twice
#: to one tensor keeps the last (`ffn_swiglu` / `ffn_gate_par` become `ffn_sub_out`).
NAME_MAPS: dict[tuple[str, str], dict[str, RefName]] = {
    ("upstream", "bitnet"): {
        **_COMMON,
        "attn_probs": RefName(("kq_soft_max",), ("SOFT_MAX",), "kq"),
        "attn_o": RefName(("attn_out",)),
        # ffn_act: none; upstream fuses silu(gate) * up into one ggml_swiglu_split node
    },
    ("bitnet.cpp-fork", "bitnet"): {
        **_COMMON,
        "attn_probs": RefName(("kq_soft_max_ext",), ("SOFT_MAX",), "kq"),
        "attn_o": RefName(("attn_o_out",)),
        "ffn_act": RefName(("ffn_silu",), ("UNARY", "SILU")),
    },
}
#: the graph's tensor base names the shim is asked to copy out (all maps together)
CAPTURE_NAMES = tuple(sorted({n for m in NAME_MAPS.values() for r in m.values() for n in r.names}))
VIEW_OPS = ("RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE")


def op_order(n_layer: int) -> list[Key]:
    """Every (layer, op) of a forward pass in graph order."""
    return ([(None, o) for o in HEAD_OPS] + [(i, o) for i in range(n_layer) for o in LAYER_OPS]
            + [(None, o) for o in TAIL_OPS])


# -- metrics ----------------------------------------------------------------------------------
@dataclass
class OpMetrics:
    one_minus_cos: float  # max over positions
    rel_max_abs: float  # max over positions of max|d| / max|ref| of that position
    median_rel_abs: float  # median over positions of the same
    worst_position: int
    ok: bool

    def to_dict(self) -> dict:
        return {"one_minus_cos": _num(self.one_minus_cos), "rel_max_abs": _num(self.rel_max_abs),
                "median_rel_abs": _num(self.median_rel_abs), "worst_position": self.worst_position, "ok": self.ok}


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def op_metrics(ours: np.ndarray, ref: np.ndarray, bounds: dict) -> OpMetrics:
    """Per-position metrics of two [T, ...] arrays, gated at the per-layer `bounds`
    (layer_max_rel_abs, layer_max_one_minus_cos, layer_max_median_rel_abs). Non-finite fails."""
    from crossval.layers import layer_metrics

    t = ours.shape[0]
    a, b = ours.reshape(t, -1), ref.reshape(t, -1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = layer_metrics(a, b, -1)
    ok = all(k not in bounds or v <= bounds[k] for v, k in (
        (m.max_rel_abs, "layer_max_rel_abs"), (m.max_one_minus_cos, "layer_max_one_minus_cos"),
        (m.median_rel_abs, "layer_max_median_rel_abs")))
    ok = ok and bool(np.isfinite(a).all() and np.isfinite(b).all())
    return OpMetrics(m.max_one_minus_cos, m.max_rel_abs, m.median_rel_abs, m.worst_position, bool(ok))


# -- the trace --------------------------------------------------------------------------------
@dataclass
class TraceOp:
    layer: int | None
    op: str
    ref_name: str | None
    metrics: OpMetrics
    teacher_forced: OpMetrics | None = None

    @property
    def diverges(self) -> bool:
        """Fails where it is judged: teacher-forced when that ran, else free-running."""
        return not (self.teacher_forced.ok if self.teacher_forced is not None else self.metrics.ok)


@dataclass
class Trace:
    arch: str
    reference: str  # "libllama (upstream)", "ours", ...
    family: str | None
    bounds: dict
    mode: str  # "prompt" (all positions in one batch) or "decode" (the last position as a KV-cache step)
    ops: list[TraceOp] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)  # our ops the reference has no tensor for

    @property
    def first_divergent(self) -> TraceOp | None:
        return next((o for o in self.ops if o.diverges), None)

    @property
    def first_free_running(self) -> TraceOp | None:
        return next((o for o in self.ops if not o.metrics.ok), None)

    @property
    def amplification(self) -> bool:
        """Free-running leaves the bounds but no op does teacher-forced: rounding that grows."""
        return self.first_divergent is None and self.first_free_running is not None


def trace_to_dict(trace: Trace) -> dict:
    """The receipt's `trace` key (the contract crossval/report.py reads; keys may be added,
    never changed): version, arch, ops in graph order, first_divergent."""
    fd, ff = trace.first_divergent, trace.first_free_running

    def where(o: TraceOp | None) -> dict | None:
        return None if o is None else {"layer": o.layer, "op": o.op}

    def metrics(m: OpMetrics) -> dict:
        d = m.to_dict()
        return {"one_minus_cos": d["one_minus_cos"] if d["one_minus_cos"] is not None else float("inf"),
                "rel_max_abs": d["rel_max_abs"] if d["rel_max_abs"] is not None else float("inf"),
                "ok": d["ok"], "median_rel_abs": d["median_rel_abs"], "worst_position": d["worst_position"]}

    return {
        "version": TRACE_VERSION,
        "arch": trace.arch,
        "ops": [{"layer": o.layer, "op": o.op, "ref_name": o.ref_name, **metrics(o.metrics),
                 "teacher_forced": metrics(o.teacher_forced) if o.teacher_forced is not None else None}
                for o in trace.ops],
        "first_divergent": where(fd),
        # additive keys
        "first_free_running": where(ff),
        "amplification": trace.amplification,
        "reference": trace.reference,
        "mode": trace.mode,
        "family": trace.family,
        "bounds": {k: v for k, v in trace.bounds.items() if k.startswith("layer_")},
        "unmatched": trace.unmatched,
    }


# -- our side ---------------------------------------------------------------------------------
def record_engine(model, ids: Sequence[int], decode_last: bool = False) -> dict[Key, np.ndarray]:
    """Every named intermediate of one forward pass of a loaded BitNetModel over `ids` (all
    positions in one batch), or with decode_last of the last position alone as a one-row
    KV-cache step after the others."""
    ids = np.asarray([int(i) for i in ids], np.int64)
    cache = model.new_cache()
    if decode_last:
        if len(ids) < 2:
            raise ConfigError("a decode-step trace needs at least two ids (a prefix and the step)")
        model.forward(ids[:-1], cache, 0, all_logits=False)
        with recording() as rec:
            model.forward(ids[-1:], cache, len(ids) - 1, all_logits=False)
    else:
        with recording() as rec:
            model.forward(ids, cache, 0, all_logits=True)
    return rec.by_key()


def teacher_forced_records(model, ids: Sequence[int], ref: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
    """Our layer i run on the reference's l_out of layer i-1 (layer 0 on our embedding, which
    both sides read exactly), every op recorded; then our final norm on the reference's last
    l_out and our lm_head on the reference's result_norm."""
    from crossval.layers import our_layer

    ids = [int(i) for i in ids]
    n_layer = len(model.layers)
    out: dict[Key, np.ndarray] = {}
    x0 = model.embed(np.asarray(ids, np.int64))
    for i in range(n_layer):
        x_in = x0 if i == 0 else ref.get((i - 1, "l_out"))
        if x_in is None:
            break
        with recording(layer_offset=i) as rec:
            our_layer(model, i, x_in, ids)
        out.update({k: v for k, v in rec.by_key().items() if k[0] == i})
    out.update(tail_forced(model, ref))
    return out


def tail_forced(model, ref: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
    """Our final norm on the reference's last l_out, our lm_head on its result_norm."""
    import bitnet.model.bitnet_model as bm

    out: dict[Key, np.ndarray] = {}
    n_layer = len(model.layers)
    last = ref.get((n_layer - 1, "l_out"))
    if last is not None:
        out[(None, "result_norm")] = bm.norm(last.astype(np.float32), model.output_norm, model.config.rms_eps,
                                            model.profile.rms_ggml)
    rn = ref.get((None, "result_norm"))
    if rn is not None:
        out[(None, "logits")] = model.lm_head(rn.astype(np.float32), False)
    return out


def build_trace(model, ids: Sequence[int], ref: dict[Key, np.ndarray], ref_names: dict[Key, str | None], *,
                reference: str, profile: str = "exact", family: str | None = None, decode_last: bool = False,
                bounds: dict | None = None, ours: dict[Key, np.ndarray] | None = None,
                forced: dict[Key, np.ndarray] | None = None) -> Trace:
    """Walk our ops in graph order against the reference's values `ref` (keyed by our names;
    `ref_names` says what the reference called each, None for our own engine). `ours` and
    `forced`: our free-running and teacher-forced records when the caller already ran them
    (crossval.compare records them in the passes it makes anyway)."""
    from crossval.compare import gate_family
    from crossval.parity import thresholds

    family = family or gate_family(model)
    th = {k: v for k, v in thresholds(profile, family).items() if k.startswith("layer_")}
    if bounds:
        th.update(bounds)
    if not th:
        raise ConfigError(f"policies/parity.yml has no per-layer bounds for profile {profile!r} family {family!r}; "
                          "run `python -m crossval.calibrate --update-policy`")
    if ours is None:
        ours = record_engine(model, ids, decode_last)
    if forced is None:
        forced = {} if decode_last else teacher_forced_records(model, ids, ref)
    tr = Trace(model.config.arch, reference, family, th, "decode" if decode_last else "prompt")
    for key in op_order(len(model.layers)):
        if key not in ours:
            continue
        layer, op = key
        if key not in ref:
            tr.unmatched.append({"layer": layer, "op": op, "why": "the reference names no tensor for it"})
            continue
        a, b = ours[key], _aligned(ref[key], ours[key])
        if b is None:
            tr.unmatched.append({"layer": layer, "op": op, "why": f"shapes differ: ours {list(ours[key].shape)}, "
                                                                    f"reference {list(ref[key].shape)}"})
            continue
        tf = forced.get(key)
        tr.ops.append(TraceOp(layer, op, ref_names.get(key), op_metrics(a, b, th),
                              op_metrics(tf, b, th) if tf is not None and tf.shape == a.shape else None))
    return tr


def _aligned(ref: np.ndarray, ours: np.ndarray) -> np.ndarray | None:
    """The reference's value in our layout, or None when it cannot be (already position-major
    when it comes from our engine; `ref_value` lays libllama's out)."""
    if ref.shape == ours.shape:
        return ref
    if ref.size == ours.size:
        return ref.reshape(ours.shape)
    return None


def trace_engine_pair(model, reference_model, ids: Sequence[int], *, profile: str = "exact",
                      family: str | None = None, decode_last: bool = False, bounds: dict | None = None) -> Trace:
    """`model` traced against another loaded BitNetModel of ours (two numerics profiles, two
    backends). A planted fault (crossval.faults) patches the module for every model while it
    is planted: record the unmodified reference outside the `plant` block (`record_engine`)
    and pass it to `build_trace`, as tests/test_trace.py does."""
    ref = record_engine(reference_model, ids, decode_last)
    return build_trace(model, ids, ref, {}, reference="ours", profile=profile, family=family,
                       decode_last=decode_last, bounds=bounds)


# -- libllama's side ----------------------------------------------------------------------------
def name_map(api: str, arch: str) -> dict[str, RefName]:
    try:
        return NAME_MAPS[(api, arch)]
    except KeyError:
        known = ", ".join(f"{a} {b}" for a, b in NAME_MAPS)
        raise ConfigError(f"no tensor name map for arch {arch!r} in a {api} libllama (known: {known}); "
                          "tracing needs one (crossval/trace.py NAME_MAPS)") from None


def ref_value(rec: dict, layout: str, T: int, S: int | None) -> np.ndarray:
    """One captured tensor [ne0..ne3] (ggml order, F32) as a position-major array."""
    ne = [int(x) for x in rec["ne"]]
    a = np.asarray(rec["data"], np.float32).reshape(ne[3], ne[2], ne[1], ne[0])
    if layout == "kq":  # [n_kv, T, H] -> [T, H, S]: the cache's padded cells cut off
        a = a[0][:, :, :S].transpose(1, 0, 2)
        return np.ascontiguousarray(a)
    return a.reshape(T, -1)


def map_reference(records: list[dict], api: str, arch: str, n_layer: int, T: int, S: int) -> tuple[dict, dict]:
    """libllama's captured tensors (in graph order: name, op, ne, data) keyed by our (layer,
    op) through the name map, plus the names they had."""
    nm = name_map(api, arch)
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    values: dict[Key, np.ndarray] = {}
    names: dict[Key, str | None] = {}
    for layer, op in op_order(n_layer):
        spec = nm.get(op)
        if spec is None:
            continue
        for base in spec.names:
            full = base if layer is None else f"{base}-{layer}"
            cands = [r for r in by_name.get(full, []) if _op_fits(r["op"], spec)]
            if cands:
                r = cands[-1]
                try:
                    values[(layer, op)] = ref_value(r, spec.layout, T, S)
                except ValueError:
                    continue  # a shape this map does not lay out: left unmatched, with the reason
                names[(layer, op)] = full
                break
    return values, names


def _op_fits(op: str, spec: RefName) -> bool:
    return op in spec.ops if spec.ops else op not in VIEW_OPS


def capture_libllama(cpp_dir: str | os.PathLike[str], model_path: str | os.PathLike[str], ids: Sequence[int], *,
                     decode_last: bool = False, timeout: float = PARITY_TIMEOUT_S,
                     worker_argv: Sequence[str] | None = None) -> dict:
    """Run the crash-isolated worker with a trace request; its data: `trace_records` (list of
    {name, op, ne, data}), `api`, logits."""
    from crossval.runner import run_reference

    r = run_reference(cpp_dir, Path(model_path), timeout=timeout, worker_argv=worker_argv,
                      trace={"ids": [int(i) for i in ids], "names": list(CAPTURE_NAMES),
                             "decode_last": bool(decode_last)})
    if not r.ok:
        raise BridgeError(f"reference trace capture: {r.error}")
    if "trace_error" in r.data:
        raise BridgeError(f"reference trace capture: {r.data['trace_error']}")
    return r.data


def worker_records(data: dict) -> list[dict]:
    """The worker's npz keys (trace_names, trace_ops, trace_ne, trace_offsets, trace_data) as
    a list of records in graph order."""
    names = [str(x) for x in data["trace_names"]]
    ops = [str(x) for x in data["trace_ops"]]
    ne, off, flat = data["trace_ne"], data["trace_offsets"], data["trace_data"]
    out = []
    for i, (n, o) in enumerate(zip(names, ops, strict=True)):
        size = int(np.prod(ne[i]))
        out.append({"name": n, "op": o, "ne": ne[i].tolist(), "data": flat[int(off[i]):int(off[i]) + size]})
    return out


def trace_libllama(cpp_dir: str | os.PathLike[str], model_path: str | os.PathLike[str], ids: Sequence[int], *,
                   numerics: str | None = None, profile: str = "exact", strict: bool = False,
                   decode_last: bool = False, timeout: float = PARITY_TIMEOUT_S, model=None,
                   captured: dict | None = None, ours: dict | None = None, forced: dict | None = None) -> Trace:
    """Our engine (a loaded `model`, or one loaded here with `numerics`) traced against a
    libllama build on `ids`. `captured`: the worker's data when the caller already has it;
    `ours`, `forced`: our records, as build_trace."""
    from bitnet.model import BitNetModel
    from crossval.reference import locate

    ids = [int(i) for i in ids]
    data = captured if captured is not None else capture_libllama(cpp_dir, model_path, ids, decode_last=decode_last,
                                                                  timeout=timeout)
    api = str(data["api"]) if "api" in data else locate(cpp_dir).api
    own = model is None
    m = model if model is not None else BitNetModel(model_path, profile=numerics, strict=strict)
    try:
        T = 1 if decode_last else len(ids)
        values, names = map_reference(worker_records(data), api, m.config.arch, len(m.layers), T, len(ids))
        if forced is not None:
            forced = {**forced, **tail_forced(m, values)}
        return build_trace(m, ids, values, names, reference=f"libllama ({api})", profile=profile,
                           decode_last=decode_last, ours=ours, forced=forced)
    finally:
        if own:
            m.close()


# -- text ---------------------------------------------------------------------------------------
def format_trace(trace: Trace, context: int = 3) -> list[str]:
    return format_trace_dict(trace_to_dict(trace), context)


def format_trace_dict(d: dict, context: int = 3) -> list[str]:
    """A trace (trace_to_dict's form, as a receipt holds it) as lines: the verdict, then every
    op of the layer holding the first divergent op and `context` ops either side, with their
    metrics free-running and teacher-forced ("!" marks an op out of bounds)."""
    ops = d["ops"]
    fd, ff = d.get("first_divergent"), d.get("first_free_running")
    bounds = d.get("bounds") or {}
    head = [f"trace ({d.get('mode', 'prompt')}, against {d.get('reference', 'the reference')}, "
            f"{d.get('family')} per-layer bounds: " + ", ".join(f"{k[6:]} {v:.2g}" for k, v in bounds.items()) + ")"]

    def idx(w):
        return next((i for i, o in enumerate(ops) if o["layer"] == w["layer"] and o["op"] == w["op"]), None)

    focus = None
    if fd is not None:
        focus = idx(fd)
        o = ops[focus]
        how = "teacher-forced on the reference's input" if o["teacher_forced"] is not None else "free-running"
        head.append(f"first divergent op: {_where(o)} ({how})")
    elif ff is not None:
        focus = idx(ff)
        head.append(f"no op diverges teacher-forced; free-running leaves the bounds first at {_where(ops[focus])}: "
                    "rounding amplified through the layers, not a bug at an op")
    else:
        head.append(f"every op within bounds ({len(ops)} ops compared)")
    if focus is None:
        rows = [o for o in ops if o["op"] in ("l_out", "logits")]
    else:
        layer = ops[focus]["layer"]
        lo = hi = focus
        while lo > 0 and ops[lo - 1]["layer"] == layer:
            lo -= 1
        while hi + 1 < len(ops) and ops[hi + 1]["layer"] == layer:
            hi += 1
        rows = ops[max(0, lo - context):hi + 1 + context]
    lines = head + [f"{'layer':>5} {'op':<14} {'reference name':<18} {'1-cos':>9} {'rel max|d|':>10}  "
                    f"{'tf 1-cos':>9} {'tf rel':>9}"]
    for o in rows:
        t = o["teacher_forced"]
        tf = f"{t['one_minus_cos']:9.2e} {t['rel_max_abs']:9.2e}{'' if t['ok'] else ' !'}" if t else f"{'-':>9} {'-':>9}"
        mark = " <" if focus is not None and o is ops[focus] else ""
        lines.append(f"{'' if o['layer'] is None else o['layer']:>5} {o['op']:<14} {o['ref_name'] or '-':<18} "
                     f"{o['one_minus_cos']:9.2e} {o['rel_max_abs']:10.2e}{'' if o['ok'] else ' !'}  {tf}{mark}")
    un = d.get("unmatched") or []
    if un:
        names = [u["op"] + (f"-{u['layer']}" if u["layer"] is not None else "") for u in un]
        lines.append(f"not compared ({un[0]['why']}): " + ", ".join(names[:6])
                     + (f" (+{len(names) - 6} more)" if len(names) > 6 else ""))
    return lines


def _where(o: dict) -> str:
    return (o["op"] + (f" of layer {o['layer']}" if o["layer"] is not None else "")
            + (f" (reference {o['ref_name']})" if o.get("ref_name") else ""))
