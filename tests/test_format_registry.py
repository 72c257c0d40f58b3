"""The format registry (AC28): a ternary format defined here, in the test only, goes through
flavor detection, the loader and the kernel dispatcher like a built-in one."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.errors import ConfigError
from bitnet.gguf import GGUFReader, GGUFWriter
from bitnet.kernels import dispatch
from bitnet.kernels.ids import KernelId
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.quant import i2s
from bitnet.quant.encoders import weight_format
from bitnet.quant.formats import FORMATS, Encoding, Format, formats_for_type, get_format
from bitnet.quant.weights import PackedWeight, load_weight

TYPE_ID = 250  # no ggml type has this id
OUT, K = 48, 256


@pytest.fixture
def t8():
    """`test_t8`: one int8 per weight (-1/0/+1), then the f32 tensor scale. The whole format."""

    class T8(Format):
        name, type_id = "test_t8", TYPE_ID
        block, row_multiple, scale = 1, 32, "tensor"
        kernels = {"per-token-absmax": "gemm_per_token"}

        def nbytes(self, n):
            return n + 4

        def bind(self, reader, name, raw, out, k, *, strict):
            return raw[: out * k], {"scale": float(raw[out * k: out * k + 4].view("<f4")[0])}

        def decode_rows(self, w, r0, r1):
            k = w.in_features
            return w.raw[r0 * k: r1 * k].view(np.int8).reshape(r1 - r0, k)

        def encodings(self):
            yield Encoding("test_t8", TYPE_ID, encode, file_type=40, size=lambda o, i: o * i + 4)

    def encode(ternary, scale):
        return np.concatenate([ternary.astype(np.int8).view(np.uint8).reshape(-1),
                               np.array([scale], "<f4").view(np.uint8)])

    yield get_format("test_t8"), encode
    del FORMATS["test_t8"]


def _file(path, data, type_id=TYPE_ID):
    w = GGUFWriter(path)
    w.add_tensor("w", data, shape=(K, OUT), gtype=type_id, nbytes=data.nbytes)
    w.write()
    return path


@pytest.mark.ac28
def test_a_test_only_format_is_detected_loaded_and_dispatched(tmp_path, t8):
    fmt, encode = t8
    assert [f.name for f in formats_for_type(TYPE_ID)] == ["test_t8"]
    assert weight_format("test_t8").nbytes(OUT, K) == OUT * K + 4  # the synthesiser's table too
    rng = np.random.default_rng(7)
    tern = rng.integers(-1, 2, (OUT, K)).astype(np.int8)
    scale = 0.375
    with GGUFReader(_file(tmp_path / "t8.gguf", encode(tern, scale))) as r:
        w = load_weight(r, "w", strict=True)
        assert (w.flavor, w.decision.flavor, w.decision.exact) == ("test_t8", "test_t8", True)
        assert (w.out_features, w.in_features, w.scale) == (OUT, K, scale)
        assert w.is_ternary and w.format is fmt
        x = (rng.standard_normal((3, K)) * 4).astype(np.float32)
        dispatch.set_backend("numpy")
        KERNEL_LOG.reset()
        y = dispatch.matmul(x, w, "per-token-absmax")
        y_float = dispatch.matmul(x, w, "none")
        ids = [k.id for k in KERNEL_LOG.snapshot()]
    assert ids == ["test_t8_i8act_gemm_numpy", "test_t8_f32act_gemm_numpy"]
    assert KernelId.parse(ids[0]) == KernelId("test_t8", "i8act", "gemm", "numpy")
    # the same ternary matrix as Microsoft I2_S runs the same kernel: identical bits
    raw = i2s.pack(tern, scale)
    ref = PackedWeight("w", "i2_s", OUT, K, raw[: OUT * K // 4], scale=i2s.read_scale(raw, OUT * K))
    np.testing.assert_array_equal(y, dispatch.matmul(x, ref, "per-token-absmax"))
    np.testing.assert_allclose(y_float, (x @ tern.T.astype(np.float32)) * np.float32(scale), rtol=1e-5, atol=1e-4)
    with pytest.raises(Exception, match="no kernel for test_t8 weights with q8_k-block256"):
        dispatch.matmul(x, w, "q8_k-block256")


@pytest.mark.ac28
def test_a_whole_model_in_the_test_only_format_runs_bit_identical_to_i2s(tmp_path, t8):
    """`bitnet synth --format test_t8` writes it through the format's encoding, and the model
    runs it: the same ternary weights and scales as I2_S give the same logits, bit for bit."""
    from bitnet.model import BitNetModel
    from bitnet.synth import synthesize

    logits = {}
    for fmt in ("test_t8", "i2_s"):
        path = synthesize(tmp_path / f"{fmt}.gguf", preset="tiny", arch="bitnet-b1.58", fmt=fmt, seed=11)
        # the validation policy lists the projection types a shipped model may use (data in
        # policies/model-validation.yml); a format that exists only in this test is not there
        m = BitNetModel(path, profile="reference", validate=False)
        assert {w.flavor for layer in m.layers for w in layer.proj.values()} == {fmt}
        logits[fmt] = m.forward(np.array([1, 2, 3, 40]), m.new_cache(), 0)
        m.close()
    np.testing.assert_array_equal(logits["test_t8"], logits["i2_s"])


@pytest.mark.ac28
def test_a_wrong_size_is_refused_and_the_format_leaves_with_its_class(tmp_path, t8):
    _, encode = t8
    bad = encode(np.zeros((OUT, K), np.int8), 1.0)[:-64]
    with GGUFReader(_file(tmp_path / "bad.gguf", bad)) as r, pytest.raises(Exception, match="matches no flavor"):
        load_weight(r, "w")
    del FORMATS["test_t8"]
    with pytest.raises(ConfigError, match="unknown weight format 'test_t8'"):
        get_format("test_t8")
    FORMATS["test_t8"] = t8[0]  # the fixture removes it again


@pytest.mark.ac28
def test_every_builtin_format_is_one_registered_object():
    names = [f.name for f in (get_format(n) for n in ("f32", "f16", "bf16", "i2_s", "tq2_0", "tq1_0",
                                                      "qk256", "bitnet32", "tl1", "tl2"))]
    assert len(set(names)) == 10
    assert [f.name for f in formats_for_type(36)] == ["i2_s", "qk256", "bitnet32"]
    with pytest.raises(ConfigError, match="registered twice"):
        type("Again", (Format,), {"name": "i2_s", "type_id": 36})
