"""The element-wise ops the native backend runs in C (RMSNorm, NEOX rope, ReLU^2 x up) are bit-identical to their NumPy
definitions (bitnet.model.ops stays the reference), and the run log says which one ran (AC38)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.kernels.native import native_status
from bitnet.model.ops import relu2, rms_norm, rope_angles, rope_neox

ok, why = native_status()
needs_native = pytest.mark.skipif(not ok, reason=f"native kernels unavailable: {why}")


def _native_rms_norm(x, w, eps):
    from bitnet.kernels.native import backend as nb

    nb.activate()
    return nb.rms_norm(x, w, eps)


@needs_native
@pytest.mark.ac38
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # eps 0 on an all-zero row: inf/NaN on both sides
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 4), D=st.one_of(st.integers(1, 300), st.sampled_from([2560, 6912, 1024, 129, 136, 255, 257])),
       scale=st.sampled_from([1e-30, 1e-6, 1e-2, 1.0, 37.0, 1e6, 1e18]),
       eps=st.sampled_from([1e-5, 1e-6, 0.0, 1e-5 * 1.0000001]), seed=st.integers(0, 2**20))
def test_rms_norm_bit_identical(T, D, scale, eps, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((T, D)) * scale).astype(np.float32)
    x[:, rng.random(D) < 0.1] = 0.0
    w = rng.uniform(-2, 2, D).astype(np.float32)
    want = rms_norm(x, w, eps)
    got = _native_rms_norm(x, w, eps)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@needs_native
@pytest.mark.ac38
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # eps 0 on an all-zero row: inf/NaN on both sides
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 4), D=st.one_of(st.integers(1, 300), st.sampled_from([2560, 6912, 1024, 129, 136, 255, 257])),
       scale=st.sampled_from([1e-30, 1e-6, 1e-2, 1.0, 37.0, 1e6, 1e18, 1e20]),
       eps=st.sampled_from([1e-5, 1e-6, 0.0, 1e-5 * 1.0000001]), seed=st.integers(0, 2**20))
def test_rms_norm_ggml_bit_identical(T, D, scale, eps, seed):
    """bn_rms_norm_ggml == ops.rms_norm(ggml=True) (profile knob rms_ggml), overflowing squares
    (1e20^2 in float) included."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((T, D)) * scale).astype(np.float32)
    x[:, rng.random(D) < 0.1] = 0.0
    w = rng.uniform(-2, 2, D).astype(np.float32)
    want = rms_norm(x, w, eps, ggml=True)
    got = _native_rms_norm_ggml(x, w, eps)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def _native_rms_norm_ggml(x, w, eps):
    from bitnet.kernels.native import backend as nb

    nb.activate()
    return nb.rms_norm(x, w, eps, ggml=True)


def _nb():
    from bitnet.kernels.native import backend as nb

    nb.activate()
    return nb


@needs_native
@pytest.mark.ac38
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 5), H=st.integers(1, 6), hd=st.sampled_from([2, 8, 64, 128]), pos0=st.integers(0, 5000),
       scale=st.sampled_from([1e-6, 1.0, 300.0, 1e30]), iterative=st.booleans(), seed=st.integers(0, 2**20))
def test_rope_bit_identical(T, H, hd, pos0, scale, iterative, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((T, H, hd)) * scale).astype(np.float32)
    cos, sin = rope_angles(np.arange(pos0, pos0 + T), hd, 500000.0, iterative)
    np.testing.assert_array_equal(_nb().rope_neox(x, cos, sin).view(np.uint32), rope_neox(x, cos, sin).view(np.uint32))


@needs_native
@pytest.mark.ac38
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow to inf on both sides
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 4), F=st.integers(1, 700), scale=st.sampled_from([1e-20, 1.0, 1e10, 1e30]),
       seed=st.integers(0, 2**20))
def test_relu2_mul_bit_identical(T, F, scale, seed):
    rng = np.random.default_rng(seed)
    gate = (rng.standard_normal((T, F)) * scale).astype(np.float32)
    up = (rng.standard_normal((T, F)) * scale).astype(np.float32)
    gate.flat[:: 7] = 0.0
    gate.flat[1:: 11] = -0.0
    gate.flat[2:: 13] = np.nan
    want = relu2(gate) * up
    np.testing.assert_array_equal(_nb().relu2_mul(gate, up).view(np.uint32), want.view(np.uint32))


#: (model recipe, numerics profile): every profile, each on a model whose weights it computes
PROFILE_CASES = [("default-i2s", "reference"), ("default-i2s", "bitnet.cpp"), ("default-i2s", "bitnet.cpp-tl2"),
                 ("default-i2s", "bitnet.cpp-tl1"), ("crossval-tq2", "llama.cpp"), ("crossval-tq2", "reference")]


@needs_native
@pytest.mark.ac38
@pytest.mark.parametrize(("recipe", "profile"), PROFILE_CASES)
def test_forward_pass_bit_identical_and_logged(bitnet_recipe_model, recipe, profile):
    """Whole prefill and decode steps under every numerics profile: native glue + native
    kernels give the same logits as native kernels with the NumPy glue, and the run log names
    the RMSNorm form the profile asks for (`rms_norm_ggml_f32_*` under rms_ggml, else
    `rms_norm_f32_*`), `_native` only under the native backend."""
    from bitnet.kernels import dispatch
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import bitnet_model as bm

    path = bitnet_recipe_model(recipe)
    m = bm.BitNetModel(path, profile=profile)
    form, other = ("rms_norm_ggml_f32", "rms_norm_f32") if m.profile.rms_ggml else ("rms_norm_f32", "rms_norm_ggml_f32")
    logits = {}
    before = dispatch.get_backend()
    for glue in ("native", "numpy"):
        dispatch.set_backend("native")
        if glue == "numpy":
            orig = bm._native_glue
            bm._native_glue = lambda name="": False
        try:
            KERNEL_LOG.reset()
            c = m.new_cache(32)
            a = m.forward(np.array([1, 5, 9, 2]), c, 0)
            b = m.forward(np.array([7]), c, 4)
            ids = {k.id for k in KERNEL_LOG.snapshot()}
        finally:
            dispatch.set_backend(before)  # the next tests get the backend they expect
            if glue == "numpy":
                bm._native_glue = orig
        assert {f"{form}_{glue}", f"rope_neox_f32_{glue}"} <= ids
        assert m.config.ffn_act != "relu2" or f"ffn_relu2_mul_{glue}" in ids  # SiLU has no C version
        assert not any(i.startswith(other) for i in ids)
        logits[glue] = (a, b)
    for u, v in zip(logits["native"], logits["numpy"], strict=True):
        np.testing.assert_array_equal(u.view(np.uint32), v.view(np.uint32))
    m.close()


@needs_native
@pytest.mark.ac38
def test_a_planted_fault_still_applies_under_the_native_backend(bitnet_recipe_model, monkeypatch):
    """crossval.faults replaces bitnet_model's name for an op; the native glue then steps aside,
    so the fault is in the run (and the run log names the NumPy op that ran)."""
    from bitnet.kernels import dispatch
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import bitnet_model as bm
    from crossval.faults import FAULTS, plant

    assert "rms_eps_1e-6" in FAULTS
    m = bm.BitNetModel(bitnet_recipe_model("default-i2s"))
    before = dispatch.get_backend()
    try:
        dispatch.set_backend("native")
        clean = m.forward(np.array([1, 5, 9]), m.new_cache(16), 0)
        with plant("rms_eps_1e-6"):
            KERNEL_LOG.reset()
            faulty = m.forward(np.array([1, 5, 9]), m.new_cache(16), 0)
            ids = {k.id for k in KERNEL_LOG.snapshot()}
    finally:
        dispatch.set_backend(before)
        m.close()
    form = "rms_norm_ggml_f32" if m.profile.rms_ggml else "rms_norm_f32"
    assert f"{form}_numpy" in ids and f"{form}_native" not in ids
    assert not np.array_equal(clean, faulty)
