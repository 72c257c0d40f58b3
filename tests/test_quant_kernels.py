"""Reference kernels: exact integer results, the dispatcher's records, no float staging (AC10,
AC12)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.errors import FormatError, StrictModeError
from bitnet.gguf import GGUFReader, GGUFWriter
from bitnet.kernels.activations import per_token_absmax, q8_k
from bitnet.kernels.dispatch import matmul, set_backend
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.quant import i2s, rust_port, tq
from bitnet.quant.encoders import FORMATS
from bitnet.quant.weights import load_weight

FMT_COL_MULT = {"i2_s": 128, "i2_s_arm": 128, "i2_s_1x4": 128, "tq2_0": 256, "tq1_0": 256, "bitnet32": 256, "qk256": 256}


def write_weight(path, fmt, t, scale):
    """One projection in a GGUF file, through the same encoders the synthesiser uses."""
    wf = FORMATS[fmt]
    w = GGUFWriter(path)
    for k, v in wf.metadata:
        w.add(k, v)
    w.add_tensor("w", wf.encode(t, scale if wf.holds_scale else 1.0), shape=(t.shape[1], t.shape[0]),
                 gtype=wf.gtype, nbytes=wf.nbytes(*t.shape))
    w.write()
    return path


def expected(fmt, t, scale, x, profile):
    """Plain NumPy: int64 dot products of the ternary values and the int8 activations, then
    the format's scales in the engine's order."""
    if profile == "per-token-absmax":
        a = per_token_absmax(x)
        acc = t.astype(np.int64) @ a.q.T.astype(np.int64)  # [out, T]
        if fmt.startswith("i2_s") or fmt == "qk256":
            s = np.float32(scale) if fmt != "qk256" else np.float32(1.0)
            return (acc.T.astype(np.float32) / a.scale[:, None]) * s
    a = q8_k(x)
    nb = t.shape[1] // 256
    blk = (t.astype(np.int64).reshape(t.shape[0], 1, nb, 256) * a.q.astype(np.int64).reshape(1, x.shape[0], nb, 256)).sum(-1)
    d = np.float32(np.float16(scale))
    y = np.zeros((t.shape[0], x.shape[0]), np.float32)
    for b in range(nb):
        y = (y + blk[:, :, b].astype(np.float32) * (a.scale[None, :, b] * d)).astype(np.float32)
    return y.T


CASES = [("i2_s", "per-token-absmax"), ("i2_s_arm", "per-token-absmax"), ("i2_s_1x4", "per-token-absmax"),
         ("qk256", "per-token-absmax"), ("tq2_0", "q8_k-block256"), ("tq1_0", "q8_k-block256")]


@pytest.mark.ac10
@pytest.mark.ac12
@pytest.mark.parametrize("fmt,profile", CASES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_kernel_equals_exact_integer_matmul(tmp_path_factory, fmt, profile, data):
    mult = FMT_COL_MULT[fmt]
    out = data.draw(st.integers(1, 9)) * (4 if fmt == "i2_s_1x4" else 1)
    k = data.draw(st.integers(1, 3)) * max(mult, 256 if profile == "q8_k-block256" else mult)
    t_rows = data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    t = rng.integers(-1, 2, (out, k)).astype(np.int8)
    x = (rng.standard_normal((t_rows, k)) * data.draw(st.sampled_from([1e-3, 1.0, 50.0]))).astype(np.float32)
    scale = float(np.float32(rng.uniform(0.01, 2)))
    p = write_weight(tmp_path_factory.mktemp("k") / "w.gguf", fmt, t, scale)
    with GGUFReader(p) as r:
        w = load_weight(r, "w")
        y = matmul(x, w, profile)
    np.testing.assert_array_equal(y, expected(fmt, t, scale, x, profile))


def test_non_multiple_of_256_rows_where_the_format_allows(tmp_path):
    """I2_S needs K % 128 only: K = 384 works; TQ refuses it with the multiple it needs."""
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, (5, 384)).astype(np.int8)
    x = rng.standard_normal((2, 384)).astype(np.float32)
    with GGUFReader(write_weight(tmp_path / "a.gguf", "i2_s", t, 0.5)) as r:
        np.testing.assert_array_equal(matmul(x, load_weight(r, "w")), expected("i2_s", t, 0.5, x, "per-token-absmax"))
    with pytest.raises(FormatError, match="multiple of 256"):
        tq.ternary_tq2_0(t, 0.5)


@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0", "bitnet32", "qk256", "f16", "bf16"])
def test_correlation_with_float_matmul_sanity(tmp_path, fmt):
    """A sanity check only (correctness is the exact equality above)."""
    rng = np.random.default_rng(1)
    t = rng.integers(-1, 2, (64, 512)).astype(np.int8)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    with GGUFReader(write_weight(tmp_path / "w.gguf", fmt, t, 0.05)) as r:
        w = load_weight(r, "w")
        y = matmul(x, w, "per-token-absmax")
    ref = x @ (t.astype(np.float32) * (0.05 if FORMATS[fmt].holds_scale else 1.0)).T
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] >= 0.998


@pytest.mark.ac12
@pytest.mark.parametrize("fmt,profile", [("i2_s", "per-token-absmax"), ("tq2_0", "q8_k-block256"),
                                         ("tq1_0", "q8_k-block256"), ("tq2_0", "per-token-absmax"),
                                         ("bitnet32", "per-token-absmax"), ("qk256", "per-token-absmax"),
                                         ("f16", "none")])
def test_no_full_weight_float_staging(tmp_path, fmt, profile):
    """A 4096 x 2560 matmul (a float32 copy would be 42 MB) allocates a small fraction of that
    in every format: only one chunk of rows is ever decoded, and block scales are read from
    the scale bytes alone (decoding every code to get them once cost 2.5x the float matrix)."""
    from bitnet.kernels.numpy_kernels import CHUNK_ELEMENTS

    rng = np.random.default_rng(2)
    out, k = 4096, 2560
    t = rng.integers(-1, 2, (out, k)).astype(np.int8)
    with GGUFReader(write_weight(tmp_path / "w.gguf", fmt, t, 0.1)) as r:
        w = load_weight(r, "w")
        x = rng.standard_normal((1, k)).astype(np.float32)
        matmul(x, w, profile)  # warm up
        tracemalloc.start()
        matmul(x, w, profile)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < out * k * 4 / 8, peak
    assert peak < CHUNK_ELEMENTS * 12 + (1 << 20), peak


def test_dispatcher_records_what_ran(tmp_path):
    rng = np.random.default_rng(3)
    t = rng.integers(-1, 2, (8, 256)).astype(np.int8)
    KERNEL_LOG.reset()
    with GGUFReader(write_weight(tmp_path / "a.gguf", "tq2_0", t, 0.5)) as r:
        w = load_weight(r, "w")
        matmul(np.ones((3, 256), np.float32), w, "q8_k-block256")
        matmul(np.ones((1, 256), np.float32), w, "q8_k-block256")
    (rec,) = KERNEL_LOG.snapshot()
    assert rec.id == "tq2_0_q8k_gemm_numpy"
    assert (rec.calls, rec.rows, rec.bytes_read) == (2, 4, 2 * 8 * 66)
    assert rec.seconds > 0


def test_shape_and_profile_errors(tmp_path):
    t = np.zeros((4, 256), np.int8)
    with GGUFReader(write_weight(tmp_path / "a.gguf", "i2_s", t, 0.5)) as r:
        w = load_weight(r, "w")
        with pytest.raises(FormatError, match="activations of shape"):
            matmul(np.ones((1, 128), np.float32), w)
        with pytest.raises(FormatError, match="unknown activation profile"):
            matmul(np.ones((1, 256), np.float32), w, "int4")


def test_unknown_backend_and_strict_fallback(monkeypatch):
    from bitnet.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend"):
        set_backend("tpu")
    assert StrictModeError  # strict refusal of a backend fallback is tested with the native backend


def test_rust_port_values_table_is_explicit():
    raw = rust_port.pack_qk256(np.zeros((1, 256), np.int8))
    assert (rust_port.qk256_values(raw, 256, rust_port.TERNARY_LUT) == 0).all()
    assert (rust_port.qk256_values(raw, 256, rust_port.PORT_LUTS["port-2112"]) == -1).all()
    assert i2s.nbytes(256) == 96


@pytest.mark.ac12
def test_record_names_the_int8_cache_path_and_its_bytes(tmp_path):
    """The id comes from the kernel that ran: the cached int8 path says so and reports the
    cache's bytes, with results identical to the packed-decode path."""
    rng = np.random.default_rng(5)
    t = rng.integers(-1, 2, (16, 256)).astype(np.int8)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    with GGUFReader(write_weight(tmp_path / "a.gguf", "i2_s", t, 0.5)) as r:
        w = load_weight(r, "w")
        KERNEL_LOG.reset()
        y_packed = matmul(x, w)
        w.cache_int8()
        y_cached = matmul(x, w)
    np.testing.assert_array_equal(y_packed, y_cached)
    recs = {r.id: r for r in KERNEL_LOG.snapshot()}
    assert set(recs) == {"i2s_x86_i8act_gemm_numpy", "i2s_x86_i8cache_i8act_gemm_numpy"}
    assert recs["i2s_x86_i8act_gemm_numpy"].bytes_read == 16 * 256 // 4
    assert recs["i2s_x86_i8cache_i8act_gemm_numpy"].bytes_read == 16 * 256


def test_float_weights_are_recorded_with_their_own_ids(tmp_path):
    t = np.random.default_rng(6).integers(-1, 2, (8, 256)).astype(np.int8)
    x = np.ones((1, 256), np.float32)
    with GGUFReader(write_weight(tmp_path / "a.gguf", "f16", t, 0.5)) as r:
        w = load_weight(r, "w")
        KERNEL_LOG.reset()
        np.testing.assert_array_equal(matmul(x, w, "none"), x @ (t.astype(np.float32) * 0.5).T)
        matmul(x, w, "per-token-absmax")
    assert sorted(r.id for r in KERNEL_LOG.snapshot()) == ["f16_f32act_gemm_numpy", "f16_i8act_gemm_numpy"]


@pytest.mark.parametrize("fmt", ["bitnet32", "tq2_0", "tq1_0"])
def test_blocked_weights_with_per_token_acts_match_the_integer_sum(tmp_path, fmt):
    """Per-block exact integer dots, scaled per block in float: equal to the int64 product up
    to float32 rounding of the block sum (one scale for all blocks here)."""
    rng = np.random.default_rng(7)
    t = rng.integers(-1, 2, (12, 512)).astype(np.int8)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    with GGUFReader(write_weight(tmp_path / "a.gguf", fmt, t, 0.25)) as r:
        y = matmul(x, load_weight(r, "w"), "per-token-absmax")
    a = per_token_absmax(x)
    ref = (t.astype(np.int64) @ a.q.T.astype(np.int64)).T * 0.25 / a.scale[:, None].astype(np.float64)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
