"""The bitnet.cpp profile's non-matmul arithmetic, pinned bit for bit against bitnet.cpp itself.

`fixtures/bitnet-cpp/ggml-ops-layer0.npz` holds inputs and outputs captured (graph eval
callback) from bitnet.cpp's llama.cpp fork 406a5036 (microsoft/BitNet 16da220, gcc 12,
-march=native on an AVX2+FMA+F16C CPU) on layer 0 of an I2_S file made by bitnet.cpp's own
converter (BitnetForCausalLM, 6 heads / 2 KV heads, head_dim 128, rope base 1e4) and re-encoded
as llama-quantize's quantize_i2_s does: a 6-token batch, and the same tokens one per decode.
Before these ops were emulated, that file matched bitnet.cpp exactly at position 0 only (min
cosine 0.99997 after it): the floor of one-ulp attention differences flipping int8 roundings.
Now every layer output is bit-identical (crossval per-layer max rel 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitnet.model.ggml_attention import attention
from bitnet.model.ops import rope_angles, rope_neox, silu_ggml

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-cpp" / "ggml-ops-layer0.npz"


@pytest.fixture(scope="module")
def ops():
    with np.load(FIX) as z:
        return {k: z[k] for k in z.files}


def test_rope_is_ggmls_bit_for_bit(ops):
    x = ops["rope_x"]
    cos, sin = rope_angles(np.arange(len(x)), x.shape[-1], float(ops["rope_theta"]), "libm")
    assert np.array_equal(rope_neox(x, cos, sin, fma=True), ops["rope_y"])


def test_silu_is_ggmls_bit_for_bit(ops):
    assert np.array_equal(silu_ggml(ops["silu_x"]), ops["silu_y"])


def test_batched_attention_is_ggmls_bit_for_bit(ops):
    """Q.K through ggml_vec_dot_f16, softmax through ggml_v_expf, P.V through tinyBLAS."""
    q, k, v = ops["rope_y"], ops["k"].transpose(1, 0, 2), ops["v"].transpose(1, 0, 2)
    out = attention(q, k, v, 0).reshape(len(q), q.shape[1], -1).transpose(1, 0, 2)
    assert np.array_equal(out, ops["kqv"])


def test_single_row_attention_is_ggmls_bit_for_bit(ops):
    """One token at the last position: the probabilities go to F16, P.V through ggml_vec_dot_f16."""
    q, k, v = ops["q1"], ops["k1"].transpose(1, 0, 2), ops["v1"].transpose(1, 0, 2)
    out = attention(q, k, v, k.shape[1] - 1).reshape(1, q.shape[1], -1).transpose(1, 0, 2)
    assert np.array_equal(out, ops["kqv1"])


def test_the_plain_float_forms_miss_bits_the_emulation_keeps(ops):
    """The test has teeth: numpy's float attention and a divided softmax differ from bitnet.cpp."""
    from bitnet.model.ops import causal_attention

    q, k, v = ops["rope_y"], ops["k"].transpose(1, 0, 2), ops["v"].transpose(1, 0, 2)
    plain = causal_attention(q, k, v, 0, q_f16=True).reshape(len(q), q.shape[1], -1).transpose(1, 0, 2)
    assert not np.array_equal(plain, ops["kqv"])
    x = ops["rope_x"]
    c, s = rope_angles(np.arange(len(x)), x.shape[-1], float(ops["rope_theta"]), "libm")
    half = x.shape[-1] // 2
    unfused = np.concatenate([x[..., :half] * c[:, None] - x[..., half:] * s[:, None],
                              x[..., :half] * s[:, None] + x[..., half:] * c[:, None]], axis=-1)
    assert not np.array_equal(unfused, ops["rope_y"])


def test_int8_ties_round_as_the_fused_c_does():
    """bitnet.cpp's `nearest_int(x * s)` is compiled into one fused multiply-add: a float product
    that lands exactly on k + 0.5 is rounded by the exact product's side, not to even. The
    bitnet.cpp profile's tie breaking reproduces that; the plain float rounding does not."""
    from bitnet.kernels.activations import fused_round_ties, per_token_absmax

    rng = np.random.default_rng(0)
    row = rng.uniform(-2.5, 2.5, 256).astype(np.float32)
    row[0] = 3.0  # the absmax: s = 127 / 3
    s = np.float32(127.0 / 3.0)
    ties = []
    for k in range(-100, 100):  # elements whose float product is a tie but whose exact product is not
        x = np.float32((k + 0.5) / float(s))
        for _ in range(64):
            p = np.float32(x * s)
            if p == np.float32(k + 0.5) and float(x) * float(s) != k + 0.5:
                ties.append(x)
                break
            x = np.nextafter(x, np.float32(np.inf))
    assert len(ties) > 20
    row[1:1 + len(ties)] = ties
    x = row[None, :]
    want = np.rint(x.astype(np.float64) * np.float64(s)).astype(np.int8)  # the exact product, rounded once
    fused = per_token_absmax(fused_round_ties(x))
    assert fused.scale[0] == s and np.array_equal(fused.q, want)
    assert not np.array_equal(per_token_absmax(x).q, want)
