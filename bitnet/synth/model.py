"""Deterministic synthetic BitNet models written as GGUF.

A synthetic model has the real structure of a BitNet b1.58 checkpoint (norms, sub-norms, GQA,
ternary projection weights times one scale per tensor, a real tokenizer in the metadata) and
random values drawn from a seeded generator, so tests and benchmarks get the same bytes on
every machine. Two layouts:

- `bitnet-b1.58` (Microsoft's bitnet.cpp): the scale lives inside the weight (I2_S keeps it
  after the codes; float formats store `ternary * scale`); embeddings are tied.
- `bitnet` (upstream llama.cpp): weights hold the bare ternary pattern and each projection has
  an F32 `blk.N.<name>.scale` tensor of shape [1] multiplied after the matmul.

Tensors are produced one at a time while the writer streams them to disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bitnet.errors import ConfigError
from bitnet.gguf.constants import ValueType
from bitnet.gguf.reader import GGUFReader
from bitnet.gguf.writer import GGUFWriter
from bitnet.model.dims import DIMS, VOCAB_SIZE, WRITE_ORDER, check_dims, check_value
from bitnet.quant.encoders import weight_format
from bitnet.quant.formats import Encoding
from bitnet.synth.vocab import builtin_vocab

ARCHS = ("bitnet-b1.58", "bitnet")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a BitNet model to write. Field names, GGUF keys and valid ranges come
    from `bitnet.model.dims.DIMS`, the same description `ModelConfig` is read with, so a shape
    synth accepts is one the reader accepts."""

    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    vocab_size: int | None = None  # embedding rows; None = the tokenizer's token count
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_dims({d.name: getattr(self, d.name) for d in DIMS}, "ModelShape")
        if self.vocab_size is not None:
            check_value(VOCAB_SIZE, self.vocab_size, "ModelShape")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


PRESETS: dict[str, ModelShape] = {
    # multiples of 256 everywhere, so every ternary format (TQ blocks, I2_S 128-blocks) applies
    "tiny": ModelShape(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_ctx=256),
    # microsoft/bitnet-b1.58-2B-4T (../shared/spec/MODEL.md)
    "2b-4t-shape": ModelShape(
        n_embd=2560, n_ff=6912, n_layer=30, n_head=20, n_head_kv=5, n_ctx=4096, vocab_size=128256
    ),
}

#: bitnet.cpp's lookup-table formats: the scale always lives in the tensor (`_add_projection`)
TL_FORMATS = ("tl1", "tl2")

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def projection_shapes(s: ModelShape) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each projection in one layer."""
    kv = s.n_head_kv * s.head_dim
    return {
        "attn_q": (s.n_embd, s.n_embd),
        "attn_k": (kv, s.n_embd),
        "attn_v": (kv, s.n_embd),
        "attn_output": (s.n_embd, s.n_embd),
        "ffn_gate": (s.n_ff, s.n_embd),
        "ffn_up": (s.n_ff, s.n_embd),
        "ffn_down": (s.n_embd, s.n_ff),
    }


def _tensor_rng(seed: int, name: str) -> np.random.Generator:
    """One independent stream per tensor: a model's tensors do not depend on the order in which
    they are generated, and one tensor can be regenerated alone."""
    key = [seed] + list(name.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence(key))


def weight_scale(seed: int, name: str, in_f: int) -> float:
    """The tensor's scale: the first draw of its stream (so it is known without the matrix).
    A trained layer's mean |W| is of this order; 1/sqrt(fan_in) keeps activations O(1)."""
    rng = _tensor_rng(seed, name)
    return float(np.float32(1.0 / np.sqrt(in_f) * (1.0 + 0.25 * rng.random())))


def ternary_weight(seed: int, name: str, out_f: int, in_f: int) -> tuple[np.ndarray, float]:
    """A ternary int8 matrix [out, in] (about a third zeros) and its scale."""
    rng = _tensor_rng(seed, name)
    scale = float(np.float32(1.0 / np.sqrt(in_f) * (1.0 + 0.25 * rng.random())))
    return rng.integers(-1, 2, size=(out_f, in_f), dtype=np.int8), scale


def _norm_weight(seed: int, name: str, n: int) -> np.ndarray:
    rng = _tensor_rng(seed, name)
    return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)


def _embedding(seed: int, rows: int, cols: int, dtype: str) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        rng = _tensor_rng(seed, "token_embd.weight")
        # small next to a layer's output, so tied logits are not dominated by the input token
        return (0.05 * rng.standard_normal((rows, cols), dtype=np.float32)).astype(dtype)

    return make


def synthesize(
    path: str | os.PathLike[str],
    *,
    preset: str | ModelShape = "tiny",
    arch: str = "bitnet-b1.58",
    fmt: str = "f32",
    seed: int = 0,
    vocab_gguf: str | os.PathLike[str] | None = None,
    embed_format: str | None = None,
    output_weight: bool = False,
    name: str | None = None,
    size_deviation: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic model and return its path (written atomically).

    `size_deviation` adds (or, negative, removes) that many bytes at the end of every
    projection tensor: a deliberately malformed file for strict-loader tests."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if isinstance(preset, str) and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    shape = PRESETS[preset] if isinstance(preset, str) else preset
    wf = weight_format(fmt)  # fails early on an unknown format
    embed_dtype = {"f32": "<f4", "f16": "<f2"}[(embed_format or ("f32" if fmt == "f32" else "f16")).lower()]

    w = GGUFWriter(path)
    tok_rows = _tokenizer_metadata(w, vocab_gguf, shape.vocab_size)
    vocab_rows = shape.vocab_size or tok_rows
    if vocab_rows < tok_rows:
        raise ConfigError(f"vocab_size {vocab_rows} is smaller than the tokenizer's {tok_rows} tokens")
    shape = replace(shape, vocab_size=vocab_rows)
    n_vocab: int = vocab_rows

    a = arch
    w.add("general.architecture", a)
    w.add("general.name", name or f"synthetic-{preset if isinstance(preset, str) else 'custom'}-{fmt}-seed{seed}")
    w.add("general.file_type", wf.file_type, ValueType.UINT32)
    w.add("general.quantization_version", 2, ValueType.UINT32)
    w.add("bitnet_harness.synthetic", True)
    w.add("bitnet_harness.seed", seed, ValueType.UINT32)
    w.add("bitnet_harness.weight_format", fmt)
    for d in WRITE_ORDER:
        w.add(f"{a}.{d.key}", getattr(shape, {"n_vocab": "vocab_size", "rope_dim": "head_dim"}.get(d.name, d.name)),
              d.gguf_type)
    shapes = projection_shapes(shape)
    extra = wf.shape_metadata(list(shapes.values())) if wf.shape_metadata else ()
    for key, value in (*wf.metadata, *extra):
        w.add(key, value, ValueType.ARRAY if isinstance(value, list) else None,
              ValueType.INT32 if isinstance(value, list) else None)

    w.add_tensor("token_embd.weight", _embedding(seed, n_vocab, shape.n_embd, embed_dtype),
                 shape=(shape.n_embd, n_vocab), gtype="F32" if embed_dtype == "<f4" else "F16")
    w.add_tensor("output_norm.weight", _norm_weight(seed, "output_norm.weight", shape.n_embd))
    if output_weight:
        w.add_tensor("output.weight", _embedding(seed + 1, n_vocab, shape.n_embd, embed_dtype),
                     shape=(shape.n_embd, n_vocab), gtype="F32" if embed_dtype == "<f4" else "F16")

    for i in range(shape.n_layer):
        p = f"blk.{i}"
        for norm, n in (("attn_norm", shape.n_embd), ("attn_sub_norm", shape.n_embd),
                        ("ffn_norm", shape.n_embd), ("ffn_sub_norm", shape.n_ff)):
            w.add_tensor(f"{p}.{norm}.weight", _norm_weight(seed, f"{p}.{norm}.weight", n))
        for proj in PROJECTIONS:
            out_f, in_f = shapes[proj]
            tname = f"{p}.{proj}.weight"
            _add_projection(w, wf, arch, seed, tname, out_f, in_f, size_deviation)
    return w.write(on_progress)


def _add_projection(w: GGUFWriter, wf: Encoding, arch: str, seed: int, tname: str, out_f: int, in_f: int,
                    size_deviation: int = 0) -> None:
    # The callable regenerates the tensor from its own seed stream when the writer reaches it,
    # so no weight is held in memory between declaration and writing.
    # Microsoft's layout folds the scale into the weight; upstream's (and formats that have no
    # room for a scale) keep the bare ternary pattern and a separate `.scale` tensor. TL1/TL2
    # exist only in bitnet.cpp, whose TL builds never load `.scale` tensors (src/llama.cpp
    # skips them under GGML_BITNET_*_TL*, so a file with them fails to load there): they keep
    # the scale in the tensor for both archs, as bitnet.cpp's converter writes them
    folded = wf.holds_scale and (arch == "bitnet-b1.58" or wf.name in TL_FORMATS)

    def make() -> np.ndarray:
        t, s = ternary_weight(seed, tname, out_f, in_f)
        data = wf.encode(t, s if folded else 1.0).view(np.uint8).reshape(-1)
        if size_deviation > 0:
            return np.concatenate([data, np.zeros(size_deviation, np.uint8)])
        return data[: data.size + size_deviation]

    w.add_tensor(tname, make, shape=(in_f, out_f), gtype=wf.gtype, nbytes=wf.nbytes(out_f, in_f) + size_deviation)
    if not folded:
        scale = np.array([weight_scale(seed, tname, in_f)], np.float32)
        w.add_tensor(tname.removesuffix(".weight") + ".scale", scale)


def _tokenizer_metadata(w: GGUFWriter, vocab_gguf: str | os.PathLike[str] | None, pad_to: int | None = None) -> int:
    """Copy `tokenizer.*` keys from a vocab GGUF, or add the built-in vocab; returns the token
    count. The built-in vocab is padded to `pad_to` tokens with reserved control tokens (as
    LLaMA 3 pads to 128256): llama.cpp takes n_vocab from the token list and refuses an
    embedding with more rows than tokens."""
    if vocab_gguf is None:
        v = builtin_vocab()
        if pad_to is not None and pad_to > len(v.tokens):
            extra = pad_to - len(v.tokens)
            v = replace(v, tokens=[*v.tokens, *(f"<|reserved_special_token_{k}|>" for k in range(extra))],
                        token_types=[*v.token_types, *([3] * extra)])
        for key, value, vt, et in v.metadata():
            w.add(key, value, vt, et)
        return len(v.tokens)
    with GGUFReader(vocab_gguf) as r:
        fields = [f for k, f in r.fields.items() if k.startswith("tokenizer.")]
        if "tokenizer.ggml.tokens" not in r.fields:
            raise ConfigError(f"{vocab_gguf}: no tokenizer.ggml.tokens; not a vocab GGUF")
        w.add_fields(fields)
        return len(r.fields["tokenizer.ggml.tokens"].value)
