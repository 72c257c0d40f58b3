"""The non-matmul operations of the forward pass, each matching ggml's arithmetic where a
profile asks for it (summation in double for RMSNorm, iterative float rope angles)."""

from __future__ import annotations

import numpy as np

from bitnet.model import record as _record


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w, the mean summed in double and the scale formed in float
    (ggml_compute_forward_rms_norm_f32)."""
    mean = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    scale = (1.0 / np.sqrt((mean + eps).astype(np.float32))).astype(np.float32)
    return (x * scale * w).astype(np.float32)


def rope_angles(positions: np.ndarray, head_dim: int, theta: float, iterative_f32: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of shape [T, head_dim/2] for NEOX rope.

    ggml builds the angles as pos * s^i with s = powf(base, -2/n_dims), multiplying by s once
    per pair in float; the exact form is pos * base^(-2i/n_dims)."""
    half = head_dim // 2
    pos = positions.astype(np.float32)
    if iterative_f32:
        s = np.float32(np.power(np.float32(theta), np.float32(-2.0) / np.float32(head_dim), dtype=np.float32))
        ang = np.empty((len(pos), half), np.float32)
        cur = pos.copy()
        for i in range(half):  # the loop is over head_dim/2 scalars per position, not weights
            ang[:, i] = cur
            cur = (cur * s).astype(np.float32)
        return np.cos(ang), np.sin(ang)
    inv = np.power(float(theta), -np.arange(half, dtype=np.float64) * 2.0 / head_dim)
    ang64 = positions.astype(np.float64)[:, None] * inv[None, :]
    return np.cos(ang64).astype(np.float32), np.sin(ang64).astype(np.float32)


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (i, i + head_dim/2) of x [T, heads, head_dim] (rotate_half / GGML NEOX)."""
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1).astype(np.float32)


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int, *,
                     q_f16: bool = False, probs_f16: bool = False) -> np.ndarray:
    """softmax(q k^T / sqrt(d) + causal mask) v with grouped KV heads.

    q [T, H, d] at absolute positions pos0..pos0+T-1; k, v [Hkv, S, d] for positions 0..S-1.
    Head h reads KV head h // (H / Hkv), as ggml's broadcasting mul_mat does. Returns [T, H*d].
    """
    t, h, d = q.shape
    hkv, s, _ = k.shape
    group = h // hkv
    qh = q.transpose(1, 0, 2)  # [H, T, d]
    if q_f16:
        qh = qh.astype(np.float16).astype(np.float32)
    qg = qh.reshape(hkv, group * t, d)
    kf = k.astype(np.float32)
    raw = qg @ kf.transpose(0, 2, 1)  # [Hkv, group*T, S]
    if _record._active is not None:  # named intermediates (bitnet.model.record): only when recording
        _record.tap("attn_scores", raw.reshape(h, t, s).transpose(1, 0, 2))
    scores = raw.reshape(hkv, group, t, s) / np.float32(np.sqrt(d))
    mask = np.arange(s)[None, :] > (pos0 + np.arange(t))[:, None]  # [T, S]
    scores = np.where(mask, -np.inf, scores).astype(np.float32)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    if probs_f16:
        p = p.astype(np.float16).astype(np.float32)
    if _record._active is not None:
        _record.tap("attn_probs", p.reshape(h, t, s).transpose(1, 0, 2))
    out = p.reshape(hkv, group * t, s) @ v.astype(np.float32)  # [Hkv, group*T, d]
    return out.reshape(h, t, d).transpose(1, 0, 2).reshape(t, h * d).astype(np.float32)


def relu2(x: np.ndarray) -> np.ndarray:
    r = np.maximum(x, 0)
    return (r * r).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x))).astype(np.float32)


FFN_ACT = {"relu2": relu2, "silu": silu}
