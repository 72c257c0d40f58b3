"""The BitNet b1.58 transformer: weights bound to the kernel dispatcher, one forward pass.

Both arch strings share the layer; they differ in the FFN activation (ReLU^2 for
`bitnet-b1.58`, `{arch}.hidden_activation` else SiLU for upstream `bitnet`) and in where the weight
scale lives (inside the I2_S tensor, or an optional `blk.N.<proj>.scale` tensor multiplied after
the matmul). Projections never exist as float matrices here: `matmul` hands the packed tensor
to a kernel (AC12).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.errors import ConfigError, strict_enabled
from bitnet.gguf.reader import GGUFReader
from bitnet.kernels.dispatch import matmul
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.model.config import ModelConfig, read_config
from bitnet.model.kv_cache import KVCache
from bitnet.model.ops import FFN_ACT, causal_attention, rms_norm, rope_angles, rope_neox
from bitnet.model.profiles import NumericsProfile, default_profile, get_profile
from bitnet.quant.weights import PackedWeight, load_weight
from bitnet.validate.load import corrected_norm, validate_at_load

PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")


@dataclass(frozen=True)
class Layer:
    norms: dict[str, np.ndarray]  # name -> float32 [n]
    proj: dict[str, PackedWeight]
    scale: dict[str, float]  # optional per-projection scale tensors (upstream `bitnet`)


@contextmanager
def _kernel(kernel_id: str, bytes_read: int, rows: int):
    """Record a non-matmul op in the dispatcher's log, timed around the work itself."""
    t0 = time.perf_counter()
    yield
    KERNEL_LOG.record(kernel_id, bytes_read=bytes_read, rows=rows, seconds=time.perf_counter() - t0)


class BitNetModel:
    def __init__(self, path: str | os.PathLike[str], *, profile: str | None = None, strict: bool | None = None,
                 apply_corrections: bool = False, validate: bool = True):
        self.path = Path(path)
        self.strict = strict_enabled(strict)
        self.apply_corrections = apply_corrections
        self.reader = GGUFReader(self.path)
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
        c = self.config
        p = f"blk.{i}"
        sizes = {"attn_norm": c.n_embd, "attn_sub_norm": c.n_embd, "ffn_norm": c.n_embd, "ffn_sub_norm": c.n_ff}
        norms = {n: self._norm_tensor(f"{p}.{n}.weight", (sizes[n],)) for n in NORMS}
        shapes = {"attn_q": (c.n_embd, c.n_embd), "attn_k": (c.n_embd_kv, c.n_embd),
                  "attn_v": (c.n_embd_kv, c.n_embd), "attn_output": (c.n_embd, c.n_embd),
                  "ffn_gate": (c.n_ff, c.n_embd), "ffn_up": (c.n_ff, c.n_embd), "ffn_down": (c.n_embd, c.n_ff)}
        proj, scale = {}, {}
        names = self._names
        for n in PROJ:
            tname = f"{p}.{n}.weight"
            if tname not in names:
                raise ConfigError(f"{self.path}: missing tensor {tname}")
            w = load_weight(self.reader, tname, strict=self.strict)
            if (w.out_features, w.in_features) != shapes[n]:
                raise ConfigError(f"{self.path}: {tname} is [{w.out_features}, {w.in_features}] (out, in), expected {list(shapes[n])}")
            proj[n] = w
            sname = f"{p}.{n}.scale"
            if sname in names:
                s = self._float_tensor(sname, (1,))
                scale[n] = float(s[0])
        return Layer(norms, proj, scale)

    # -- forward ---------------------------------------------------------------------------
    def new_cache(self, max_ctx: int | None = None) -> KVCache:
        return KVCache.for_config(self.config, max_ctx, self.profile.kv_dtype)

    def _linear(self, x: np.ndarray, layer: Layer, name: str) -> np.ndarray:
        w = layer.proj[name]
        act = self.profile.act_for(w.flavor)
        if act in ("f16", "bf16"):  # llama.cpp converts activations to the weight's vec_dot_type
            x = x.astype(np.float16).astype(np.float32) if act == "f16" else _round_bf16(x)
            act = "none"
        y = matmul(x, w, act)
        return y * np.float32(layer.scale[name]) if name in layer.scale else y

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        c = self.config
        if tokens.size and (tokens.min() < 0 or tokens.max() >= c.n_vocab):
            raise ConfigError(f"token id out of range 0..{c.n_vocab - 1}: {tokens.tolist()}")
        with _kernel(f"get_rows_{self.tok_embd.dtype.name}_numpy", tokens.size * c.n_embd * self.tok_embd.itemsize, tokens.size):
            return self.tok_embd[tokens].astype(np.float32)

    def forward(self, tokens: np.ndarray, cache: KVCache, pos0: int, *, all_logits: bool = True) -> np.ndarray:
        """Logits [T, n_vocab] for tokens [T] at positions pos0.., appending K/V to the cache.
        With all_logits=False only the last position's row is computed ([1, n_vocab])."""
        c, prof = self.config, self.profile
        T = len(tokens)
        x = self.embed(np.asarray(tokens, dtype=np.int64))                   # [T, D]
        cos, sin = rope_angles(np.arange(pos0, pos0 + T), c.head_dim, c.rope_theta, prof.rope_iterative_f32)
        single = T == 1 and prof.single_row_f16
        for i, L in enumerate(self.layers):
            with _kernel("rms_norm_f32_numpy", x.nbytes, T):
                a = rms_norm(x, L.norms["attn_norm"], c.rms_eps)            # [T, D]
            q = self._linear(a, L, "attn_q").reshape(T, c.n_head, c.head_dim)
            k = self._linear(a, L, "attn_k").reshape(T, c.n_head_kv, c.head_dim)
            v = self._linear(a, L, "attn_v").reshape(T, c.n_head_kv, c.head_dim)
            with _kernel("rope_neox_f32_numpy", q.nbytes + k.nbytes, T):
                q, k = rope_neox(q, cos, sin), rope_neox(k, cos, sin)      # [T, H, hd], [T, Hkv, hd]
            cache.append(i, pos0, k.transpose(1, 0, 2), v.transpose(1, 0, 2))
            K, V = cache.view(i, pos0 + T)                                   # [Hkv, S, hd]
            with _kernel(f"attention_kv{np.dtype(cache.dtype).itemsize * 8}_numpy", K.nbytes + V.nbytes, T):
                o = causal_attention(q, K, V, pos0, q_f16=prof.q_f16, probs_f16=single)  # [T, H*hd]
            with _kernel("rms_norm_f32_numpy", o.nbytes, T):
                o = rms_norm(o, L.norms["attn_sub_norm"], c.rms_eps)
            x = x + self._linear(o, L, "attn_output")                        # [T, D]
            with _kernel("rms_norm_f32_numpy", x.nbytes, T):
                g = rms_norm(x, L.norms["ffn_norm"], c.rms_eps)
            gate, up = self._linear(g, L, "ffn_gate"), self._linear(g, L, "ffn_up")  # [T, F]
            with _kernel(f"ffn_{c.ffn_act}_mul_numpy", gate.nbytes + up.nbytes, T):
                f = FFN_ACT[c.ffn_act](gate) * up
            with _kernel("rms_norm_f32_numpy", f.nbytes, T):
                f = rms_norm(f, L.norms["ffn_sub_norm"], c.rms_eps)            # [T, F]
            x = x + self._linear(f, L, "ffn_down")                            # [T, D]
        if not all_logits:
            x = x[-1:]
        with _kernel("rms_norm_f32_numpy", x.nbytes, len(x)):
            x = rms_norm(x, self.output_norm, c.rms_eps)
        return self.lm_head(x, single)

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

