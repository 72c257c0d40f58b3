"""The bitnet.cpp profiles' attention in C (bitnet/kernels/native/attention.c) is bit-identical to
its NumPy emulation (bitnet.model.ggml_attention, the reference), op for op: one row and many,
grouped KV heads, key counts that are not a multiple of 32, head_dim 64/128 (and one that leaves
a tail after the 32-blocks), large |q| and |k|, the recording taps, and whole forward passes
(prompt + decode steps) under the bitnet.cpp profile, where the run log names the native op (AC38)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.kernels.native import native_status
from bitnet.model import ggml_attention as ga

ok, why = native_status()
needs_native = pytest.mark.skipif(not ok, reason=f"native kernels unavailable: {why}")


def _nb():
    from bitnet.kernels.native import backend as nb

    nb.activate()
    return nb


def _same(got: np.ndarray, want: np.ndarray) -> None:
    """Same bits; any NaN matches any NaN (which payload an invalid operation leaves depends on
    the operand order of the hardware instruction, not on the arithmetic we emulate)."""
    assert got.shape == want.shape
    g, w = got.view(np.uint32), want.view(np.uint32)
    both_nan = np.isnan(got) & np.isnan(want)
    bad = (g != w) & ~both_nan
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} differ; first at {np.argwhere(bad)[0].tolist()}: "
                           f"{got[bad][0]!r} vs {want[bad][0]!r}")


def _case(rng, T, hkv, group, d, pos0, qscale, kscale, extra_cap, dtype=np.float16):
    h = hkv * group
    s = pos0 + T
    q = (rng.standard_normal((T, h, d)) * qscale).astype(np.float32)
    cap = s + extra_cap  # a view into a larger cache, as KVCache.view hands out
    kb = (rng.standard_normal((hkv, cap, d)) * kscale).astype(dtype)
    vb = rng.standard_normal((hkv, cap, d)).astype(dtype)
    return q, kb[:, :s], vb[:, :s]


@needs_native
@pytest.mark.ac38
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # F16 overflow of a huge q: inf/NaN on both sides
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.one_of(st.just(1), st.integers(2, 6)), hkv=st.integers(1, 3), group=st.sampled_from([1, 2, 4]),
       d=st.sampled_from([64, 128, 40]), pos0=st.integers(0, 90),
       qscale=st.sampled_from([1e-3, 1.0, 30.0, 3e3, 1e5]), kscale=st.sampled_from([1e-2, 1.0, 100.0]),
       extra_cap=st.integers(0, 9), variant=st.sampled_from(["auto", "scalar"]), seed=st.integers(0, 2**20))
def test_attention_bit_identical_to_the_numpy_emulation(T, hkv, group, d, pos0, qscale, kscale, extra_cap,
                                                         variant, seed):
    q, K, V = _case(np.random.default_rng(seed), T, hkv, group, d, pos0, qscale, kscale, extra_cap)
    want = ga.attention(q, K, V, pos0)
    got, scores, probs = _nb().attention_ggml(q, K, V, pos0, variant=variant)
    assert scores is None and probs is None
    _same(got, want)


@needs_native
@pytest.mark.ac38
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.one_of(st.just(1), st.integers(2, 5)), hkv=st.integers(1, 3), group=st.sampled_from([1, 2, 4]),
       d=st.sampled_from([64, 128, 34, 40, 46, 36]), pos0=st.integers(0, 70),
       qscale=st.sampled_from([1e-3, 1.0, 30.0, 3e3]), kscale=st.sampled_from([1e-2, 1.0, 100.0]),
       extra_cap=st.integers(0, 5), variant=st.sampled_from(["auto", "scalar"]), seed=st.integers(0, 2**20))
def test_upstream_attention_bit_identical_to_the_numpy_emulation(T, hkv, group, d, pos0, qscale, kscale, extra_cap,
                                                                  variant, seed):
    """build "llama.cpp" (upstream 0.3.36, F32 cache): F32 dots with their float tail (head_dim
    34/40/46/36 leave one), tinyBLAS Q.K with one head and 2+ rows, F32 probabilities for one row."""
    q, K, V = _case(np.random.default_rng(seed), T, hkv, group, d, pos0, qscale, kscale, extra_cap, np.float32)
    want = ga.attention(q, K, V, pos0, "llama.cpp")
    _same(_nb().attention_ggml(q, K, V, pos0, build="llama.cpp", variant=variant)[0], want)


@needs_native
@pytest.mark.ac38
def test_long_context_uses_numpys_pairwise_sum_of_the_chunks():
    """More than 1024 keys: the softmax's 8-lane chunk sums are summed in double the way NumPy's
    pairwise sum splits them (blocks of 128 halved), not left to right."""
    rng = np.random.default_rng(3)
    for t, pos0 in ((1, 1400), (3, 1100)):
        q, K, V = _case(rng, t, 1, 2, 64, pos0, 0.05, 1.0, 5)
        _same(_nb().attention_ggml(q, K, V, pos0)[0], ga.attention(q, K, V, pos0))


@needs_native
@pytest.mark.ac38
@pytest.mark.parametrize("T", [1, 4])
def test_taps_are_the_emulations_scores_and_probabilities(T):
    from bitnet.model import record

    q, K, V = _case(np.random.default_rng(T), T, 2, 2, 64, 37, 3.0, 3.0, 4)
    with record.recording() as rec:
        want = ga.attention(q, K, V, 37)
    got, scores, probs = _nb().attention_ggml(q, K, V, 37, taps=True)
    _same(got, want)
    _same(scores, rec.get("attn_scores"))
    _same(probs, rec.get("attn_probs"))


@needs_native
@pytest.mark.ac38
def test_v_expf_and_f16_rounding_edges():
    """The lanes the softmax never sees in a model still agree: ggml_v_expf's overflow and
    underflow branches (|n| > 126, > 192) through a softmax row, and F16 rounding of q at ties,
    subnormals and overflow (the scalar variant rounds in software, the AVX2 one with F16C)."""
    rng = np.random.default_rng(5)
    q = np.zeros((2, 1, 64), np.float32)
    special = np.array([65504.0, 65519.0, 65520.0, 7e4, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 1.5 * 2.0**-24,
                        1 + 2.0**-11, 1 + 3 * 2.0**-11, -2.0**-14 * 0.75, 6.1e-5, -0.0, 1e-8], np.float32)
    q[0, 0, :special.size] = special
    q[1, 0] = rng.standard_normal(64).astype(np.float32) * 900.0  # scores in the thousands: exp underflows
    K = (rng.standard_normal((1, 2, 64)) * 40).astype(np.float16)
    V = rng.standard_normal((1, 2, 64)).astype(np.float16)
    for variant in ("auto", "scalar"):
        with np.errstate(all="ignore"):
            _same(_nb().attention_ggml(q, K, V, 0, variant=variant)[0], ga.attention(q, K, V, 0))
    x = np.concatenate([np.linspace(-200, 200, 40001, dtype=np.float32),
                        [-np.inf, np.inf, np.nan, -126.5, -150.0, 88.7, 89.0, 1e30, -1e30, 0.0, -0.0, 1e-40]])
    x = np.concatenate([x, rng.standard_normal(4000).astype(np.float32) * 300]).astype(np.float32)
    with np.errstate(all="ignore"):
        want = ga.v_expf(x)
        for variant in ("auto", "scalar"):
            _same(_nb().v_expf(x, variant), want)


def _forward_pair(path, steps=4, profile="bitnet.cpp"):
    """Logits of a prompt and `steps` decode steps under `profile`, native backend, with the
    attention in C and with the NumPy emulation; plus each run's kernel ids."""
    from bitnet.kernels import dispatch
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import bitnet_model as bm

    m = bm.BitNetModel(path, profile=profile)
    out, ids = {}, {}
    before = dispatch.get_backend()
    orig = bm._native_attention
    try:
        dispatch.set_backend("native")
        for impl in ("native", "numpy"):
            bm._native_attention = orig if impl == "native" else (lambda ggml: False)
            KERNEL_LOG.reset()
            c = m.new_cache(64)
            logits = [m.forward(np.array([1, 5, 9, 2, 33, 17, 4]), c, 0)]
            for i in range(steps):
                logits.append(m.forward(np.array([int(logits[-1][-1].argmax())]), c, 7 + i, all_logits=False))
            out[impl], ids[impl] = logits, {k.id for k in KERNEL_LOG.snapshot()}
    finally:
        bm._native_attention = orig
        dispatch.set_backend(before)
        m.close()
    return out, ids


@needs_native
@pytest.mark.ac38
@pytest.mark.parametrize("shape,profile", [("tiny", "bitnet.cpp"), ("hd128-gqa4", "bitnet.cpp"),
                                           ("tiny", "llama.cpp"), ("hd128-gqa4", "llama.cpp")])
def test_forward_passes_bit_identical_under_ggml_profiles(bitnet_model_factory, shape, profile):
    from bitnet.synth import ModelShape

    preset = "tiny" if shape == "tiny" else ModelShape(n_embd=512, n_ff=512, n_layer=2, n_head=4, n_head_kv=1,
                                                      n_ctx=256)
    arch, fmt, kv = ("bitnet-b1.58", "i2_s", 16) if profile == "bitnet.cpp" else ("bitnet", "tq2_0", 32)
    out, ids = _forward_pair(bitnet_model_factory(preset=preset, arch=arch, fmt=fmt, seed=3), profile=profile)
    assert f"attention_kv{kv}_native" in ids["native"] and f"attention_kv{kv}_numpy" not in ids["native"]
    assert f"attention_kv{kv}_numpy" in ids["numpy"]
    for a, b in zip(out["native"], out["numpy"], strict=True):
        _same(a, b)


@needs_native
@pytest.mark.ac38
def test_recorded_runs_tap_the_native_attention(bitnet_recipe_model):
    """A recording (bitnet.model.record) under the native backend keeps the C attention and
    taps its scores and probabilities: the same records as the NumPy emulation's run."""
    from bitnet.kernels import dispatch
    from bitnet.model import bitnet_model as bm
    from bitnet.model import record

    m = bm.BitNetModel(bitnet_recipe_model("default-i2s"), profile="bitnet.cpp")
    before, orig = dispatch.get_backend(), bm._native_attention
    recs = {}
    try:
        dispatch.set_backend("native")
        for impl in ("native", "numpy"):
            bm._native_attention = orig if impl == "native" else (lambda ggml: False)
            c = m.new_cache(32)
            with record.recording() as rec:
                m.forward(np.array([3, 1, 4, 1, 5]), c, 0)
                m.forward(np.array([9]), c, 5)
            recs[impl] = rec.records
    finally:
        bm._native_attention = orig
        dispatch.set_backend(before)
        m.close()
    assert [(r.layer, r.op) for r in recs["native"]] == [(r.layer, r.op) for r in recs["numpy"]]
    assert any(r.op == "attn_probs" for r in recs["native"])
    for a, b in zip(recs["native"], recs["numpy"], strict=True):
        _same(a.value, b.value)


@needs_native
@pytest.mark.ac38
def test_silu_ggml_with_the_c_expf_is_the_numpy_emulation_bit_for_bit():
    """The native backend hands silu_ggml the C ggml_v_expf (bitnet_model.gated): the same bits as
    the NumPy emulation on FFN rows with a tail (n % 8 != 0), large |x| (exp over/underflow lanes)
    and signed zeros."""
    from bitnet.kernels import dispatch
    from bitnet.kernels.native import backend as nb
    from bitnet.model.ops import silu_ggml

    before = dispatch.get_backend()
    dispatch.set_backend("native")  # builds and loads the C library
    rng = np.random.default_rng(11)
    try:
        for shape in ((1, 6912), (3, 77), (2, 8), (5, 1)):
            x = (rng.standard_normal(shape) * rng.choice([0.1, 4.0, 60.0, 120.0], size=shape)).astype(np.float32)
            x.flat[0], x.flat[-1] = np.float32(-0.0), np.float32(95.0)
            a, b = silu_ggml(x), silu_ggml(x, nb.v_expf)
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    finally:
        dispatch.set_backend(before)
