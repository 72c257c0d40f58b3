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

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.errors import BridgeError
from crossval.timeouts import PARITY_TIMEOUT_S


@dataclass
class LayerMetrics:
    layer: int
    max_rel_abs: float  # max over positions of max|d| / max|reference l_out| of that position
    max_one_minus_cos: float
    worst_position: int
    #: median over positions of the per-position relative max|d|: a rounding flip (one int8
    #: or F16 step) moves one position; a wrong layer moves all of them
    median_rel_abs: float = 0.0


def our_layer(model, i: int, x_in: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Our layer i applied to x_in [T, n_embd] at positions 0..T-1 in one batch: the model's
    own forward pass over a view holding only that layer, with the embedding replaced by x_in
    and the final norm and lm_head by the identity."""
    import bitnet.model.bitnet_model as bm
    from crossval.faults import _Skip

    view = copy.copy(model)
    view.layers = [model.layers[i]]
    view.embed = lambda tokens: np.asarray(x_in, np.float32)
    view.output_norm = _Skip(model.output_norm)
    view.lm_head = lambda x, single_row_f16: x
    real = bm.rms_norm
    bm.rms_norm = lambda x, w, eps: x if isinstance(w, _Skip) else real(x, w, eps)
    try:
        return view.forward(np.asarray(ids, np.int64), view.new_cache(), 0, all_logits=True)
    finally:
        bm.rms_norm = real


def layer_metrics(ours: np.ndarray, ref: np.ndarray, layer: int) -> LayerMetrics:
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    rel = np.abs(a - b).max(-1) / np.maximum(np.abs(b).max(-1), 1e-300)
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    omc = np.square(a / np.maximum(na, 1e-300) - b / np.maximum(nb, 1e-300)).sum(-1) / 2.0
    finite = bool(np.isfinite(rel).all())
    w = int(np.nanargmax(rel)) if np.isfinite(rel).any() else 0
    return LayerMetrics(layer, float(np.max(rel)) if finite else float("nan"), float(np.max(omc)), w,
                        float(np.median(rel)) if finite else float("nan"))


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
        out.append(layer_metrics(y, l_out[i], i))
    return out


def engine_l_out(model, ids: Sequence[int]) -> np.ndarray:
    """Our own layer outputs [n_layer, T, n_embd], layer by layer through `our_layer` (the
    reference side when a planted fault is judged against the unmodified engine)."""
    ids = [int(i) for i in ids]
    x = model.embed(np.asarray(ids, np.int64))
    out = []
    for i in range(len(model.layers)):
        x = our_layer(model, i, x, ids)
        out.append(x)
    return np.stack(out)


def reference_layers(cpp_dir: str | os.PathLike[str], model_path: str | os.PathLike[str], ids: Sequence[int],
                     n_layer: int, n_embd: int, timeout: float = PARITY_TIMEOUT_S) -> dict:
    from crossval.runner import run_reference

    r = run_reference(cpp_dir, Path(model_path), ids=[int(i) for i in ids], timeout=timeout,
                      layers={"n_layer": n_layer, "n_embd": n_embd})
    if not r.ok:
        raise BridgeError(f"reference per-layer capture: {r.error}")
    return r.data
