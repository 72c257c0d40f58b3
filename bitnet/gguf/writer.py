"""A deterministic, streaming GGUF writer.

Tensors are declared first (name, shape, type, byte count) and their bytes are produced one at a
time while the file is written, so a multi-gigabyte model never sits in memory. The output goes
to a temporary file in the target's folder and is renamed over the target only once it is
complete: a failed write leaves whatever was there before untouched.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bitnet.errors import GGUFError
from bitnet.files.atomic import atomic_open
from bitnet.gguf.constants import (
    GGML_TYPES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_SUPPORTED_VERSIONS,
    KEY_ALIGNMENT,
    SCALAR_DTYPES,
    GGMLType,
    ValueType,
    ggml_type,
)
from bitnet.gguf.reader import Field, StringArray

TensorSource = np.ndarray | bytes | bytearray | memoryview | Callable[[], "np.ndarray | bytes"]


@dataclass
class _PendingTensor:
    name: str
    shape: tuple[int, ...]
    gtype: GGMLType | int
    nbytes: int
    source: TensorSource
    offset: int = 0


def infer_value_type(value: Any) -> ValueType:
    """GGUF type for a Python value, as gguf-py infers it (int -> INT32 when it fits)."""
    if isinstance(value, bool | np.bool_):
        return ValueType.BOOL
    if isinstance(value, int | np.integer):
        v = int(value)
        if -(2**31) <= v < 2**31:
            return ValueType.INT32
        if -(2**63) <= v < 2**63:
            return ValueType.INT64
        return ValueType.UINT64
    if isinstance(value, float | np.floating):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, np.ndarray | list | tuple | StringArray):
        return ValueType.ARRAY
    raise GGUFError(f"cannot store a {type(value).__name__} in GGUF metadata")


_DTYPE_TO_VT = {np.dtype(v): k for k, v in SCALAR_DTYPES.items() if k != ValueType.BOOL}


def _elem_type(value: Any) -> ValueType:
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return ValueType.BOOL
        try:
            return _DTYPE_TO_VT[value.dtype.newbyteorder("<")]
        except KeyError:
            raise GGUFError(f"no GGUF element type for NumPy dtype {value.dtype}") from None
    if len(value) == 0:
        raise GGUFError("an empty array needs an explicit element type")
    return infer_value_type(value[0])


def encode_value(value: Any, vtype: ValueType, elem_type: ValueType | None = None) -> bytes:
    """The bytes of one metadata value (without its leading type tag)."""
    if vtype == ValueType.STRING:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return struct.pack("<Q", len(raw)) + raw
    if vtype == ValueType.ARRAY:
        et = elem_type if elem_type is not None else _elem_type(value)
        head = struct.pack("<IQ", int(et), len(value))
        if et in SCALAR_DTYPES:
            arr = np.asarray(value)
            if et == ValueType.BOOL:
                arr = arr.astype(bool)
            return head + np.ascontiguousarray(arr, dtype=SCALAR_DTYPES[et]).tobytes()
        if et == ValueType.STRING:
            if isinstance(value, StringArray):
                parts = [value.raw(i) for i in range(len(value))]
            else:
                parts = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in value]
            return head + b"".join(struct.pack("<Q", len(p)) + p for p in parts)
        # nested: each element is (array, elem_type) as the reader returns them, or a plain list
        chunks = [head]
        for item in value:
            inner, inner_t = item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], ValueType) else (item, None)
            chunks.append(encode_value(inner, ValueType.ARRAY, inner_t))
        return b"".join(chunks)
    dt = SCALAR_DTYPES[vtype]
    if vtype == ValueType.BOOL:
        return struct.pack("<B", 1 if value else 0)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if not info.min <= int(value) <= info.max:
            raise GGUFError(f"value {value!r} does not fit GGUF type {vtype.name}")
    return np.array(value, dtype=dt).tobytes()


class GGUFWriter:
    """Collect metadata and tensor declarations, then `write()` them in one streaming pass."""

    def __init__(self, path: str | os.PathLike[str], *, alignment: int = GGUF_DEFAULT_ALIGNMENT, version: int = 3):
        if version not in GGUF_SUPPORTED_VERSIONS:
            raise GGUFError(f"cannot write GGUF version {version}; supported: {GGUF_SUPPORTED_VERSIONS}")
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"alignment must be a positive power of two, got {alignment}")
        self.path = Path(path)
        self.version = version
        self.alignment = alignment
        self._kv: dict[str, tuple[ValueType, bytes]] = {}  # encoded when added
        self._tensors: dict[str, _PendingTensor] = {}
        if alignment != GGUF_DEFAULT_ALIGNMENT:
            self.add(KEY_ALIGNMENT, alignment, ValueType.UINT32)

    # -- metadata ----------------------------------------------------------------------------
    def add(self, key: str, value: Any, vtype: ValueType | None = None, elem_type: ValueType | None = None) -> None:
        """Add one key; the type is inferred unless given. Duplicates are an error."""
        if key in self._kv:
            raise GGUFError(f"duplicate metadata key {key!r}")
        vt = vtype if vtype is not None else infer_value_type(value)
        if vt == ValueType.ARRAY and elem_type is None:
            elem_type = _elem_type(value)
        # encode now: errors surface here, not half-way through the file, and the value may be
        # a view into a reader that is closed before write()
        self._kv[key] = (vt, encode_value(value, vt, elem_type))

    def add_field(self, f: Field) -> None:
        """Copy a field exactly as a reader returned it (types preserved)."""
        self.add(f.key, f.value, f.type, f.elem_type)

    def add_fields(self, fields: Iterable[Field]) -> None:
        for f in fields:
            if f.key == KEY_ALIGNMENT and KEY_ALIGNMENT in self._kv:
                continue
            self.add_field(f)

    # -- tensors -----------------------------------------------------------------------------
    def add_tensor(
        self,
        name: str,
        source: TensorSource,
        *,
        shape: tuple[int, ...] | None = None,
        gtype: GGMLType | str | int | None = None,
        nbytes: int | None = None,
    ) -> None:
        """Declare a tensor. `shape` is in GGUF order (ne0 first); for a float NumPy array it
        defaults to the array's shape reversed and the type to its dtype. `source` may be a
        zero-argument callable that produces the bytes when the writer reaches this tensor."""
        if name in self._tensors:
            raise GGUFError(f"duplicate tensor name {name!r}")
        if isinstance(source, np.ndarray) and gtype is None:
            gtype = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}.get(source.dtype)
            if gtype is None:
                raise GGUFError(f"tensor {name!r}: give gtype for dtype {source.dtype}")
        if gtype is None:
            raise GGUFError(f"tensor {name!r}: gtype is required")
        if isinstance(gtype, GGMLType):
            g: GGMLType | int = gtype
        elif isinstance(gtype, str):
            g = ggml_type(gtype)
        else:
            g = GGML_TYPES.get(int(gtype), int(gtype))
        if shape is None:
            if not isinstance(source, np.ndarray):
                raise GGUFError(f"tensor {name!r}: shape is required for non-array sources")
            shape = tuple(reversed(source.shape))
        shape = tuple(int(d) for d in shape)
        if not 1 <= len(shape) <= 4 or any(d <= 0 for d in shape):
            raise GGUFError(f"tensor {name!r}: shape {shape} must have 1..4 positive dims")
        if nbytes is None:
            if not isinstance(g, GGMLType):
                raise GGUFError(f"tensor {name!r}: nbytes is required for an unknown type id")
            try:
                nbytes = g.nbytes(shape)
            except ValueError as e:
                raise GGUFError(f"tensor {name!r}: {e}") from None
        self._tensors[name] = _PendingTensor(name, shape, g, int(nbytes), source)

    # -- output ------------------------------------------------------------------------------
    def _header(self) -> bytes:
        out = bytearray(GGUF_MAGIC)
        out += struct.pack("<IQQ", self.version, len(self._tensors), len(self._kv))
        for key, (vt, encoded) in self._kv.items():
            out += encode_value(key, ValueType.STRING)
            out += struct.pack("<I", int(vt))
            out += encoded
        offset = 0
        for t in self._tensors.values():
            t.offset = offset
            offset = _align(offset + t.nbytes, self.alignment)
            tid = t.gtype.id if isinstance(t.gtype, GGMLType) else int(t.gtype)
            out += encode_value(t.name, ValueType.STRING)
            out += struct.pack(f"<I{len(t.shape)}Q", len(t.shape), *t.shape)
            out += struct.pack("<IQ", tid, t.offset)
        out += b"\0" * (_align(len(out), self.alignment) - len(out))
        return bytes(out)

    def write(self, on_progress: Callable[[int, int], None] | None = None) -> Path:
        """Write the file atomically; returns its path. `on_progress(done, total)` (tensor data
        bytes) is called after each tensor: a progress bar for big synthetic models."""
        with atomic_open(self.path) as fh:
            self._stream(fh, on_progress)
        return self.path

    def _stream(self, fh: BinaryIO, on_progress: Callable[[int, int], None] | None = None) -> None:
        fh.write(self._header())
        total = sum(t.nbytes for t in self._tensors.values())
        done = 0
        for t in self._tensors.values():
            src = t.source() if callable(t.source) else t.source
            buf: Any = np.ascontiguousarray(src) if isinstance(src, np.ndarray) else src
            data = memoryview(buf).cast("B")
            if data.nbytes != t.nbytes:
                raise GGUFError(f"tensor {t.name!r}: source produced {data.nbytes} bytes, declared {t.nbytes}")
            fh.write(data)
            pad = _align(t.nbytes, self.alignment) - t.nbytes
            if pad:
                fh.write(b"\0" * pad)
            done += t.nbytes
            if on_progress is not None:
                on_progress(done, total)


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a
