"""A structure-aware GGUF mutator for the hostile-input fuzz suite (AC25).

A base file (from `bitnet synth`, or rewritten by gguf-py) is parsed once into its parts:
header fields, one encoded blob per metadata key, one per tensor info, and the data section.
A mutation edits those parts (a metadata value of the wrong type or a hostile number, a
nested array 600 deep, a tensor dim of 0 or 2**64-1, a duplicated key, a wrong count...) and
the file is re-serialised with correct padding, so each case is hostile in one chosen way
instead of being rejected at the first random byte. Bit flips and truncation at every header
boundary come on top.

Choices come from a `Chooser`: a seeded one (`SeededChooser`, reproducible from (seed, index))
or one that draws from Hypothesis (`HypothesisChooser`), so Hypothesis can steer and shrink.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitnet.gguf.constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT, ValueType
from bitnet.gguf.reader import GGUFReader
from bitnet.gguf.writer import encode_value

U64 = 2**64 - 1


class Chooser:
    def choice(self, seq: Sequence[Any]) -> Any:
        raise NotImplementedError

    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def chance(self, p: float) -> bool:
        return self.integer(0, 999) < int(p * 1000)


class SeededChooser(Chooser):
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def choice(self, seq):
        return seq[self.r.randrange(len(seq))]

    def integer(self, lo, hi):
        return self.r.randint(lo, hi)


class HypothesisChooser(Chooser):
    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def choice(self, seq):
        return seq[self.data.draw(self.st.integers(0, len(seq) - 1))]

    def integer(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))


def _str(s: bytes | str) -> bytes:
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class Parts:
    """A GGUF file as editable parts."""

    version: int
    kvs: list[list[Any]]  # [key bytes, value type tag (int), value bytes]
    tensors: list[list[Any]]  # [name bytes, dims list, type id, offset]
    data: bytes
    alignment: int
    n_kv: int | None = None  # header counts; None = the true count
    n_tensors: int | None = None
    n_dims_override: dict[int, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, path: str | Path) -> Parts:
        with GGUFReader(path) as r:
            kvs = []
            for k, f in r.fields.items():
                kvs.append([k.encode("utf-8"), int(f.type), encode_value(f.value, f.type, f.elem_type)])
            tensors = [[t.name.encode("utf-8"), list(t.shape), t.type_id, t.offset] for t in r.tensors]
            data = bytes(r._buf[r.data_start:])
            return cls(r.version, kvs, tensors, data, r.alignment)

    def copy(self) -> Parts:
        return Parts(self.version, [list(x) for x in self.kvs], [[n, list(d), t, o] for n, d, t, o in self.tensors],
                     self.data, self.alignment, self.n_kv, self.n_tensors, dict(self.n_dims_override))

    def serialise(self) -> tuple[bytes, list[int]]:
        """(file bytes, offsets of every header boundary)"""
        out = bytearray(GGUF_MAGIC)
        bounds = [0, 4]
        out += struct.pack("<I", self.version)
        bounds.append(len(out))
        out += struct.pack("<Q", (len(self.tensors) if self.n_tensors is None else self.n_tensors) & U64)
        bounds.append(len(out))
        out += struct.pack("<Q", (len(self.kvs) if self.n_kv is None else self.n_kv) & U64)
        bounds.append(len(out))
        for key, tag, val in self.kvs:
            out += _str(key)
            bounds.append(len(out))
            out += struct.pack("<I", tag & 0xFFFFFFFF)
            bounds.append(len(out))
            out += val
            bounds.append(len(out))
        for i, (name, dims, tid, off) in enumerate(self.tensors):
            out += _str(name)
            bounds.append(len(out))
            out += struct.pack("<I", self.n_dims_override.get(i, len(dims)) & 0xFFFFFFFF)
            out += b"".join(struct.pack("<Q", d & U64) for d in dims)
            bounds.append(len(out))
            out += struct.pack("<IQ", tid & 0xFFFFFFFF, off & U64)
            bounds.append(len(out))
        a = self.alignment
        out += b"\0" * ((-len(out)) % a)
        bounds.append(len(out))
        out += self.data
        return bytes(out), bounds


# -- hostile values ------------------------------------------------------------------------------
def _nested(depth: int) -> bytes:
    """An ARRAY value nested `depth` arrays deep (innermost: an empty INT32 array)."""
    inner = struct.pack("<IQ", int(ValueType.INT32), 0)
    for _ in range(depth - 1):
        inner = struct.pack("<IQ", int(ValueType.ARRAY), 1) + inner
    return inner


def _scalar(vt: ValueType, v) -> tuple[int, bytes]:
    return int(vt), encode_value(v, vt)


HOSTILE_VALUES: list[Callable[[], tuple[int, bytes]]] = [
    lambda: _scalar(ValueType.STRING, "abc"),
    lambda: _scalar(ValueType.STRING, ""),
    lambda: _scalar(ValueType.STRING, "[/INST]"),
    lambda: _scalar(ValueType.STRING, "[bold]x[/bold] [/] :smile:"),
    lambda: _scalar(ValueType.STRING, "\x1b[2J\x1b[31mred\r\nline"),
    lambda: (int(ValueType.STRING), _str(b"\xff\xfe bad utf-8 \xc3")),
    lambda: _scalar(ValueType.UINT32, 0),
    lambda: _scalar(ValueType.UINT32, 1),
    lambda: _scalar(ValueType.INT32, -1),
    lambda: _scalar(ValueType.INT32, 2**31 - 1),
    lambda: _scalar(ValueType.UINT32, 2**32 - 1),
    lambda: _scalar(ValueType.INT64, 2**63 - 1),
    lambda: _scalar(ValueType.UINT64, U64),
    lambda: _scalar(ValueType.UINT8, 3),
    lambda: _scalar(ValueType.FLOAT32, float("nan")),
    lambda: _scalar(ValueType.FLOAT32, float("inf")),
    lambda: _scalar(ValueType.FLOAT32, float("-inf")),
    lambda: _scalar(ValueType.FLOAT32, 0.0),
    lambda: _scalar(ValueType.FLOAT32, -1.0),
    lambda: _scalar(ValueType.FLOAT64, 1e308),
    lambda: _scalar(ValueType.FLOAT32, 1e-45),
    lambda: _scalar(ValueType.BOOL, True),
    lambda: (int(ValueType.ARRAY), encode_value([1, 2], ValueType.ARRAY, ValueType.INT32)),
    lambda: (int(ValueType.ARRAY), encode_value([], ValueType.ARRAY, ValueType.INT32)),
    lambda: (int(ValueType.ARRAY), encode_value([], ValueType.ARRAY, ValueType.STRING)),
    lambda: (int(ValueType.ARRAY), encode_value(["a", "[/INST]"], ValueType.ARRAY, ValueType.STRING)),
    lambda: (int(ValueType.ARRAY), encode_value([float("nan")] * 3, ValueType.ARRAY, ValueType.FLOAT32)),
    lambda: (int(ValueType.ARRAY), _nested(2)),
    lambda: (int(ValueType.ARRAY), _nested(9)),
    lambda: (int(ValueType.ARRAY), _nested(600)),
]
HOSTILE_DIMS = [0, 1, 2, 3, 255, 257, 2**31 - 1, 2**32, 2**62, 2**63 - 1, U64]
HOSTILE_TYPE_IDS = [0, 1, 2, 8, 16, 30, 31, 34, 35, 36, 37, 38, 39, 40, 99, 2**31, 2**32 - 1]

#: keys whose values drive allocation, loops or parsing downstream
INTERESTING_SUFFIXES = (
    "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.dimension_count",
    "vocab_size", "general.architecture", "general.name", "general.alignment", "tokenizer.ggml.model",
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.pre", "hidden_activation",
)


# -- mutation families ---------------------------------------------------------------------------
def _pick_kv(p: Parts, c: Chooser) -> int:
    interesting = [i for i, (k, _, _) in enumerate(p.kvs) if k.decode("utf-8", "replace").endswith(INTERESTING_SUFFIXES)]
    pool = interesting if interesting and c.chance(0.8) else list(range(len(p.kvs)))
    return c.choice(pool)


def m_value(p: Parts, c: Chooser) -> str:
    if not p.kvs:
        return "noop"
    i = _pick_kv(p, c)
    vi = c.integer(0, len(HOSTILE_VALUES) - 1)
    p.kvs[i][1], p.kvs[i][2] = HOSTILE_VALUES[vi]()
    return f"value {p.kvs[i][0].decode('utf-8', 'replace')} <- #{vi}"


def m_add_key(p: Parts, c: Chooser) -> str:
    arch = next((v for k, _, v in p.kvs if k == b"general.architecture"), None)
    prefix = arch[8:].decode("utf-8", "replace") if arch else "bitnet-b1.58"
    key = c.choice([f"{prefix}.attention.head_count_kv", f"{prefix}.rope.freq_base", f"{prefix}.hidden_activation",
                    KEY_ALIGNMENT, "tokenizer.ggml.scores", "tokenizer.ggml.eom_token_id", "[/INST]"])
    vi = c.integer(0, len(HOSTILE_VALUES) - 1)
    p.kvs = [kv for kv in p.kvs if kv[0] != key.encode()]
    p.kvs.append([key.encode(), *HOSTILE_VALUES[vi]()])
    return f"add {key} <- #{vi}"


def m_delete(p: Parts, c: Chooser) -> str:
    if not p.kvs:
        return "noop"
    i = _pick_kv(p, c)
    k = p.kvs.pop(i)[0]
    return f"delete {k.decode('utf-8', 'replace')}"


def m_duplicate(p: Parts, c: Chooser) -> str:
    if not p.kvs:
        return "noop"
    i = _pick_kv(p, c)
    p.kvs.append(list(p.kvs[i]))
    return "duplicate key"


def m_type_tag(p: Parts, c: Chooser) -> str:
    if not p.kvs:
        return "noop"
    i = _pick_kv(p, c)
    p.kvs[i][1] = c.choice([*range(13), 13, 2**31, 2**32 - 1])
    return f"type tag of {p.kvs[i][0].decode('utf-8', 'replace')} <- {p.kvs[i][1]}"


def m_key_name(p: Parts, c: Chooser) -> str:
    if not p.kvs:
        return "noop"
    i = c.integer(0, len(p.kvs) - 1)
    p.kvs[i][0] = c.choice([b"", b"\xff\xfe", b"[/INST]", b"general.architecture", b"x" * 300])
    return "key name"


def _pick_tensor(p: Parts, c: Chooser) -> int:
    weights = [i for i, t in enumerate(p.tensors) if t[0].startswith(b"blk.0.") or t[0] == b"token_embd.weight"]
    return c.choice(weights if weights and c.chance(0.7) else list(range(len(p.tensors))))


def m_dim(p: Parts, c: Chooser) -> str:
    if not p.tensors:
        return "noop"
    i = _pick_tensor(p, c)
    dims = p.tensors[i][1]
    j = c.integer(0, len(dims) - 1)
    how = c.integer(0, 3)
    if how == 0:
        dims[j] = c.choice(HOSTILE_DIMS)
    elif how == 1:
        dims[j] = max(0, dims[j] + c.choice([-1, 1, 32, -32]))
    elif how == 2 and len(dims) > 1:
        dims.reverse()
    else:
        dims.append(c.choice([1, 2, 0]))
    return f"dims of {p.tensors[i][0].decode('utf-8', 'replace')} <- {dims}"


def m_n_dims(p: Parts, c: Chooser) -> str:
    if not p.tensors:
        return "noop"
    i = _pick_tensor(p, c)
    p.n_dims_override[i] = c.choice([0, 3, 5, 2**31])
    return "n_dims"


def m_tensor_type(p: Parts, c: Chooser) -> str:
    if not p.tensors:
        return "noop"
    i = _pick_tensor(p, c)
    p.tensors[i][2] = c.choice(HOSTILE_TYPE_IDS)
    return f"type of {p.tensors[i][0].decode('utf-8', 'replace')} <- {p.tensors[i][2]}"


def m_tensor_offset(p: Parts, c: Chooser) -> str:
    if not p.tensors:
        return "noop"
    i = _pick_tensor(p, c)
    a = p.alignment
    other = p.tensors[c.integer(0, len(p.tensors) - 1)][3]
    p.tensors[i][3] = c.choice([p.tensors[i][3] + a, max(0, p.tensors[i][3] - a), 1, other, len(p.data), U64 - a + 1, 2**62])
    return "tensor offset"


def m_tensor_name(p: Parts, c: Chooser) -> str:
    if not p.tensors:
        return "noop"
    i = _pick_tensor(p, c)
    p.tensors[i][0] = c.choice([b"", b"\xff", b"[/INST]", p.tensors[0][0], b"output.weight", b"blk.99.attn_q.weight"])
    return "tensor name"


def m_drop_tensor(p: Parts, c: Chooser) -> str:
    if not p.tensors:
        return "noop"
    p.tensors.pop(_pick_tensor(p, c))
    return "drop tensor"


def m_counts(p: Parts, c: Chooser) -> str:
    if c.chance(0.5):
        p.n_kv = c.choice([len(p.kvs) + 1, max(0, len(p.kvs) - 1), 0, 2**32, U64])
    else:
        p.n_tensors = c.choice([len(p.tensors) + 1, max(0, len(p.tensors) - 1), 0, 2**32, U64])
    return "header counts"


def m_version(p: Parts, c: Chooser) -> str:
    p.version = c.choice([0, 1, 2, 4, 2**32 - 1])
    return f"version {p.version}"


def m_data(p: Parts, c: Chooser) -> str:
    """Corrupt weights: NaN/inf floats or random bytes at a random place in the data section."""
    if not p.data:
        return "noop"
    d = bytearray(p.data)
    n = c.integer(1, 8)
    for _ in range(n):
        at = c.integer(0, max(0, len(d) - 4)) & ~3
        d[at:at + 4] = c.choice([struct.pack("<f", float("nan")), struct.pack("<f", float("inf")),
                                 struct.pack("<e", float("nan")) * 2, bytes([c.integer(0, 255)]) * 4, b"\xff\xff\xff\xff"])
    p.data = bytes(d)
    return f"data x{n}"


FAMILIES: dict[str, Callable[[Parts, Chooser], str]] = {
    "value": m_value, "add_key": m_add_key, "delete": m_delete, "duplicate": m_duplicate, "type_tag": m_type_tag,
    "key_name": m_key_name, "dim": m_dim, "n_dims": m_n_dims, "tensor_type": m_tensor_type,
    "tensor_offset": m_tensor_offset, "tensor_name": m_tensor_name, "drop_tensor": m_drop_tensor,
    "counts": m_counts, "version": m_version, "data": m_data,
}


def bit_flips(buf: bytes, c: Chooser, header_end: int) -> tuple[bytes, str]:
    b = bytearray(buf)
    n = c.integer(1, 16)
    for _ in range(n):
        hi = header_end if c.chance(0.8) else len(b)
        at = c.integer(0, max(0, hi - 1))
        b[at] ^= 1 << c.integer(0, 7)
    return bytes(b), f"flip x{n}"


def truncate(buf: bytes, bounds: list[int], c: Chooser) -> tuple[bytes, str]:
    at = c.choice(bounds) + c.choice([0, 0, -1, 1, 3])
    at = min(max(at, 0), len(buf) - 1)
    return buf[:at], f"truncate at {at}"


def mutate(base: Parts, c: Chooser) -> tuple[bytes, list[str]]:
    """One hostile file from `base`: 1-3 structural mutations, then maybe bit flips, maybe a
    truncation at a header boundary."""
    p = base.copy()
    what = []
    mode = c.integer(0, 9)
    if mode <= 6 or mode == 9:
        for _ in range(c.integer(1, 3)):
            name = c.choice(list(FAMILIES))
            what.append(name + ": " + FAMILIES[name](p, c))
    buf, bounds = p.serialise()
    header_end = bounds[-1]
    if mode in (7, 9) or c.chance(0.1):
        buf, w = bit_flips(buf, c, header_end)
        what.append(w)
    if mode == 8 or c.chance(0.1):
        buf, w = truncate(buf, bounds, c)
        what.append(w)
    return buf, what


def iter_boundaries(base: Parts) -> list[int]:
    """Every header boundary of the unmutated base (for the exhaustive truncation test)."""
    return base.serialise()[1]


def default_alignment() -> int:
    return GGUF_DEFAULT_ALIGNMENT
