"""Activation quantization profiles: bitnet.cpp's per-token int8 and llama.cpp's Q8_K."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitnet.errors import FormatError
from bitnet.kernels.activations import per_token_absmax, q8_k, quantize_activations

rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([256, 512])),
                  elements=st.floats(-1e4, 1e4, width=32).filter(lambda v: v == 0 or abs(v) > 1e-30))  # a block of only tiny values overflows iscale to inf in llama.cpp too (undefined there)


def test_per_token_matches_the_c_definition_on_ties_and_floor():
    # s = 127 / max: with max 127 the scale is 1 and x*s lands exactly on .5 ties
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 1e-9, -127.0]], np.float32)
    r = per_token_absmax(x)
    assert r.scale[0] == np.float32(1.0)
    np.testing.assert_array_equal(r.q[0], [127, 0, 2, 2, 0, -2, 0, -127])  # half to even
    assert r.sums[0] == r.q.sum()
    z = per_token_absmax(np.zeros((1, 4), np.float32))  # the 1e-5 floor: no division by zero
    assert z.scale[0] == np.float32(127 / 1e-5) and not z.q.any()


@settings(max_examples=60)
@given(x=rows)
def test_per_token_is_the_scalar_loop(x):
    r = per_token_absmax(x)
    for t in range(x.shape[0]):
        mx = max(1e-5, max(abs(float(v)) for v in x[t]))
        s = np.float32(127.0 / mx)
        expect = [int(np.clip(np.rint(np.float32(v) * s), -128, 127)) for v in x[t]]
        assert r.scale[t] == s
        assert r.q[t].tolist() == expect


@settings(max_examples=60)
@given(x=rows)
def test_q8k_is_the_scalar_loop(x):
    r = q8_k(x)
    for t in range(x.shape[0]):
        for b in range(x.shape[1] // 256):
            blk = x[t, b * 256:(b + 1) * 256]
            amax, mx = 0.0, 0.0
            for v in blk:  # first maximum wins, as `if (ax > amax)` does
                if abs(float(v)) > amax:
                    amax, mx = abs(float(v)), float(v)
            if amax == 0:
                assert r.scale[t, b] == 0 and not r.q[t, b * 256:(b + 1) * 256].any()
                continue
            iscale = np.float32(-127.0) / np.float32(mx)
            q = [min(127, int(np.rint(iscale * np.float32(v)))) for v in blk]
            assert r.q[t, b * 256:(b + 1) * 256].tolist() == q
            assert r.scale[t, b] == np.float32(1.0) / iscale
    assert (r.sums == r.q.reshape(x.shape[0], -1, 16).sum(-1)).all()


def test_q8k_identical_to_libggml(libggml_base):
    rng = np.random.default_rng(1)
    cases = [rng.standard_normal((1, 1024)).astype(np.float32) * 3, np.zeros((1, 256), np.float32),
             np.array([[0.5, -0.5] * 128], np.float32), (np.round(rng.standard_normal((1, 512)) * 4) / 2).astype(np.float32)]
    for x in cases:
        out = np.zeros(x.size // 256 * 292, np.uint8)
        libggml_base.quantize_row_q8_K_ref(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
        blocks = out.reshape(-1, 292)
        r = q8_k(x)
        np.testing.assert_array_equal(r.scale.reshape(-1).view(np.uint32), blocks[:, :4].copy().view("<f4").reshape(-1).view(np.uint32))
        np.testing.assert_array_equal(r.q.reshape(-1, 256), blocks[:, 4:260].view(np.int8))
        np.testing.assert_array_equal(r.sums.reshape(-1, 16), blocks[:, 260:].copy().view("<i2"))


def test_bad_inputs():
    with pytest.raises(FormatError, match="multiple of 256"):
        q8_k(np.zeros((1, 100), np.float32))
    with pytest.raises(FormatError, match=r"\[T, K\]"):
        per_token_absmax(np.zeros(8, np.float32))
    with pytest.raises(FormatError, match="unknown activation profile"):
        quantize_activations(np.zeros((1, 256), np.float32), "int4")
