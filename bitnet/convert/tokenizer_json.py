"""An HF `tokenizer.json` (byte-level BPE, LLaMA 3 style) -> `tokenizer.ggml.*` GGUF metadata.

What llama.cpp's converters write for such a tokenizer (`_set_vocab_gpt2` + gguf-py's
`SpecialVocab`): model `gpt2`; the vocab in id order, ids without a token padded as `[PAD<id>]`
up to the config's vocab_size (type USER_DEFINED); added tokens typed CONTROL when `special`,
USER_DEFINED otherwise, the rest NORMAL; the merges (pair-form merges joined with a space, a
space inside a part written as U+0120 + 256, as gguf-py does); bos/eos from tokenizer_config.json
(or config.json ids); add_bos_token from tokenizer_config.json; the chat template.

The pre-tokenizer type (`tokenizer.ggml.pre`) is what llama.cpp's converter finds by hashing the
tokenization of a probe text with transformers. Here it is read from the tokenizer's own
pre-tokenizer: the LLaMA 3 split regex is `llama-bpe`, plain GPT-2 byte-level is `gpt-2`; any
other is an error unless the caller names the type (`--tokenizer-pre`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bitnet.convert.checkpoint import CheckpointError
from bitnet.gguf.constants import ValueType

NORMAL, USER_DEFINED, CONTROL = 1, 4, 3
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

Row = tuple[str, Any, ValueType, ValueType | None]


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read it as JSON: {e}") from None


def _pre_type(tok: dict, path: Path) -> str:
    pt = tok.get("pre_tokenizer") or {}
    steps = pt.get("pretokenizers", [pt]) if pt.get("type") == "Sequence" else [pt]
    splits = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if splits == [LLAMA3_SPLIT]:
        return "llama-bpe"
    if not splits and any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return "gpt-2"
    raise CheckpointError(f"{path}: pre-tokenizer {json.dumps(pt)[:200]} is neither LLaMA 3's split nor "
                          "GPT-2 byte-level; name its llama.cpp type with --tokenizer-pre")


def _merges(raw: list, path: Path) -> list[str]:
    out = []
    for m in raw:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in p) for p in m))
        else:
            raise CheckpointError(f"{path}: merge {m!r} is neither 'a b' nor ['a', 'b']")
    return out


def _token_id(spec: Any, vocab: dict[str, int]) -> int | None:
    content = spec.get("content") if isinstance(spec, dict) else spec
    return vocab.get(content) if isinstance(content, str) else None


def tokenizer_metadata(model_dir: Path, vocab_size: int, pre: str | None = None) -> list[Row]:
    """The `tokenizer.*` rows for a GGUF writer: from `tokenizer.model` (SentencePiece) when
    there is one, as both upstream converters prefer it, else from `tokenizer.json`."""
    if (model_dir / "tokenizer.model").is_file():
        from bitnet.convert.tokenizer_spm import spm_metadata

        return spm_metadata(model_dir, vocab_size, lambda vocab: _special_rows(model_dir, vocab, vocab_size))
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: neither tokenizer.json nor tokenizer.model")
    tok = _load(path)
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{path}: model.type = {model.get('type')!r}; only byte-level BPE tokenizers convert")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["content"]: a for a in tok.get("added_tokens") or [] if isinstance(a, dict) and "content" in a}
    for content, a in added.items():
        vocab.setdefault(content, int(a["id"]))
    top = max(vocab.values(), default=-1)
    if top >= vocab_size:
        raise CheckpointError(f"{path}: token id {top} is outside config.json's vocab_size {vocab_size}")
    by_id: dict[int, str] = {}
    for text, i in vocab.items():
        if i in by_id:
            raise CheckpointError(f"{path}: id {i} names two tokens ({by_id[i]!r}, {text!r})")
        by_id[i] = text
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(USER_DEFINED)
        elif text in added:
            tokens.append(text)
            types.append(CONTROL if added[text].get("special") else USER_DEFINED)
        else:
            tokens.append(text)
            types.append(NORMAL)
    rows: list[Row] = [
        ("tokenizer.ggml.model", "gpt2", ValueType.STRING, None),
        ("tokenizer.ggml.pre", pre or _pre_type(tok, path), ValueType.STRING, None),
        ("tokenizer.ggml.tokens", tokens, ValueType.ARRAY, ValueType.STRING),
        ("tokenizer.ggml.token_type", types, ValueType.ARRAY, ValueType.INT32),
    ]
    merges = _merges(model.get("merges") or [], path)
    if merges:
        rows.append(("tokenizer.ggml.merges", merges, ValueType.ARRAY, ValueType.STRING))
    return rows + _special_rows(model_dir, vocab, vocab_size)


def _special_rows(model_dir: Path, vocab: dict[str, int], vocab_size: int) -> list[Row]:
    """Special token ids, add_bos/add_eos and the chat template (gguf-py's SpecialVocab: from
    tokenizer_config.json, ids from config.json when it names none)."""
    rows: list[Row] = []
    tcfg_path = model_dir / "tokenizer_config.json"
    tcfg = _load(tcfg_path) if tcfg_path.is_file() else {}
    cfg = _load(model_dir / "config.json")
    for kind, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        tid = _token_id(tcfg.get(f"{kind}_token"), vocab)
        if tid is None and isinstance(cfg.get(f"{kind}_token_id"), int):
            tid = cfg[f"{kind}_token_id"]
        if tid is not None and 0 <= tid < vocab_size:
            rows.append((f"tokenizer.ggml.{key}", tid, ValueType.UINT32, None))
    for flag in ("add_bos_token", "add_eos_token"):
        if isinstance(tcfg.get(flag), bool):
            rows.append((f"tokenizer.ggml.{flag}", tcfg[flag], ValueType.BOOL, None))
    template = tcfg.get("chat_template")
    if isinstance(template, str):
        rows.append(("tokenizer.chat_template", template, ValueType.STRING, None))
    return rows
