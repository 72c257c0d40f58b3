"""The NumPy oracle's fast paths give the bytes its per-call decode gave (issue 21 item 5).

What changed for speed, and what each test holds fixed against the previous code:
- ternary kernels decode packed bytes straight to float32 (uint32 lanes, or a byte table) with
  the columns in the bytes' order (`Format.lut_rows`) instead of unpacking to int8 and
  widening: compared with
  `numpy_kernels.per_call_decode()` (the previous path, still in the tree) on random shapes and
  random bytes, byte for byte;
- F16 rows widen through a 65536-entry table: every bit pattern against `astype`;
- bitnet.cpp's attention emulation runs heads in batches: compared with a verbatim copy of the
  previous one-head-at-a-time loop (`_attention_per_head` below; the batching that landed is
  i21c's, this checks it from the oracle's side);
- the opt-in `BITNET_NUMPY_CACHE` copies (int8, f32): same bytes, their own ids and bytes,
  refused with a ConfigError when memory is short;
- whole forward passes of tiny models of every format under every profile that takes them,
  several seeds: the new code against all the previous paths at once.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from bitnet.errors import ConfigError
from bitnet.gguf import GGUFReader
from bitnet.kernels import numpy_cache
from bitnet.kernels import numpy_kernels as K
from bitnet.kernels.dispatch import matmul, set_backend
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.model import ggml_attention as ga
from bitnet.model.ggml_attention import _fma, _hsum8, softmax, vec_dot_f16
from bitnet.quant import lut
from bitnet.quant.encoders import FORMATS
from bitnet.quant.weights import load_weight
from tests.test_quant_kernels import write_weight

pytestmark = pytest.mark.ac12

F32 = np.float32
LUT_FORMATS = ("i2_s", "i2_s_arm", "i2_s_1x4", "tq2_0")
KERNEL_CASES = [(f, "per-token-absmax") for f in ("i2_s", "i2_s_arm", "i2_s_1x4", "tq2_0", "tq1_0", "qk256", "bitnet32")] + [
    (f, "q8_k-block256") for f in ("tq2_0", "tq1_0")] + [(f, "none") for f in ("i2_s", "tq2_0")]


@pytest.fixture(autouse=True)
def _numpy_backend():
    set_backend("numpy")
    yield


def _weight(tmp_path, fmt, out, k, seed, scale=0.37):
    t = np.random.default_rng(seed).integers(-1, 2, (out, k)).astype(np.int8)
    return write_weight(tmp_path / f"{fmt}-{out}x{k}-{seed}.gguf", fmt, t, scale)


@pytest.mark.parametrize("fmt", LUT_FORMATS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_byte_table_rows_are_the_decoded_values_permuted(tmp_path, fmt, seed):
    """lut_rows[:, j] == decode_rows[:, perm[j]] on every chunk, for valid codes and for bytes
    holding the unused code 3 (which decodes to 2 on both paths)."""
    rng = np.random.default_rng(seed)
    out, k = 4 * int(rng.integers(1, 9)), 256 * int(rng.integers(1, 4))
    with GGUFReader(_weight(tmp_path, fmt, out, k, seed)) as r:
        w = load_weight(r, "w")
        for raw in (w.raw, _with_code3(w, rng)):
            w.raw = raw
            for r0, r1 in [(0, out), (4, out), (0, 4)]:
                v, perm, div = w.format.lut_rows(w, r0, r1)
                ref = w.format.decode_rows(w, r0, r1)
                assert v.dtype == F32 and v.shape == ref.shape
                if div is not None:  # lane-decoded: code * 2^shift
                    assert set(np.unique(div)) <= {1, 4, 16, 64}
                    v = v / div - 1
                got = v if perm is None else np.empty_like(v)
                if perm is not None:
                    got[:, perm] = v
                np.testing.assert_array_equal(got, ref.astype(F32))


def _with_code3(w, rng):
    """The packed bytes with random bytes written over the codes (scales left alone)."""
    raw = np.array(w.raw, np.uint8)
    if w.flavor == "tq2_0":
        b = raw.reshape(-1, 66)
        b[:, :64] = rng.integers(0, 256, b[:, :64].shape, dtype=np.uint8)
    else:
        raw[:] = rng.integers(0, 256, raw.shape, dtype=np.uint8)
    return raw


@pytest.mark.parametrize("fmt,profile", KERNEL_CASES)
def test_kernels_give_the_per_call_bytes_on_random_shapes(tmp_path, fmt, profile):
    """matmul on the byte-table path, the per-call int8 decode, the int8 cache and the f32
    cache: the same output bytes, for several shapes, token counts and seeds."""
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        out, k = 4 * int(rng.integers(1, 40)), 256 * int(rng.integers(1, 5))
        x = (rng.standard_normal((int(rng.integers(1, 6)), k)) * rng.uniform(0.01, 30)).astype(F32)
        x[:, rng.integers(0, k, 3)] = 0  # some exact zeros
        with GGUFReader(_weight(tmp_path, fmt, out, k, seed)) as r:
            w = load_weight(r, "w")
            new = matmul(x, w, profile)
            with K.per_call_decode():
                old = matmul(x, w, profile)
            w.cache_int8()
            i8 = matmul(x, w, profile)
            w.int8_cache = None
            w.cache_f32()
            f32 = matmul(x, w, profile)
        assert new.tobytes() == old.tobytes() == i8.tobytes() == f32.tobytes(), (fmt, profile, seed, out, k)


@pytest.mark.parametrize("lanes", [True, False])
def test_small_chunks_cross_many_chunk_boundaries(tmp_path, monkeypatch, lanes):
    """Chunks of a few rows (the 2B-4T shapes cut a tensor in tens of chunks), with the lane
    decode and with the byte table it falls back to on big-endian hosts: same bytes."""
    monkeypatch.setattr(K, "CHUNK_ELEMENTS", 1024)
    monkeypatch.setattr(lut, "LANES_OK", lanes)
    x = np.random.default_rng(3).standard_normal((2, 512)).astype(F32)
    for fmt, profile in [("i2_s", "per-token-absmax"), ("i2_s_arm", "per-token-absmax"), ("i2_s_1x4", "per-token-absmax"),
                         ("tq2_0", "q8_k-block256"), ("tq2_0", "per-token-absmax")]:
        with GGUFReader(_weight(tmp_path, fmt, 44, 512, 7)) as r:
            w = load_weight(r, "w")
            new = matmul(x, w, profile)
            with K.per_call_decode():
                old = matmul(x, w, profile)
        assert new.tobytes() == old.tobytes(), fmt


def test_f16_table_widens_every_bit_pattern_as_astype():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16).reshape(256, 256)
    assert lut.widen_f16(h).view(np.uint32).tobytes() == h.astype(F32).view(np.uint32).tobytes()
    assert lut.widen_f16(h[::3, 1::2]).tobytes() == h[::3, 1::2].astype(F32).tobytes()  # strided views too


def test_cache_ids_and_bytes_say_what_was_read(tmp_path):
    x = np.ones((1, 256), F32)
    with GGUFReader(_weight(tmp_path, "i2_s", 16, 256, 0)) as r:
        w = load_weight(r, "w")
        KERNEL_LOG.reset()
        matmul(x, w)
        w.cache_f32()
        matmul(x, w)
    recs = {r.id: r.bytes_read for r in KERNEL_LOG.snapshot()}
    assert recs == {"i2s_x86_i8act_gemm_numpy": 16 * 256 // 4, "i2s_x86_f32cache_i8act_gemm_numpy": 16 * 256 * 4}


def test_cache_refused_with_the_figures_when_memory_is_short(tmp_path):
    with GGUFReader(_weight(tmp_path, "tq2_0", 64, 512, 0)) as r:
        w = load_weight(r, "w")
        assert numpy_cache.cache_bytes([w], "int8") == 64 * 512
        assert numpy_cache.cache_bytes([w], "f32") == 4 * 64 * 512
        with pytest.raises(ConfigError, match=r"BITNET_NUMPY_CACHE=f32: .* need 0\.00 GB .*MemAvailable is 0\.50 GB.*int8"):
            numpy_cache.apply([w], "f32", what="m.gguf", available=500_000_000)
        assert w.f32_cache is None and w.int8_cache is None  # nothing half-built
        with pytest.raises(ConfigError, match="expected one of off, int8, f32"):
            numpy_cache.apply([w], "f64", what="m.gguf")
        assert numpy_cache.apply([w], "int8", what="m.gguf", available=1 << 40) == 64 * 512
        assert w.int8_cache is not None


def test_setting_is_parsed_strictly():
    from bitnet.settings import parse_env

    assert parse_env({}).numpy_cache == "off"
    assert parse_env({"BITNET_NUMPY_CACHE": "F32"}).numpy_cache == "f32"
    with pytest.raises(ConfigError, match="BITNET_NUMPY_CACHE='yes'"):
        parse_env({"BITNET_NUMPY_CACHE": "yes"})


# -- attention -------------------------------------------------------------------------------
def _attention_per_head(q, k, v, pos0):
    """bitnet.model.ggml_attention.attention before the head batches (verbatim, recording
    removed): the oracle the batched version must equal byte for byte."""
    t, h, d = q.shape
    hkv, s, _ = k.shape
    group = h // hkv
    sp = -(-s // 32) * 32
    kf = np.zeros((hkv, sp, d), F32)
    vf = np.zeros((hkv, sp, d), F32)
    kf[:, :s] = k.astype(F32)
    vf[:, :s] = v.astype(F32)
    qh = q.transpose(1, 0, 2).astype(np.float16).astype(F32)
    mask = (np.arange(sp)[None, :] > (pos0 + np.arange(t))[:, None])
    out = np.empty((h, t, d), F32)
    scale = float(F32(1.0) / np.sqrt(F32(d), dtype=F32))
    for hi in range(h):
        kv = hi // group
        kq = vec_dot_f16(qh[hi][:, None, :], kf[kv][None, :, :])
        p = softmax(kq, scale, mask)
        if t == 1:
            out[hi] = vec_dot_f16(p.astype(np.float16).astype(F32)[:, None, :], vf[kv].T[None, :, :])
        else:
            acc = np.zeros((t, d, 8), F32)
            vt = vf[kv].T
            for i in range(0, sp, 8):
                acc = _fma(vt[None, :, i:i + 8], p[:, None, i:i + 8], acc)
            out[hi] = _hsum8(acc)
    return out.transpose(1, 0, 2).reshape(t, h * d)


@pytest.mark.parametrize("batch", [1 << 22, 4096, 1])
def test_batched_attention_equals_the_per_head_loop(monkeypatch, batch):
    """bitnet.cpp's attention, batched over heads, against the previous per-head loop: random
    heads, groups, lengths (decode and prefill, S across the 32-padding), scales from tiny to
    sharp; with the default batch bound and with bounds forcing several batches."""
    monkeypatch.setattr(ga, "_BLOCK_ELEMS", batch)
    rng = np.random.default_rng(batch)
    for case in range(8):
        hkv = int(rng.choice([1, 2, 5]))
        h, d = hkv * int(rng.choice([1, 2, 4])), int(rng.choice([32, 64, 128]))
        s = int(rng.integers(1, 70))
        t = 1 if case % 2 else int(rng.integers(1, s + 1))
        amp = float(rng.choice([0.01, 1.0, 8.0]))
        q = (rng.standard_normal((t, h, d)) * amp).astype(F32)
        k = (rng.standard_normal((hkv, s, d)) * amp).astype(np.float16)
        v = rng.standard_normal((hkv, s, d)).astype(np.float16)
        got = ga.attention(q, k, v, s - t)
        assert got.tobytes() == _attention_per_head(q, k, v, s - t).tobytes(), (case, h, hkv, d, s, t)


# -- whole forward passes --------------------------------------------------------------------
def _old_paths(monkeypatch):
    """Every previous path at once: int8 per-call decode, F16 widened by astype, attention one
    head at a time."""
    stack = contextlib.ExitStack()
    stack.enter_context(K.per_call_decode())
    monkeypatch.setattr(lut, "widen_f16", lambda part: part.astype(F32))
    batched = ga.attention

    def attention(q, k, v, pos0, build="bitnet.cpp"):  # the per-head loop existed for the fork only
        return _attention_per_head(q, k, v, pos0) if build == "bitnet.cpp" else batched(q, k, v, pos0, build)

    monkeypatch.setattr(ga, "attention", attention)
    return stack


def _pairs():
    from bitnet.model.profiles import PROFILES

    return [(f, p) for f in FORMATS for p in PROFILES]


def _run(m, prompt):
    cache = m.new_cache(32)
    out = [m.forward(prompt, cache, 0)]
    for i, tok in enumerate((5, 11)):
        out.append(m.forward(np.array([tok]), cache, len(prompt) + i))
    return b"".join(o.tobytes() for o in out)


def _check_forward(tmp_path, monkeypatch, pairs, seeds, caches) -> int:
    """Prefill + two decode steps on the new paths, all previous paths together and each cache
    mode: the same bytes. Returns how many (format, profile, seed) ran."""
    from bitnet.model.bitnet_model import BitNetModel
    from bitnet.synth import synthesize

    ran = 0
    for fmt, prof in pairs:
        for seed in seeds:
            p = tmp_path / f"{fmt}-{seed}.gguf"
            if not p.exists():  # F16 embeddings: the F16 lm_head table runs too
                synthesize(p, preset="tiny", arch="bitnet-b1.58", fmt=fmt, seed=seed, embed_format="f16")
            try:
                m = BitNetModel(p, profile=prof, validate=False)
            except ConfigError:
                continue  # a (format, profile) pair the profile has no path for
            prompt = np.random.default_rng(seed).integers(0, m.config.n_vocab, 5)
            runs = {"new": _run(m, prompt)}
            with monkeypatch.context() as mp, _old_paths(mp):
                runs["old"] = _run(m, prompt)
            ws = [w for layer in m.layers for w in layer.proj.values()] + [m.head_weight]
            for mode in caches:
                for w in ws:
                    w.int8_cache = w.f32_cache = None
                numpy_cache.apply(ws, mode, what=str(p), available=1 << 40)
                runs[mode] = _run(m, prompt)
            m.close()
            assert len(set(runs.values())) == 1, (fmt, prof, seed, [k for k in runs if runs[k] != runs["old"]])
            ran += 1
    return ran


def test_forward_passes_of_every_format_and_profile_are_unchanged(tmp_path, monkeypatch):
    """Every format under every profile that takes it (seed 0), and the formats and profiles
    the speed work is for with two more seeds and both cache modes."""
    assert _check_forward(tmp_path, monkeypatch, _pairs(), (0,), ()) >= 40
    key = [("i2_s", "bitnet.cpp"), ("i2_s_1x4", "reference"), ("tq2_0", "llama.cpp"), ("tq1_0", "llama.cpp"),
           ("i2_s_arm", "bitnet.cpp")]
    assert _check_forward(tmp_path, monkeypatch, key, (1, 2), ("int8", "f32")) == 10


@pytest.mark.slow
def test_forward_passes_sweep_every_pair_seed_and_cache(tmp_path, monkeypatch):
    assert _check_forward(tmp_path, monkeypatch, _pairs(), (0, 1, 2, 3), ("int8", "f32")) >= 160


@pytest.mark.parametrize("module,name", [("tq", "tq2_0_codes"), ("i2s", "unpack_codes")])
def test_a_replaced_decoder_reaches_the_kernels(tmp_path, monkeypatch, module, name):
    """crossval.faults plants decoding faults by replacing a codec function: the fast path
    steps aside for it (the kernels then decode through the replaced function)."""
    import importlib

    mod = importlib.import_module(f"bitnet.quant.{module}")
    real = getattr(mod, name)
    fmt = "tq2_0" if module == "tq" else "i2_s"
    x = np.random.default_rng(4).standard_normal((1, 256)).astype(F32)
    with GGUFReader(_weight(tmp_path, fmt, 8, 256, 4)) as r:
        w = load_weight(r, "w")
        good = matmul(x, w)
        monkeypatch.setattr(mod, name, lambda *a, **k: 2 - real(*a, **k) if module == "i2s" else
                            (2 - real(*a, **k)[0], real(*a, **k)[1]))
        assert w.format.lut_rows(w, 0, 8) is None
        assert matmul(x, w).tobytes() != good.tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunks_on_several_threads_give_the_same_bytes(tmp_path, monkeypatch, threads):
    """The exact kernels spread a weight's chunks over threads (_each_chunk): every chunk's
    products are exact integers written to its own columns, so 1, 2 or 3 threads and any
    finishing order give the bytes of the sequential loop."""
    monkeypatch.setattr(K, "CHUNK_ELEMENTS", 1024)
    x = np.random.default_rng(4).standard_normal((3, 512)).astype(F32)
    for fmt, profile in [("i2_s", "per-token-absmax"), ("tq2_0", "q8_k-block256"), ("tq1_0", "q8_k-block256")]:
        with GGUFReader(_weight(tmp_path, fmt, 61, 512, 9)) as r:
            w = load_weight(r, "w")
            monkeypatch.setattr(K, "_threads", lambda: 1)
            one = matmul(x, w, profile)
            monkeypatch.setattr(K, "_threads", lambda: threads)
            many = matmul(x, w, profile)
        assert many.tobytes() == one.tobytes(), (fmt, threads)


def test_a_chunk_error_is_raised_in_the_caller(monkeypatch):
    """An exception inside a worker thread's chunk reaches the caller, not a log line."""
    monkeypatch.setattr(K, "_threads", lambda: 2)

    class W:
        in_features, out_features, is_ternary = 4, 8, False

    monkeypatch.setattr(K, "_chunks", lambda w: iter([(0, 4), (4, 8)]))

    def boom(r0: int, r1: int) -> None:
        if r0 == 4:
            raise ValueError("chunk 4..8")

    with pytest.raises(ValueError, match="chunk 4..8"):
        K._each_chunk(W(), boom)  # type: ignore[arg-type]
