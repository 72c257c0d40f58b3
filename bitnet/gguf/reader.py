"""A strict, zero-copy GGUF reader.

The file is mapped, the header, metadata and tensor infos are parsed with a bounds check before
every read (a hostile length field is compared with the bytes that remain *before* anything is
allocated), and tensor data is exposed as NumPy views over the map: nothing is read until a
view is touched. `residency="memory"` (BITNET_WEIGHTS=memory) reads the file once into private
anonymous memory instead (huge pages: fewer TLB misses in decode); the views are the same. Unlike gguf-py's reader, a tensor of an unknown type id is still listed and
readable as raw bytes, because BitNet files carry ids (36..39) that upstream does not know.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import ConfigError, FormatError, GGUFError
from bitnet.gguf.constants import (
    AMBIGUOUS_TYPE_IDS,
    GGML_TYPES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_SUPPORTED_VERSIONS,
    KEY_ALIGNMENT,
    SCALAR_DTYPES,
    GGMLType,
    ValueType,
)
from bitnet.meminfo import mem_available

#: ggml's GGML_MAX_DIMS: a tensor info with more dims than this is corrupt.
MAX_DIMS = 4
#: deepest nesting of metadata arrays accepted. llama.cpp's gguf.cpp reads no nested arrays at
#: all and gguf-py writes them only one level deep; the limit keeps a hostile file (arrays
#: nested 600 deep) from exhausting Python's recursion limit.
MAX_ARRAY_DEPTH = 8
#: where the file's bytes live (`BITNET_WEIGHTS`, `--weights`): "mmap" maps the file shared and
#: read-only (pages come in on first touch, shared with the page cache, like llama.cpp's default
#: use_mmap); "memory" reads it once into private anonymous memory, advised for transparent huge
#: pages, which spares the decode GEMVs TLB misses (llama.cpp's --no-mmap).
RESIDENCIES = ("mmap", "memory")
#: memory "memory" residency leaves free beside the copy (KV cache, activations, the run itself)
MEMORY_HEADROOM = 256 << 20
#: bytes per read call: large enough to stream at disk/page-cache speed, small enough that an
#: interrupted read reports a useful offset
READ_CHUNK = 256 << 20


class StringArray(Sequence[str]):
    """A GGUF array of strings, decoded on first access.

    Tokenizer vocabularies hold hundreds of thousands of strings; walking their length fields
    is cheap, decoding them all is not, and listing a model's tensors should not pay for it.
    """

    def __init__(self, buf: memoryview, offsets: np.ndarray, lengths: np.ndarray):
        self._buf = buf
        self._offsets = offsets
        self._lengths = lengths
        self._decoded: list[str] | None = None

    def _all(self) -> list[str]:
        if self._decoded is None:
            buf = self._buf
            self._decoded = [
                bytes(buf[o : o + n]).decode("utf-8", errors="surrogateescape")
                for o, n in zip(self._offsets.tolist(), self._lengths.tolist(), strict=True)
            ]
        return self._decoded

    def raw(self, i: int) -> bytes:
        """The undecoded bytes of element i (tokens need not be valid UTF-8)."""
        o, n = int(self._offsets[i]), int(self._lengths[i])
        return bytes(self._buf[o : o + n])

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i):
        return self._all()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"StringArray(len={len(self)})"


@dataclass(frozen=True)
class Field:
    """One metadata key/value pair, with its GGUF types so it can be written back exactly."""

    key: str
    type: ValueType
    value: Any
    offset: int  # byte offset of the key's length field in the file
    elem_type: ValueType | None = None  # for arrays: the element type

    def __len__(self) -> int:  # arrays: element count
        return len(self.value) if self.type == ValueType.ARRAY else 1


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry plus where its bytes sit in the file."""

    name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] = ne0, the contiguous row length
    type_id: int
    ggml_type: GGMLType | None  # None: an id this reader does not know (bytes still readable)
    offset: int  # relative to the data section, as stored
    data_offset: int  # absolute offset in the file
    nbytes: int  # bytes the type's size rule says (the span to the next tensor if unknown)
    span: int  # bytes up to the next tensor (or the end of the file), padding included
    info_offset: int = 0  # where this tensor's info starts in the file

    @property
    def type_name(self) -> str:
        return self.ggml_type.name if self.ggml_type else f"unknown({self.type_id})"

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def np_shape(self) -> tuple[int, ...]:
        """Row-major NumPy shape: the GGUF dims reversed (ne1 rows of ne0)."""
        return tuple(reversed(self.shape))


@dataclass
class _Cursor:
    buf: memoryview
    path: str
    pos: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"truncated {what}: need {n} bytes, {self.size - self.pos} remain in the file",
                path=self.path,
                offset=self.pos,
            )

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, what: str) -> str:
        start = self.pos
        n = self.unpack("<Q", f"{what} length")
        if n > self.size - self.pos:
            raise GGUFError(
                f"{what} length field says {n} bytes, larger than the {self.size - self.pos} "
                "bytes left in the file",
                path=self.path,
                offset=start,
            )
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what} is not valid UTF-8 ({e.reason})", path=self.path, offset=start) from None


class GGUFReader:
    """Open a GGUF v2/v3 file; `metadata`, `fields` and `tensors` are parsed eagerly (cheap),
    tensor bytes are NumPy views over the map (lazy).

    Use as a context manager, or call `close()`; views handed out keep the map alive.
    """

    def __init__(self, path: str | os.PathLike[str], *, residency: str = "mmap"):
        if residency not in RESIDENCIES:
            raise ConfigError(f"GGUF weights residency {residency!r}: expected one of {', '.join(RESIDENCIES)} "
                              "(BITNET_WEIGHTS, --weights)")
        self.path = str(path)
        self.residency = residency
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise GGUFError(f"cannot open: {e.strerror}", path=self.path) from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise GGUFError("empty file, expected the magic b'GGUF'", path=self.path, offset=0)
            if residency == "memory":
                self._mmap = _read_into_memory(fd, size, self.path)
            else:
                self._mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.file_size = size
        # read-only in both residencies: the anonymous copy is writable memory, but the views
        # handed out must refuse writes exactly as the file's read-only map does
        self._buf = memoryview(self._mmap).toreadonly()
        try:
            self._parse()
        except Exception:
            self.close()
            raise

    # -- parsing -----------------------------------------------------------------------------
    def _parse(self) -> None:
        cur = _Cursor(self._buf, self.path)
        cur.need(4, "magic")
        magic = bytes(self._buf[0:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(f"bad magic {magic!r}, expected {GGUF_MAGIC!r}", path=self.path, offset=0)
        cur.pos = 4
        self.version = cur.unpack("<I", "version")
        if self.version not in GGUF_SUPPORTED_VERSIONS:
            raise GGUFError(
                f"unsupported GGUF version {self.version}, expected one of {GGUF_SUPPORTED_VERSIONS}",
                path=self.path,
                offset=4,
            )
        n_tensors = cur.unpack("<Q", "tensor count")
        n_kv = cur.unpack("<Q", "metadata count")
        # Each kv needs >= 8+1+4 bytes and each tensor info >= 8+1+4+4+8: refuse counts the file
        # cannot possibly hold before looping over them.
        remaining = self.file_size - cur.pos
        if n_kv * 13 > remaining or n_tensors * 25 > remaining:
            raise GGUFError(
                f"header claims {n_kv} metadata entries and {n_tensors} tensors, more than the "
                f"{remaining} remaining bytes can hold",
                path=self.path,
                offset=8,
            )
        self.fields: dict[str, Field] = {}
        for _ in range(n_kv):
            start = cur.pos
            key = cur.string("metadata key")
            if key in self.fields:
                raise GGUFError(f"duplicate metadata key {key!r}", path=self.path, offset=start)
            vtype = self._value_type(cur, f"type of {key!r}")
            value, elem = self._value(cur, vtype, key)
            self.fields[key] = Field(key, vtype, value, start, elem)

        self.alignment = GGUF_DEFAULT_ALIGNMENT
        if KEY_ALIGNMENT in self.fields:
            f = self.fields[KEY_ALIGNMENT]
            a = f.value
            if f.type != ValueType.UINT32 or a <= 0 or a & (a - 1):
                raise GGUFError(
                    f"{KEY_ALIGNMENT} must be a positive power of two stored as uint32, got {a!r} "
                    f"({f.type.name})",
                    path=self.path,
                    offset=f.offset,
                )
            self.alignment = int(a)

        infos = []
        names: set[str] = set()
        for _ in range(n_tensors):
            start = cur.pos
            name = cur.string("tensor name")
            if name in names:
                raise GGUFError(f"duplicate tensor name {name!r}", path=self.path, offset=start)
            names.add(name)
            n_dims = cur.unpack("<I", f"n_dims of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(
                    f"tensor {name!r} has n_dims={n_dims}, expected 1..{MAX_DIMS}",
                    path=self.path,
                    offset=cur.pos - 4,
                )
            cur.need(8 * n_dims, f"dims of {name!r}")
            dims = struct.unpack_from(f"<{n_dims}Q", self._buf, cur.pos)
            cur.pos += 8 * n_dims
            n_el = 1
            for d in dims:
                n_el *= d
            if max(dims) >= 2**63 or n_el >= 2**63:
                raise GGUFError(f"tensor {name!r} has dims {list(dims)}: element count overflows int64",
                                path=self.path, offset=cur.pos - 8 * n_dims)
            type_id = cur.unpack("<I", f"type of {name!r}")
            offset = cur.unpack("<Q", f"data offset of {name!r}")
            infos.append((name, tuple(int(d) for d in dims), type_id, offset, start))

        self.data_start = _align(cur.pos, self.alignment)
        if self.data_start > self.file_size and infos:
            raise GGUFError(
                f"tensor data section would start at {self.data_start}, past the end of the file",
                path=self.path,
                offset=cur.pos,
            )
        self.tensors: list[TensorInfo] = self._place(infos)
        self._by_name = {t.name: t for t in self.tensors}

    def _value_type(self, cur: _Cursor, what: str) -> ValueType:
        start = cur.pos
        raw = cur.unpack("<I", what)
        try:
            return ValueType(raw)
        except ValueError:
            raise GGUFError(f"unknown metadata value type {raw} for {what}", path=self.path, offset=start) from None

    def _value(self, cur: _Cursor, vtype: ValueType, key: str) -> tuple[Any, ValueType | None]:
        if vtype == ValueType.STRING:
            return cur.string(f"value of {key!r}"), None
        if vtype == ValueType.ARRAY:
            return self._array(cur, key)
        dt = SCALAR_DTYPES[vtype]
        cur.need(dt.itemsize, f"value of {key!r}")
        v = np.frombuffer(self._buf, dt, 1, cur.pos)[0].item()
        cur.pos += dt.itemsize
        if vtype == ValueType.BOOL:
            v = bool(v)
        return v, None

    def _array(self, cur: _Cursor, key: str, depth: int = 1) -> tuple[Any, ValueType]:
        if depth > MAX_ARRAY_DEPTH:
            raise GGUFError(f"array {key!r} nests more than {MAX_ARRAY_DEPTH} arrays deep",
                            path=self.path, offset=cur.pos)
        elem = self._value_type(cur, f"array element type of {key!r}")
        count_at = cur.pos
        count = cur.unpack("<Q", f"array length of {key!r}")
        remaining = cur.size - cur.pos
        min_size = SCALAR_DTYPES[elem].itemsize if elem in SCALAR_DTYPES else (8 if elem == ValueType.STRING else 12)
        if count * min_size > remaining:
            raise GGUFError(
                f"array {key!r} claims {count} elements of {elem.name}, more than the "
                f"{remaining} remaining bytes can hold",
                path=self.path,
                offset=count_at,
            )
        if elem in SCALAR_DTYPES:
            dt = SCALAR_DTYPES[elem]
            arr = np.frombuffer(self._buf, dt, count, cur.pos).copy()
            cur.pos += count * dt.itemsize
            if elem == ValueType.BOOL:
                arr = arr.astype(bool)
            return arr, elem
        if elem == ValueType.STRING:
            return self._string_array(cur, key, count), elem
        # nested arrays: each element is (elem type, count, items) with no type tag of its own,
        # as gguf-py writes and reads them; returned as (value, elem_type) pairs
        return [self._array(cur, f"{key}[{i}]", depth + 1) for i in range(count)], elem

    def _string_array(self, cur: _Cursor, key: str, count: int) -> StringArray:
        offsets = np.empty(count, np.int64)
        lengths = np.empty(count, np.int64)
        buf, size, pos = self._buf, cur.size, cur.pos
        unpack = struct.Struct("<Q").unpack_from
        for i in range(count):
            if pos + 8 > size:
                raise GGUFError(f"truncated string {i} of array {key!r}", path=self.path, offset=pos)
            (n,) = unpack(buf, pos)
            pos += 8
            if n > size - pos:
                raise GGUFError(
                    f"string {i} of array {key!r} claims {n} bytes, only {size - pos} remain",
                    path=self.path,
                    offset=pos - 8,
                )
            offsets[i] = pos
            lengths[i] = n
            pos += n
        cur.pos = pos
        # its own export of the map: the strings stay readable after the reader is closed
        return StringArray(memoryview(self._mmap).toreadonly(), offsets, lengths)

    def _place(self, infos: list[tuple[str, tuple[int, ...], int, int, int]]) -> list[TensorInfo]:
        data_size = self.file_size - self.data_start
        for name, _dims, _t, off, start in infos:
            if off % self.alignment:
                raise GGUFError(
                    f"tensor {name!r} data offset {off} is not a multiple of the alignment {self.alignment}",
                    path=self.path,
                    offset=start,
                )
            if off > data_size:
                raise GGUFError(
                    f"tensor {name!r} starts at data offset {off}, past the end of the file "
                    f"(data section is {data_size} bytes)",
                    path=self.path,
                    offset=start,
                )
        order = sorted(range(len(infos)), key=lambda i: infos[i][3])
        spans = [0] * len(infos)
        for rank, i in enumerate(order):
            end = infos[order[rank + 1]][3] if rank + 1 < len(order) else data_size
            spans[i] = end - infos[i][3]
        out: list[TensorInfo] = []
        for i, (name, dims, type_id, off, start) in enumerate(infos):
            gtype = self._resolve_type(type_id, dims, spans[i])
            if gtype is None or gtype.span_sized:
                nbytes = spans[i]
            else:
                try:
                    nbytes = gtype.nbytes(dims)
                except ValueError as e:
                    raise GGUFError(f"tensor {name!r} ({gtype.name} {list(dims)}): {e}", path=self.path, offset=start) from None
            if nbytes > spans[i]:
                what = "overlaps the next tensor" if spans[i] < data_size - off else "runs past the end of the file"
                raise GGUFError(
                    f"tensor {name!r} ({gtype.name if gtype else type_id} {list(dims)}) needs {nbytes} "
                    f"bytes at data offset {off} but {what} after {spans[i]} bytes",
                    path=self.path,
                    offset=start,
                )
            out.append(TensorInfo(name, dims, type_id, gtype, off, self.data_start + off, nbytes, spans[i], start))
        return out

    def _resolve_type(self, type_id: int, dims: tuple[int, ...], span: int) -> GGMLType | None:
        """The type of an id; for ids shared by two lineages, the one whose size fits the span."""
        if type_id in AMBIGUOUS_TYPE_IDS:
            fits = []
            for cand in AMBIGUOUS_TYPE_IDS[type_id]:
                try:
                    n = cand.nbytes(dims)
                except ValueError:
                    continue
                if n <= span and span - n < max(self.alignment, 32) + 32:
                    fits.append(cand)
            return fits[0] if fits else None
        return GGML_TYPES.get(type_id)

    # -- access ------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """Plain key -> value mapping (arrays as NumPy arrays or string sequences)."""
        return {k: f.value for k, f in self.fields.items()}

    def get(self, key: str, default: Any = None) -> Any:
        f = self.fields.get(key)
        return default if f is None else f.value

    @property
    def architecture(self) -> str | None:
        return self.get("general.architecture")

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def raw(self, name: str | TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view (no copy, nothing read yet)."""
        t = name if isinstance(name, TensorInfo) else self.tensor(name)
        return np.frombuffer(self._buf, np.uint8, t.nbytes, t.data_offset)

    def array(self, name: str | TensorInfo) -> np.ndarray:
        """A typed row-major view for types NumPy holds directly (F32, F16, F64, I8..I64);
        BF16 comes back as its raw uint16 bits. Quantized types raise FormatError: unpack them
        with `bitnet.quant`."""
        t = name if isinstance(name, TensorInfo) else self.tensor(name)
        g = t.ggml_type
        if g is not None and g.float_dtype is not None:
            return np.frombuffer(self._buf, g.float_dtype, t.n_elements, t.data_offset).reshape(t.np_shape)
        if g is not None and g.name == "BF16":
            return np.frombuffer(self._buf, "<u2", t.n_elements, t.data_offset).reshape(t.np_shape)
        raise FormatError(
            f"{self.path}: tensor {t.name!r} is {t.type_name}; it has no direct NumPy view, "
            "decode it with bitnet.quant"
        )

    def close(self) -> None:
        try:
            self._buf.release()
        except (BufferError, ValueError):
            return  # a handed-out view still uses the map; it is freed with the last view
        try:
            self._mmap.close()
        except BufferError:
            pass

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_into_memory(fd: int, size: int, path: str) -> mmap.mmap:
    """The whole file read into a private anonymous mapping (MADV_HUGEPAGE where the platform
    has it) with preadv (readv elsewhere): the file is never mapped, so its pages are not
    counted in the process's RSS beside the copy. A copy that would not fit in MemAvailable is
    refused before anything is allocated, with a ConfigError: the setting, not the file, is what
    cannot work here (as BITNET_NUMPY_CACHE's copies are refused)."""
    avail = mem_available()
    if avail is not None and size + MEMORY_HEADROOM > avail:
        raise ConfigError(
            f"{path}: BITNET_WEIGHTS=memory: reading the file into memory needs {size} bytes ({size / 1e9:.2f} GB) "
            f"plus {MEMORY_HEADROOM >> 20} MiB headroom; MemAvailable is {avail} bytes ({avail / 1e9:.2f} GB); "
            "BITNET_WEIGHTS=mmap (--weights mmap) maps the file and needs none"
        )
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    m = mmap.mmap(-1, size, flags=flags) if flags else mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass  # THP disabled in this kernel: plain pages, the copy still works
    mv = memoryview(m)
    off = 0
    try:
        while off < size:
            chunk = mv[off : off + READ_CHUNK]
            try:
                if hasattr(os, "preadv"):
                    n = os.preadv(fd, [chunk], off)
                else:
                    os.lseek(fd, off, os.SEEK_SET)
                    n = os.readv(fd, [chunk])
            except OSError as e:
                raise GGUFError(f"read failed: {e.strerror}", path=path, offset=off) from None
            finally:
                chunk.release()
            if n == 0:
                raise GGUFError(
                    f"short read: the file ended after {off} of the {size} bytes it had when opened",
                    path=path,
                    offset=off,
                )
            off += n
    except BaseException:
        mv.release()
        m.close()
        raise
    mv.release()
    return m


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def open_gguf(path: str | os.PathLike[str] | Path, *, residency: str = "mmap") -> GGUFReader:
    return GGUFReader(path, residency=residency)
