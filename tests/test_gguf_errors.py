"""Corrupt, truncated and hostile GGUF files: only GGUFError, with file, offset and expectation."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.errors import GGUFError
from bitnet.gguf import GGUFReader, GGUFWriter, ValueType

pytestmark = pytest.mark.ac1


def _valid(path: Path) -> bytes:
    w = GGUFWriter(path)
    w.add("general.architecture", "bitnet-b1.58")
    w.add("k.u32", 5, ValueType.UINT32)
    w.add("k.strs", ["ab", "c", "déf"])
    w.add("k.f32s", np.arange(4, dtype=np.float32))
    w.add_tensor("a", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("b", np.arange(32, dtype=np.float16))
    w.add_tensor("q", np.zeros(66 * 2, np.uint8), shape=(256, 2), gtype="TQ2_0")
    w.write()
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    return _valid(tmp_path_factory.mktemp("v") / "v.gguf")


def _open(tmp_path: Path, data: bytes) -> GGUFReader:
    p = tmp_path / "x.gguf"
    p.write_bytes(data)
    return GGUFReader(p)


def _touch_everything(r: GGUFReader) -> None:
    for f in r.fields.values():
        if f.type == ValueType.ARRAY and f.elem_type == ValueType.STRING:
            list(f.value)
    for t in r.tensors:
        r.raw(t).sum()
        if t.ggml_type is not None and t.ggml_type.float_dtype is not None:
            r.array(t)


def _expect_error(tmp_path, data, match):
    with pytest.raises(GGUFError, match=match) as ei:
        _open(tmp_path, data)
    assert str(tmp_path / "x.gguf") in str(ei.value)
    return ei.value


def test_bad_magic(tmp_path, valid_bytes):
    e = _expect_error(tmp_path, b"GGML" + valid_bytes[4:], "bad magic")
    assert e.offset == 0


def test_empty_file(tmp_path):
    _expect_error(tmp_path, b"", "empty file")


def test_unknown_version(tmp_path, valid_bytes):
    e = _expect_error(tmp_path, valid_bytes[:4] + struct.pack("<I", 4) + valid_bytes[8:], "unsupported GGUF version 4")
    assert e.offset == 4


def test_version_2_is_read(tmp_path, valid_bytes):
    r = _open(tmp_path, valid_bytes[:4] + struct.pack("<I", 2) + valid_bytes[8:])
    assert r.version == 2 and len(r.tensors) == 3


@pytest.mark.parametrize("cut", [3, 10, 20, 30, 60, 100, 200, 300])
def test_truncated_header_kv_and_infos(tmp_path, valid_bytes, cut):
    _expect_error(tmp_path, valid_bytes[:cut], "truncated|past the end|more than the")


def test_truncated_tensor_data(tmp_path, valid_bytes):
    _expect_error(tmp_path, valid_bytes[:-40], "runs past the end of the file|past the end")


def test_hostile_counts_do_not_allocate(tmp_path, valid_bytes):
    data = bytearray(valid_bytes)
    data[16:24] = struct.pack("<Q", 2**62)  # kv count
    _expect_error(tmp_path, bytes(data), "more than the")
    data = bytearray(valid_bytes)
    data[8:16] = struct.pack("<Q", 2**40)  # tensor count
    _expect_error(tmp_path, bytes(data), "more than the")


def test_hostile_string_length(tmp_path, valid_bytes):
    data = bytearray(valid_bytes)
    data[24:32] = struct.pack("<Q", 2**63)  # first key's length
    e = _expect_error(tmp_path, bytes(data), "length field says")
    assert e.offset == 24


def test_hostile_array_length(tmp_path, valid_bytes):
    data = bytearray(valid_bytes)
    i = data.index(b"k.f32s") + len(b"k.f32s") + 4 + 4  # after key, ARRAY tag, elem type
    data[i:i + 8] = struct.pack("<Q", 2**61)
    _expect_error(tmp_path, bytes(data), "claims 2305843009213693952 elements")


def _rewrite(tmp_path, **tensor_overrides):
    """A file whose tensor infos are written by hand (the writer refuses bad layouts)."""
    infos = tensor_overrides["infos"]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(infos), 0))
    for name, dims, tid, off in infos:
        nb = name.encode()
        out += struct.pack("<Q", len(nb)) + nb + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
        out += struct.pack("<IQ", tid, off)
    out += b"\0" * (-len(out) % 32)
    out += b"\1" * tensor_overrides.get("data", 256)
    return bytes(out)


def test_duplicate_tensor_names(tmp_path):
    _expect_error(tmp_path, _rewrite(tmp_path, infos=[("t", (4,), 0, 0), ("t", (4,), 0, 32)]), "duplicate tensor name 't'")


def test_duplicate_keys(tmp_path):
    def kv(k):
        return struct.pack("<Q", len(k)) + k + struct.pack("<II", 4, 1)
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv(b"a") + kv(b"a")
    _expect_error(tmp_path, data, "duplicate metadata key 'a'")


def test_overlapping_tensors(tmp_path):
    _expect_error(tmp_path, _rewrite(tmp_path, infos=[("a", (16,), 0, 0), ("b", (4,), 0, 32)]), "overlaps the next tensor")


def test_misaligned_offset(tmp_path):
    _expect_error(tmp_path, _rewrite(tmp_path, infos=[("a", (4,), 0, 4)]), "not a multiple of the alignment 32")


def test_out_of_file_tensor(tmp_path):
    _expect_error(tmp_path, _rewrite(tmp_path, infos=[("a", (4,), 0, 4096)]), "past the end of the file")


def test_bad_dims(tmp_path):
    _expect_error(tmp_path, _rewrite(tmp_path, infos=[("a", (1, 1, 1, 1, 1), 0, 0)]), "n_dims=5")
    _expect_error(tmp_path, _rewrite(tmp_path, infos=[("a", (100,), 35, 0)]), "multiple of the block size 256")


def test_bad_alignment_value(tmp_path):
    k = b"general.alignment"
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(k)) + k + struct.pack("<II", 4, 48)
    _expect_error(tmp_path, data, "power of two")


def test_unknown_value_type(tmp_path):
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<II", 77, 0)
    _expect_error(tmp_path, data, "unknown metadata value type 77")


def _fuzz(tmp_path, valid_bytes, ops):
    data = bytearray(valid_bytes)
    for kind, pos, val in ops:
        if not data:
            break
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= 1 << (val % 8)
        elif kind == "set":
            data[pos] = val % 256
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = bytes([val % 256]) * (1 + val % 7)
        elif kind == "u64":
            data[pos:pos + 8] = struct.pack("<Q", (val * 0x9E3779B97F4A7C15) % 2**64)
    try:
        r = _open(tmp_path, bytes(data))
    except GGUFError:
        return
    _touch_everything(r)  # a file that opens must be fully usable
    r.close()


_ops = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "u64"]), st.integers(0, 2**16), st.integers(0, 2**32)),
    min_size=1, max_size=4,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_fuzz_only_gguf_error(tmp_path, valid_bytes, ops):
    _fuzz(tmp_path, valid_bytes, ops)


@pytest.mark.slow
@settings(max_examples=5000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=_ops)
def test_fuzz_only_gguf_error_many(tmp_path, valid_bytes, ops):
    _fuzz(tmp_path, valid_bytes, ops)
