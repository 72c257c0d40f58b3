"""A small built-in byte-level BPE vocabulary, so a synthetic model needs no download.

It is a real GPT-2-style vocabulary (256 byte tokens in GPT-2's printable byte mapping, merges
learned deterministically from a short embedded corpus, LLaMA-3-style special tokens) stored
with the same `tokenizer.ggml.*` keys llama.cpp reads, so the project's tokenizer and
libllama's both load it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import regex

from bitnet.gguf.constants import ValueType
from bitnet.tokenizer.bpe import bytes_to_unicode

_CORPUS = """\
BitNet b1.58 is a large language model whose weights take only three values: minus one, zero
and plus one. Each linear layer multiplies eight-bit activations with ternary weights, so the
inner loop needs additions and subtractions instead of multiplications. The model reads a
prompt, predicts the next token, and repeats until it reaches the end of the text.
The quick brown fox jumps over the lazy dog. A test that cannot fail is not a test; a number
that was not measured is not a result. We compare logits position by position, and we write
down what we measured, on which machine, with which version of the code.
def forward(x, weights):
    for layer in weights.layers:
        x = x + layer.attention(layer.norm(x))
        x = x + layer.feed_forward(layer.ffn_norm(x))
    return x
Numbers such as 3.14159, 2560, 6912 and 128256 appear in model files; so do names like
token_embd.weight, blk.0.attn_q.weight and output_norm.weight.
"""

SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")
_PRE_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")




@dataclass(frozen=True)
class BuiltinVocab:
    tokens: list[str]
    token_types: list[int]  # llama.cpp: 1 normal, 3 control
    merges: list[str]
    bos_id: int
    eos_id: int
    eot_id: int

    def metadata(self, pre: str = "llama-bpe") -> list[tuple[str, object, ValueType, ValueType | None]]:
        """(key, value, type, element type) rows for a GGUF writer."""
        return [
            ("tokenizer.ggml.model", "gpt2", ValueType.STRING, None),
            ("tokenizer.ggml.pre", pre, ValueType.STRING, None),
            ("tokenizer.ggml.tokens", self.tokens, ValueType.ARRAY, ValueType.STRING),
            ("tokenizer.ggml.token_type", self.token_types, ValueType.ARRAY, ValueType.INT32),
            ("tokenizer.ggml.merges", self.merges, ValueType.ARRAY, ValueType.STRING),
            ("tokenizer.ggml.bos_token_id", self.bos_id, ValueType.UINT32, None),
            ("tokenizer.ggml.eos_token_id", self.eos_id, ValueType.UINT32, None),
            ("tokenizer.ggml.eot_token_id", self.eot_id, ValueType.UINT32, None),
            ("tokenizer.ggml.add_bos_token", True, ValueType.BOOL, None),
        ]


@lru_cache(maxsize=4)
def builtin_vocab(n_merges: int = 250) -> BuiltinVocab:
    """Train `n_merges` BPE merges on the embedded corpus (deterministic: ties broken by the
    pair's text) over the 256 byte tokens, then append the special tokens."""
    b2u = bytes_to_unicode()
    words = Counter(
        tuple(b2u[b] for b in piece.encode("utf-8")) for piece in _PRE_SPLIT.findall(_CORPUS)
    )
    tokens = [b2u[b] for b in range(256)]
    known = set(tokens)
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:], strict=False):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        merges.append(f"{a} {b}")
        if a + b not in known:
            tokens.append(a + b)
            known.add(a + b)
        new_words: Counter[tuple[str, ...]] = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    types = [1] * len(tokens)
    base = len(tokens)
    tokens += list(SPECIAL_TOKENS)
    types += [3] * len(SPECIAL_TOKENS)
    return BuiltinVocab(tokens, types, merges, bos_id=base, eos_id=base + 1, eot_id=base + 2)
