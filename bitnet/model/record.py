"""Named intermediates of the forward pass (issue 17): when a `Recorder` is installed with
`recording()`, every op of `BitNetModel.forward` hands its output here under a stable name per
layer (OPS below); when none is installed, each tap is one global load and a `None` test, and
nothing is copied (tests/test_trace.py measures it).

The names are ours and stable; crossval/trace.py maps them to the tensor names libllama's graph
gives the same values (`attn_norm-0`, `Qcur-0`, `kq_soft_max-0`, ..., `result_output`).
Layout: every array is position-major, [T, ...] (attention scores and probabilities [T, H, S]),
so one row is one position on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

#: the ops of one block, in graph order (what `tap` is called with inside a layer)
LAYER_OPS: tuple[str, ...] = (
    "attn_norm",      # rms_norm(x) * attn_norm
    "q_proj", "k_proj", "v_proj",  # the BitLinear projections (with a separate scale, after it)
    "q_rope", "k_rope",  # after NEOX rope
    "attn_scores",    # q k^T per head, before the 1/sqrt(d) scale and the mask: [T, H, S]
    "attn_probs",     # softmax(scale * scores + mask): [T, H, S]
    "attn_out",       # probs @ V, heads concatenated: [T, H*hd]
    "attn_sub_norm",  # the BitNet sub-norm
    "attn_o",         # the output projection
    "attn_residual",  # x + attention: the FFN's input
    "ffn_norm",
    "ffn_gate", "ffn_up",
    "ffn_act",        # act(gate): ReLU^2 or SiLU
    "ffn_gated",      # act(gate) * up
    "ffn_sub_norm",
    "ffn_down",
    "l_out",          # the residual stream after the layer
)
#: ops outside the layers: before (embed) and after (result_norm, logits)
HEAD_OPS: tuple[str, ...] = ("embed",)
TAIL_OPS: tuple[str, ...] = ("result_norm", "logits")


@dataclass
class Record:
    layer: int | None
    op: str
    value: np.ndarray  # float32, position-major


@dataclass
class Recorder:
    """Collects taps in call order. `layer_offset` renames layer 0 of the running model (our
    one-layer views in crossval.layers run layer i as layer 0)."""

    layer_offset: int = 0
    records: list[Record] = field(default_factory=list)
    layer: int | None = None
    #: sub-layer teacher forcing: op -> the value the forward pass continues with after that
    #: op (the reference's own tensor), in place of ours; ours is recorded first
    forcing: dict[str, np.ndarray] | None = None

    def tap(self, op: str, value: np.ndarray) -> None:
        self.records.append(Record(self.layer, op, np.array(value, dtype=np.float32, copy=True)))

    def enter_layer(self, i: int | None) -> None:
        self.layer = None if i is None else i + self.layer_offset

    def get(self, op: str, layer: int | None = None) -> np.ndarray:
        """The last record of `op` in `layer` (KeyError naming it when absent)."""
        for r in reversed(self.records):
            if r.op == op and r.layer == layer:
                return r.value
        raise KeyError(f"no record of {op!r} in layer {layer}")

    def by_key(self) -> dict[tuple[int | None, str], np.ndarray]:
        return {(r.layer, r.op): r.value for r in self.records}


_active: Recorder | None = None


def tap(op: str, value: np.ndarray) -> None:
    """Hand one intermediate to the installed recorder; nothing when none is installed."""
    r = _active
    if r is not None:
        r.tap(op, value)


#: the sub-block boundaries where a forcing recorder may replace our value by the reference's:
#: each is the input of the next sub-block (attn_norm -> q/k/v and attention, attn_out ->
#: attn_sub_norm, attn_sub_norm -> o_proj, attn_residual -> ffn_norm and the residual,
#: ffn_norm -> gate/up, ffn_gated -> ffn_sub_norm, ffn_sub_norm -> down): every one of them
#: feeds a rounding step (an F16 or int8 activation, a norm) where a one-ulp difference of the
#: input can flip a whole step, so forcing them isolates each sub-block (crossval.layers)
FORCEABLE: tuple[str, ...] = ("attn_norm", "attn_out", "attn_sub_norm", "attn_residual", "ffn_norm",
                              "ffn_gated", "ffn_sub_norm")


def tap_forced(op: str, value: np.ndarray) -> np.ndarray:
    """`tap`, then the value the pass continues with: the forcing recorder's value for `op`
    when one is installed and holds it (sub-layer teacher forcing), else `value` itself."""
    r = _active
    if r is None:
        return value
    r.tap(op, value)
    if r.forcing is not None and op in r.forcing:
        f = np.asarray(r.forcing[op], np.float32)
        if f.size != np.asarray(value).size:
            raise ValueError(f"forced {op!r} has {f.size} values, the pass computes {np.asarray(value).size}")
        return f.reshape(np.shape(value))
    return value


def enter_layer(i: int | None) -> None:
    r = _active
    if r is not None:
        r.enter_layer(i)


def active() -> Recorder | None:
    return _active


@contextmanager
def recording(layer_offset: int = 0, forcing: dict[str, np.ndarray] | None = None) -> Iterator[Recorder]:
    """Install a fresh Recorder for the block (the previous one, if any, comes back after).
    `forcing`: op -> value to continue with after that op (FORCEABLE ops; see tap_forced)."""
    global _active
    unknown = set(forcing or ()) - set(FORCEABLE)
    if unknown:
        raise ValueError(f"cannot force {sorted(unknown)}: the forward pass forces only {', '.join(FORCEABLE)}")
    prev, rec = _active, Recorder(layer_offset, forcing=dict(forcing) if forcing is not None else None)
    _active = rec
    try:
        yield rec
    finally:
        _active = prev
