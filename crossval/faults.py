"""Planted faults: realistic engine bugs, each patched into our engine for as long as a
`with plant(name):` block (or a pytest monkeypatch) lasts, so that tests and
`python -m crossval.calibrate --faults` can show the `exact` gate catches every one of them.

Each fault is a function `fault(setattr)` that replaces one name with `setattr(obj, name,
value)` (pytest's `monkeypatch.setattr`, or the restoring patcher below). Faults patch the
names `bitnet.model.bitnet_model` looks up at call time, so a model built inside the block
carries the bug; nothing here changes the engine's files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from bitnet.model.layerwise import SkipNorm as _Skip


@dataclass(frozen=True)
class Fault:
    name: str
    size: str  # what the bug is, in numbers
    apply: Callable[[Callable], None]
    #: False where the fault sits below the end-to-end floor of activation-rounding families and
    #: outside every layer (the lm_head); the default suite pins it directly instead
    #: (tests/test_profile_knobs.py)
    end_to_end: bool = True


def _bm():
    import bitnet.model.bitnet_model as bm

    return bm


def _profile_knob(set_, **changes) -> None:
    """Our profile with one knob flipped: the bug a profile table typo would be."""
    bm = _bm()
    real = bm.get_profile

    def get(name):
        p = real(name)
        kw = {k: (v(p) if callable(v) else v) for k, v in changes.items()}
        return dataclasses.replace(p, **kw)

    set_(bm, "get_profile", get)


def rms_eps_1e6(set_) -> None:
    bm = _bm()
    real = bm.rms_norm
    set_(bm, "rms_norm", lambda x, w, eps, ggml=False: real(x, w, eps / 10.0, ggml))


def kv_cache_wrong_dtype(set_) -> None:
    bm = _bm()
    real = bm.BitNetModel.new_cache

    def new_cache(self, max_ctx=None):
        c = real(self, max_ctx)
        flipped = np.float16 if c.dtype == np.float32 else np.float32
        return type(c).for_config(self.config, max_ctx, flipped)

    set_(bm.BitNetModel, "new_cache", new_cache)


def softmax_f16_no_max_subtraction(set_) -> None:
    """Attention probabilities formed in F16 straight from exp(score), no max subtracted."""
    from bitnet.model import record

    bm = _bm()
    real = bm.causal_attention

    def attn(q, k, v, pos0, *, q_f16=False, probs_f16=False, ggml=False):
        t, h, d = q.shape
        hkv, s, _ = k.shape
        g = h // hkv
        qh = q.transpose(1, 0, 2)
        if q_f16 or ggml is True or ggml == "bitnet.cpp":
            qh = qh.astype(np.float16).astype(np.float32)
        if ggml:  # the scores exactly as the unmodified ggml path forms them: the fault is in the softmax
            from bitnet.model.ggml_attention import scores

            kf = k.astype(np.float32)
            build = "bitnet.cpp" if ggml is True else str(ggml)
            raw = scores(qh, kf[np.arange(h) // g], build).reshape(hkv, g * t, s)
        else:
            raw = qh.reshape(hkv, g * t, d) @ k.astype(np.float32).transpose(0, 2, 1)
        record.tap("attn_scores", raw.reshape(h, t, s).transpose(1, 0, 2))  # an engine that names its ops
        sc = raw.reshape(hkv, g, t, s) / np.float32(np.sqrt(d))
        mask = np.arange(s)[None, :] > (pos0 + np.arange(t))[:, None]
        with np.errstate(over="ignore"):
            e = np.where(mask, 0, np.exp(sc.astype(np.float16))).astype(np.float16)
            p = (e / e.sum(axis=-1, keepdims=True, dtype=np.float16)).astype(np.float32)
        record.tap("attn_probs", p.reshape(h, t, s).transpose(1, 0, 2))
        out = p.reshape(hkv, g * t, s) @ v.astype(np.float32)
        return out.reshape(h, t, d).transpose(1, 0, 2).reshape(t, h * d).astype(np.float32)

    del real
    set_(bm, "causal_attention", attn)


def decode_position_off_by_one(set_) -> None:
    """The single-token (KV cache) path rotates at position n+1: prompt logits are untouched."""
    bm = _bm()
    real = bm.rope_angles

    def angles(positions, head_dim, theta, iterative):
        if len(positions) == 1 and positions[0] > 0:
            positions = positions + 1
        return real(positions, head_dim, theta, iterative)

    set_(bm, "rope_angles", angles)


def kv_position_off_by_one(set_) -> None:
    """The causal mask lets every position see one position ahead."""
    bm = _bm()
    real = bm.causal_attention
    set_(bm, "causal_attention", lambda q, k, v, pos0, **kw: real(q, k, v, pos0 + 1, **kw))


def _skip_norm(set_, which: str) -> None:
    bm = _bm()
    real_layer = bm.BitNetModel._layer

    def layer(self, i):
        lay = real_layer(self, i)
        field = next(f for f, g, dims in bm.LAYER_TENSORS if g == which and len(dims) == 1)
        return dataclasses.replace(lay, **{field: _Skip(getattr(lay, field))})

    real = bm.rms_norm
    set_(bm.BitNetModel, "_layer", layer)
    set_(bm, "rms_norm", lambda x, w, eps, ggml=False: x if isinstance(w, _Skip) else real(x, w, eps, ggml))




def attn_sub_norm_skipped(set_) -> None:
    _skip_norm(set_, "attn_sub_norm")


def ffn_sub_norm_skipped(set_) -> None:
    _skip_norm(set_, "ffn_sub_norm")


def weight_scale_off(set_) -> None:
    """One projection's scale off by 0.1% (blk.0.attn_output; a scale off on attn_v or any
    projection feeding a sub-norm would be normalized away)."""
    bm = _bm()
    real = bm.BitNetModel.linear

    def linear(self, p, x):
        y = real(self, p, x)
        return y * np.float32(1.001) if p is self.layers[0].wo else y

    set_(bm.BitNetModel, "linear", linear)


def _interleaved_rope(x, cos, sin, fma=False):
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


def rope_pairing_swapped(set_) -> None:
    """GPT-J pairing (i, i+1) instead of NEOX (i, i+d/2)."""
    set_(_bm(), "rope_neox", _interleaved_rope)


def tq2_0_bit_order_reversed(set_) -> None:
    from bitnet.quant import tq

    real = tq.tq2_0_codes

    def codes(raw, n):
        c, d = real(raw, n)
        return c.reshape(-1, 2, 4, 32)[:, :, ::-1, :].reshape(-1, 256).copy(), d

    set_(tq, "tq2_0_codes", codes)


def q_not_rounded_f16(set_) -> None:
    _profile_knob(set_, q_f16=lambda p: not p.q_f16)


def lm_head_input_rounding_flipped(set_) -> None:
    _profile_knob(set_, lm_head_f16=lambda p: not p.lm_head_f16,
                  single_row_f16=lambda p: p.single_row_f16 and p.lm_head_f16)


def activation_scheme_swapped(set_) -> None:
    """int8 per-token absmax where the profile says Q8_K blocks, and the reverse."""
    swap = {"q8_k-block256": "per-token-absmax", "per-token-absmax": "q8_k-block256"}
    _profile_knob(set_, act=lambda p: {k: swap.get(v, v) for k, v in p.act.items()})


FAULTS: dict[str, Fault] = {f.name: f for f in [
    Fault("rms_eps_1e-6", "RMSNorm eps 1e-6 instead of 1e-5", rms_eps_1e6),
    Fault("kv_cache_wrong_dtype", "KV cache F16 where the profile says F32 (and the reverse)", kv_cache_wrong_dtype),
    Fault("softmax_f16_no_max_sub", "attention softmax in F16 without max-subtraction", softmax_f16_no_max_subtraction),
    Fault("decode_position_off_by_one", "KV-cache decode step rotated at position n+1", decode_position_off_by_one),
    Fault("kv_position_off_by_one", "causal mask one position late", kv_position_off_by_one),
    Fault("attn_sub_norm_skipped", "attn_sub_norm not applied", attn_sub_norm_skipped),
    Fault("ffn_sub_norm_skipped", "ffn_sub_norm not applied", ffn_sub_norm_skipped),
    Fault("weight_scale_off_0.1pct", "blk.0.attn_output scale x1.001", weight_scale_off),
    Fault("rope_pairing_swapped", "rope pairs (i, i+1) instead of (i, i+d/2)", rope_pairing_swapped),
    Fault("tq2_0_bit_order_reversed", "TQ2_0 2-bit groups unpacked in reverse order", tq2_0_bit_order_reversed),
    Fault("q_f16_rounding_flipped", "profile knob q_f16 flipped (Q rounded to F16 or not)", q_not_rounded_f16),
    Fault("lm_head_f16_input_flipped", "profile knob lm_head_f16 flipped (~2e-4 relative on logits)",
          lm_head_input_rounding_flipped, end_to_end=False),
    Fault("activation_scheme_swapped", "Q8_K blocks <-> per-token absmax int8 activations", activation_scheme_swapped),
]}


@contextmanager
def patched(apply: Callable[[Callable[[object, str, object], None]], None]) -> Iterator[None]:
    """Run `apply(set_)`, where every `set_(obj, attr, value)` patches an attribute, until the
    block ends; the attributes are restored in reverse order (planted faults here, harmless
    perturbations in crossval.perturb)."""
    undo: list[tuple[object, str, object]] = []

    def set_(obj, attr, value):
        undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    try:
        apply(set_)
        yield
    finally:
        for obj, attr, old in reversed(undo):
            setattr(obj, attr, old)


def plant(name: str):
    """Patch fault `name` into the engine until the block ends (restored in reverse order)."""
    return patched(FAULTS[name].apply)
