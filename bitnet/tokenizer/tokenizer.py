"""Tokenizers built from a GGUF's `tokenizer.ggml.*` metadata, mirroring llama.cpp
(`src/llama-vocab.cpp`, llama-cpp-python 0.3.36) step by step:

- special-token partition (`tokenizer_st_partition`): text is split on every occurrence of the
  special tokens, longest first; with parse_special=False only USER_DEFINED tokens split;
- BPE (`gpt2`): pre-tokenizer split, GPT-2 byte-to-unicode mapping, merges by rank (lowest
  first, leftmost on ties), `ignore_merges` for LLaMA-3 (a word that is a token is taken
  whole), and llama.cpp's byte fallback for symbols that are not tokens;
- SentencePiece (`llama`): spaces escaped to U+2581 with a leading one when `add_space_prefix`,
  bigram merges by score (highest first, leftmost on ties), `resegment` through the last
  recorded merge of each text, and `<0xNN>` byte fallback.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bitnet.errors import BitNetError
from bitnet.gguf.reader import GGUFReader
from bitnet.tokenizer.pretokenize import ADD_BOS_BY_DEFAULT, PRE_TYPES, split
from bitnet.vocab import bytes_to_unicode

log = logging.getLogger("bitnet.tokenizer")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class TokenizerError(BitNetError, ValueError):
    """The tokenizer metadata is missing or inconsistent, or a request cannot be served."""


@dataclass
class Vocab:
    model: str  # "gpt2" or "llama"
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: dict[tuple[str, str], int]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    pre: str | None
    n_vocab: int  # the model's embedding rows (>= len(tokens))

    def __post_init__(self) -> None:
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}
        specials = [i for i, ty in enumerate(self.types) if ty in (CONTROL, USER_DEFINED, UNKNOWN) and self.tokens[i]]
        # longest text first, as llama.cpp sorts its special-token cache
        self.specials = sorted(specials, key=lambda i: -len(self.tokens[i].encode("utf-8", "surrogateescape")))


def _special_id(r: GGUFReader, key: str, n: int, default: int | None) -> int | None:
    v = r.get(f"tokenizer.ggml.{key}")
    if v is None:
        return default
    v = int(v)
    return v if 0 <= v < n else default


def read_vocab(r: GGUFReader) -> Vocab:
    model = r.get("tokenizer.ggml.model")
    if model is None:
        raise TokenizerError(f"{r.path}: no tokenizer.ggml.model key: the file carries no tokenizer")
    tokens_f = r.fields.get("tokenizer.ggml.tokens")
    if tokens_f is None:
        raise TokenizerError(f"{r.path}: no tokenizer.ggml.tokens")
    tokens = list(tokens_f.value)
    n = len(tokens)
    types_v = r.get("tokenizer.ggml.token_type")
    types = [int(t) for t in types_v] if types_v is not None else [NORMAL] * n
    if len(types) != n:
        raise TokenizerError(f"{r.path}: {len(types)} token types for {n} tokens")
    scores_v = r.get("tokenizer.ggml.scores")
    scores = [float(s) for s in scores_v] if scores_v is not None else None
    merges: dict[tuple[str, str], int] = {}
    if model == "gpt2":
        raw = r.get("tokenizer.ggml.merges")
        if raw is None:
            raise TokenizerError(f"{r.path}: a gpt2 (BPE) tokenizer needs tokenizer.ggml.merges")
        for rank, m in enumerate(raw):
            pos = m.find(" ", 1)
            if pos > 0:
                merges[(m[:pos], m[pos + 1:])] = rank
    elif model == "llama":
        if scores is None:
            raise TokenizerError(f"{r.path}: a llama (SentencePiece) tokenizer needs tokenizer.ggml.scores")
    else:
        raise TokenizerError(f"{r.path}: tokenizer model {model!r} is not supported (gpt2, llama)")
    spm = model == "llama"
    arch = r.architecture
    n_vocab = n
    if arch and r.get(f"{arch}.vocab_size") is not None:
        n_vocab = max(n, int(r.get(f"{arch}.vocab_size")))
    emb = next((t for t in r.tensors if t.name == "token_embd.weight"), None)
    if emb is not None and len(emb.shape) == 2:
        n_vocab = max(n_vocab, emb.shape[1])
    add_bos = r.get("tokenizer.ggml.add_bos_token")
    add_eos = r.get("tokenizer.ggml.add_eos_token")
    asp = r.get("tokenizer.ggml.add_space_prefix")
    return Vocab(
        model=model, tokens=tokens, types=types, scores=scores, merges=merges,
        bos_id=_special_id(r, "bos_token_id", n, 1 if spm else 11),
        eos_id=_special_id(r, "eos_token_id", n, 2 if spm else 11),
        eot_id=_special_id(r, "eot_token_id", n, None),
        add_bos=bool(add_bos) if add_bos is not None else (spm or r.get("tokenizer.ggml.pre") in ADD_BOS_BY_DEFAULT),
        add_eos=bool(add_eos) if add_eos is not None else False,
        add_space_prefix=bool(asp) if asp is not None else spm,
        pre=r.get("tokenizer.ggml.pre"),
        n_vocab=n_vocab,
    )


class Tokenizer:
    """encode/decode for one vocabulary. Use `load_tokenizer`."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._cache: dict[str, list[int]] = {}
        if vocab.model == "gpt2":
            pre = vocab.pre
            if pre is None:
                log.warning("tokenizer.ggml.pre is missing: using llama.cpp's 'default' pre-tokenizer, "
                            "as llama.cpp and bitnet.cpp do for such files")
                pre = "default"
            if pre not in PRE_TYPES:
                raise TokenizerError(f"pre-tokenizer {pre!r} is not supported; supported: {', '.join(sorted(PRE_TYPES))}")
            self.pre_family, self.ignore_merges = PRE_TYPES[pre]
            b2u = bytes_to_unicode()
            self._b2u = b2u
            self._u2b = {c: b for b, c in b2u.items()}
            self._byte_char = [b2u[b] for b in range(256)]

    # -- facts -------------------------------------------------------------------------------
    @property
    def real_vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return len(self.vocab.tokens)

    @property
    def vocab_size(self) -> int:
        """The model's (padded) vocabulary size: the embedding rows when larger."""
        return self.vocab.n_vocab

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        return self.vocab.eot_id

    def is_eog(self, token: int) -> bool:
        return token in {i for i in (self.eos_id, self.eot_id) if i is not None}

    # -- encode ------------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        v = self.vocab
        out: list[int] = []
        fragments = self._partition(text, parse_special) if text else []
        if v.model == "llama":
            prev_special = True
            if add_special and v.add_bos and v.bos_id is not None:
                out.append(v.bos_id)
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                    prev_special = True
                    continue
                s = (" " if v.add_space_prefix and prev_special else "") + frag
                out.extend(self._spm(s.replace(" ", "\u2581")))
                prev_special = False
            if add_special and v.add_eos and v.eos_id is not None:
                out.append(v.eos_id)
            return out
        if add_special and v.add_bos and v.bos_id is not None:
            out.append(v.bos_id)
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
            else:
                for word in split(frag, self.pre_family):
                    out.extend(self._bpe_word(word))
        if add_special and v.add_eos and v.eos_id is not None:
            out.append(v.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        frags: list[str | int] = [text]
        v = self.vocab
        for sid in v.specials:
            if not parse_special and v.types[sid] in (CONTROL, UNKNOWN):
                continue
            st = v.tokens[sid]
            nxt: list[str | int] = []
            for f in frags:
                if isinstance(f, int) or st not in f:
                    nxt.append(f)
                    continue
                parts = f.split(st)
                for i, p in enumerate(parts):
                    if p:
                        nxt.append(p)
                    if i < len(parts) - 1:
                        nxt.append(sid)
            frags = nxt
        return frags

    def _bpe_word(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        mapped = "".join(self._byte_char[b] for b in word.encode("utf-8", "surrogatepass"))
        ids = self._bpe(mapped)
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def _bpe(self, word: str) -> list[int]:
        t2i, merges = self.vocab.token_to_id, self.vocab.merges
        if self.ignore_merges and word in t2i:
            return [t2i[word]]
        syms = list(word)
        n = len(syms)
        if n > 1:
            prev = list(range(-1, n - 1))
            nxt = list(range(1, n + 1))
            nxt[-1] = -1
            heap: list[tuple[int, int, int, str]] = []

            def push(left: int, right: int) -> None:
                if left == -1 or right == -1:
                    return
                rank = merges.get((syms[left], syms[right]))
                if rank is not None:
                    heapq.heappush(heap, (rank, left, right, syms[left] + syms[right]))

            for i in range(1, n):
                push(i - 1, i)
            while heap:
                _, left, right, text = heapq.heappop(heap)
                if not syms[left] or not syms[right] or syms[left] + syms[right] != text:
                    continue
                syms[left] = text
                syms[right] = ""
                nxt[left] = nxt[right]
                if nxt[right] >= 0:
                    prev[nxt[right]] = left
                push(prev[left], left)
                push(left, nxt[left])
        out: list[int] = []
        for s in syms:
            if not s:
                continue
            tid = t2i.get(s)
            if tid is not None:
                out.append(tid)
                continue
            # llama.cpp looks each UTF-8 byte of the symbol up as a one-byte string; only ASCII
            # bytes can be tokens, the others are dropped (as they are there)
            for b in s.encode("utf-8"):
                tid = t2i.get(chr(b)) if b < 0x80 else None
                if tid is not None:
                    out.append(tid)
        return out

    def _spm(self, text: str) -> list[int]:
        v = self.vocab
        t2i, scores = v.token_to_id, v.scores
        syms = list(text)
        n = len(syms)
        lens = [1] * n
        starts = list(range(n))
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        if n:
            nxt[-1] = -1
        heap: list[tuple[float, int, int, int]] = []
        rev_merge: dict[str, tuple[int, int]] = {}

        def sym_text(i: int) -> str:
            return text[starts[i]:starts[i] + lens[i]]

        def try_add(left: int, right: int) -> None:
            if left == -1 or right == -1:
                return
            s = text[starts[left]:starts[left] + lens[left] + lens[right]]
            tid = t2i.get(s)
            if tid is None or tid >= len(v.tokens):
                return
            heapq.heappush(heap, (-scores[tid], left, right, len(s)))
            rev_merge[s] = (left, right)

        for i in range(1, n):
            try_add(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if lens[left] == 0 or lens[right] == 0 or lens[left] + lens[right] != size:
                continue
            lens[left] += lens[right]
            lens[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_add(prev[left], left)
            try_add(left, nxt[left])

        out: list[int] = []

        def resegment(i: int) -> None:
            s = sym_text(i)
            tid = t2i.get(s)
            if tid is not None:
                out.append(tid)
                return
            p = rev_merge.get(s)
            if p is None:
                for b in s.encode("utf-8"):
                    out.append(self._byte_token(b))
                return
            resegment(p[0])
            resegment(p[1])

        i = 0 if n else -1
        while i != -1:
            resegment(i)
            i = nxt[i]
        return out

    def _byte_token(self, b: int) -> int:
        t2i = self.vocab.token_to_id
        tid = t2i.get(f"<0x{b:02X}>")
        if tid is None:
            tid = t2i.get(chr(b))
        if tid is None:
            raise TokenizerError(f"byte 0x{b:02X} has no <0x{b:02X}> token in this vocabulary")
        return tid

    # -- decode ------------------------------------------------------------------------------
    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        v = self.vocab
        if len(v.tokens) <= token < v.n_vocab:
            return b""  # a padding row of the embedding: a real logit, but no text
        if not 0 <= token < len(v.tokens):
            raise TokenizerError(f"token id {token} is outside the vocabulary (0..{v.n_vocab - 1})")
        ty, text = v.types[token], v.tokens[token]
        if ty in (CONTROL, UNKNOWN):
            return text.encode("utf-8", "surrogateescape") if special else b""
        if ty == USER_DEFINED:
            return text.encode("utf-8", "surrogateescape")
        if ty == BYTE:
            return bytes([int(text[3:5], 16)])
        if v.model == "llama":
            return text.replace("\u2581", " ").encode("utf-8", "surrogateescape")
        out = bytearray()
        for ch in text:
            b = self._u2b.get(ch)
            if b is None:
                out += ch.encode("utf-8", "surrogateescape")
            else:
                out.append(b)
        return bytes(out)

    def decode_bytes(self, ids: Sequence[int], special: bool = False) -> bytes:
        data = b"".join(self.token_to_piece(int(i), special) for i in ids)
        v = self.vocab
        if v.model == "llama" and v.add_space_prefix and data.startswith(b" "):
            data = data[1:]  # the space the encoder put in front of the text (llama_detokenize)
        return data

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        return self.decode_bytes(ids, special).decode("utf-8", errors="replace")


def load_tokenizer(source: GGUFReader | str | os.PathLike[str] | Any) -> Tokenizer:
    """A tokenizer from a GGUF reader or path."""
    if isinstance(source, GGUFReader):
        return Tokenizer(read_vocab(source))
    with GGUFReader(source) as r:
        return Tokenizer(read_vocab(r))
