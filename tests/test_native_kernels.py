"""Native kernels against an exact int64 NumPy model written from the spec layouts
(bitnet.kernels.native.reference), bit for bit, for both SIMD variants (AC10 for I2_S); the shim
builder's cache key (AC6); a missing native build is recorded, and refused in strict mode (AC9).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitnet.kernels.native as native
from bitnet.kernels.native import native_matmul, native_status, reference

ok, why = native_status()
needs_native = pytest.mark.skipif(not ok, reason=f"native kernels unavailable: {why}")
PROFILE = {"i2_s": "per-token-absmax", "tq2_0": "q8_k-block256", "tq1_0": "q8_k-block256"}
STEM = {"i2_s": "i2s_x86", "tq2_0": "tq2_0", "tq1_0": "tq1_0"}


def pack_i2s(ternary: np.ndarray, scale: float) -> np.ndarray:
    """Our own packer from FORMATS.md: element j of block i in byte i*32 + j%32 at shift
    6 - 2*(j//32), code = t + 1; f32 scale at byte n/4; 32 bytes of tail."""
    out, k = ternary.shape
    c = (ternary.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4, 32)
    packed = (c[:, 0] << 6 | c[:, 1] << 4 | c[:, 2] << 2 | c[:, 3]).reshape(-1)
    tail = np.zeros(32, np.uint8)
    tail[:4] = np.array([scale], "<f4").view(np.uint8)
    return np.concatenate([packed, tail])


def make_weight(fmt: str, ternary: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Packed bytes as a GGUF file holds them; TQ* through gguf-py (byte-exact with ggml)."""
    if fmt == "i2_s":
        return pack_i2s(ternary, float(scales[0]))
    gguf = pytest.importorskip("gguf")
    qt = {"tq2_0": gguf.GGMLQuantizationType.TQ2_0, "tq1_0": gguf.GGMLQuantizationType.TQ1_0}[fmt]
    out, k = ternary.shape
    # one scale per 256-block; gguf-py picks d = max|block|, so each block holds the ternary
    # values exactly (a block of zeros gets d = 0)
    f = ternary.astype(np.float32).reshape(out, k // 256, 256) * scales[: out * k // 256].reshape(out, k // 256, 1)
    return np.asarray(gguf.quants.quantize(f.reshape(out, k), qt), np.uint8).reshape(-1)


def ternary_weight(rng: np.random.Generator, out: int, k: int, zero_frac: float) -> np.ndarray:
    t = rng.integers(-1, 2, (out, k)).astype(np.int8)
    t[rng.random((out, k)) < zero_frac] = 0
    return t


# ---- the unpackers themselves are checked against independent decoders ---------------------


@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_unpackers_agree_with_gguf_py(fmt):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(1)
    t = ternary_weight(rng, 6, 512, 0.3)
    raw = make_weight(fmt, t, rng.uniform(0.1, 2, 12).astype(np.float32))
    codes, d = (reference.unpack_tq2_0 if fmt == "tq2_0" else reference.unpack_tq1_0)(raw, 6, 512)
    qt = getattr(gguf.GGMLQuantizationType, fmt.upper())
    deq = gguf.quants.dequantize(raw.reshape(6, -1), qt)
    np.testing.assert_array_equal((codes.astype(np.int8) - 1), t)
    np.testing.assert_array_equal(((codes.astype(np.float32) - 1).reshape(6, 2, 256) * d[..., None]).reshape(6, 512), deq)


def test_i2s_unpacker_agrees_with_the_quant_packer():
    from bitnet.quant import i2s

    t = ternary_weight(np.random.default_rng(2), 4, 384, 0.3)
    raw = i2s.pack(t, 0.75)
    np.testing.assert_array_equal(raw, pack_i2s(t, 0.75))
    codes, scale = reference.unpack_i2s(raw, 4, 384)
    np.testing.assert_array_equal(codes.astype(np.int8) - 1, t)
    assert scale == 0.75


# ---- bit-identical, both variants -----------------------------------------------------------


def check(fmt, variant, out, k, T, xscale, seed, threads=None, zero_frac=0.3):
    rng = np.random.default_rng(seed)
    t = ternary_weight(rng, out, k, zero_frac)
    raw = make_weight(fmt, t, rng.uniform(0.01, 2, max(1, out * k // 256)).astype(np.float32))
    x = (rng.standard_normal((T, k)) * xscale).astype(np.float32)
    y, kid = native_matmul(x, raw, fmt, out, k, PROFILE[fmt], threads, variant=variant)
    ref = reference.matmul(x, raw, fmt, out, k)
    np.testing.assert_array_equal(y.view(np.uint32), ref.view(np.uint32))
    best = native.VARIANTS[native.lib().bn_simd_level()]
    simd = {"auto": best, "avx2": "avx2" if best != "scalar" else "scalar", "scalar": "scalar"}[variant]
    assert kid == f"{STEM[fmt]}_{simd}_{'gemv' if T == 1 else 'gemm'}"


@needs_native
@pytest.mark.ac10
@pytest.mark.ac20
@pytest.mark.parametrize("variant", ["auto", "avx2", "scalar"])
@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 48), blocks=st.integers(1, 24), T=st.integers(1, 8),
       xscale=st.sampled_from([1e-6, 1e-2, 1.0, 300.0]), seed=st.integers(0, 2**20))
def test_i2s_bit_identical(variant, out, blocks, T, xscale, seed):
    check("i2_s", variant, out, 128 * blocks, T, xscale, seed)


@needs_native
@pytest.mark.ac20
@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
@pytest.mark.parametrize("variant", ["auto", "avx2", "scalar"])
@settings(max_examples=30, deadline=None)
@given(out=st.integers(1, 40), blocks=st.integers(1, 12), T=st.integers(1, 21),
       xscale=st.sampled_from([1e-6, 1e-2, 1.0, 300.0]), seed=st.integers(0, 2**20))
def test_tq_bit_identical(fmt, variant, out, blocks, T, xscale, seed):
    """T up to 21: the AVX2 kernels' eight-token and four-token prefill tiles and the single
    tokens after them, on row counts with and without a leftover after the groups of eight."""
    check(fmt, variant, out, 256 * blocks, T, xscale, seed)


@needs_native
@pytest.mark.ac10
def test_i2s_2b4t_shapes_and_threads():
    """Full-size rows (K = 2560 and 6912), more threads than cores, the dense worst case
    (every weight +-1, activations saturated) where an int16 accumulator would wrap."""
    for k in (2560, 6912):
        for threads in (1, 2, 3):
            check("i2_s", "auto", 64, k, 2, 1.0, k + threads, threads=threads, zero_frac=0.0)
    x = np.full((1, 2560), 1.0, np.float32)
    t = np.ones((2, 2560), np.int8)
    t[1] = -1
    y, _ = native_matmul(x, pack_i2s(t, 1.0), "i2_s", 2, 2560, "per-token-absmax")
    assert y.tolist() == [[2560.0, -2560.0]]  # sum 127*2560 / 127: exact, no int16 wrap


@needs_native
@pytest.mark.ac10
@pytest.mark.parametrize("variant", ["auto", "avx2"])
@pytest.mark.parametrize("blocks", [15, 16, 17, 32, 33])
@pytest.mark.parametrize("rows,tokens", [(4, 2), (5, 5), (9, 9)])
def test_i2s_int16_accumulator_bound(variant, blocks, rows, tokens):
    """The AVX2 kernels sum 16 blocks in int16 before widening: the dense saturated worst case
    (every code +-1, every activation at +-127) at and around that flush boundary, odd block
    counts included, stays exact in every path: four rows x one token (decode), one row x four
    tokens (prefill tiles), and the single rows / tokens left over."""
    k = 128 * blocks
    t = np.ones((rows, k), np.int8)
    t[1] = -1
    t[3, ::2] = -1
    x = np.stack([np.full(k, (-1.0) ** (j + 1), np.float32) for j in range(tokens)])
    y, _ = native_matmul(x, pack_i2s(t, 1.0), "i2_s", rows, k, "per-token-absmax", variant=variant)
    assert y[:, :2].tolist() == [[-k, k] if j % 2 == 0 else [k, -k] for j in range(tokens)]
    np.testing.assert_array_equal(y.view(np.uint32),
                                  reference.matmul(x, pack_i2s(t, 1.0), "i2_s", rows, k).view(np.uint32))


@needs_native
@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_tq_edge_activations(fmt):
    """A zero block (Q8_K d = 0), ties on the block maximum, huge and tiny magnitudes."""
    rng = np.random.default_rng(5)
    out, k = 9, 768
    t = ternary_weight(rng, out, k, 0.2)
    raw = make_weight(fmt, t, rng.uniform(0.01, 2, out * 3).astype(np.float32))
    x = rng.standard_normal((11, k)).astype(np.float32)  # 11 tokens: an eight-token tile and three more
    x[0, :256] = 0.0
    x[1, 256:512] = np.where(rng.random(256) < 0.5, -3.0, 3.0)
    x[2] *= 1e30
    x[9, 512:] = 0.0
    x[10] *= 1e-30
    for variant in ("auto", "scalar"):
        y, _ = native_matmul(x, raw, fmt, out, k, PROFILE[fmt], variant=variant)
        np.testing.assert_array_equal(y.view(np.uint32), reference.matmul(x, raw, fmt, out, k).view(np.uint32))


@needs_native
@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 5), blocks=st.integers(1, 3), scale=st.sampled_from([1e-7, 1e-4, 1.0, 1e3]),
       seed=st.integers(0, 999))
def test_quantizers_bit_identical(T, blocks, scale, seed):
    from bitnet.kernels.native.backend import quant_i8_s, quant_q8k

    x = (np.random.default_rng(seed).standard_normal((T, 256 * blocks)) * scale).astype(np.float32)
    x[0, :7] = [0.5, -0.5, 1.5, 127.0, -128.0, 0.0, 2.5]  # ties and edges
    for got, want in zip(quant_i8_s(x), reference.quant_i8_s(x), strict=True):
        np.testing.assert_array_equal(got.view(np.uint32) if got.dtype == np.float32 else got, want.view(np.uint32) if want.dtype == np.float32 else want)
    for got, want in zip(quant_q8k(x), reference.quant_q8_k(x), strict=True):
        np.testing.assert_array_equal(got.view(np.uint32) if got.dtype == np.float32 else got, want.view(np.uint32) if want.dtype == np.float32 else want)


@needs_native
@pytest.mark.ac20
def test_scalar_forced_by_env(monkeypatch):
    t = ternary_weight(np.random.default_rng(3), 8, 256, 0.3)
    raw = pack_i2s(t, 0.5)
    x = np.ones((1, 256), np.float32)
    monkeypatch.setenv(native.SCALAR_ENV, "1")
    assert native_matmul(x, raw, "i2_s", 8, 256, "per-token-absmax")[1] == "i2s_x86_scalar_gemv"
    monkeypatch.delenv(native.SCALAR_ENV)
    want = native.VARIANTS[native.lib().bn_simd_level()]
    assert native_matmul(x, raw, "i2_s", 8, 256, "per-token-absmax")[1] == f"i2s_x86_{want}_gemv"
    assert native.best_variant() == want
    monkeypatch.setenv(native.NO_VNNI_ENV, "1")  # AVX2 without vpdpbusd, where AVX2 is there
    no_vnni = "scalar" if want == "scalar" else "avx2"
    assert native_matmul(x, raw, "i2_s", 8, 256, "per-token-absmax")[1] == f"i2s_x86_{no_vnni}_gemv"
    assert native.best_variant() == no_vnni


@needs_native
def test_api_refuses_bad_inputs():
    from bitnet.errors import ConfigError, FormatError

    raw = pack_i2s(np.zeros((2, 256), np.int8), 1.0)
    x = np.ones((1, 256), np.float32)
    with pytest.raises(FormatError, match="no native kernel"):
        native_matmul(x, raw, "i2_s", 2, 256, "q8_k-block256")
    with pytest.raises(FormatError, match="multiple of 128"):
        native_matmul(np.ones((1, 200), np.float32), raw, "i2_s", 2, 200, "per-token-absmax")
    with pytest.raises(FormatError, match="needs"):
        native_matmul(x, raw[:100], "i2_s", 2, 256, "per-token-absmax")
    with pytest.raises(FormatError, match="activations of shape"):
        native_matmul(np.ones((1, 128), np.float32), raw, "i2_s", 2, 256, "per-token-absmax")
    with pytest.raises(ConfigError, match="threads"):
        native_matmul(x, raw, "i2_s", 2, 256, "per-token-absmax", 0)


@needs_native
def test_reads_a_gguf_tensor_in_place(tmp_path):
    """The zero-copy view GGUFReader.raw gives goes straight to the kernel (read-only mmap)."""
    from bitnet.gguf import GGUFReader
    from bitnet.synth import synthesize

    path = tmp_path / "m.gguf"
    synthesize(path, preset="tiny", arch="bitnet-b1.58", fmt="i2_s", seed=0)
    r = GGUFReader(path)
    info = next(t for t in r.tensors if t.name.endswith("attn_q.weight"))
    k, out = (int(d) for d in info.shape[:2])
    raw = r.raw(info.name)
    x = np.random.default_rng(0).standard_normal((2, k)).astype(np.float32)
    y, kid = native_matmul(x, raw, "i2_s", out, k, "per-token-absmax")
    np.testing.assert_array_equal(y, reference.matmul(x, raw, "i2_s", out, k))
    assert kid.startswith("i2s_x86_") and kid.endswith("_gemm")


# ---- build: cache key, missing compiler, strict mode -------------------------------------


@pytest.fixture
def fresh_build(monkeypatch):
    """Forget the built module for the test, and again afterwards (the real one comes back)."""
    native._module.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native._module.cache_clear()


@pytest.mark.ac6
def test_build_key_includes_the_cpu_and_goes_through_build_shim(fresh_build):
    import bitnet.toolchain.ffi

    seen = []

    def fake(name, c_source, cdef, **kw):
        seen.append((name, c_source, kw))
        raise bitnet.errors.BridgeError("stop here")

    import bitnet.errors

    fresh_build.setattr(bitnet.toolchain.ffi, "build_shim", fake)
    available, reason = native.native_status()
    assert not available and "stop here" in reason
    assert len(seen) == len(native.FLAG_SETS)  # each fallback flag set tried once
    name, src, kw = seen[0]
    assert name == "bitnet_native_kernels" and native.cpu_signature() in src.splitlines()[0]
    assert "-march=native" in kw["extra_compile_args"] and "-ffp-contract=off" in kw["extra_compile_args"]
    assert "-march=native" not in seen[-1][2]["extra_compile_args"]


@pytest.mark.ac9
def test_missing_compiler_is_recorded_and_refused_in_strict_mode(fresh_build, tmp_path):
    from bitnet.errors import BridgeError, StrictModeError

    fresh_build.setenv("BITNET_CACHE_DIR", str(tmp_path))
    fresh_build.setenv("CC", str(tmp_path / "no-such-cc"))
    available, reason = native.native_status()
    assert not available and "no C compiler" in reason
    assert native.require_native(strict=False) is False
    with pytest.raises(StrictModeError, match="refuses the NumPy fallback"):
        native.require_native(strict=True)
    with pytest.raises(BridgeError, match="no C compiler"):
        native_matmul(np.ones((1, 128), np.float32), np.zeros(64, np.uint8), "i2_s", 1, 128, "per-token-absmax")


@pytest.mark.ac9
def test_disabled_native_is_refused_in_strict_mode(fresh_build):
    from bitnet.errors import StrictModeError

    fresh_build.setenv(native.DISABLE_ENV, "0")
    assert native.native_status() == (False, "native kernels disabled by BITNET_NATIVE=0")
    with pytest.raises(StrictModeError):
        native.require_native(strict=True)


@needs_native
@pytest.mark.ac20
def test_an_avx2_build_without_vnni_is_bit_identical_too():
    """-march=native on this machine may compile the VNNI variant in; a CPU with AVX2 but no VNNI
    gets a build without it, whose code the `variant="avx2"` cap only partly stands in for
    (the compile-time branches differ). Build that configuration explicitly and check it."""
    flags = set(native.cpu_signature().split("|")[-1].split())
    if not {"avx2", "fma", "f16c"} <= flags:
        pytest.skip("this CPU lacks AVX2/FMA/F16C")
    from bitnet.toolchain.ffi import build_shim

    m = build_shim("bitnet_native_kernels_avx2only", native.source_text(), native.CDEF,
                   extra_compile_args=["-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fno-fast-math"])
    assert m.lib.bn_simd_level() == 1
    rng = np.random.default_rng(11)
    for fmt, code in (("i2_s", 0), ("tq2_0", 1), ("tq1_0", 2)):
        for out, k, T in ((19, 512, 1), (24, 768, 6), (8, 2304, 4)):
            t = ternary_weight(rng, out, k, 0.3)
            raw = make_weight(fmt, t, rng.uniform(0.01, 2, max(1, out * k // 256)).astype(np.float32))
            x = (rng.standard_normal((T, k)) * 3).astype(np.float32)
            y = np.empty((T, out), np.float32)
            wscale = float(raw[out * k // 4: out * k // 4 + 4].view(np.float32)[0]) if fmt == "i2_s" else 0.0
            v = m.lib.bn_linear(code, m.ffi.from_buffer("uint8_t[]", raw), out, k, m.ffi.from_buffer("float[]", x), T,
                                wscale, m.ffi.from_buffer("float[]", y), 2, 0)
            assert v == 1, (fmt, v)
            np.testing.assert_array_equal(y.view(np.uint32), reference.matmul(x, raw, fmt, out, k).view(np.uint32))
