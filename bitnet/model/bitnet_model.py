"""The BitNet b1.58 transformer: weights bound to the kernel dispatcher, one forward pass.

Both arch strings share the layer; they differ in the FFN activation (ReLU^2 for
`bitnet-b1.58`, `{arch}.hidden_activation` else SiLU for upstream `bitnet`) and in where the weight
scale lives (inside the I2_S tensor, or an optional `blk.N.<proj>.scale` tensor multiplied after
the matmul). Projections never exist as float matrices here: `matmul` hands the packed tensor
to a kernel (AC12).

The forward pass reads like the model: `block()` is `x + attention(norm(x))` then
`x + ffn(norm(x))`; `attention()` and `ffn()` are the BitNet sublayers with their sub-norms.
The numerics profile is one value (`self.profile`); the timing of the non-matmul ops for the
run log is done by the `@timed_op` wrappers below, not in the math.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import ConfigError, strict_enabled
from bitnet.gguf.reader import GGUFReader
from bitnet.kernels.activations import fused_round_ties
from bitnet.kernels.dispatch import matmul
from bitnet.kernels.ids import KernelId
from bitnet.kernels.runlog import timed
from bitnet.model import native_layer as _native_layer
from bitnet.model import record as _record
from bitnet.model.config import ModelConfig, read_config
from bitnet.model.kv_cache import KVCache
from bitnet.model.native_layer import NativeBlocks
from bitnet.model.ops import (
    FFN_ACT,
    FFN_ACT_GGML,
    causal_attention,
    rms_norm,
    rope_angles,
    rope_neox,
    silu_ggml,
)
from bitnet.model.profiles import NumericsProfile, default_profile, get_profile
from bitnet.quant.weights import PackedWeight, load_weight
from bitnet.validate.load import corrected_norm, validate_at_load

#: Every tensor of block N, in one table: (Layer field, GGUF name after `blk.N.`, shape from the
#: config in NumPy order). Norms are [n]; projections are [out, in] and may have an optional
#: `blk.N.<name>.scale` tensor (upstream `bitnet`).
LAYER_TENSORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("attn_norm", "attn_norm", ("n_embd",)),
    ("attn_sub_norm", "attn_sub_norm", ("n_embd",)),
    ("ffn_norm", "ffn_norm", ("n_embd",)),
    ("ffn_sub_norm", "ffn_sub_norm", ("n_ff",)),
    ("wq", "attn_q", ("n_embd", "n_embd")),
    ("wk", "attn_k", ("n_embd_kv", "n_embd")),
    ("wv", "attn_v", ("n_embd_kv", "n_embd")),
    ("wo", "attn_output", ("n_embd", "n_embd")),
    ("w_gate", "ffn_gate", ("n_ff", "n_embd")),
    ("w_up", "ffn_up", ("n_ff", "n_embd")),
    ("w_down", "ffn_down", ("n_embd", "n_ff")),
)
NORMS = tuple(g for _, g, dims in LAYER_TENSORS if len(dims) == 1)
PROJ = tuple(g for _, g, dims in LAYER_TENSORS if len(dims) == 2)


@dataclass(frozen=True)
class Linear:
    """A BitLinear projection: the packed weight and its optional separate scale."""

    weight: PackedWeight
    scale: float | None = None  # blk.N.<proj>.scale, multiplied after the matmul


@dataclass(frozen=True)
class Layer:
    attn_norm: np.ndarray  # float32 [n_embd]
    attn_sub_norm: np.ndarray
    ffn_norm: np.ndarray
    ffn_sub_norm: np.ndarray  # float32 [n_ff]
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    w_gate: Linear
    w_up: Linear
    w_down: Linear

    @property
    def norms(self) -> dict[str, np.ndarray]:
        """GGUF norm name -> weight (the arrays the forward pass uses)."""
        return {g: getattr(self, f) for f, g, dims in LAYER_TENSORS if len(dims) == 1}

    @property
    def proj(self) -> dict[str, PackedWeight]:
        """GGUF projection name -> packed weight."""
        return {g: getattr(self, f).weight for f, g, dims in LAYER_TENSORS if len(dims) == 2}


@dataclass(frozen=True)
class Step:
    """What every block of one forward call shares."""

    cache: KVCache
    pos0: int
    cos: np.ndarray  # [T, head_dim/2]
    sin: np.ndarray
    single: bool  # a one-row step under a profile with bitnet.cpp's single-row F16 rounding


# -- the non-matmul ops, timed into the run log ---------------------------------------------
def timed_op(describe: Callable[..., tuple[KernelId, int, int]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record each call of the wrapped op in the run log as (kernel id, bytes, rows), where
    `describe` computes those from the op's arguments."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def op(*args: Any) -> Any:
            kid, nbytes, rows = describe(*args)
            with timed(kid, nbytes, rows):
                return fn(*args)

        return op

    return wrap


def _numpy_op(op: str, tag: str = "") -> KernelId:
    return KernelId("", tag, op, "numpy")


def _native_glue(name: str = "") -> bool:
    """Whether the element-wise op `name` of bitnet.model.ops runs in C: under the native
    backend (its C versions are bit-identical to the NumPy ones, which stay the reference), and
    only while this module's name for it is still that function: a planted fault
    (crossval.faults) that replaces it is honoured under every backend."""
    from bitnet.kernels import dispatch
    from bitnet.model import ops

    return dispatch.get_backend() == "native" and (not name or globals().get(name) is getattr(ops, name))


@timed_op(lambda x, w, eps, ggml=False: (
    KernelId("", "f32", "rms_norm_ggml" if ggml else "rms_norm", "native" if _native_glue("rms_norm") else "numpy"),
    x.nbytes, len(x)))
def norm(x: np.ndarray, w: np.ndarray, eps: float, ggml: bool = False) -> np.ndarray:
    """RMSNorm of each row; `ggml` (profile knob rms_ggml) in ggml's arithmetic, and the kernel
    id says which form ran (rms_norm_ggml_f32_* or rms_norm_f32_*)."""
    if _native_glue("rms_norm"):  # C versions of both forms, bit-identical to ops.rms_norm's
        from bitnet.kernels.native import backend as nb

        return nb.rms_norm(x, w, eps, ggml)
    return rms_norm(x, w, eps, ggml)


@timed_op(lambda q, k, cos, sin, fma=False: (
    KernelId("", "f32", "rope_neox", "native" if _native_glue("rope_neox") else "numpy"),
    q.nbytes + k.nbytes, len(q)))
def rope(q: np.ndarray, k: np.ndarray, cos: np.ndarray, sin: np.ndarray,
         fma: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if _native_glue("rope_neox"):
        from bitnet.kernels.native import backend as nb

        return nb.rope_neox(q, cos, sin), nb.rope_neox(k, cos, sin)
    if fma:  # bitnet.cpp profiles on the NumPy backend: gcc's fused form
        return rope_neox(q, cos, sin, fma=True), rope_neox(k, cos, sin, fma=True)
    return rope_neox(q, cos, sin), rope_neox(k, cos, sin)


def _native_attention(ggml: bool | str) -> bool:
    """ggml-order attention (`ggml` True or "bitnet.cpp", or "llama.cpp") runs in C under the
    native backend (attention.c, bit-identical to bitnet.model.ggml_attention); BLAS-order
    attention (`ggml` False) stays NumPy."""
    return (ggml is True or ggml in ("bitnet.cpp", "llama.cpp")) and _native_glue("causal_attention")


@timed_op(lambda q, K, V, pos0, q_f16, probs_f16, ggml=False: (
    KernelId("", f"kv{K.dtype.itemsize * 8}", "attention", "native" if _native_attention(ggml) else "numpy"),
    K.nbytes + V.nbytes, len(q)))
def attend(q: np.ndarray, K: np.ndarray, V: np.ndarray, pos0: int, q_f16: bool, probs_f16: bool,
           ggml: bool | str = False) -> np.ndarray:
    if _native_attention(ggml):
        from bitnet.kernels.native import backend as nb

        build = "bitnet.cpp" if ggml is True else str(ggml)
        if build == "llama.cpp" and q_f16:  # as causal_attention does for a profile asking for it
            q = np.asarray(q, np.float32).astype(np.float16).astype(np.float32)
        out, scores, probs = nb.attention_ggml(q, K, V, pos0, build=build, taps=_record.active() is not None)
        if scores is not None and probs is not None:  # what the NumPy emulation taps (bitnet.model.record)
            _record.tap("attn_scores", scores)
            _record.tap("attn_probs", probs)
        return out
    if ggml:
        return causal_attention(q, K, V, pos0, q_f16=q_f16, probs_f16=probs_f16, ggml=ggml)
    return causal_attention(q, K, V, pos0, q_f16=q_f16, probs_f16=probs_f16)


@timed_op(lambda act, gate, up, ggml=False: (
    KernelId("", "", f"ffn_{act}_mul", "native" if act == "relu2" and _native_glue()
             and _record.active() is None else "numpy"), gate.nbytes + up.nbytes, len(gate)))
def gated(act: str, gate: np.ndarray, up: np.ndarray, ggml: bool = False) -> np.ndarray:
    # SiLU stays in NumPy under every backend: its exp is NumPy's own, which C's expf need not
    # match; and a recorded run (bitnet.model.record) keeps the unfused form to tap `ffn_act`
    if act == "relu2" and _native_glue() and _record.active() is None:
        from bitnet.kernels.native import backend as nb

        return nb.relu2_mul(gate, up)
    f = (FFN_ACT_GGML if ggml else FFN_ACT)[act]
    if f is silu_ggml and _native_glue():  # ggml_v_expf in C, same bits (ac38); the rest stays NumPy
        from bitnet.kernels.native import backend as nb

        a = f(gate, nb.v_expf)
    else:
        a = f(gate)
    _record.tap("ffn_act", a)
    return a * up


@timed_op(lambda table, tokens: (_numpy_op("get_rows", table.dtype.name), tokens.size * table.shape[1] * table.itemsize,
                                 tokens.size))
def get_rows(table: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    return table[tokens].astype(np.float32)


class BitNetModel:
    def __init__(self, path: str | os.PathLike[str], *, profile: str | None = None, strict: bool | None = None,
                 apply_corrections: bool = False, validate: bool = True, weights: str | None = None):
        from bitnet.settings import settings

        self.path = Path(path)
        self.strict = strict_enabled(strict)
        self.apply_corrections = apply_corrections
        #: where the file's bytes live: "mmap" or "memory" (BITNET_WEIGHTS; bitnet.gguf.reader)
        self.weights: str = settings().weights if weights is None else weights
        self.reader = GGUFReader(self.path, residency=self.weights)
        r = self.reader
        self.config: ModelConfig = read_config(r, strict=self.strict)
        c = self.config
        self.tok_embd = self._float_tensor("token_embd.weight", (c.n_vocab, c.n_embd), allow_f16=True)
        self.output_norm = self._norm_tensor("output_norm.weight", (c.n_embd,))
        self._names = {t.name for t in r.tensors}
        self.output = None
        if "output.weight" in self._names:
            self.output = self._float_tensor("output.weight", (c.n_vocab, c.n_embd), allow_f16=True)
        self.layers = [self._layer(i) for i in range(c.n_layer)]
        flavors = {w.flavor for layer in self.layers for w in layer.proj.values()}
        self.flavors = flavors
        self.profile: NumericsProfile = get_profile(profile or default_profile(c.arch, flavors))
        for f in flavors:
            self.profile.act_for(f)  # an unsupported (profile, format) pair fails at load, not mid-run
        self.weight_bytes = sum(w.nbytes for layer in self.layers for w in layer.proj.values())
        head = self.lm_head_matrix
        self.head_weight = PackedWeight("lm_head", "f16" if head.dtype == np.float16 else "f32",
                                        head.shape[0], head.shape[1], head)
        # the validation policy (AC19), after the loader's own structural checks; `validate=False`
        # only for tests that must run a deliberately broken model
        self.validation = validate_at_load(r, strict=self.strict, apply_corrections=apply_corrections) if validate else None
        self.corrections = [c.to_json() for c in self.validation.corrections] if self.validation else []
        self.numpy_cache_bytes = self._numpy_cache()

    def _numpy_cache(self) -> int:
        """BITNET_NUMPY_CACHE's decoded copies, built when the NumPy backend runs this model
        (bitnet.kernels.numpy_cache); bytes added."""
        from bitnet.settings import settings

        mode = settings().numpy_cache
        if mode == "off":
            return 0
        from bitnet.kernels import dispatch, numpy_cache

        if dispatch.get_backend() != "numpy":
            return 0
        ws = [w for layer in self.layers for w in layer.proj.values()] + [self.head_weight]
        return numpy_cache.apply(ws, mode, what=str(self.path))

    @property
    def lm_head_matrix(self) -> np.ndarray:
        return self.tok_embd if (self.output is None or self.profile.lm_head_tok_embd) else self.output

    @property
    def bytes_per_token(self) -> int:
        """Weight bytes one decode step reads: every projection, the lm_head matrix and one
        embedding row (what a receipt's decode kernels must account for)."""
        return int(self.weight_bytes + self.lm_head_matrix.nbytes + self.tok_embd.shape[1] * self.tok_embd.itemsize)

    # -- loading ---------------------------------------------------------------------------
    def _tensor_info(self, name: str):
        try:
            return self.reader.tensor(name)
        except KeyError:
            raise ConfigError(f"{self.path}: missing tensor {name}") from None

    def _float_tensor(self, name: str, np_shape: tuple[int, ...], allow_f16: bool = False) -> np.ndarray:
        t = self._tensor_info(name)
        if t.np_shape != np_shape:
            raise ConfigError(f"{self.path}: tensor {name} has shape {list(t.np_shape)}, expected {list(np_shape)}")
        kinds = ("F32", "F16") if allow_f16 else ("F32",)
        if t.type_name not in kinds:
            raise ConfigError(f"{self.path}: tensor {name} is {t.type_name}; expected {' or '.join(kinds)}")
        return self.reader.array(t)

    def _norm_tensor(self, name: str, np_shape: tuple[int, ...]) -> np.ndarray:
        """A norm's gains; with apply_corrections, the policy's norm-to-f32 widens F16/BF16 ones."""
        t = self._tensor_info(name)
        if self.apply_corrections and t.type_name != "F32" and t.np_shape == np_shape:
            fixed = corrected_norm(self.reader, t, self.config.arch)
            if fixed is not None:
                return fixed
        return self._float_tensor(name, np_shape)

    def _layer(self, i: int) -> Layer:
        """Block i's tensors, by the LAYER_TENSORS table, shapes checked against the config."""
        c, names = self.config, self._names
        fields: dict[str, Any] = {}
        for field, gname, dims in LAYER_TENSORS:
            shape = tuple(getattr(c, d) for d in dims)
            tname = f"blk.{i}.{gname}.weight"
            if len(shape) == 1:
                fields[field] = self._norm_tensor(tname, shape)
                continue
            if tname not in names:
                raise ConfigError(f"{self.path}: missing tensor {tname}")
            w = load_weight(self.reader, tname, strict=self.strict)
            if (w.out_features, w.in_features) != shape:
                raise ConfigError(f"{self.path}: {tname} is [{w.out_features}, {w.in_features}] (out, in), expected {list(shape)}")
            sname = f"blk.{i}.{gname}.scale"
            scale = float(self._float_tensor(sname, (1,))[0]) if sname in names else None
            fields[field] = Linear(w, scale)
        return Layer(**fields)

    # -- forward ---------------------------------------------------------------------------
    def new_cache(self, max_ctx: int | None = None) -> KVCache:
        return KVCache.for_config(self.config, max_ctx, self.profile.kv_dtype)

    def forward(self, tokens: np.ndarray, cache: KVCache, pos0: int, *, all_logits: bool = True) -> np.ndarray:
        """Logits [T, n_vocab] for tokens [T] at positions pos0.., appending K/V to the cache.
        With all_logits=False only the last position's row is computed ([1, n_vocab])."""
        c, prof = self.config, self.profile
        T = len(tokens)
        x = self.embed(np.asarray(tokens, dtype=np.int64))                   # [T, D]
        _record.tap("embed", x)  # named intermediates: no-ops unless bitnet.model.record.recording()
        cos, sin = rope_angles(np.arange(pos0, pos0 + T), c.head_dim, c.rope_theta,
                               prof.rope_iterative_f32)
        step = Step(cache, pos0, cos, sin, single=T == 1 and prof.single_row_f16)
        blocks = NativeBlocks.for_model(self)  # two native calls per block, when bit-identical
        for i, layer in enumerate(self.layers):
            x = blocks.block(i, x, step) if blocks else self.block(i, layer, x, step)
        _record.enter_layer(None)
        if not all_logits:
            x = x[-1:]
        x = norm(x, self.output_norm, c.rms_eps, prof.rms_ggml)
        _record.tap("result_norm", x)
        logits = self.lm_head(x, step.single)
        _record.tap("logits", logits)
        return logits

    def block(self, i: int, layer: Layer, x: np.ndarray, step: Step) -> np.ndarray:
        eps = self.config.rms_eps
        _record.enter_layer(i)
        a = norm(x, layer.attn_norm, eps, self.profile.rms_ggml)
        a = _record.tap_forced("attn_norm", a)
        x = x + self.attention(i, layer, a, step)
        x = _record.tap_forced("attn_residual", x)
        g = norm(x, layer.ffn_norm, eps, self.profile.rms_ggml)
        g = _record.tap_forced("ffn_norm", g)
        x = x + self.ffn(layer, g)
        _record.tap("l_out", x)
        return x

    def attention(self, i: int, layer: Layer, a: np.ndarray, step: Step) -> np.ndarray:
        """Causal self-attention of block i with grouped K/V heads and the BitNet sub-norm."""
        c, T = self.config, len(a)
        q = self.linear(layer.wq, a).reshape(T, c.n_head, c.head_dim)
        _record.tap("q_proj", q)
        k = self.linear(layer.wk, a).reshape(T, c.n_head_kv, c.head_dim)
        _record.tap("k_proj", k)
        v = self.linear(layer.wv, a).reshape(T, c.n_head_kv, c.head_dim)
        _record.tap("v_proj", v)
        q, k = rope(q, k, step.cos, step.sin, False)                                # [T, H, hd], [T, Hkv, hd]
        _record.tap("q_rope", q)
        _record.tap("k_rope", k)
        step.cache.append(i, step.pos0, k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        K, V = step.cache.view(i, step.pos0 + T)                             # [Hkv, S, hd]
        o = attend(q, K, V, step.pos0, self.profile.q_f16, step.single, self.profile.attn_build or False)  # [T, H*hd]
        o = _record.tap_forced("attn_out", o)
        o = norm(o, layer.attn_sub_norm, c.rms_eps, self.profile.rms_ggml)
        o = _record.tap_forced("attn_sub_norm", o)
        o = self.linear(layer.wo, o)
        _record.tap("attn_o", o)
        return o

    def ffn(self, layer: Layer, g: np.ndarray) -> np.ndarray:
        """The gated FFN (ReLU^2 or SiLU gate) with the BitNet sub-norm."""
        gate = self.linear(layer.w_gate, g)
        _record.tap("ffn_gate", gate)
        up = self.linear(layer.w_up, g)
        _record.tap("ffn_up", up)
        f = gated(self.config.ffn_act, gate, up, self.profile.attn_ggml)  # [T, F]
        f = _record.tap_forced("ffn_gated", f)
        f = norm(f, layer.ffn_sub_norm, self.config.rms_eps, self.profile.rms_ggml)
        f = _record.tap_forced("ffn_sub_norm", f)
        f = self.linear(layer.w_down, f)
        _record.tap("ffn_down", f)
        return f

    def linear(self, p: Linear, x: np.ndarray) -> np.ndarray:
        """A BitLinear projection through the dispatcher, activations treated as the profile
        says for this weight's format."""
        act = self.profile.act_for(p.weight.flavor)
        if act == "per-token-absmax" and self.profile.i8_fused_round:
            x = fused_round_ties(x)
        if act in ("f16", "bf16"):  # llama.cpp converts activations to the weight's vec_dot_type
            x = x.astype(np.float16).astype(np.float32) if act == "f16" else _round_bf16(x)
            act = "none"
        y = matmul(x, p.weight, act)
        return y * np.float32(p.scale) if p.scale is not None else y

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        c = self.config
        if tokens.size and (tokens.min() < 0 or tokens.max() >= c.n_vocab):
            raise ConfigError(f"token id out of range 0..{c.n_vocab - 1}: {tokens.tolist()}")
        return get_rows(self.tok_embd, tokens)

    def lm_head(self, x: np.ndarray, single_row_f16: bool) -> np.ndarray:
        """x [T, D] -> logits [T, V] against token_embd (or output.weight under the reference
        profile), through the dispatcher as a float-weight matmul (the NumPy kernel widens
        the F16 matrix a chunk of rows at a time)."""
        if (single_row_f16 or self.profile.lm_head_f16) and self.head_weight.flavor == "f16":
            x = x.astype(np.float16).astype(np.float32)
        return matmul(x, self.head_weight, "none")

    def close(self) -> None:
        self.reader.close()


def _round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even) and back, as ggml's FP32_TO_BF16 does."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return r.view(np.float32)


_native_layer._remember()  # the per-op path's functions, before any fault can replace them
