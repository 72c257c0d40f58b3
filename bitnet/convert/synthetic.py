"""Synthetic HF `BitNetForCausalLM` checkpoints (config.json, tokenizer.json, safetensors) for
tests and benchmarks: seeded random weights in the layout transformers saves, written with
NumPy alone (no torch), one tensor at a time.

`form="master"` writes float master weights (`dtype` bf16/f16/f32); `form="packed"` writes the
`BitNetQuantConfig` offline form: uint8 [out/4, in] codes (`transformers.integrations.bitnet.
pack_weights` layout) and a one-element `weight_scale` per projection.
The tokenizer is the harness's built-in byte-level BPE (`bitnet.synth.vocab`) written as an HF
tokenizer.json with LLaMA 3's pre-tokenizer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.convert.checkpoint import NORMS, PROJECTIONS
from bitnet.convert.tokenizer_json import LLAMA3_SPLIT
from bitnet.files.atomic import atomic_open
from bitnet.quant.floats import to_bf16_bits
from bitnet.synth.vocab import builtin_vocab


@dataclass(frozen=True)
class HFShape:
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int | None = None  # None: the built-in tokenizer's size
    max_position_embeddings: int = 256
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5


SHAPES = {
    "tiny": HFShape(),
    # microsoft/bitnet-b1.58-2B-4T (../shared/spec/MODEL.md)
    "2b-4t-shape": HFShape(2560, 6912, 30, 20, 5, 128256, 4096),
}
_ST = {"bf16": "BF16", "f16": "F16", "f32": "F32"}


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *name.encode()]))


def _float(a: np.ndarray, dtype: str) -> np.ndarray:
    return to_bf16_bits(a) if dtype == "bf16" else a.astype({"f16": "<f2", "f32": "<f4"}[dtype])


def tokenizer_json(vocab_size: int | None = None) -> tuple[dict, dict, int]:
    """(tokenizer.json, tokenizer_config.json, token count) for the built-in vocab."""
    v = builtin_vocab()
    n = len(v.tokens) - 3
    tok = {
        "version": "1.0",
        "added_tokens": [{"id": n + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(v.tokens[n:])],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {t: i for i, t in enumerate(v.tokens[:n])}, "merges": list(v.merges)},
    }
    tcfg = {"bos_token": v.tokens[v.bos_id], "eos_token": v.tokens[v.eos_id], "add_bos_token": True,
            "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, tcfg, len(v.tokens)


def write_checkpoint(
    out_dir: str | os.PathLike[str],
    shape: HFShape | str = "tiny",
    *,
    dtype: str = "bf16",
    form: str = "master",
    seed: int = 0,
    tied: bool = True,
    linear_class: str = "bitlinear",
) -> Path:
    """Write a checkpoint directory and return it."""
    s = SHAPES[shape] if isinstance(shape, str) else shape
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    tok, tcfg, n_tok = tokenizer_json()
    vocab = s.vocab_size or n_tok
    head_dim = s.hidden_size // s.num_attention_heads
    kv = s.num_key_value_heads * head_dim
    cfg = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": s.hidden_size, "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_hidden_layers, "num_attention_heads": s.num_attention_heads,
        "num_key_value_heads": s.num_key_value_heads, "vocab_size": vocab,
        "max_position_embeddings": s.max_position_embeddings, "rms_norm_eps": s.rms_norm_eps,
        "rope_theta": s.rope_theta, "tie_word_embeddings": tied, "torch_dtype": {"bf16": "bfloat16",
        "f16": "float16", "f32": "float32"}[dtype], "bos_token_id": n_tok - 3, "eos_token_id": n_tok - 2,
    }
    if form == "packed":
        cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": linear_class,
                                      "quantization_mode": "offline"}
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    (d / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (d / "tokenizer_config.json").write_text(json.dumps(tcfg))

    h, f = s.hidden_size, s.intermediate_size
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f)}
    tensors: list[tuple[str, str, tuple[int, ...], Callable[[], Iterator[np.ndarray]]]] = []

    def add_float(name: str, shp: tuple[int, ...], make: Callable[[], np.ndarray]) -> None:
        tensors.append((name, _ST[dtype], shp, lambda: iter([_float(make(), dtype)])))

    def embedding(name: str) -> Callable[[], Iterator[np.ndarray]]:
        def chunks() -> Iterator[np.ndarray]:  # row blocks: a 2B-4T embedding is 1.3 GB in float32
            rng = _rng(seed, name)
            for r in range(0, vocab, 8192):
                yield _float(0.05 * rng.standard_normal((min(8192, vocab - r), h), np.float32), dtype)
        return chunks

    tensors.append(("model.embed_tokens.weight", _ST[dtype], (vocab, h), embedding("embed")))
    add_float("model.norm.weight", (h,), lambda: 1 + 0.1 * _rng(seed, "norm").standard_normal(h, np.float32))
    if not tied:
        tensors.append(("lm_head.weight", _ST[dtype], (vocab, h), embedding("lm_head")))
    for i in range(s.num_hidden_layers):
        for hf in NORMS:
            n = f if hf == "mlp.ffn_sub_norm" else h
            name = f"model.layers.{i}.{hf}.weight"
            add_float(name, (n,), lambda n=n, name=name: 1 + 0.1 * _rng(seed, name).standard_normal(n, np.float32))
        for hf in PROJECTIONS:
            o, k = shapes[hf]
            name = f"model.layers.{i}.{hf}"
            if form == "master":
                add_float(name + ".weight", (o, k),
                          lambda o=o, k=k, name=name: _rng(seed, name).standard_normal((o, k), np.float32) / np.sqrt(k))
            else:
                def packed(o: int = o, k: int = k, name: str = name) -> np.ndarray:
                    t = _rng(seed, name).integers(0, 3, size=(4, o // 4, k), dtype=np.uint8)
                    return t[0] | t[1] << 2 | t[2] << 4 | t[3] << 6

                tensors.append((name + ".weight", "U8", (o // 4, k), lambda packed=packed: iter([packed()])))
                ws = float(np.sqrt(k) * (1.5 + _rng(seed, name + ".ws").random()))
                tensors.append((name + ".weight_scale", _ST[dtype], (1,),
                                lambda ws=ws: iter([_float(np.array([ws], np.float32), dtype)])))
    _write_safetensors(d / "model.safetensors", tensors)
    return d


def _write_safetensors(path: Path, tensors: list[tuple[str, str, tuple[int, ...], Callable[[], Iterator[np.ndarray]]]]) -> None:
    size = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dt, shp, _ in tensors:
        n = int(np.prod(shp)) * size[dt]
        header[name] = {"dtype": dt, "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_open(path) as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        for _name, _dt, _shp, make in tensors:
            for chunk in make():
                fh.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))


def main(argv: list[str] | None = None, io=None) -> int:
    """`python -m bitnet.convert.synthetic DIR [--shape tiny|2b-4t-shape] [--dtype bf16|f16|f32]
    [--packed] [--untied] [--seed N]`: write a synthetic checkpoint directory."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m bitnet.convert.synthetic", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--dtype", choices=sorted(_ST), default="bf16")
    ap.add_argument("--packed", action="store_true", help="BitNetQuantConfig offline form (uint8 codes + weight_scale)")
    ap.add_argument("--untied", action="store_true", help="write an lm_head.weight (tie_word_embeddings false)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    d = write_checkpoint(a.out_dir, a.shape, dtype=a.dtype, form="packed" if a.packed else "master", seed=a.seed,
                         tied=not a.untied)
    print(f"wrote {d} ({a.shape}, {'packed' if a.packed else a.dtype + ' master'} weights, seed {a.seed})",
          file=(io.stdout if io is not None else sys.stdout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
