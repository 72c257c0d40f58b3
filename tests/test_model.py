"""The reference model: an independent float forward pass, cache equivalence, config errors."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.errors import ConfigError, StrictModeError
from bitnet.gguf import GGUFReader, GGUFWriter
from bitnet.model import BitNetModel

gguf = pytest.importorskip("gguf")


# -- an independent reference: gguf-py for reading, plain NumPy loops for the math -----------
def _independent_logits(path, ids):
    """Written separately from bitnet.model (no shared code): BitNet b1.58 per the paper/HF —
    per-token absmax int8 activations, float weights, exact rope, per-head loop attention."""
    g = gguf.GGUFReader(str(path))
    T_ = {t.name: t for t in g.tensors}
    f = {k: v.contents() for k, v in g.fields.items() if not k.startswith("GGUF.")}
    arch = f["general.architecture"]
    D, H, Hkv = f[f"{arch}.embedding_length"], f[f"{arch}.attention.head_count"], f[f"{arch}.attention.head_count_kv"]
    L, eps, base = f[f"{arch}.block_count"], f[f"{arch}.attention.layer_norm_rms_epsilon"], f[f"{arch}.rope.freq_base"]
    hd = D // H

    def W(name):
        t = T_[name]
        return np.asarray(t.data, dtype=np.float64).reshape([int(x) for x in reversed(t.shape)])

    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    def lin(x, name):
        m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-5)
        xq = np.clip(np.round(x * 127.0 / m), -128, 127) * m / 127.0
        y = xq @ W(name + ".weight").T
        if name + ".scale" in T_:
            y = y * W(name + ".scale")[0]
        return y

    def rope(x, p):
        half = hd // 2
        inv = base ** (-np.arange(half) * 2.0 / hd)
        out = x.copy()
        for t in range(x.shape[0]):
            a = (p[t] * inv)
            x0, x1 = x[t, :, :half], x[t, :, half:]
            out[t, :, :half] = x0 * np.cos(a) - x1 * np.sin(a)
            out[t, :, half:] = x0 * np.sin(a) + x1 * np.cos(a)
        return out

    x = W("token_embd.weight")[ids]
    T = len(ids)
    pos = np.arange(T)
    for i in range(L):
        p = f"blk.{i}."
        a = norm(x, W(p + "attn_norm.weight"))
        q = rope(lin(a, p + "attn_q").reshape(T, H, hd), pos)
        k = rope(lin(a, p + "attn_k").reshape(T, Hkv, hd), pos)
        v = lin(a, p + "attn_v").reshape(T, Hkv, hd)
        o = np.zeros((T, H, hd))
        for h in range(H):
            kh = h // (H // Hkv)
            for t in range(T):
                s = q[t, h] @ k[: t + 1, kh].T / np.sqrt(hd)
                w = np.exp(s - s.max())
                o[t, h] = (w / w.sum()) @ v[: t + 1, kh]
        o = norm(o.reshape(T, D), W(p + "attn_sub_norm.weight"))
        x = x + lin(o, p + "attn_output")
        gn = norm(x, W(p + "ffn_norm.weight"))
        gate, up = lin(gn, p + "ffn_gate"), lin(gn, p + "ffn_up")
        act = np.maximum(gate, 0) ** 2 if arch == "bitnet-b1.58" else gate / (1 + np.exp(-gate))
        h_ = norm(act * up, W(p + "ffn_sub_norm.weight"))
        x = x + lin(h_, p + "ffn_down")
    x = norm(x, W("output_norm.weight"))
    return x @ W("token_embd.weight").T


IDS = [381, 40, 41, 300, 7, 99, 256, 12]


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "bitnet"])
@pytest.mark.parametrize("fmt", ["f32", "f16"])
def test_matches_independent_reference(bitnet_model_factory, arch, fmt):
    path = bitnet_model_factory(arch=arch, fmt=fmt, seed=5)
    m = BitNetModel(path, profile="reference")
    ours = m.forward(np.array(IDS), m.new_cache(), 0)
    ref = _independent_logits(path, IDS)
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-5, rel


@pytest.mark.parametrize("profile", ["reference", "llama.cpp", "bitnet.cpp"])
def test_prefill_then_decode_equals_full_recompute(bitnet_model_factory, profile):
    path = bitnet_model_factory(arch="bitnet", fmt="f32", seed=1)
    m = BitNetModel(path, profile=profile)
    full = m.forward(np.array(IDS), m.new_cache(), 0)
    cache = m.new_cache()
    rows = [m.forward(np.array(IDS[:3]), cache, 0)]
    for p in range(3, len(IDS)):
        rows.append(m.forward(np.array([IDS[p]]), cache, p))
    inc = np.concatenate(rows)
    scale = np.abs(full).max()
    # bitnet.cpp's single-row path rounds probs and lm_head input to F16: a documented difference
    tol = 2e-3 if profile == "bitnet.cpp" else 1e-5
    assert np.abs(inc - full).max() / scale < tol
    assert (inc.argmax(-1) == full.argmax(-1)).mean() >= (0.75 if profile == "bitnet.cpp" else 1.0)


def test_last_only_logits_equal_last_row(bitnet_tiny_model):
    m = BitNetModel(bitnet_tiny_model)
    full = m.forward(np.array(IDS), m.new_cache(), 0)
    last = m.forward(np.array(IDS), m.new_cache(), 0, all_logits=False)
    np.testing.assert_allclose(last[0], full[-1], rtol=1e-6, atol=1e-6)


def _copy_without(src, dst, drop_key=None, drop_tensor=None):
    with GGUFReader(src) as r:
        w = GGUFWriter(dst)
        w.add_fields(f for k, f in r.fields.items() if k != drop_key)
        for t in r.tensors:
            if t.name != drop_tensor:
                w.add_tensor(t.name, r.raw(t), shape=t.shape, gtype=t.type_id, nbytes=t.nbytes)
        w.write()
    return dst


@pytest.mark.ac19
def test_missing_required_key_is_named(bitnet_tiny_model, tmp_path):
    p = _copy_without(bitnet_tiny_model, tmp_path / "m.gguf", drop_key="bitnet-b1.58.block_count")
    with pytest.raises(ConfigError, match="missing required key bitnet-b1.58.block_count"):
        BitNetModel(p)


@pytest.mark.ac19
def test_missing_tensor_is_named(bitnet_tiny_model, tmp_path):
    p = _copy_without(bitnet_tiny_model, tmp_path / "m.gguf", drop_tensor="blk.1.ffn_up.weight")
    with pytest.raises(ConfigError, match="missing tensor blk.1.ffn_up.weight"):
        BitNetModel(p)


@pytest.mark.ac9
def test_engine_defaults_are_refused_in_strict_mode(bitnet_tiny_model, tmp_path, caplog):
    p = _copy_without(bitnet_tiny_model, tmp_path / "m.gguf", drop_key="bitnet-b1.58.rope.freq_base")
    with pytest.raises(StrictModeError, match="rope.freq_base"):
        BitNetModel(p, strict=True)
    m = BitNetModel(p, strict=False)
    assert m.config.rope_theta == 10000.0
    assert "missing key bitnet-b1.58.rope.freq_base" in caplog.text


@pytest.mark.ac9
def test_strict_mode_from_environment(bitnet_tiny_model, tmp_path, monkeypatch):
    p = _copy_without(bitnet_tiny_model, tmp_path / "m.gguf", drop_key="bitnet-b1.58.attention.head_count_kv")
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    with pytest.raises(StrictModeError, match="head_count_kv"):
        BitNetModel(p)


def test_profile_defaults_and_unknown(bitnet_tiny_model):
    assert BitNetModel(bitnet_tiny_model).profile.name == "reference"
    with pytest.raises(ConfigError, match="unknown numerics profile"):
        BitNetModel(bitnet_tiny_model, profile="fast")
