"""A read-only safetensors reader: the header at open, then one tensor at a time.

The format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
data; offsets are relative to the end of the header. Reading it here (NumPy only) keeps the
converter free of torch and of the `safetensors` package.

A tensor is read with one positioned read into a fresh buffer, not viewed through a memory map:
file pages a map has touched stay in the process's resident set until the kernel reclaims them,
so converting a 5 GB checkpoint through a map shows a 5 GB RSS; a read buffer is freed with the
tensor, and converting holds one tensor at a time.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.convert.errors import CheckpointError

#: safetensors dtype -> (NumPy dtype of the stored bytes, bytes per element)
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"), "BOOL": np.dtype("u1"),
}
MAX_HEADER = 100 * 2**20  # the reference implementation's own limit


class SafetensorsError(CheckpointError):
    """A safetensors file is malformed (header, dtype, offsets)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors spelling: "BF16", "F32", "U8", ...
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int
    path: Path


class SafetensorsFile:
    """`with SafetensorsFile(p) as f: f.tensors[name]; f.array(name)`."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._fh = open(self.path, "rb")  # noqa: SIM115 -- closed in close()
        try:
            size = os.fstat(self._fh.fileno()).st_size
            head = self._fh.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{self.path}: {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise SafetensorsError(f"{self.path}: header length {n} at offset 0 exceeds the file "
                                       f"({size} bytes) or the {MAX_HEADER}-byte limit")
            try:
                header = json.loads(self._fh.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SafetensorsError(f"{self.path}: header is not JSON: {e}") from None
            if not isinstance(header, dict):
                raise SafetensorsError(f"{self.path}: header is a {type(header).__name__}, expected an object")
            self.metadata: dict = header.pop("__metadata__", None) or {}
            base = 8 + n
            self.tensors: dict[str, TensorInfo] = {}
            for name, info in header.items():
                self.tensors[name] = self._info(name, info, base, size)
        except BaseException:
            self._fh.close()
            raise

    def _info(self, name: str, info: object, base: int, size: int) -> TensorInfo:
        try:
            dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]  # type: ignore[index]
            shape = tuple(int(d) for d in shape)
        except (TypeError, KeyError, ValueError):
            raise SafetensorsError(f"{self.path}: tensor {name!r}: header entry {info!r} lacks dtype/shape/data_offsets") from None
        if dtype not in DTYPES:
            raise SafetensorsError(f"{self.path}: tensor {name!r}: dtype {dtype!r} is not supported "
                                   f"(known: {', '.join(DTYPES)})")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        want = count * DTYPES[dtype].itemsize
        if any(d < 0 for d in shape) or not 0 <= b <= e or e - b != want or base + e > size:
            raise SafetensorsError(f"{self.path}: tensor {name!r} ({dtype}, shape {list(shape)}): data_offsets "
                                   f"[{b}, {e}] should span {want} bytes inside the {size - base}-byte data section")
        return TensorInfo(name, dtype, shape, base + b, base + e, self.path)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored values (BF16 as uint16 bit patterns), read into a new array."""
        t = self.tensors[name]
        out = np.empty(t.shape, DTYPES[t.dtype])
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < view.nbytes:
            n = os.preadv(self._fh.fileno(), [view[done:]], t.begin + done)
            if n <= 0:
                raise SafetensorsError(f"{self.path}: tensor {name!r}: file ended at byte {t.begin + done}")
            done += n
        return out

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """A float tensor's values as float32 (bf16 widened exactly by its bit pattern)."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("F32", "F16", "F64"):
        return raw.astype(np.float32)
    raise SafetensorsError(f"dtype {dtype} is not a float type")
