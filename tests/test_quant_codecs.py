"""Codecs: symmetric pack/unpack, block rules, byte-exactness with gguf-py (AC10)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet.errors import FormatError
from bitnet.quant import i2s, rust_port, tq
from bitnet.quant.encoders import FORMATS

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import quants  # noqa: E402


def ternary(rows, cols):
    return hnp.arrays(np.int8, (rows, cols), elements=st.integers(-1, 1))


@st.composite
def ternary_matrix(draw, col_multiple, row_multiple=1, max_blocks=4):
    rows = draw(st.integers(1, 6)) * row_multiple
    cols = draw(st.integers(1, max_blocks)) * col_multiple
    return draw(ternary(rows, cols))


@pytest.mark.ac10
@pytest.mark.parametrize("layout,col_mult,row_mult", [("x86", 128, 1), ("arm", 64, 1), ("x86_1x4", 4, 4)])
@settings(max_examples=40)
@given(data=st.data())
def test_i2s_round_trip(layout, col_mult, row_mult, data):
    t = data.draw(ternary_matrix(col_mult, row_mult))
    scale = data.draw(st.floats(1e-3, 10).map(lambda v: float(np.float32(v))))
    raw = i2s.pack(t, scale, layout)
    assert raw.size == t.size // 4 + 32 == i2s.nbytes(t.size)
    np.testing.assert_array_equal(i2s.unpack_codes(raw, *t.shape, layout).astype(np.int8) - 1, t)
    assert i2s.read_scale(raw, t.size) == np.float32(scale)


@pytest.mark.ac10
def test_i2s_x86_bit_layout_matches_bitnet_cpp():
    """Element j of a 128-block -> byte j % 32, shift 6 - 2*(j // 32) (quantize_i2_s, x86)."""
    codes = np.zeros((1, 128), np.uint8)
    codes[0, 5] = 2  # group 0 -> bits 7..6 of byte 5
    codes[0, 32 + 7] = 1  # group 1 -> bits 5..4 of byte 7
    codes[0, 96 + 31] = 2  # group 3 -> bits 1..0 of byte 31
    packed = i2s.pack_codes(codes, "x86")
    assert packed[5] == 2 << 6 and packed[7] == 1 << 4 and packed[31] == 2
    assert np.count_nonzero(packed) == 3
    arm = i2s.pack_codes(codes, "arm")  # 64-blocks: j=39 -> block 0, group 2, byte 7
    assert arm[5] == 2 << 6 and arm[7] == 1 << 2


@pytest.mark.ac10
def test_i2s_quantize_follows_quantize_i2_s():
    w = np.array([[0.3, -0.3, 0.0, 5e-7] * 32], np.float32)
    raw = i2s.quantize(w)
    assert i2s.read_scale(raw, w.size) == np.float32(0.3)
    np.testing.assert_array_equal(i2s.unpack_codes(raw, 1, 128)[0, :4], [2, 0, 1, 1])
    np.testing.assert_allclose(i2s.dequantize(raw, 1, 128)[0, :4], [0.3, -0.3, 0, 0])


@pytest.mark.parametrize("layout,shape,match", [
    ("x86", (1, 100), "multiple of 128"), ("arm", (1, 96), "multiple of 64"), ("x86_1x4", (3, 8), "multiple of 4"),
])
def test_i2s_block_rules(layout, shape, match):
    with pytest.raises(FormatError, match=match):
        i2s.pack(np.zeros(shape, np.int8), 1.0, layout)
    with pytest.raises(FormatError, match="ternary"):
        i2s.pack(np.full((1, 128), 2, np.int8), 1.0)


EDGE_CASES = {
    "zeros": np.zeros((2, 256), np.float32),
    "all_max": np.full((1, 512), 7.5, np.float32),
    "all_neg_max": np.full((1, 256), -7.5, np.float32),
    "ties": np.tile(np.array([0.5, -0.5, 1.0, -1.0], np.float32), (1, 64)),
    "tiny": np.full((1, 256), 1e-30, np.float32),
}


@pytest.mark.parametrize("qtype,ours,deq", [(Q.TQ2_0, tq.quantize_tq2_0, tq.dequantize_tq2_0),
                                            (Q.TQ1_0, tq.quantize_tq1_0, tq.dequantize_tq1_0)])
@pytest.mark.parametrize("case", list(EDGE_CASES) + ["random", "ternary_times_scale"])
def test_tq_byte_exact_with_gguf_py(qtype, ours, deq, case):
    rng = np.random.default_rng(7)
    x = EDGE_CASES.get(case)
    if case == "random":
        x = rng.standard_normal((5, 768)).astype(np.float32) * 3
    elif case == "ternary_times_scale":
        x = (rng.integers(-1, 2, (3, 512)) * 0.0713).astype(np.float32)
    mine, ref = ours(x), quants.quantize(x, qtype).reshape(-1)
    np.testing.assert_array_equal(mine, ref)
    np.testing.assert_array_equal(deq(mine, x.size).view(np.uint32),
                                  quants.dequantize(ref, qtype).reshape(-1).astype(np.float32).view(np.uint32))


@settings(max_examples=40)
@given(t=ternary_matrix(256), scale=st.floats(1e-3, 100).map(lambda v: float(np.float16(v))))
def test_tq_ternary_round_trip(t, scale):
    for enc, codes in ((tq.ternary_tq2_0, tq.tq2_0_codes), (tq.ternary_tq1_0, tq.tq1_0_codes)):
        c, d = codes(enc(t, scale), t.size)
        np.testing.assert_array_equal(c.reshape(t.shape).astype(np.int8) - 1, t)
        nonzero = np.abs(t).reshape(-1, 256).max(axis=1) > 0
        assert (d[nonzero] == np.float32(np.float16(scale))).all() and (d[~nonzero] == 0).all()


def test_tq_block_rules():
    with pytest.raises(FormatError, match="multiple of 256"):
        tq.quantize_tq2_0(np.zeros((1, 100), np.float32))
    with pytest.raises(FormatError, match="need 66"):
        tq.tq2_0_codes(np.zeros(10, np.uint8), 256)


@settings(max_examples=40)
@given(t=ternary_matrix(32), scale=st.floats(1e-3, 100).map(lambda v: float(np.float16(v))))
def test_bitnet32_round_trip(t, scale):
    raw = rust_port.pack_bitnet32(t, scale)
    assert raw.size == t.size // 32 * 10
    c, d = rust_port.bitnet32_codes(raw, t.size)
    np.testing.assert_array_equal(c.reshape(t.shape).astype(np.int8) - 1, t)
    assert (d == np.float32(np.float16(scale))).all()


@settings(max_examples=40)
@given(t=ternary_matrix(256))
def test_qk256_round_trip_and_lut(t):
    raw = rust_port.pack_qk256(t)
    assert raw.size == t.size // 4
    np.testing.assert_array_equal(rust_port.qk256_values(raw, t.size, rust_port.TERNARY_LUT).reshape(t.shape), t)
    port = rust_port.qk256_values(raw, t.size, rust_port.PORT_LUTS["port-2112"])
    assert set(np.unique(port).tolist()) <= {-2, -1, 1}  # the port's table reads the same bits differently


def test_qk256_lsb_first():
    t = np.zeros((1, 256), np.int8) - 1  # code 0
    t[0, 1] = 1  # code 2 at bits 3..2 of byte 0
    assert rust_port.pack_qk256(t)[0] == 2 << 2


def test_bf16_encoder_matches_gguf_py():
    rng = np.random.default_rng(3)
    t = rng.integers(-1, 2, (4, 64)).astype(np.int8)
    ours = FORMATS["bf16"].encode(t, 0.123)
    ref = quants.quantize(t.astype(np.float32) * np.float32(0.123), Q.BF16).view(np.uint16).reshape(ours.shape)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("fmt,qtype", [("f32", Q.F32), ("f16", Q.F16), ("bf16", Q.BF16)])
def test_float_passthrough_byte_exact_with_gguf_py(fmt, qtype):
    """Random values plus the edges: zeros, +-inf, NaN, bf16 rounding ties, f16 overflow."""
    from bitnet.quant import floats

    rng = np.random.default_rng(8)
    x = (rng.standard_normal((4, 64)) * 10).astype(np.float32)
    x[0, :8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, 1.00390625, 1.01171875]  # ties at bf16
    ours = floats.pack(x, fmt)
    ref = quants.quantize(x, qtype)
    assert ours.tobytes() == np.ascontiguousarray(ref).tobytes()
    back = floats.unpack(ours.view(np.uint8), fmt, 4, 64)
    np.testing.assert_array_equal(back, quants.dequantize(np.ascontiguousarray(ref).view(np.uint8).reshape(4, -1), qtype))
    with pytest.raises(FormatError, match="need"):
        floats.unpack(ours.view(np.uint8)[:-1], fmt, 4, 64)
