"""GGUF reader/writer: round trips, interop with gguf-py, real llama.cpp vocab files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.errors import GGUFError
from bitnet.gguf import GGML_TYPES, GGUFReader, GGUFWriter, ValueType, ggml_type

gguf = pytest.importorskip("gguf")

pytestmark = pytest.mark.ac1


def vocab_dir() -> Path | None:
    for cand in (os.environ.get("BITNET_VOCAB_DIR"), Path(__file__).resolve().parents[2] / "shared" / "vocab"):
        if cand and Path(cand, "ggml-vocab-llama-bpe.gguf").is_file():
            return Path(cand)
    return None


def test_type_table_matches_gguf_py():
    """Our one type table agrees with gguf-py on every upstream id both know."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for t in GGMLQuantizationType:
        if t.value in GGML_TYPES and GGML_TYPES[t.value].origin == "ggml":
            ours = GGML_TYPES[t.value]
            assert (ours.name, ours.block_size, ours.type_size) == (t.name, *GGML_QUANT_SIZES[t]), t


def test_bitnet_cpp_size_rules():
    i2s = ggml_type("I2_S")
    assert i2s.id == 36 and i2s.nbytes((2560, 2560)) == 2560 * 2560 // 4 + 32
    assert ggml_type("TL1").nbytes((2560, 640)) == 2560 * 640 // 4 + 32
    tl2 = ggml_type("TL2").nbytes((3200, 8640))
    expect = ((3200 - 256) * 8640 // 3 * 5 // 8 + 256 * 8640 // 2 * 4 // 8 + 31) // 32 * 32 + 32
    assert tl2 == expect
    with pytest.raises(ValueError, match="multiple of the block size 256"):
        ggml_type("TQ2_0").nbytes((100, 2))


def _write_with_gguf_py(path: Path) -> dict:
    w = gguf.GGUFWriter(str(path), arch="bitnet")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 2.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.arr_i", [1, 2, 3])
    w.add_array("t.arr_s", ["a", "bc", ""])
    w.add_array("t.arr_f", [0.5, -1.0])
    w.add_key_value("t.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY)
    a = np.arange(64 * 3, dtype=np.float32).reshape(3, 64)
    b = (np.arange(32, dtype=np.float16) / 7).astype(np.float16)
    w.add_tensor("a", a)
    w.add_tensor("b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"a": a, "b": b}


def test_reads_files_written_by_gguf_py(tmp_path):
    path = tmp_path / "ref.gguf"
    tensors = _write_with_gguf_py(path)
    with GGUFReader(path) as r:
        assert r.get("general.architecture") == "bitnet"
        expect = {"t.u8": 200, "t.i8": -100, "t.u16": 60000, "t.i16": -30000, "t.u32": 4_000_000_000,
                  "t.i32": -2_000_000_000, "t.f32": 1.5, "t.u64": 2**63 + 5, "t.i64": -(2**62),
                  "t.f64": 2.25, "t.bool": True, "t.str": "héllo ✓"}
        for k, v in expect.items():
            assert r.get(k) == v, k
        assert r.fields["t.u64"].type == ValueType.UINT64
        assert r.get("t.arr_i").tolist() == [1, 2, 3]
        assert list(r.get("t.arr_s")) == ["a", "bc", ""]
        assert r.get("t.arr_f").tolist() == [0.5, -1.0]
        nested = r.get("t.nested")
        assert [x[0].tolist() for x in nested] == [[1, 2], [3]]
        np.testing.assert_array_equal(r.array("a"), tensors["a"])
        np.testing.assert_array_equal(r.array("b"), tensors["b"])
        assert r.tensor("a").shape == (64, 3)


def test_gguf_py_file_rewritten_byte_identically(tmp_path):
    """Reading a gguf-py file and writing every field and tensor back gives the same bytes."""
    src = tmp_path / "ref.gguf"
    _write_with_gguf_py(src)
    dst = tmp_path / "copy.gguf"
    with GGUFReader(src) as r:
        w = GGUFWriter(dst)
        w.add_fields(r.fields.values())
        for t in r.tensors:
            w.add_tensor(t.name, r.raw(t), shape=t.shape, gtype=t.type_id, nbytes=t.nbytes)
        w.write()
    assert dst.read_bytes() == src.read_bytes()


def test_our_files_read_by_gguf_py(tmp_path):
    path = tmp_path / "ours.gguf"
    w = GGUFWriter(path)
    w.add("general.architecture", "bitnet")
    w.add("x.u32", 7, ValueType.UINT32)
    w.add("x.f64", 0.125, ValueType.FLOAT64)
    w.add("x.bool", False)
    w.add("x.strs", ["α", "β"])
    w.add("x.ints", np.array([1, -2, 3], np.int64))
    a = np.linspace(-1, 1, 512, dtype=np.float32).reshape(2, 256)
    w.add_tensor("w", a)
    w.add_tensor("h", a.astype(np.float16))
    w.write()
    g = gguf.GGUFReader(str(path))
    f = g.fields
    assert f["x.u32"].contents() == 7
    assert f["x.f64"].contents() == 0.125
    assert f["x.bool"].contents() is False
    assert f["x.strs"].contents() == ["α", "β"]
    assert f["x.ints"].contents() == [1, -2, 3]
    by_name = {t.name: t for t in g.tensors}
    np.testing.assert_array_equal(np.asarray(by_name["w"].data).reshape(2, 256), a)
    np.testing.assert_array_equal(np.asarray(by_name["h"].data).reshape(2, 256), a.astype(np.float16))


@pytest.mark.skipif(vocab_dir() is None, reason="llama.cpp vocab files not found: set BITNET_VOCAB_DIR")
@pytest.mark.parametrize("name", ["llama-bpe", "llama-spm", "gpt-2"])
def test_llama_cpp_vocab_files_parse(name):
    path = vocab_dir() / f"ggml-vocab-{name}.gguf"
    with GGUFReader(path) as r:
        ref = gguf.GGUFReader(str(path))
        assert set(r.fields) == {k for k in ref.fields if not k.startswith("GGUF.")}
        tokens = r.get("tokenizer.ggml.tokens")
        assert list(tokens) == ref.fields["tokenizer.ggml.tokens"].contents()
        for key, f in r.fields.items():
            if f.type != ValueType.ARRAY:
                assert f.value == pytest.approx(ref.fields[key].contents()), key
        assert r.tensors == []


def test_unknown_and_bitnet_type_ids_are_listed(tmp_path):
    """gguf-py refuses ids it does not know; we list them and hand out their bytes."""
    path = tmp_path / "odd.gguf"
    w = GGUFWriter(path)
    codes = np.arange(256 * 4 // 4 + 32, dtype=np.uint8)
    w.add_tensor("i2s", codes, shape=(256, 4), gtype="I2_S")
    w.add_tensor("mystery", np.arange(40, dtype=np.uint8), shape=(40,), gtype=99, nbytes=40)
    w.write()
    with GGUFReader(path) as r:
        i2s, mystery = r.tensor("i2s"), r.tensor("mystery")
        assert i2s.type_name == "I2_S" and i2s.nbytes == 288
        np.testing.assert_array_equal(r.raw(i2s), codes)
        assert mystery.ggml_type is None and mystery.type_name == "unknown(99)"
        assert r.raw(mystery)[:40].tolist() == list(range(40))


def test_writer_is_deterministic_and_atomic(tmp_path):
    def build(p):
        w = GGUFWriter(p)
        w.add("a", 1)
        w.add_tensor("t", np.ones((2, 32), np.float32))
        return w

    p = tmp_path / "m.gguf"
    build(p).write()
    first = p.read_bytes()
    build(p).write()
    assert p.read_bytes() == first

    def boom():
        raise RuntimeError("source failed")

    w = GGUFWriter(p)
    w.add_tensor("t", boom, shape=(32, 2), gtype="F32")
    with pytest.raises(RuntimeError):
        w.write()
    assert p.read_bytes() == first  # the old file is untouched
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.gguf"]  # no temp file left


def test_writer_rejects_duplicates_and_bad_sizes(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    w.add("k", 1)
    with pytest.raises(GGUFError, match="duplicate metadata key"):
        w.add("k", 2)
    w.add_tensor("t", np.zeros(4, np.float32))
    with pytest.raises(GGUFError, match="duplicate tensor name"):
        w.add_tensor("t", np.zeros(4, np.float32))
    w.add_tensor("u", lambda: np.zeros(3, np.float32), shape=(4,), gtype="F32")
    with pytest.raises(GGUFError, match="produced 12 bytes, declared 16"):
        w.write()
    with pytest.raises(GGUFError, match="does not fit"):
        GGUFWriter(tmp_path / "y.gguf").add("big", 300, ValueType.UINT8)


def test_alignment_key_is_honoured(tmp_path):
    p = tmp_path / "a.gguf"
    w = GGUFWriter(p, alignment=64)
    w.add_tensor("x", np.ones(3, np.float32))
    w.add_tensor("y", np.ones(5, np.float32))
    w.write()
    with GGUFReader(p) as r:
        assert r.alignment == 64
        assert r.data_start % 64 == 0
        assert all(t.offset % 64 == 0 for t in r.tensors)
        assert r.array("y").tolist() == [1.0] * 5
    g = gguf.GGUFReader(str(p))
    assert g.alignment == 64


# -- Hypothesis round trip ------------------------------------------------------------------
_scalar = st.one_of(
    st.tuples(st.just(ValueType.UINT8), st.integers(0, 255)),
    st.tuples(st.just(ValueType.INT16), st.integers(-(2**15), 2**15 - 1)),
    st.tuples(st.just(ValueType.UINT32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(ValueType.INT64), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just(ValueType.UINT64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(ValueType.FLOAT64), st.floats(allow_nan=False)),
    st.tuples(st.just(ValueType.FLOAT32), st.floats(width=32, allow_nan=False)),
    st.tuples(st.just(ValueType.BOOL), st.booleans()),
    st.tuples(st.just(ValueType.STRING), st.text(max_size=20)),
)
_keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=60)
@given(
    kv=st.dictionaries(_keys, _scalar, max_size=8),
    arrays=st.dictionaries(_keys.map(lambda k: "arr." + k), st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=10), max_size=3),
    tensors=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 3), st.sampled_from(["F32", "F16"])), max_size=4),
    alignment=st.sampled_from([8, 32, 64]),
)
def test_random_files_round_trip(tmp_path_factory, kv, arrays, tensors, alignment):
    path = tmp_path_factory.mktemp("rt") / "r.gguf"
    w = GGUFWriter(path, alignment=alignment)
    for k, (vt, v) in kv.items():
        w.add(k, v, vt)
    for k, v in arrays.items():
        if k not in kv:
            w.add(k, v, ValueType.ARRAY, ValueType.INT32)
    rng = np.random.default_rng(0)
    arrs = {}
    for i, (n0, n1, t) in enumerate(tensors):
        a = rng.standard_normal((n1, n0)).astype(np.float32 if t == "F32" else np.float16)
        arrs[f"t{i}"] = a
        w.add_tensor(f"t{i}", a)
    w.write()
    with GGUFReader(path) as r:
        for k, (vt, v) in kv.items():
            f = r.fields[k]
            assert f.type == vt
            if vt == ValueType.FLOAT32:
                assert f.value == float(np.float32(v))
            else:
                assert f.value == v
        for k, v in arrays.items():
            if k not in kv:
                assert r.get(k).tolist() == v
        for name, a in arrs.items():
            np.testing.assert_array_equal(r.array(name), a)
