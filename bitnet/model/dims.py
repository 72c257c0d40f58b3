"""One description of a BitNet model's dimensions: field name, GGUF key, type and valid range.

`ModelConfig` (read from a file) and `bitnet.synth.ModelShape` (written to a file) both take
their dimensions from `DIMS`, so the key a synthetic model is written with, the key a model is
read from and the range both are checked against cannot drift apart. `check_dims` is the
boundary where untrusted metadata becomes typed numbers: every value is checked for its type
(an integer key holding "abc", [1, 2] or true is refused), its range (which also keeps every
product of dimensions far inside int64) and finiteness, then the relations between values.

Ranges are generous bounds on what a transformer can be, not plausibility policies (those are
`bitnet validate`'s, from policies/model-validation.yml).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bitnet.errors import ConfigError
from bitnet.gguf.constants import ValueType

#: longest context a file may declare. The KV cache is sized on demand, so this bounds only
#: what the metadata may claim (2**24 = 16.7M tokens, above any published model).
MAX_CONTEXT = 2**24


@dataclass(frozen=True)
class Dim:
    name: str  # attribute of ModelConfig and ModelShape
    key: str  # GGUF key after "{arch}."
    kind: type  # int or float
    lo: float  # smallest valid value (inclusive)
    hi: float  # largest valid value (inclusive)
    gguf_type: ValueType  # how synth writes it (as llama.cpp's converters do)
    doc: str
    lo_open: bool = False  # lo itself is invalid (epsilon, rope base: > 0)

    def range_text(self) -> str:
        fmt = (lambda x: f"{int(x):,}") if self.kind is int else (lambda x: f"{x:g}")
        return f"{'>' if self.lo_open else '>='} {fmt(self.lo)} and <= {fmt(self.hi)}"

    def doc_row(self) -> str:
        """This dimension's row of the table in docs/reference/errors.md (a test keeps them equal)."""
        return f"| `{{arch}}.{self.key}` | `{self.name}` | {self.kind.__name__} | {self.range_text()} | {self.doc} |"


#: In the order synth writes them. `head_count_kv` and `rope.freq_base` may be missing from a
#: file (see bitnet.model.config.ENGINE_DEFAULTS); the rest are required.
DIMS: tuple[Dim, ...] = (
    Dim("n_ctx", "context_length", int, 1, MAX_CONTEXT, ValueType.UINT32, "training context (tokens)"),
    Dim("n_embd", "embedding_length", int, 1, 2**20, ValueType.UINT32, "hidden size"),
    Dim("n_layer", "block_count", int, 1, 2**12, ValueType.UINT32, "transformer blocks"),
    Dim("n_ff", "feed_forward_length", int, 1, 2**22, ValueType.UINT32, "FFN inner size"),
    Dim("n_head", "attention.head_count", int, 1, 2**12, ValueType.UINT32, "query heads"),
    Dim("n_head_kv", "attention.head_count_kv", int, 1, 2**12, ValueType.UINT32, "key/value heads (GQA)"),
    Dim("rms_eps", "attention.layer_norm_rms_epsilon", float, 0.0, 1.0, ValueType.FLOAT32,
        "RMSNorm epsilon", lo_open=True),
    Dim("rope_theta", "rope.freq_base", float, 0.0, 1e30, ValueType.FLOAT32, "RoPE base", lo_open=True),
)
BY_NAME: dict[str, Dim] = {d.name: d for d in DIMS}
#: optional keys checked with the same rules (not fields of ModelShape)
VOCAB_SIZE = Dim("n_vocab", "vocab_size", int, 1, 2**24, ValueType.UINT32, "vocabulary rows")
ROPE_DIM = Dim("rope_dim", "rope.dimension_count", int, 1, 2**16, ValueType.UINT32, "rotary dims")
#: the order synth writes the keys in (the bytes, and so the sha256 pinned by receipts of a
#: synthetic model, depend on it)
WRITE_ORDER: tuple[Dim, ...] = (VOCAB_SIZE, *DIMS[:4], ROPE_DIM, *DIMS[4:])


def check_value(d: Dim, value: Any, where: str) -> int | float:
    """`value` as d.kind, or ConfigError naming the key, what was expected and what was found."""
    found = f"{value!r}" if not hasattr(value, "__len__") or isinstance(value, str) else f"{type(value).__name__} of {len(value)}"
    if isinstance(value, str) and len(value) > 40:
        found = repr(value[:40]) + "..."
    if d.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        what = "a number"
    if not ok:
        raise ConfigError(f"{where}: {d.key} must be {what}, found {found} ({type(value).__name__})")
    v = d.kind(value)
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{where}: {d.key} must be finite, found {v!r}")
    low_bad = v <= d.lo if d.lo_open else v < d.lo
    if low_bad or v > d.hi:
        raise ConfigError(f"{where}: {d.key} ({d.doc}) must be {d.range_text()}, found {v!r}")
    return v


def check_relations(v: Mapping[str, Any], where: str) -> None:
    """Relations between checked values: heads divide the width, KV heads divide heads."""
    if v["n_embd"] % v["n_head"]:
        raise ConfigError(f"{where}: embedding_length {v['n_embd']} is not a multiple of head_count {v['n_head']}")
    if v["n_head"] % v["n_head_kv"]:
        raise ConfigError(f"{where}: head_count {v['n_head']} is not a multiple of head_count_kv {v['n_head_kv']}")


def check_dims(values: Mapping[str, Any], where: str) -> dict[str, int | float]:
    """Check every dimension in `values` (by field name) and their relations; returns them typed."""
    out = {d.name: check_value(d, values[d.name], where) for d in DIMS}
    check_relations(out, where)
    return out
