"""Per-layer teacher-forced parity: each of our layers run on the reference's own input.

libllama's graph eval callback (`cb_eval` in llama_context_params, installed by the shim's
`bh_eval_layers`) hands the worker every `l_out-N` tensor: the residual stream after layer N.
Our layer N then runs on the reference's layer N-1 output (layer 0 on the token embeddings,
which both sides read exactly), through our own forward pass (a one-layer view of the loaded
model, nothing re-implemented here), and its output is compared with the reference's `l_out-N`.

End-to-end logits of deep random models cannot be gated at the rounding floor: one int8 or
F16 rounding flip early on grows chaotically through 30 layers (issue 20, item 7). A single
layer fed the same input has nothing to grow from, so its output can be gated tightly at any
depth; a real profile mismatch shows at every layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.errors import BridgeError
from bitnet.model.layerwise import (  # noqa: F401
    engine_l_out,
    forced_outputs,
    our_layer,
    our_layer_forced_ops,
    our_layer_steps,
)
from crossval.timeouts import PARITY_TIMEOUT_S


@dataclass
class LayerMetrics:
    layer: int
    max_rel_abs: float  # max over positions of max|d| / max|reference l_out| of that position
    max_one_minus_cos: float
    worst_position: int
    #: (the gates: lower) median over positions of the per-position relative max|d| (the ceil(T/2)-th
    #: smallest): a rounding flip (one int8 or F16 step) moves one position, a wrong layer moves
    #: all of them; it fails only when more than half the positions are off (with the plain
    #: median two flipped steps of four already failed: measured at the 2B-4T shape, where
    #: ~7% of a layer's single-token steps flip)
    median_rel_abs: float = 0.0
    #: sub-layer forcing: the sub-block output that gave the largest median (None: whole-layer forcing)
    op: str | None = None


def teacher_forced_decode_layers(model, ids: Sequence[int], forced: Sequence[int], l_out: np.ndarray,
                                 decode_l_out: np.ndarray) -> list[LayerMetrics]:
    """Every layer's teacher-forced decode steps against the reference's: layer i gets the
    reference's layer i-1 outputs for the prompt (building its KV cache) and for each step
    (layer 0: our embedding of the token), one token at a time through our KV cache; its step
    outputs are compared with the reference's `decode_l_out[i]` [S, n_embd]."""
    ids, forced = [int(i) for i in ids], [int(t) for t in forced]
    emb_p = model.embed(np.asarray(ids, np.int64))
    emb_s = model.embed(np.asarray(forced, np.int64))
    out = []
    for i in range(len(model.layers)):
        xp, xs = (emb_p, emb_s) if i == 0 else (l_out[i - 1], decode_l_out[i - 1])
        _, steps = our_layer_steps(model, i, xp, ids, xs, forced)
        out.append(layer_metrics(steps, decode_l_out[i], i, lower_median=True))
    return out


def layer_metrics(ours: np.ndarray, ref: np.ndarray, layer: int, lower_median: bool = False) -> LayerMetrics:
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    rel = np.abs(a - b).max(-1) / np.maximum(np.abs(b).max(-1), 1e-300)
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    omc = np.square(a / np.maximum(na, 1e-300) - b / np.maximum(nb, 1e-300)).sum(-1) / 2.0
    finite = bool(np.isfinite(rel).all())
    w = int(np.nanargmax(rel)) if np.isfinite(rel).any() else 0
    return LayerMetrics(layer, float(np.max(rel)) if finite else float("nan"), float(np.max(omc)), w,
                        float(np.quantile(rel, 0.5, method="lower") if lower_median else np.median(rel))
                        if finite else float("nan"))


def metrics_of(forced: np.ndarray, l_out: np.ndarray) -> list[LayerMetrics]:
    """Per-layer metrics of teacher-forced outputs against the captured ones, both
    [n_layer, T, n_embd]."""
    return [layer_metrics(forced[i], l_out[i], i, lower_median=True) for i in range(len(l_out))]


def teacher_forced_layers(model, ids: Sequence[int], l_out: np.ndarray,
                          record_into: dict | None = None) -> list[LayerMetrics]:
    """Every layer of a loaded BitNetModel against the reference's captured outputs
    l_out [n_layer, T, n_embd]. `record_into`: a dict that receives every named intermediate
    of each teacher-forced layer, keyed (layer, op) (bitnet.model.record; the op-by-op trace
    reuses these runs instead of repeating them)."""
    from contextlib import nullcontext

    from bitnet.model.record import recording

    ids = [int(i) for i in ids]
    x = model.embed(np.asarray(ids, np.int64))
    out = []
    for i in range(len(model.layers)):
        x_in = x if i == 0 else l_out[i - 1]
        with recording(layer_offset=i) if record_into is not None else nullcontext() as rec:
            y = our_layer(model, i, x_in, ids)
        if rec is not None:
            record_into.update({k: v for k, v in rec.by_key().items() if k[0] == i})
        out.append(layer_metrics(y, l_out[i], i, lower_median=True))
    return out


#: the sub-block outputs gated under sub-layer forcing, in graph order (our op names); each is
#: computed from the reference's own values at the boundaries before it (FORCEABLE)
SUBLAYER_OPS: tuple[str, ...] = ("attn_norm", "attn_out", "attn_sub_norm", "attn_o", "attn_residual", "ffn_norm",
                                 "ffn_gated", "ffn_sub_norm", "ffn_down", "l_out")


def sublayer_forced_layers(model, ids: Sequence[int], ref: dict, ops_into: list | None = None) -> list[LayerMetrics]:
    """Every layer of a loaded BitNetModel under sub-layer teacher forcing: layer i runs on the
    reference's `l_out` of layer i-1 (layer 0 on our embedding) and every sub-block continues
    from the reference's own value at each boundary (bitnet.model.record.FORCEABLE) that `ref`
    holds; each sub-block output (SUBLAYER_OPS) is compared with the reference's.
    `ref`: (layer, our op name) -> [T, ...] position-major (crossval.trace.map_reference lays
    libllama's named tensors out so; the hf: engine's `named_outputs`; our own record_engine).
    A layer's metrics are the worst over its sub-blocks (`op` names the one with the largest
    median). `ops_into`: a list that receives one dict per (layer, op) with its metrics.

    Why: with whole-layer forcing a one-ulp difference before an F16 or int8 rounding step
    (ggml's RMSNorm sums in another order than ours, and an attn_norm element sits 1 ulp from
    an F16 midpoint) flips that step, and attention carries the flipped K/V to every later
    position of the layer, so the per-layer median moves as a real fault does (issue 20's
    hold-out false alarm: F16, gqa4, seed 103). Forced at the boundaries, a flip stays in its
    sub-block: the next one starts from the reference's value again."""
    from bitnet.model.layerwise import sublayer_forced_outputs

    try:
        ours = sublayer_forced_outputs(model, ids, ref)
    except KeyError as e:
        raise BridgeError(str(e).strip("'\"")) from None
    return sublayer_metrics(ours, ref, len(model.layers), ops_into)


def sublayer_metrics(ours: dict, ref: dict, n_layer: int, ops_into: list | None = None) -> list[LayerMetrics]:
    """Per-layer metrics of sub-layer-forced outputs `ours` against the reference's tensors
    `ref` (both (layer, op) -> [T, ...]): each SUBLAYER_OPS output compared, a layer's metrics
    the worst over its sub-blocks (worst_of)."""
    out = []
    for i in range(n_layer):
        per_op = []
        for op in SUBLAYER_OPS:
            if (i, op) not in ours or (i, op) not in ref:
                continue
            a, b = ours[(i, op)], np.asarray(ref[(i, op)], np.float32)
            t = a.shape[0]
            if b.size != a.size:
                raise BridgeError(f"sub-layer forcing: layer {i} {op}: ours {list(a.shape)}, reference {list(b.shape)}")
            m = layer_metrics(a.reshape(t, -1), b.reshape(t, -1), i, lower_median=True)
            m.op = op
            per_op.append(m)
            if ops_into is not None:
                ops_into.append({"layer": i, "op": op, "max_rel_abs": m.max_rel_abs,
                                 "max_one_minus_cos": m.max_one_minus_cos, "median_rel_abs": m.median_rel_abs})
        if not per_op:
            raise BridgeError(f"sub-layer forcing: the reference names none of layer {i}'s sub-block outputs")
        out.append(worst_of(per_op, i))
    return out


def worst_of(per_op: list[LayerMetrics], layer: int) -> LayerMetrics:
    """One layer's metrics from its sub-blocks': each the largest (NaN wins: non-finite fails)."""
    def mx(k):
        vals = [getattr(m, k) for m in per_op]
        return float("nan") if any(v != v for v in vals) else float(max(vals))

    by_max = max(per_op, key=lambda m: (m.max_rel_abs != m.max_rel_abs, m.max_rel_abs))
    by_med = max(per_op, key=lambda m: (m.median_rel_abs != m.median_rel_abs, m.median_rel_abs))
    return LayerMetrics(layer, mx("max_rel_abs"), mx("max_one_minus_cos"), by_max.worst_position,
                        mx("median_rel_abs"), by_med.op)


def reference_layers(cpp_dir: str | os.PathLike[str], model_path: str | os.PathLike[str], ids: Sequence[int],
                     n_layer: int, n_embd: int, timeout: float = PARITY_TIMEOUT_S) -> dict:
    from crossval.runner import run_reference

    r = run_reference(cpp_dir, Path(model_path), ids=[int(i) for i in ids], timeout=timeout,
                      layers={"n_layer": n_layer, "n_embd": n_embd})
    if not r.ok:
        raise BridgeError(f"reference per-layer capture: {r.error}")
    return r.data
