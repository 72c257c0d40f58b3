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
from bitnet.model.dims import DIMS, ROPE_DIM, VOCAB_SIZE, Dim, check_dims, check_value

log = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("bitnet-b1.58", "bitnet")

#: keys a BitNet model cannot be built without (suffixes of `{arch}.`)
REQUIRED = tuple(d.key for d in DIMS if d.key not in ("attention.head_count_kv", "rope.freq_base"))
#: keys the C++ engines default silently, and the value they use
ENGINE_DEFAULTS = {"rope.freq_base": 10000.0}
ENGINE_DEFAULTS_BY_FIELD = {
    "attention.head_count_kv": (None, "head_count_kv = head_count"),
    "rope.freq_base": (ENGINE_DEFAULTS["rope.freq_base"], "rope theta 10000"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Validated dimensions (`bitnet.model.dims.DIMS` names them, with their keys and ranges)."""

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

    def kv_bytes(self, n_ctx: int | None = None, itemsize: int = 4) -> int:
        """Bytes a KV cache of n_ctx positions (default: the full context) needs."""
        n = self.n_ctx if n_ctx is None else n_ctx
        return 2 * self.n_layer * n * self.n_embd_kv * itemsize


def read_config(reader: GGUFReader, *, strict: bool | None = None) -> ModelConfig:
    """The one place GGUF metadata becomes a typed, range-checked `ModelConfig` (see
    `bitnet.model.dims`); everything downstream trusts its fields."""
    strict = strict_enabled(strict)
    where = reader.path
    arch = reader.architecture
    if arch is None:
        raise ConfigError(f"{where}: missing key general.architecture")
    if not isinstance(arch, str):
        raise ConfigError(f"{where}: general.architecture must be a string, found {type(arch).__name__}")
    if arch not in SUPPORTED_ARCHS:
        raise ConfigError(f"{where}: architecture {arch[:60]!r} is not a BitNet arch {SUPPORTED_ARCHS}")

    def raw(d: Dim):
        key = f"{arch}.{d.key}"
        if key in reader.fields:
            return reader.get(key)
        if d.key in ENGINE_DEFAULTS_BY_FIELD:
            default, why = ENGINE_DEFAULTS_BY_FIELD[d.key]
            if strict:
                raise StrictModeError(f"{where}: missing key {key} (strict mode refuses the default, {why})")
            log.warning("missing key %s: using the default as llama.cpp/bitnet.cpp do (%s)", key, why)
            return None
        raise ConfigError(f"{where}: missing required key {key}")

    values = {d.name: raw(d) for d in DIMS}
    if values["n_head"] is not None and values["n_head_kv"] is None:
        values["n_head_kv"] = values["n_head"]
    if values["rope_theta"] is None:
        values["rope_theta"] = ENGINE_DEFAULTS["rope.freq_base"]
    v = check_dims(values, where)
    head_dim = v["n_embd"] // v["n_head"]
    rope_dim = head_dim
    if f"{arch}.{ROPE_DIM.key}" in reader.fields:
        rope_dim = check_value(ROPE_DIM, reader.get(f"{arch}.{ROPE_DIM.key}"), where)
    if rope_dim != head_dim:
        raise ConfigError(f"{where}: rope.dimension_count {rope_dim} != head_dim {head_dim}; partial rope is not a BitNet layout")
    if head_dim % 2:
        raise ConfigError(f"{where}: head_dim {head_dim} is odd; RoPE rotates pairs of dimensions")
    try:
        emb = reader.tensor("token_embd.weight")
    except KeyError:
        raise ConfigError(f"{where}: missing tensor token_embd.weight") from None
    if emb.shape[0] != v["n_embd"]:
        raise ConfigError(f"{where}: token_embd.weight has ne0={emb.shape[0]}, expected embedding_length {v['n_embd']}")
    if len(emb.shape) != 2:
        raise ConfigError(f"{where}: token_embd.weight has {len(emb.shape)} dims {list(emb.shape)}, expected 2 "
                          "[embedding_length, vocab]")
    n_vocab = check_value(VOCAB_SIZE, int(emb.shape[1]), f"{where}: token_embd.weight rows")
    if arch == "bitnet-b1.58":
        act = "relu2"
    else:
        # upstream's graph (src/models/bitnet.cpp) uses SiLU; revisions after llama-cpp-python
        # 0.3.36 read an optional `{arch}.hidden_activation` (LLM_KV_HIDDEN_ACT) first
        act_v = reader.get(f"{arch}.hidden_activation", "silu")
        if not isinstance(act_v, str):
            raise ConfigError(f"{where}: {arch}.hidden_activation must be a string, found {type(act_v).__name__}")
        act = act_v.lower()
        act = {"relu2": "relu2", "relu_squared": "relu2", "silu": "silu", "swish": "silu"}.get(act, act)
        if act not in ("relu2", "silu"):
            raise ConfigError(f"{where}: {arch}.hidden_activation {act[:40]!r} is not supported (relu2, silu)")
    return ModelConfig(arch=arch, rope_dim=rope_dim, n_vocab=n_vocab, ffn_act=act, **v)
