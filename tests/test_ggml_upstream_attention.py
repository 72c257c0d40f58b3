"""The `llama.cpp` profile's attention (bitnet.model.ggml_attention, build "llama.cpp") pinned
without crossval: against a scalar transcription of upstream llama.cpp 0.3.36's ggml-cpu code
written here (plain Python floats, every float32 rounding explicit, FMAs rounded once through
an exact error term: no code shared with the module except ggml_v_expf, which
tests/test_ggml_numerics.py pins against the C), and on hand-built cases whose expected bits
follow from the C source by hand (reduction trees, the vec_dot tail, F16 ties, masks).

`tests/test_crossval_upstream_attention.py` checks the same function against libllama itself."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from bitnet.model.ggml_attention import (
    attention,
    softmax,
    tinyblas8,
    v_expf,
    vec_dot_f16,
    vec_dot_f32,
)

pytestmark = pytest.mark.ac30

F32 = np.float32


# -- the scalar transcription ------------------------------------------------------------------
def r32(x: float) -> float:
    """Round a double to float32 (nearest even). A float32 +, -, *, / computed in double and
    rounded here is correctly rounded (53 >= 2 * 24 + 2)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _next32(x: float, up: bool) -> float:
    b = struct.unpack("<i", struct.pack("<f", x))[0]
    if x == 0.0:
        return struct.unpack("<f", struct.pack("<i", 1 if up else -2147483647))[0]
    b += 1 if (up == (x > 0)) else -1
    return struct.unpack("<f", struct.pack("<i", b))[0]


def fma32(a: float, b: float, c: float) -> float:
    """fmaf: a*b + c rounded once. The product of two floats is exact in double; the sum's
    rounding error comes from TwoSum and decides the one case a double cannot (a tie)."""
    p = a * b
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)  # s + e == p + c exactly
    r = r32(s)
    if e != 0.0 and r != s:
        lo, hi = (r, _next32(r, True)) if r < s else (_next32(r, False), r)
        if s - lo == hi - s:  # s is a float32 midpoint: the exact value lies on e's side
            return hi if e > 0 else lo
    return r


def hsum8(x: list[float]) -> float:
    """hsum(__m256) / the softmax's 8-lane sum: hi + lo, then (x0 + x2) + (x1 + x3)."""
    h = [r32(x[i + 4] + x[i]) for i in range(4)]
    return r32(r32(h[0] + h[2]) + r32(h[1] + h[3]))


def dot_f32(x: list[float], y: list[float]) -> float:
    """ggml_vec_dot_f32 (vec.cpp, GGML_F32_STEP 32, 4 x __m256) and its compiled tail."""
    n = len(x)
    nb = n & ~31
    acc = [[0.0] * 8 for _ in range(4)]
    for i in range(0, nb, 32):
        for j in range(4):
            for lane in range(8):
                acc[j][lane] = fma32(x[i + 8 * j + lane], y[i + 8 * j + lane], acc[j][lane])
    a = [r32(r32(acc[0][lane] + acc[2][lane]) + r32(acc[1][lane] + acc[3][lane])) for lane in range(8)]
    t0 = [r32(a[i] + a[i + 4]) for i in range(4)]
    s = r32(r32(t0[0] + t0[1]) + r32(t0[2] + t0[3]))
    plain = nb + (n - nb) // 4 * 4
    for i in range(nb, n):
        s = r32(s + r32(x[i] * y[i])) if i < plain else fma32(x[i], y[i], s)
    return s


def tinyblas_dot(a: list[float], b: list[float]) -> float:
    """One output of tinyBLAS<8, __m256>: one 8-lane FMA accumulator, then hsum."""
    acc = [0.0] * 8
    for i in range(0, len(a), 8):
        for lane in range(8):
            acc[lane] = fma32(a[i + lane], b[i + lane], acc[lane])
    return hsum8(acc)


def ref_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int) -> np.ndarray:
    """Upstream's graph on an F32 KV cache with n_kv padded to 256, element by element."""
    t, h, d = q.shape
    hkv, s, _ = k.shape
    n_kv = -(-s // 256) * 256
    kk = np.zeros((hkv, n_kv, d), F32)
    vv = np.zeros((hkv, n_kv, d), F32)
    kk[:, :s], vv[:, :s] = k, v
    scale = r32(1.0 / r32(float(np.sqrt(np.float64(d)))))  # 1.0f/sqrtf(float(n_embd_head))
    out = np.zeros((t, h, d), F32)
    for hi in range(h):
        kv = hi // (h // hkv)
        K = kk[kv].tolist()
        Vt = vv[kv].T.tolist()
        qcontig = t >= 2 and h == 1 and d % 8 == 0  # llamafile_sgemm takes a contiguous src1
        P = []
        for ti in range(t):
            qr = [float(x) for x in q[ti, hi]]
            kq = [tinyblas_dot(K[j], qr) if qcontig else dot_f32(qr, K[j]) for j in range(n_kv)]
            w = [r32(r32(x * scale) + (float("-inf") if j > pos0 + ti else 0.0)) for j, x in enumerate(kq)]
            mx = max(w)
            e = v_expf(np.asarray([r32(x - mx) for x in w], F32)).tolist()  # ggml_v_expf, 8 lanes at a time
            total = 0.0
            for c in range(0, n_kv, 8):
                total += hsum8(e[c:c + 8])  # each chunk's float sum, accumulated in double
            inv = r32(1.0 / total)
            P.append([r32(x * inv) for x in e])
        for ti in range(t):
            for di in range(d):
                if t >= 2 and d % 4 == 0:  # tinyBLAS<8> (n >= 2, m % 4 == 0, k % 8 == 0)
                    out[ti, hi, di] = tinyblas_dot(Vt[di], P[ti])
                else:  # ggml_vec_dot_f32 over the keys
                    out[ti, hi, di] = dot_f32(Vt[di], P[ti])
    return out.reshape(t, h * d)


# -- the emulation against the transcription ---------------------------------------------------
@pytest.mark.parametrize("t,h,hkv,d,pos0", [
    (4, 2, 1, 40, 0),   # a prompt batch; head_dim 40: an 8-wide plain tail in Q.K
    (1, 2, 1, 34, 5),   # a decode step at position 5 (6 keys); tail of 2 fused
    (3, 1, 1, 16, 2),   # one head: q contiguous, tinyBLAS takes Q.K; 3 tokens after 2 cached
    (2, 2, 2, 46, 0),   # tail 8 + 4 plain + 2 fused
    (2, 2, 1, 6, 0),    # head_dim 6: no block of 32, tinyBLAS refuses m % 4 for P.V
])
def test_upstream_attention_matches_the_scalar_transcription(t, h, hkv, d, pos0):
    rng = np.random.default_rng(t * 1000 + d)
    s = pos0 + t
    q = (rng.standard_normal((t, h, d)) * 3).astype(F32)
    k = rng.standard_normal((hkv, s, d)).astype(F32)
    v = rng.standard_normal((hkv, s, d)).astype(F32)
    got = attention(q, k, v, pos0, build="llama.cpp")
    np.testing.assert_array_equal(got, ref_attention(q, k, v, pos0))


# -- hand-built cases --------------------------------------------------------------------------
def test_vec_dot_f32_reduces_its_accumulators_as_ggml_does():
    """x[0] -> accumulator 0, x[8] -> 1, x[16] -> 2 (lane 0 each): (a0 + a2) + (a1 + a3) =
    (2^24 + 1) - 2^24 = 2^24 - 2^24 = 0 (2^24 + 1 rounds to 2^24); any left-to-right or pairwise
    order gives 1."""
    x = np.zeros(32, F32)
    x[0], x[8], x[16] = 2.0**24, -(2.0**24), 1.0
    y = np.ones(32, F32)
    assert vec_dot_f32(x, y) == 0.0
    assert float(np.dot(x.astype(np.float64), y)) == 1.0


def test_the_vec_dot_tail_is_plain_in_fours_and_fused_after():
    """u = 1 + 2^-12: u*u = 1 + 2^-11 + 2^-24 rounds (a tie, to even) to 1 + 2^-11 in float.
    In a tail of 8 (head_dim 40) the product is rounded before the add: -1 + u*u -> 2^-11; in a
    tail of 2 (head_dim 34) gcc fused it: 2^-11 + 2^-24. vec_dot_f16 (the fork) sums its tail in
    double: 2^-11 as well, but from the rounded product."""
    u = F32(1 + 2.0**-12)
    for n, last_fused in ((40, False), (34, True)):
        x = np.zeros(n, F32)
        y = np.zeros(n, F32)
        x[0], y[0] = -1.0, 1.0  # the block part sums to -1
        x[n - 1] = y[n - 1] = u
        want = 2.0**-11 + (2.0**-24 if last_fused else 0.0)
        assert float(vec_dot_f32(x, y)) == want, n
        assert float(vec_dot_f16(x, y)) == 2.0**-11


def test_tinyblas_accumulates_each_lane_in_key_order_then_hsums():
    """Lane 0 sees 2^24, then 1, then -2^24 (keys 0, 8, 16): sequential FMAs give 0 there;
    lane 1 holds 3. hsum: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) = 3."""
    a = np.zeros((1, 24), F32)
    a[0, 0], a[0, 8], a[0, 16], a[0, 1] = 2.0**24, 1.0, -(2.0**24), 3.0
    b = np.ones((1, 24), F32)
    assert tinyblas8(a, b)[0, 0] == 3.0


def test_softmax_multiplies_by_the_float_reciprocal_of_the_double_sum():
    """Three equal scores: every exp is 1, the sum 3, (float)(1.0/3) * 1 -- not 1/3 divided in
    float per element (the same here) and not a float sum; masked keys are exactly 0."""
    kq = np.zeros((1, 8), F32)
    mask = np.zeros((1, 8), bool)
    mask[0, 3:] = True
    p = softmax(kq, 1.0, mask)
    assert p[0, :3].tolist() == [float(F32(1.0 / 3.0))] * 3
    assert p[0, 3:].tolist() == [0.0] * 5


def test_the_mask_hides_later_keys_bit_for_bit():
    """What sits in the cache after a query's position changes none of its output bits."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((3, 2, 32)).astype(F32)
    k = rng.standard_normal((1, 3, 32)).astype(F32)
    v = rng.standard_normal((1, 3, 32)).astype(F32)
    a = attention(q, k, v, 0, build="llama.cpp")
    k2, v2 = k.copy(), v.copy()
    k2[:, 2] *= 7
    v2[:, 2] = -v2[:, 2]
    b = attention(q, k2, v2, 0, build="llama.cpp")
    np.testing.assert_array_equal(a[:2], b[:2])  # rows 0 and 1 cannot see key 2
    assert not np.array_equal(a[2], b[2])


def test_upstream_keeps_q_in_f32_where_the_fork_rounds_it_to_f16_ties_to_even():
    """1 + 2^-11 is an F16 tie between 1 and 1 + 2^-10: the fork rounds it to 1 (even), and
    1 + 3 * 2^-11 to 1 + 2^-9 (even), before Q.K; upstream's F32 cache has F32 as vec_dot_type
    and keeps both as they are."""
    d = 32
    k = np.zeros((1, 1, d), F32)
    k[0, 0, 0] = 1.0
    v = np.ones((1, 1, d), F32)
    from bitnet.model import record

    for qv, f16 in ((1 + 2.0**-11, 1.0), (1 + 3 * 2.0**-11, 1 + 2.0**-9)):
        q = np.zeros((1, 1, d), F32)
        q[0, 0, 0] = qv
        for build, want in (("bitnet.cpp", f16), ("llama.cpp", qv)):
            with record.recording() as rec:
                attention(q, k, v, 0, build=build)
            scores = next(a for key, a in rec.by_key().items() if key[1] == "attn_scores")
            assert float(scores[0, 0, 0]) == want, (build, qv)


def test_the_plain_float_forms_miss_bits_the_emulation_keeps():
    """Teeth: NumPy/BLAS attention and the fork's arithmetic both differ from upstream's on a
    2B-4T-like head (head_dim 128, GQA 4:1) somewhere in a 12-token batch."""
    from bitnet.model.ops import causal_attention

    rng = np.random.default_rng(0)
    q = (rng.standard_normal((12, 4, 128)) * 4).astype(F32)
    k = (rng.standard_normal((1, 12, 128)) * 4).astype(F32)
    v = rng.standard_normal((1, 12, 128)).astype(F32)
    up = attention(q, k, v, 0, build="llama.cpp")
    assert not np.array_equal(causal_attention(q, k, v, 0), up)
    assert not np.array_equal(attention(q, k, v, 0, build="bitnet.cpp"), up)


def test_an_unknown_build_is_refused():
    q = np.zeros((1, 1, 8), F32)
    with pytest.raises(ValueError, match="unknown ggml build"):
        attention(q, q.transpose(1, 0, 2), q.transpose(1, 0, 2), 0, build="llama.cpp-cuda")


def test_the_llama_cpp_profile_runs_upstream_attention():
    from bitnet.model.profiles import get_profile

    assert get_profile("llama.cpp").attn_build == "llama.cpp"
    assert get_profile("bitnet.cpp").attn_build == "bitnet.cpp"
    assert get_profile("reference").attn_build is None
