"""What the rules look at: the file's metadata read defensively, the config symbols derived from
it, and per-tensor statistics computed once and shared by every rule that needs them.

Metadata is never trusted to have the right type: a key that holds a string where a count is
due, or a negative count, becomes a recorded problem (reported by `keys.types`) and the symbol
is left unknown, so a rule that needs it reports `skip` instead of crashing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet.errors import BitNetError
from bitnet.gguf.constants import ValueType
from bitnet.gguf.reader import GGUFReader, TensorInfo
from bitnet.validate.policy import ArchPolicy
from bitnet.validate.report import AppliedCorrection
from bitnet.validate.stats import CodeStats, FloatStats, code_stats, float_stats

INT_TYPES = {ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16, ValueType.UINT32,
             ValueType.INT32, ValueType.UINT64, ValueType.INT64}
FLOAT_TYPES = {ValueType.FLOAT32, ValueType.FLOAT64}
FLOAT_TENSOR_TYPES = ("F32", "F16", "BF16")
MAX_LAYERS = 4096  # a block_count above this is treated as unknown (and reported), never looped over


@dataclass
class Flavor:
    """Flavor detection's answer for a projection, or why there is none."""

    flavor: str | None
    error: str | None = None
    warning: str | None = None
    lut: tuple[int, ...] | None = None


@dataclass
class Context:
    reader: GGUFReader
    arch: str | None
    policy: ArchPolicy | None
    apply_corrections: bool = False
    key_problems: dict[str, str] = field(default_factory=dict)
    applied: list[AppliedCorrection] = field(default_factory=list)
    _float: dict[str, FloatStats] = field(default_factory=dict)
    _codes: dict[str, CodeStats | str] = field(default_factory=dict)
    _flavor: dict[str, Flavor] = field(default_factory=dict)
    _sym: dict[str, int | None] | None = None

    @property
    def path(self) -> str:
        return str(self.reader.path)

    # -- metadata ------------------------------------------------------------------------
    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def has(self, suffix: str) -> bool:
        return self.key(suffix) in self.reader.fields

    def int_key(self, suffix: str) -> int | None:
        """An integer metadata value, or None (absent or wrong type; the latter is recorded)."""
        k = self.key(suffix)
        f = self.reader.fields.get(k)
        if f is None:
            return None
        if f.type not in INT_TYPES or isinstance(f.value, bool | np.bool_):
            self.key_problems[k] = f"is {f.type.name} ({_short(f.value)}), expected an integer"
            return None
        return int(f.value)

    def float_key(self, suffix: str) -> float | None:
        k = self.key(suffix)
        f = self.reader.fields.get(k)
        if f is None:
            return None
        if f.type not in FLOAT_TYPES | INT_TYPES or isinstance(f.value, bool | np.bool_):
            self.key_problems[k] = f"is {f.type.name} ({_short(f.value)}), expected a number"
            return None
        return float(f.value)

    def str_key(self, key: str) -> str | None:
        f = self.reader.fields.get(key)
        if f is None:
            return None
        if f.type != ValueType.STRING:
            self.key_problems[key] = f"is {f.type.name} ({_short(f.value)}), expected a string"
            return None
        return str(f.value)

    @property
    def symbols(self) -> dict[str, int | None]:
        """Config symbols the policy's shapes use; None where the metadata cannot say."""
        if self._sym is not None:
            return self._sym
        n_embd = _pos(self.int_key("embedding_length"))
        n_head = _pos(self.int_key("attention.head_count"))
        kv = self.int_key("attention.head_count_kv")
        n_head_kv = _pos(kv) if kv is not None else n_head
        head_dim = n_embd // n_head if n_embd and n_head and n_embd % n_head == 0 else None
        n_layer = _pos(self.int_key("block_count"))
        if n_layer is not None and n_layer > MAX_LAYERS:
            n_layer = None
        emb = self.tensor("token_embd.weight")
        n_vocab = emb.shape[1] if emb is not None and len(emb.shape) == 2 else None
        self._sym = {
            "n_embd": n_embd, "n_ff": _pos(self.int_key("feed_forward_length")), "n_head": n_head,
            "n_head_kv": n_head_kv, "head_dim": head_dim,
            "n_embd_kv": n_head_kv * head_dim if n_head_kv and head_dim else None,
            "n_vocab": n_vocab, "n_layer": n_layer,
        }
        return self._sym

    # -- tensors -------------------------------------------------------------------------
    def tensor(self, name: str) -> TensorInfo | None:
        try:
            return self.reader.tensor(name)
        except KeyError:
            return None

    def span(self, t: TensorInfo) -> np.ndarray:
        """The tensor's bytes up to the next tensor (a zero-copy view of the mapped file)."""
        n = t.span if t.span else t.nbytes
        return np.frombuffer(self.reader._buf, np.uint8, n, t.data_offset)

    def float_stats(self, name: str, *, row_norms: bool = False, ternary: bool = False) -> FloatStats | None:
        """Statistics of a float tensor (None if it is not F32/F16/BF16 or is short)."""
        cached = self._float.get(name)
        if cached is not None and (cached.row_norms is not None or not row_norms) and (cached.counts or not ternary):
            return cached
        t = self.tensor(name)
        if t is None or t.type_name not in FLOAT_TENSOR_TYPES:
            return None
        raw = self.span(t)
        if raw.size < t.nbytes:
            return None
        st = float_stats(raw, t.type_name, t.shape, row_norms=row_norms, ternary=ternary)
        self._float[name] = st
        return st

    def flavor(self, name: str) -> Flavor:
        """Flavor detection for a projection, with the loader's row rules; errors kept as text."""
        if name in self._flavor:
            return self._flavor[name]
        from bitnet.quant.flavor import FlavorWarning, detect_flavor
        from bitnet.quant.formats import get_format

        t = self.tensor(name)
        assert t is not None
        fl = Flavor(None)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FlavorWarning)
                try:
                    d = detect_flavor(t, alignment=self.reader.alignment, raw=self.span(t), strict=False)
                except BitNetError as e:
                    if "scale at byte" not in str(e):
                        raise
                    # an I2_S tensor whose scale is 0, negative or NaN: the scale rules name it
                    d = detect_flavor(t, alignment=self.reader.alignment, raw=None, strict=False)
            fl.flavor = d.flavor
            if caught:
                fl.warning = str(caught[0].message)
            fmt = get_format(d.flavor)
            need = fmt.row_multiple
            if len(t.shape) != 2:
                fl.error = f"shape {list(t.shape)} is not 2-D"
            elif need and t.shape[0] % need:
                fl.error = f"rows of {t.shape[0]}; {d.flavor} kernels need a multiple of {need}"
            else:
                # what the loader does next: the format binds its bytes (layout, code table...)
                k, out = t.shape
                _, extra = fmt.bind(self.reader, name, self.span(t)[: d.expected_bytes], out, k, strict=False)
                if extra.get("lut") is not None:
                    fl.lut = tuple(int(v) for v in extra["lut"])
        except BitNetError as e:
            fl.error = str(e)
        self._flavor[name] = fl
        return fl

    def code_stats(self, name: str) -> CodeStats | None:
        """Code statistics of a ternary projection (None for float or undecodable tensors)."""
        if name not in self._codes:
            fl = self.flavor(name)
            t = self.tensor(name)
            if fl.error or fl.flavor not in ("i2_s", "qk256", "tq2_0", "tq1_0", "bitnet32") or t is None:
                self._codes[name] = "n/a"
            else:
                kw = {"lut": fl.lut} if fl.lut else {}
                self._codes[name] = code_stats(self.span(t), fl.flavor, t.n_elements, **kw)
        c = self._codes[name]
        return None if isinstance(c, str) else c


def _pos(v: int | None) -> int | None:
    return v if v is not None and v > 0 else None


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
