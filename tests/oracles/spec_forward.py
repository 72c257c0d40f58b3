"""The spec-layout oracle: BitNet b1.58's forward pass written from the paper and the HF
reference, independently of `bitnet.model` (no shared code).

gguf-py reads the file; the math is plain NumPy in float64 with loops where the spec has them:
per-token absmax int8 activations (fake-quantized), float weights times the optional
`.scale` tensor, exact NEOX rope, per-head causal attention, the BitNet sub-norms, ReLU^2
(`bitnet-b1.58`) or SiLU (`bitnet`) gates, the tied lm_head. `tests/test_model.py` checks the
reference engine against it; docs/explanation/architecture.md lists it with the other oracles.
"""

from __future__ import annotations

import gguf
import numpy as np


def spec_logits(path, ids):
    """Logits [T, V] for token ids at positions 0.. of the model file at `path` (float
    weights: F32/F16 projections), in float64."""
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
