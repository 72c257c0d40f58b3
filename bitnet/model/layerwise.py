"""Our layers one at a time, on inputs the caller gives (teacher forcing).

The per-layer parity gate (crossval.layers, crossval.pair) runs each of our layers on another
engine's layer inputs; `bitnet.engines.reference` offers the same to any engine pair. Each
layer runs through the model's own forward pass over a view holding only that layer (the
embedding replaced by the given input, the final norm and lm_head by the identity), so
nothing is re-implemented here and a patched forward (a planted fault) is what runs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np


class SkipNorm(np.ndarray):
    """A norm weight marked `skip this norm` (keeps its shape for the loader's checks)."""

    def __new__(cls, a):
        return np.asarray(a).view(cls)


def our_layer(model, i: int, x_in: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Our layer i applied to x_in [T, n_embd] at positions 0..T-1 in one batch: the model's
    own forward pass over a view holding only that layer, with the embedding replaced by x_in
    and the final norm and lm_head by the identity."""
    return our_layer_steps(model, i, x_in, ids, None, [])[0]


def our_layer_steps(model, i: int, x_in: np.ndarray, ids: Sequence[int], x_steps: np.ndarray | None,
                    step_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Our layer i on x_in [T, n_embd] at positions 0..T-1 (one batch), then on each row of
    x_steps [S, n_embd] as one decode step at position T + s through the same KV cache (the
    layer's cache holds K/V computed from the prompt inputs given, so a decode step is
    teacher-forced too). Returns (prompt outputs [T, n_embd], step outputs [S, n_embd])."""
    import bitnet.model.bitnet_model as bm

    view = copy.copy(model)
    view.layers = [model.layers[i]]
    view.output_norm = SkipNorm(model.output_norm)
    view.lm_head = lambda x, single_row_f16: x
    real = bm.rms_norm
    bm.rms_norm = lambda x, w, eps, ggml=False: x if isinstance(w, SkipNorm) else real(x, w, eps, ggml)
    try:
        cache = view.new_cache()
        view.embed = lambda tokens: np.asarray(x_in, np.float32)
        prompt = view.forward(np.asarray(ids, np.int64), cache, 0, all_logits=True)
        steps = []
        for s, tok in enumerate(step_ids):
            assert x_steps is not None
            view.embed = lambda tokens, s=s: np.asarray(x_steps[s:s + 1], np.float32)
            steps.append(view.forward(np.asarray([tok], np.int64), cache, len(ids) + s, all_logits=False)[0])
    finally:
        bm.rms_norm = real
    n_embd = np.asarray(x_in).shape[-1]
    return prompt, (np.stack(steps).astype(np.float32) if steps else np.zeros((0, n_embd), np.float32))


def forced_outputs(model, ids: Sequence[int], l_out: np.ndarray) -> np.ndarray:
    """[n_layer, T, n_embd]: our layer 0 on our embedding, our layer i on l_out[i - 1]."""
    ids = [int(i) for i in ids]
    x = model.embed(np.asarray(ids, np.int64))
    return np.stack([our_layer(model, i, x if i == 0 else l_out[i - 1], ids).astype(np.float32)
                     for i in range(len(model.layers))])


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


def our_layer_forced_ops(model, i: int, x_in: np.ndarray, ids: Sequence[int],
                         forcing: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sub-layer teacher forcing: our layer i on x_in [T, n_embd], every sub-block continuing
    from the reference's value at each boundary `forcing` names (bitnet.model.record.FORCEABLE:
    attn_norm, attn_out, attn_sub_norm, attn_residual, ffn_norm, ffn_gated, ffn_sub_norm)
    instead of ours. Returns every op of the layer as we computed it, op -> [T, ...]: each one
    from the reference's inputs to its sub-block, so a one-ulp difference that flips an F16 or
    int8 rounding step in one sub-block does not reach the next (it only shows where it is)."""
    from bitnet.model.record import recording

    with recording(layer_offset=i, forcing=forcing) as rec:
        our_layer(model, i, x_in, ids)
    return {op: v for (layer, op), v in rec.by_key().items() if layer == i}


def sublayer_forced_outputs(model, ids: Sequence[int], ref: dict, forceable: Sequence[str] | None = None) -> dict:
    """Every layer under sub-layer forcing (our_layer_forced_ops): layer i on the reference's
    `l_out` of layer i-1 (layer 0 on our embedding), each sub-block continuing from the
    reference's value at every boundary `ref` holds. `ref`, and the result: (layer, op) ->
    [T, ...] position-major. KeyError naming the layer when the reference lacks an l_out."""
    from bitnet.model.record import FORCEABLE

    ids = [int(i) for i in ids]
    x0 = model.embed(np.asarray(ids, np.int64))
    out: dict = {}
    for i in range(len(model.layers)):
        x_in = x0 if i == 0 else ref.get((i - 1, "l_out"))
        if x_in is None:
            raise KeyError(f"sub-layer forcing: the reference has no l_out of layer {i - 1}")
        forcing = {op: ref[(i, op)] for op in (forceable or FORCEABLE) if (i, op) in ref}
        for op, v in our_layer_forced_ops(model, i, np.asarray(x_in, np.float32), ids, forcing).items():
            out[(i, op)] = v
    return out
