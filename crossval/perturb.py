"""Harmless perturbations: changes to our engine that a correct engine may differ by.

The counterpart of crossval.faults. Each perturbation is a float change that moves results by
rounding-level amounts only (a 1e-7 relative nudge of the residual, a sum in another order, a
softmax in float64): two correct engines differ from each other by changes of exactly this
kind. Ours against ours-perturbed is a correct pair with no second engine involved, so its
end-to-end divergence at a deep shape measures how far chaotic growth through the layers
carries a rounding-level difference (crossval.deep, issue 20 item 7).

Like faults, each patches the names `bitnet.model.bitnet_model` looks up at call time, for as
long as a `with perturb(name):` block lasts; build the model inside the block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crossval.faults import patched


@dataclass(frozen=True)
class Perturbation:
    name: str
    size: str
    apply: Callable[[Callable], None]


def _bm():
    import bitnet.model.bitnet_model as bm

    return bm


#: the relative size of the residual nudge (about one float32 ulp: 1.19e-7)
NUDGE = 1e-7


def residual_nudge(set_) -> None:
    """Layer 0's output residual x -> x * (1 + 1e-7 * n), n standard normal per element (a fixed
    pattern per shape, seeded): about a third of the elements move by one float32 ulp."""
    bm = _bm()
    real = bm.BitNetModel.block

    def block(self, i, layer, x, step):
        y = real(self, i, layer, x, step)
        if i != 0:
            return y
        n = np.random.default_rng(list(y.shape)).standard_normal(y.shape)
        return (y.astype(np.float64) * (1.0 + NUDGE * n)).astype(np.float32)

    set_(bm.BitNetModel, "block", block)


def rms_norm_float32_sum(set_) -> None:
    """RMSNorm with the mean of squares summed in float32 (NumPy's pairwise order) instead of
    float64 (both profiles' order): the sum differs by a few float32 ulps."""
    bm = _bm()

    def rms_norm(x, w, eps, ggml=False):
        x = np.asarray(x, np.float32)
        mean = np.square(x).sum(axis=-1, keepdims=True, dtype=np.float32) / np.float32(x.shape[-1])
        scale = (np.float32(1.0) / np.sqrt((mean + np.float32(eps)).astype(np.float32))).astype(np.float32)
        return ((x * scale).astype(np.float32) * w).astype(np.float32)

    set_(bm, "rms_norm", rms_norm)  # bitnet_model.norm then takes its NumPy path (not the native kernel)


def softmax_float64(set_) -> None:
    """Attention with the softmax in float64 (scores from float32 dots, Q rounded to F16 where
    the profile says so, probabilities rounded to F16 for one row where it says so, P.V in
    float32). Under a profile that emulates a ggml build's attention this also replaces the
    ggml-order dots by NumPy's order: another summation order, equally harmless."""
    bm = _bm()

    def attn(q, k, v, pos0, *, q_f16=False, probs_f16=False, ggml=False):
        t, h, d = q.shape
        hkv, s, _ = k.shape
        g = h // hkv
        fork = ggml is True or ggml == "bitnet.cpp"  # the fork rounds Q (and one row's probabilities) to F16
        qh = q.transpose(1, 0, 2)
        if q_f16 or fork:
            qh = qh.astype(np.float16).astype(np.float32)
        raw = qh.reshape(hkv, g * t, d) @ k.astype(np.float32).transpose(0, 2, 1)
        sc = raw.reshape(hkv, g, t, s).astype(np.float64) / np.sqrt(float(d))
        mask = np.arange(s)[None, :] > (pos0 + np.arange(t))[:, None]
        sc = np.where(mask, -np.inf, sc)
        e = np.exp(sc - sc.max(axis=-1, keepdims=True))
        p = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        if probs_f16 or (fork and t == 1):
            p = p.astype(np.float16).astype(np.float32)
        out = p.reshape(hkv, g * t, s) @ v.astype(np.float32)
        return out.reshape(h, t, d).transpose(1, 0, 2).reshape(t, h * d).astype(np.float32)

    set_(bm, "causal_attention", attn)


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in [
    Perturbation("residual_nudge_1e-7", "layer 0's output x (1 + 1e-7 N(0,1)) per element", residual_nudge),
    Perturbation("rms_norm_float32_sum", "RMSNorm mean of squares summed in float32", rms_norm_float32_sum),
    Perturbation("softmax_float64", "attention softmax in float64", softmax_float64),
]}


def perturb(name: str):
    """Patch perturbation `name` into the engine until the block ends (crossval.faults.patched)."""
    return patched(PERTURBATIONS[name].apply)
