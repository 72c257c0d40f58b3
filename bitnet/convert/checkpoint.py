"""An HF `BitNetForCausalLM` checkpoint directory: its config, its tensors (over every
safetensors shard), and which form its projection weights take.

Forms of the seven projection weights (`q/k/v/o_proj`, `gate/up/down_proj`):
- `master`: float (bf16/f16/f32) master weights, ternarised at conversion by absmean, as the
  model does on every forward (`transformers` `WeightQuant`, `AutoBitLinear` online, and both
  upstream converters' `weight_quant`).
- `packed`: `BitNetQuantConfig` offline weights (`quant_method: bitnet`): uint8 [out/4, in],
  output row `i*out/4 + r` in bits `2i` of row r, code - 1 = the ternary value, and a
  one-element `weight_scale`. What the scale means depends on the linear class the config
  names (`transformers/integrations/bitnet.py`): `bitlinear` (the default) computes
  `(q @ w) / (weight_scale * s_act)`, so the tensor scale is `1 / weight_scale`;
  `autobitlinear` offline computes `F.linear(x, w) * weight_scale`, so it is `weight_scale`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.convert.errors import CheckpointError
from bitnet.convert.safetensors_io import SafetensorsFile, TensorInfo

ARCHITECTURES = ("BitNetForCausalLM", "BitnetForCausalLM")
PROJECTIONS = {  # HF module path in a layer -> GGUF name
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
NORMS = {  # HF name in a layer -> GGUF name
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.attn_sub_norm": "attn_sub_norm", "mlp.ffn_sub_norm": "ffn_sub_norm",
}
#: the FFN activation each GGUF arch's graph hard-codes (llama.cpp src/models/bitnet.cpp: SiLU;
#: bitnet.cpp's bitnet-b1.58: relu2, as HF BitNetForCausalLM)
ACT_ARCH = {"relu2": "bitnet-b1.58", "silu": "bitnet"}
#: tensors the converters drop (rotary caches some checkpoints carry)
IGNORED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


@dataclass(frozen=True)
class HFConfig:
    """The `config.json` values the conversion uses (names as in transformers' BitNetConfig)."""

    architecture: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    head_dim: int
    hidden_act: str
    quant: dict[str, Any] = field(default_factory=dict)  # quantization_config, {} when absent

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def projection_shape(self, gguf_name: str) -> tuple[int, int]:
        """(out_features, in_features) of a projection."""
        h, f, q = self.hidden_size, self.intermediate_size, self.num_attention_heads * self.head_dim
        return {"attn_q": (q, h), "attn_k": (self.kv_dim, h), "attn_v": (self.kv_dim, h),
                "attn_output": (h, q), "ffn_gate": (f, h), "ffn_up": (f, h), "ffn_down": (h, f)}[gguf_name]


_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def read_config(model_dir: Path) -> HFConfig:
    path = model_dir / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{model_dir}: no config.json; not an HF checkpoint directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: a JSON {type(cfg).__name__}, expected an object")
    archs = cfg.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: architectures = {archs!r}; bitnet convert reads "
                              f"{' / '.join(ARCHITECTURES)} checkpoints only")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise CheckpointError(f"{path}: missing config key(s) {', '.join(missing)} (needed for the GGUF header)")

    def integer(key: str, default: int | None = None) -> int:
        v = cfg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CheckpointError(f"{path}: {key} = {v!r}, expected a positive integer")
        return v

    def number(key: str, default: float) -> float:
        v = cfg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise CheckpointError(f"{path}: {key} = {v!r}, expected a positive number")
        return float(v)

    heads = integer("num_attention_heads")
    hidden = integer("hidden_size")
    kv = integer("num_key_value_heads", heads)
    head_dim = integer("head_dim", hidden // heads if hidden % heads == 0 else None)
    if heads % kv:
        raise CheckpointError(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    if head_dim * heads != hidden:
        raise CheckpointError(f"{path}: head_dim {head_dim} x num_attention_heads {heads} != hidden_size "
                              f"{hidden}; the GGUF BitNet archs need q to span the hidden size")
    act = cfg.get("hidden_act", "relu2")
    if act not in ACT_ARCH:
        raise CheckpointError(f"{path}: hidden_act = {act!r}; the GGUF BitNet archs compute relu2 "
                              "(bitnet-b1.58) or silu (bitnet) only")
    # transformers >= 5 saves rope settings as `rope_parameters`; older configs as rope_theta and
    # rope_scaling. BitNetConfig's defaults apply when a key is absent (rope_theta 10000).
    rp = cfg.get("rope_parameters") or {}
    if not isinstance(rp, dict):
        raise CheckpointError(f"{path}: rope_parameters = {rp!r}, expected an object")
    rs = cfg.get("rope_scaling") or {}
    rope_type = rp.get("rope_type") or rs.get("rope_type") or rs.get("type") or "default"
    factor = rp.get("factor", rs.get("factor", 1.0))
    if rope_type not in ("default", "linear") or factor != 1.0:
        raise CheckpointError(f"{path}: rope {rope_type!r} with factor {factor!r}: only unscaled rope converts")
    rope_theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    quant = cfg.get("quantization_config") or {}
    if quant and quant.get("quant_method") != "bitnet":
        raise CheckpointError(f"{path}: quantization_config.quant_method = {quant.get('quant_method')!r}; "
                              "only unquantized master weights or quant_method 'bitnet' convert")
    if quant.get("use_rms_norm"):
        raise CheckpointError(f"{path}: quantization_config.use_rms_norm adds an RMSNorm inside every "
                              "linear layer; no GGUF BitNet arch has it")
    return HFConfig(
        architecture=arch, hidden_size=hidden, intermediate_size=integer("intermediate_size"),
        num_hidden_layers=integer("num_hidden_layers"), num_attention_heads=heads, num_key_value_heads=kv,
        vocab_size=integer("vocab_size"), max_position_embeddings=integer("max_position_embeddings", 2048),
        rms_norm_eps=number("rms_norm_eps", 1e-5), rope_theta=_positive(path, "rope_theta", rope_theta),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), head_dim=head_dim,
        hidden_act=act, quant=dict(quant))


def _positive(path: Path, key: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise CheckpointError(f"{path}: {key} = {v!r}, expected a positive number")
    return float(v)


class Checkpoint:
    """The tensors of every safetensors shard of a checkpoint directory, read lazily."""

    def __init__(self, model_dir: str | os.PathLike[str]):
        self.dir = Path(model_dir)
        if not self.dir.is_dir():
            raise CheckpointError(f"{self.dir}: not a directory (an HF checkpoint is a directory with "
                                  "config.json and *.safetensors)")
        self.config = read_config(self.dir)
        self._stack = ExitStack()
        self.tensors: dict[str, TensorInfo] = {}
        self._files: dict[Path, SafetensorsFile] = {}
        shards = self._shards()
        try:
            for p in shards:
                f = self._stack.enter_context(SafetensorsFile(p))
                self._files[p] = f
                for name, info in f.tensors.items():
                    if name in self.tensors:
                        raise CheckpointError(f"{p}: tensor {name!r} is also in {self.tensors[name].path.name}")
                    self.tensors[name] = info
        except BaseException:
            self._stack.close()
            raise

    def _shards(self) -> list[Path]:
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            try:
                wm = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = list(dict.fromkeys(wm.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index (weight_map): {e}") from None
            shards = [self.dir / n for n in names]
            gone = [s.name for s in shards if not s.is_file()]
            if gone:
                raise CheckpointError(f"{index}: names shard(s) not in the directory: {', '.join(gone)}")
            return shards
        shards = sorted(self.dir.glob("*.safetensors"))
        if not shards:
            hint = " (PyTorch .bin checkpoints are not read: convert them to safetensors first)" \
                if any(self.dir.glob("*.bin")) else ""
            raise CheckpointError(f"{self.dir}: no *.safetensors file{hint}")
        return shards

    def has(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.dir}: tensor {name!r} is missing from the checkpoint") from None

    def raw(self, name: str) -> np.ndarray:
        info = self.info(name)
        return self._files[info.path].raw(name)

    def names(self) -> Iterator[str]:
        return iter(self.tensors)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
