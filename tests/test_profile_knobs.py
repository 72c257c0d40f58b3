"""Every numerics-profile knob pinned against an independent computation, without crossval.

The independent forward below shares no code with bitnet.model: gguf-py reads the file and
dequantizes the weights, the math is float64 NumPy, and each knob is applied at the rounding
point its C++ engine has it (ggml-cpu and the bitnet.cpp fork, see bitnet/model/profiles.py):
KV cache dtype, Q rounded to F16, activation scheme (none / F16 / Q8_K blocks of 256 /
per-token absmax int8), lm_head input rounded to F16 (every batch, or single rows only),
attention probabilities rounded to F16 on single rows. A profile whose knob is wrong fails
here, because each knob moves the logits well beyond the tolerance (checked below by flipping
it in the independent computation). Rope angles, whose knob moves logits by ~1e-7 only, are
pinned at the function level against ggml's iterative loop.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from bitnet.model import BitNetModel
from bitnet.model.profiles import PROFILES

gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.ac30

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12]
NEXT = 77  # one decode step after the prompt
# Ours (float32) and the independent float64 computation round at the same points, so they
# differ only where a value sits within one float32 ulp of a rounding boundary (an F16 or int8
# flip of one element: up to ~7e-5 of the largest logit, on few rows). Prompt rows are compared
# by their median relative max|d| (flips are sparse, knobs move every row); the decode row,
# where the single-row knobs act, on its own.
PROMPT_TOL = 2e-5  # median over prompt rows of max|d| / max|logit|
DECODE_TOL = 1e-4  # the decode row's max|d| / max|logit|


def _f16(x):
    return np.asarray(x, np.float64).astype(np.float16).astype(np.float64)


def _q8k(x):
    """ggml quantize_row_q8_K_ref then dequantize: blocks of 256, iscale = -127/max (signed)."""
    x32 = np.asarray(x, np.float32)
    blk = x32.reshape(*x32.shape[:-1], -1, 256)
    j = np.abs(blk).argmax(-1)[..., None]
    mx = np.take_along_axis(blk, j, -1)  # the signed value of largest magnitude (first on ties)
    safe = np.where(mx == 0, np.float32(1), mx)
    iscale = (np.float32(-127.0) / safe).astype(np.float32)
    q = np.minimum(127, np.round((iscale * blk).astype(np.float32)))
    d = (np.float32(1.0) / iscale).astype(np.float32)
    out = np.where(mx == 0, 0.0, q.astype(np.float64) * d.astype(np.float64))
    return out.reshape(x32.shape)


def _absmax_int8(x):
    m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-5)
    return np.clip(np.round(x * 127.0 / m), -128, 127) * m / 127.0


@dataclasses.dataclass(frozen=True)
class Knobs:
    act: str  # "none", "f16", "q8_k", "absmax"
    kv_f16: bool = False
    q_f16: bool = False
    lm_head_f16: str = "never"  # "never", "always", "single"
    probs_f16_single: bool = False


@functools.cache
def _read(path: str):
    """gguf-py's view of the file: tensors, metadata, and dequantized float64 weights."""
    g = gguf.GGUFReader(path)
    T_ = {t.name: t for t in g.tensors}
    f = {k: v.contents() for k, v in g.fields.items() if not k.startswith("GGUF.")}

    @functools.cache
    def W(name):
        t = T_[name]
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(a, np.float64).reshape([int(x) for x in reversed(t.shape)])

    return T_, f, W


def independent(path, ids, knobs: Knobs, single_last: bool) -> np.ndarray:
    """Logits for ids; with single_last the last row is a single-row decode step."""
    T_, f, W = _read(str(path))
    arch = f["general.architecture"]
    D, H, Hkv = f[f"{arch}.embedding_length"], f[f"{arch}.attention.head_count"], f[f"{arch}.attention.head_count_kv"]
    L, eps, base = f[f"{arch}.block_count"], f[f"{arch}.attention.layer_norm_rms_epsilon"], f[f"{arch}.rope.freq_base"]
    hd = D // H
    T = len(ids)
    single = np.zeros(T, bool)
    single[-1] = single_last

    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    def lin(x, name):
        xq = {"none": lambda a: a, "f16": _f16, "q8_k": _q8k, "absmax": _absmax_int8}[knobs.act](x)
        y = xq @ W(name + ".weight").T
        return y * W(name + ".scale")[0] if name + ".scale" in T_ else y

    def rope(x):
        half = hd // 2
        inv = base ** (-np.arange(half) * 2.0 / hd)
        a = np.arange(T)[:, None] * inv[None, :]
        c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
        x0, x1 = x[..., :half], x[..., half:]
        return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)

    x = W("token_embd.weight")[ids]
    for i in range(L):
        p = f"blk.{i}."
        a = norm(x, W(p + "attn_norm.weight"))
        q = rope(lin(a, p + "attn_q").reshape(T, H, hd))
        k = rope(lin(a, p + "attn_k").reshape(T, Hkv, hd))
        v = lin(a, p + "attn_v").reshape(T, Hkv, hd)
        if knobs.q_f16:
            q = _f16(q)
        if knobs.kv_f16:
            k, v = _f16(k), _f16(v)
        o = np.zeros((T, H, hd))
        for h in range(H):
            kh = h // (H // Hkv)
            for t in range(T):
                sc = q[t, h] @ k[: t + 1, kh].T / np.sqrt(hd)
                w = np.exp(sc - sc.max())
                w = w / w.sum()
                if knobs.probs_f16_single and single[t]:
                    w = _f16(w)
                o[t, h] = w @ v[: t + 1, kh]
        o = norm(o.reshape(T, D), W(p + "attn_sub_norm.weight"))
        x = x + lin(o, p + "attn_output")
        gn = norm(x, W(p + "ffn_norm.weight"))
        gate, up = lin(gn, p + "ffn_gate"), lin(gn, p + "ffn_up")
        act = np.maximum(gate, 0) ** 2 if arch == "bitnet-b1.58" else gate / (1 + np.exp(-gate))
        x = x + lin(norm(act * up, W(p + "ffn_sub_norm.weight")), p + "ffn_down")
    x = norm(x, W("output_norm.weight"))
    emb = W("token_embd.weight")
    if T_["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16:
        rnd = {"never": np.zeros(T, bool), "always": np.ones(T, bool), "single": single}[knobs.lm_head_f16]
        x = np.where(rnd[:, None], _f16(x), x)
    return x @ emb.T


def ours(path, profile, ids) -> np.ndarray:
    """Prompt rows in one batch, then the last id as a single-row decode step."""
    m = BitNetModel(path, profile=profile)
    cache = m.new_cache()
    rows = m.forward(np.asarray(ids[:-1]), cache, 0)
    last = m.forward(np.asarray(ids[-1:]), cache, len(ids) - 1, all_logits=False)
    return np.concatenate([rows, last])


def _rows(a, b) -> tuple[float, float]:
    """(median over prompt rows, decode row) of max|d| / max|b| per row."""
    r = np.abs(a - b).max(-1) / np.abs(b).max(-1)
    return float(np.median(r[:-1])), float(r[-1])


# the knobs each profile must have, as the C++ engines' sources say (profiles.py docstring)
CASES = {
    # F32 projections (no activation rounding) with an F16 token_embd: float knobs show cleanly
    "llama.cpp/f32": ("f32", "llama.cpp", Knobs("none", lm_head_f16="always")),
    "bitnet.cpp/f32": ("f32", "bitnet.cpp", Knobs("none", kv_f16=True, q_f16=True, lm_head_f16="single",
                                                  probs_f16_single=True)),
    "reference/f32": ("f32", "reference", Knobs("absmax")),
    "llama.cpp/tq2_0": ("tq2_0", "llama.cpp", Knobs("q8_k", lm_head_f16="always")),
    "llama.cpp/tq1_0": ("tq1_0", "llama.cpp", Knobs("q8_k", lm_head_f16="always")),
    "reference/tq2_0": ("tq2_0", "reference", Knobs("absmax")),
}
FLIPS = {
    "kv_f16": lambda k: dataclasses.replace(k, kv_f16=not k.kv_f16),
    "q_f16": lambda k: dataclasses.replace(k, q_f16=not k.q_f16),
    "lm_head_f16": lambda k: dataclasses.replace(k, lm_head_f16={"always": "never", "never": "always",
                                                                 "single": "always"}[k.lm_head_f16]),
    "probs_f16_single": lambda k: dataclasses.replace(k, probs_f16_single=not k.probs_f16_single),
    "act": lambda k: dataclasses.replace(k, act={"none": "f16", "q8_k": "absmax", "absmax": "q8_k", "f16": "none"}[k.act]),
}


@pytest.fixture(scope="module")
def knob_models(bitnet_model_factory):
    return {fmt: bitnet_model_factory(arch="bitnet", fmt=fmt, seed=11, embed_format="f16")
            for fmt in ("f32", "tq2_0", "tq1_0")}


@pytest.mark.parametrize("case", list(CASES))
def test_profile_matches_the_independent_computation_of_its_knobs(knob_models, case):
    fmt, profile, knobs = CASES[case]
    path = knob_models[fmt]
    ids = PROMPT + [NEXT]
    got = ours(path, profile, ids)
    want = independent(path, ids, knobs, single_last=True)
    prompt, decode = _rows(got, want)
    assert prompt < PROMPT_TOL and decode < DECODE_TOL, (case, prompt, decode)
    # teeth: flipping any knob moves the prompt rows or the decode row well past the tolerance
    for name, flip in FLIPS.items():
        if name == "act" and knobs.act == "none":
            continue  # F16 activations on F32 weights: no engine does that
        if name == "probs_f16_single" and knobs.lm_head_f16 != "single":
            continue  # single-row probabilities are one knob with the single-row lm_head rounding
        p2, d2 = _rows(independent(path, ids, flip(knobs), single_last=True), want)
        assert p2 > 5 * PROMPT_TOL or d2 > 2 * DECODE_TOL, (case, name, p2, d2)


def test_profile_table_says_what_the_knob_tests_pin():
    """The table rows the independent cases above encode, read from the profile objects."""
    lc, bc, ref = PROFILES["llama.cpp"], PROFILES["bitnet.cpp"], PROFILES["reference"]
    assert (lc.kv_dtype, lc.q_f16, lc.lm_head_f16, lc.single_row_f16) == (np.float32, False, True, False)
    assert (bc.kv_dtype, bc.q_f16, bc.lm_head_f16, bc.single_row_f16) == (np.float16, True, False, True)
    assert lc.act_for("tq2_0") == "q8_k-block256" and lc.act_for("f16") == "f16" and lc.act_for("f32") == "none"
    assert bc.act_for("i2_s") == "per-token-absmax" and ref.act_for("tq1_0") == "per-token-absmax"
    assert lc.rope_iterative_f32 and bc.rope_iterative_f32 and not ref.rope_iterative_f32


def test_kv_cache_holds_the_profile_dtype(knob_models):
    for profile, dt in (("llama.cpp", np.float32), ("bitnet.cpp", np.float16), ("reference", np.float32)):
        m = BitNetModel(knob_models["f32"], profile=profile)
        cache = m.new_cache(16)
        m.forward(np.asarray(PROMPT), cache, 0)
        assert cache.k[0].dtype == dt and cache.v[0].dtype == dt, profile


def test_rope_angles_follow_ggml_iterative_float_loop():
    """ggml rope_yarn cache: theta = p; per pair: cos/sin(theta); theta *= powf(base, -2/n_dims),
    all in float32. Independent of bitnet.model.ops (a plain Python loop over np.float32)."""
    from bitnet.model.ops import rope_angles

    hd, base = 64, 500000.0
    pos = np.array([0, 1, 7, 255, 4095], np.int64)
    s = np.float32(np.float32(base) ** (np.float32(-2.0) / np.float32(hd)))
    want = np.empty((len(pos), hd // 2), np.float32)
    for r, p in enumerate(pos):
        theta = np.float32(p)
        for i in range(hd // 2):
            want[r, i] = theta
            theta = np.float32(theta * s)
    cos, sin = rope_angles(pos, hd, base, True)
    np.testing.assert_array_equal(cos, np.cos(want))
    np.testing.assert_array_equal(sin, np.sin(want))
    exact_cos, _ = rope_angles(pos, hd, base, False)
    ang = pos[:, None] * np.power(base, -np.arange(hd // 2) * 2.0 / hd)[None, :]
    np.testing.assert_allclose(exact_cos, np.cos(ang), atol=1e-6)
    assert not np.array_equal(cos, exact_cos)  # the knob is visible where it is used


def test_forward_uses_the_profiles_rope_knob(knob_models):
    """Flipping rope_iterative_f32 alone changes the forward's logits (bit-level): the forward
    reads the knob (its size, ~1e-7, is pinned at the function level above)."""
    import bitnet.model.profiles as pr

    base = BitNetModel(knob_models["f32"], profile="llama.cpp")
    a = base.forward(np.asarray(PROMPT), base.new_cache(16), 0)
    flipped = dataclasses.replace(pr.PROFILES["llama.cpp"], rope_iterative_f32=False)
    base.profile = flipped
    b = base.forward(np.asarray(PROMPT), base.new_cache(16), 0)
    assert not np.array_equal(a, b)
