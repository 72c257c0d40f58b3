"""Native kernels: bit-identical to the NumPy reference (AC10 for I2_S), both SIMD variants,
one shim builder (AC6), strict-mode refusal of a fallback (AC9)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.kernels import dispatch
from bitnet.kernels.activations import per_token_absmax, q8_k
from bitnet.kernels.native import native_status
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.quant import i2s, tq
from bitnet.quant.weights import PackedWeight

ok, why = native_status()
pytestmark = pytest.mark.skipif(not ok, reason=f"native kernels unavailable: {why}")


@pytest.fixture
def native_backend():
    import bitnet.kernels.native.backend  # noqa: F401
    from bitnet.kernels.native import lib

    dispatch.set_backend("native")
    yield lib()
    lib().bn_set_force_scalar(0)
    dispatch.set_backend("numpy")


def packed(fmt: str, t: np.ndarray, scale: float) -> PackedWeight:
    out, k = t.shape
    if fmt == "i2_s":
        raw = i2s.pack(t, scale)
        return PackedWeight("w", "i2_s", out, k, raw[: out * k // 4], scale=i2s.read_scale(raw, out * k))
    enc = tq.ternary_tq2_0 if fmt == "tq2_0" else tq.ternary_tq1_0
    return PackedWeight("w", fmt, out, k, enc(t, scale))


PROFILE = {"i2_s": "per-token-absmax", "tq2_0": "q8_k-block256", "tq1_0": "q8_k-block256"}


@pytest.mark.ac10
@pytest.mark.ac20
@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0"])
@pytest.mark.parametrize("scalar", [0, 2, 1], ids=["best", "avx2", "scalar"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_identical_to_numpy(native_backend, fmt, scalar, data):
    mult = 128 if fmt == "i2_s" else 256
    out = data.draw(st.integers(1, 40))
    # up to 12 blocks of 256: the batched 8-block AVX2 path and its tail are both exercised
    k = data.draw(st.integers(1, 12)) * (256 if fmt != "i2_s" else mult)
    T = data.draw(st.integers(1, 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    t = rng.integers(-1, 2, (out, k)).astype(np.int8)
    x = (rng.standard_normal((T, k)) * data.draw(st.sampled_from([1e-3, 1.0, 300.0]))).astype(np.float32)
    w = packed(fmt, t, float(rng.uniform(0.01, 2)))
    native_backend.bn_set_force_scalar(scalar)
    y_native = dispatch.matmul(x, w, PROFILE[fmt])
    dispatch.set_backend("numpy")
    y_ref = dispatch.matmul(x, w, PROFILE[fmt])
    dispatch.set_backend("native")
    np.testing.assert_array_equal(y_native.view(np.uint32), y_ref.view(np.uint32))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=st.integers(1, 5), blocks=st.integers(1, 3), scale=st.sampled_from([1e-4, 1.0, 1e3]), seed=st.integers(0, 999))
def test_quantizers_bit_identical(native_backend, t, blocks, scale, seed):
    from bitnet.kernels.native.backend import quant_i8_s, quant_q8k

    x = (np.random.default_rng(seed).standard_normal((t, 256 * blocks)) * scale).astype(np.float32)
    x[0, :7] = [0.5, -0.5, 1.5, 127.0, -128.0, 0.0, 2.5]  # ties and edges
    q, s, sums = quant_i8_s(x)
    r = per_token_absmax(x)
    np.testing.assert_array_equal(q, r.q)
    np.testing.assert_array_equal(s.view(np.uint32), r.scale.view(np.uint32))
    np.testing.assert_array_equal(sums, r.sums)
    q, d, bs = quant_q8k(x)
    r = q8_k(x)
    np.testing.assert_array_equal(q, r.q)
    np.testing.assert_array_equal(d.view(np.uint32), r.scale.view(np.uint32))
    np.testing.assert_array_equal(bs, r.sums)


@pytest.mark.ac20
def test_kernel_ids_name_the_variant_that_ran(native_backend):
    t = np.random.default_rng(0).integers(-1, 2, (8, 256)).astype(np.int8)
    w = packed("i2_s", t, 0.5)
    KERNEL_LOG.reset()
    dispatch.matmul(np.ones((1, 256), np.float32), w)
    native_backend.bn_set_force_scalar(1)
    dispatch.matmul(np.ones((2, 256), np.float32), w)
    ids = [k.id for k in KERNEL_LOG.snapshot()]
    from bitnet.kernels.native import VARIANTS

    assert ids == [f"i2s_x86_{VARIANTS[native_backend.bn_simd_level()]}_gemv", "i2s_x86_scalar_gemm"]


@pytest.mark.ac9
def test_strict_mode_refuses_a_numpy_fallback(native_backend):
    from bitnet.errors import StrictModeError

    t = np.zeros((4, 256), np.int8)
    w = PackedWeight("w", "bitnet32", 4, 256, np.zeros(80, np.uint8))  # no native kernel for BitNet32
    with pytest.raises(StrictModeError, match="refuses the NumPy fallback"):
        dispatch.matmul(np.ones((1, 256), np.float32), w, "per-token-absmax", strict=True)
    KERNEL_LOG.reset()
    dispatch.matmul(np.ones((1, 256), np.float32), packed("i2_s", t, 1.0), strict=True)
    assert KERNEL_LOG.snapshot()[0].id.startswith("i2s_x86_")


@pytest.mark.ac6
def test_one_shim_builder_caches_by_source(tmp_path, monkeypatch):
    from bitnet.toolchain import ffi

    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path))
    a = ffi.build_shim("bn_selftest", "static int f(void) { return 7; }", "int f(void);")
    assert a.lib.f() == 7
    built = list((tmp_path / "ffi").iterdir())
    b = ffi.build_shim("bn_selftest", "static int f(void) { return 7; }", "int f(void);")
    assert b.lib.f() == 7 and list((tmp_path / "ffi").iterdir()) == built  # reused
    ffi.build_shim("bn_selftest", "static int f(void) { return 8; }", "int f(void);")
    assert len(list((tmp_path / "ffi").iterdir())) == 2  # a new source, a new build


@pytest.mark.ac6
def test_crossval_and_native_use_the_same_builder():
    import inspect

    import bitnet.kernels.native as native
    import crossval.reference as ref

    assert "from bitnet.toolchain.ffi import build_shim" in inspect.getsource(native)
    assert "from bitnet.toolchain.ffi import build_shim" in inspect.getsource(ref)


@pytest.mark.ac6
def test_compiler_errors_are_typed(tmp_path, monkeypatch):
    from bitnet.errors import BridgeError
    from bitnet.toolchain import ffi

    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path))
    with pytest.raises(BridgeError, match="building the C shim"):
        ffi.build_shim("bn_broken", "int f(void) { return @; }", "int f(void);")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(BridgeError, match="no C compiler"):
        ffi.build_shim("bn_nocc", "static int f(void) { return 1; }", "int f(void);")


@pytest.mark.ac20
@pytest.mark.parametrize(("arch", "fmt"), [("bitnet-b1.58", "i2_s"), ("bitnet", "tq2_0"), ("bitnet", "tq1_0")])
def test_whole_engine_on_native_kernels_equals_the_numpy_engine(bitnet_model_factory, arch, fmt):
    """The native backend changes which code runs, never the numbers: with an F32 lm_head (which
    both backends run in NumPy) every logit of a prefill and of three greedy decode steps is
    bit-identical; with an F16 lm_head (native F16 kernel, another summation order) the logits
    agree to float rounding and the greedy tokens are the same."""
    from bitnet.engine import Engine, SamplerConfig

    prompt = [5, 17, 42, 99, 3, 250]
    g = SamplerConfig(greedy=True)
    for embed, exact in (("f32", True), ("f16", False)):
        path = bitnet_model_factory(arch=arch, fmt=fmt, seed=7, embed_format=embed)
        res = {}
        for backend in ("numpy", "native"):
            dispatch.set_backend(backend)
            KERNEL_LOG.reset()
            try:
                e = Engine(path)
                logits = e.logits(prompt)
                out = e.generate(prompt, max_tokens=4, sampler=g, ignore_eog=True, return_prompt_logits=True)
            finally:
                dispatch.set_backend("numpy")
            res[backend] = (logits, out.ids, out.prompt_logits)
            ids = {k.id for k in KERNEL_LOG.snapshot()}
            ternary = {i for i in ids if i.startswith(("i2s_", "tq1_0_", "tq2_0_"))}
            assert ternary and all(i.endswith("_numpy") != (backend == "native") for i in ternary), ids
        (l_np, ids_np, p_np), (l_nat, ids_nat, p_nat) = res["numpy"], res["native"]
        assert ids_np == ids_nat
        if exact:
            np.testing.assert_array_equal(l_nat.view(np.uint32), l_np.view(np.uint32))
            np.testing.assert_array_equal(p_nat.view(np.uint32), p_np.view(np.uint32))
        else:
            np.testing.assert_allclose(l_nat, l_np, rtol=1e-4, atol=1e-4 * float(np.abs(l_np).max()))
