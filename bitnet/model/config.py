"""Model configuration read from GGUF keys, never from class defaults.

A missing required key is an error that names the key. Two keys that llama.cpp and bitnet.cpp
silently default (`attention.head_count_kv` -> head_count, `rope.freq_base` -> 10000) are
defaulted the same way with a warning naming the key, and refused in strict mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bitnet.errors import ConfigError, StrictModeError, strict_enabled
from bitnet.gguf.reader import GGUFReader

log = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("bitnet-b1.58", "bitnet")

#: keys a BitNet model cannot be built without (suffixes of `{arch}.`)
REQUIRED = ("context_length", "embedding_length", "block_count", "feed_forward_length",
            "attention.head_count", "attention.layer_norm_rms_epsilon")
#: keys the C++ engines default silently, and the value they use
ENGINE_DEFAULTS = {"rope.freq_base": 10000.0}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    rope_dim: int
    n_vocab: int  # rows of token_embd (the padded vocab size)
    ffn_act: str  # "relu2" (bitnet-b1.58) or "silu" (upstream bitnet default)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim


def read_config(reader: GGUFReader, *, strict: bool | None = None) -> ModelConfig:
    strict = strict_enabled(strict)
    arch = reader.architecture
    if arch is None:
        raise ConfigError(f"{reader.path}: missing key general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ConfigError(f"{reader.path}: architecture {arch!r} is not a BitNet arch {SUPPORTED_ARCHS}")

    def req(suffix: str):
        key = f"{arch}.{suffix}"
        if key not in reader.fields:
            raise ConfigError(f"{reader.path}: missing required key {key}")
        return reader.get(key)

    def defaulted(suffix: str, default, why: str):
        key = f"{arch}.{suffix}"
        if key in reader.fields:
            return reader.get(key)
        if strict:
            raise StrictModeError(f"{reader.path}: missing key {key} (strict mode refuses the default {default!r}, {why})")
        log.warning("missing key %s: using %r as llama.cpp/bitnet.cpp do (%s)", key, default, why)
        return default

    n_embd, n_head = int(req("embedding_length")), int(req("attention.head_count"))
    n_head_kv = int(defaulted("attention.head_count_kv", n_head, "head_count_kv = head_count"))
    if n_head <= 0 or n_embd % n_head:
        raise ConfigError(f"{reader.path}: embedding_length {n_embd} is not a multiple of head_count {n_head}")
    if n_head_kv <= 0 or n_head % n_head_kv:
        raise ConfigError(f"{reader.path}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    head_dim = n_embd // n_head
    rope_dim = int(reader.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ConfigError(f"{reader.path}: rope.dimension_count {rope_dim} != head_dim {head_dim}; partial rope is not a BitNet layout")
    try:
        emb = reader.tensor("token_embd.weight")
    except KeyError:
        raise ConfigError(f"{reader.path}: missing tensor token_embd.weight") from None
    if emb.shape[0] != n_embd:
        raise ConfigError(f"{reader.path}: token_embd.weight has ne0={emb.shape[0]}, expected embedding_length {n_embd}")
    n_vocab = emb.shape[1] if len(emb.shape) > 1 else 1
    if arch == "bitnet-b1.58":
        act = "relu2"
    else:
        # upstream's graph (src/models/bitnet.cpp) uses SiLU; revisions after llama-cpp-python
        # 0.3.36 read an optional `{arch}.hidden_activation` (LLM_KV_HIDDEN_ACT) first
        act = str(reader.get(f"{arch}.hidden_activation", "silu")).lower()
        act = {"relu2": "relu2", "relu_squared": "relu2", "silu": "silu", "swish": "silu"}.get(act, act)
        if act not in ("relu2", "silu"):
            raise ConfigError(f"{reader.path}: {arch}.hidden_activation {act!r} is not supported (relu2, silu)")
    cfg = ModelConfig(
        arch=arch,
        n_embd=n_embd,
        n_ff=int(req("feed_forward_length")),
        n_layer=int(req("block_count")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ctx=int(req("context_length")),
        rms_eps=float(req("attention.layer_norm_rms_epsilon")),
        rope_theta=float(defaulted("rope.freq_base", ENGINE_DEFAULTS["rope.freq_base"], "rope theta")),
        rope_dim=rope_dim,
        n_vocab=int(n_vocab),
        ffn_act=act,
    )
    for name, v in (("feed_forward_length", cfg.n_ff), ("block_count", cfg.n_layer), ("context_length", cfg.n_ctx)):
        if v <= 0:
            raise ConfigError(f"{reader.path}: {arch}.{name} must be positive, got {v}")
    return cfg
