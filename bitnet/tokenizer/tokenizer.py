"""`Tokenizer`: encode/decode for one GGUF vocabulary, token for token as llama.cpp.

The steps (each in its own module, each naming the llama.cpp function it mirrors):
`special.partition` (special tokens) -> per raw fragment either `pretokenize.split` + `bpe.BPE`
(`gpt2` model) or whitespace escaping + `spm.SPM` (`llama` model) -> BOS/EOS by the
vocabulary's flags. `decode` is the exact byte-level inverse; `detokenize` is llama.cpp's
`llama_detokenize`, which is not (it drops the SPM leading space and, for most BPE vocabs,
"cleans" spaces before punctuation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bitnet.errors import TokenizerError
from bitnet.gguf.reader import GGUFReader
from bitnet.tokenizer.bpe import BPE, bytes_to_unicode
from bitnet.tokenizer.load import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocab, read_vocab
from bitnet.tokenizer.pretokenize import split
from bitnet.tokenizer.special import partition
from bitnet.tokenizer.spm import SPM


class Tokenizer:
    """encode/decode for one vocabulary. Build it with `load_tokenizer`."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._bpe: BPE | None = None
        self._spm: SPM | None = None
        if vocab.model == "gpt2":
            self._bpe = BPE(vocab.token_to_id, vocab.merges, vocab.ignore_merges)
            self._u2b = {c: b for b, c in bytes_to_unicode().items()}
        else:
            assert vocab.scores is not None
            self._spm = SPM(vocab.token_to_id, vocab.scores)
        self._pieces: list[bytes | None] = [None] * len(vocab.tokens)

    # -- facts -------------------------------------------------------------------------------
    @property
    def real_vocab_size(self) -> int:
        """Number of tokens in the vocabulary (`tokenizer.ggml.tokens`)."""
        return len(self.vocab.tokens)

    @property
    def vocab_size(self) -> int:
        """The model's (padded) vocabulary size: `{arch}.vocab_size` or the rows of
        `token_embd.weight` when larger than the token list (AC5)."""
        return self.vocab.n_vocab

    @property
    def pre_family(self) -> str | None:
        """The pre-tokenizer family in use (`pretokenize.PATTERNS` key); None for SentencePiece."""
        return self.vocab.pre_family

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        """`tokenizer.ggml.eot_token_id`, else found by text as llama.cpp does (None if absent)."""
        return self.vocab.eot_id

    def is_eog(self, token: int) -> bool:
        """End of generation, as `llama_vocab_is_eog`: EOS, EOT, EOM and EOG-looking tokens."""
        return token in self.vocab.eog_ids

    # -- encode ------------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids for `text`, as `llama_tokenize(vocab, text, add_special, parse_special)`."""
        v = self.vocab
        out: list[int] = []
        fragments = partition(v, text, parse_special)
        if add_special and v.add_bos and v.bos_id is not None:
            out.append(v.bos_id)
        if self._spm is not None:
            prev_special = True  # "prefix with space if previous is special"
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                    prev_special = True
                    continue
                s = (" " if v.add_space_prefix and prev_special else "") + frag
                out.extend(self._spm.encode_text(s.replace(" ", "\u2581")))
                prev_special = False
        else:
            assert self._bpe is not None
            encode_piece, cache, family = self._bpe.encode_piece, self._bpe.cache, v.pre_family
            assert family is not None
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                    continue
                for piece in split(frag, family):
                    ids = cache.get(piece)  # inlined cache hit: most pieces of real text repeat
                    out += ids if ids is not None else encode_piece(piece)
        if add_special and v.add_eos and v.eos_id is not None:
            out.append(v.eos_id)
        return out

    # -- decode ------------------------------------------------------------------------------
    def _check(self, token: int) -> None:
        if not 0 <= token < self.vocab.n_vocab:
            raise TokenizerError(f"token id {token} is outside the vocabulary (0..{self.vocab.n_vocab - 1})")

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token stands for, as `llama_token_to_piece(..., lstrip=0, special)`:
        CONTROL/UNKNOWN render only with `special`, UNUSED and padding rows render as nothing."""
        token = int(token)
        self._check(token)
        v = self.vocab
        if token >= len(v.tokens):
            return b""  # a padding row of the embedding: a real logit, but no text
        ty = v.types[token]
        if ty in (CONTROL, UNKNOWN):
            return v.tokens[token].encode("utf-8", "surrogatepass") if special else b""
        piece = self._pieces[token]
        if piece is None:
            piece = self._pieces[token] = self._render(token)
        return piece

    def _render(self, token: int) -> bytes:
        v = self.vocab
        ty, text = v.types[token], v.tokens[token]
        if ty == USER_DEFINED:
            return text.encode("utf-8", "surrogatepass")
        if ty == BYTE:
            return bytes([int(text[3:5], 16)])
        if ty != NORMAL:
            return b""  # UNUSED and unknown types: llama.cpp renders nothing
        if v.model == "llama":
            return text.replace("\u2581", " ").encode("utf-8", "surrogatepass")
        u2b = self._u2b
        out = bytearray()
        for ch in text:
            b = u2b.get(ch)
            if b is None:  # not a byte-level character: keep its UTF-8 (llama.cpp writes [UNK_BYTE_..])
                out += ch.encode("utf-8", "surrogatepass")
            else:
                out.append(b)
        return bytes(out)

    def decode_bytes(self, ids: Sequence[int], special: bool = False) -> bytes:
        """The exact bytes the ids stand for; for SentencePiece without the one leading space
        the encoder put in front of the text."""
        data = b"".join([self.token_to_piece(i, special) for i in ids])
        v = self.vocab
        if v.model == "llama" and v.add_space_prefix and data.startswith(b" "):
            data = data[1:]
        return data

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        """Text for ids: decode(encode(s, add_special=False)) == s for byte-level BPE vocabs.
        Control tokens (BOS, EOT, ...) render only with `special=True`; bytes that are not
        valid UTF-8 (a sequence cut mid-character) become U+FFFD."""
        return self.decode_bytes(ids, special).decode("utf-8", errors="replace")

    def detokenize(self, ids: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> bytes:
        """`llama_detokenize` byte for byte: drops BOS/EOS when `remove_special` and the vocab
        adds them, removes the leading space of the first piece (SentencePiece), and applies
        llama.cpp's `clean_spaces` passes. Not an inverse of `encode`: use `decode` for that."""
        v = self.vocab
        toks = [int(i) for i in ids]
        remove_space = v.add_space_prefix
        if remove_special and v.add_bos and toks and toks[0] == v.bos_id:
            remove_space = False
            toks = toks[1:]
        if remove_special and v.add_eos and toks and toks[-1] == v.eos_id:
            toks = toks[:-1]
        parts = []
        for i, t in enumerate(toks):
            p = self.token_to_piece(t, unparse_special)
            if i == 0 and remove_space and p.startswith(b" "):
                p = p[1:]
            parts.append(p)
        text = b"".join(parts)
        return _clean_spaces(text) if v.clean_spaces else text


def _clean_spaces(text: bytes) -> bytes:
    """llama_detokenize's three clean-up passes (" ?" -> "?", " ' " -> "'", " 's" -> "'s" ...)."""
    if not text:
        return text
    out = bytearray(text[:1])
    for i in range(1, len(text)):  # 1: space before ? ! . ,
        x = text[i]
        if text[i - 1] == 0x20 and x in b"?!.,":
            out.pop()
        out.append(x)
    t2, out = bytearray(out), bytearray(out[:1])
    i = 1
    while i < len(t2):  # 2: a lone apostrophe between spaces
        x = t2[i]
        if x == 0x27 and i + 1 < len(t2) and t2[i - 1] == 0x20 and t2[i + 1] == 0x20:
            out.pop()
            out.append(x)
            t2[i + 1] = 0  # llama.cpp NULs the dropped space in place: the next check sees no space
            i += 2
            continue
        out.append(x)
        i += 1
    t3, out = bytes(out), bytearray(out[:1])
    for i in range(1, len(t3)):  # 3: " 's", " 'm", " 're", " 've" lose their space
        x = t3[i]
        if t3[i - 1] == 0x20 and x == 0x27 and i + 1 < len(t3):
            x1 = t3[i + 1]
            if x1 in b"sm" or (i + 2 < len(t3) and t3[i + 1:i + 3] in (b"re", b"ve")):
                out.pop()
        out.append(x)
    return bytes(out)


#: (real path, mtime_ns, size) -> Tokenizer: reading LLaMA-3's 128k tokens and 280k merges
#: takes ~0.6 s, and a process (the CLI, a test session, the engine) often loads one file again
_LOADED: dict[tuple[str, int, int], Tokenizer] = {}
_LOADED_MAX = 8


def load_tokenizer(source: GGUFReader | str | os.PathLike[str]) -> Tokenizer:
    """A tokenizer from a GGUF reader or path (a vocab-only file works); `TokenizerError` when
    the file carries no usable tokenizer. Paths are cached per (file, mtime, size)."""
    if isinstance(source, GGUFReader):
        return Tokenizer(read_vocab(source))
    path = os.path.realpath(os.fspath(source))
    try:
        st = os.stat(path)
        key: tuple[str, int, int] | None = (path, st.st_mtime_ns, st.st_size)
    except OSError:
        key = None  # let the reader raise its own error
    if key is not None and key in _LOADED:
        return _LOADED[key]
    with GGUFReader(source) as r:
        tok = Tokenizer(read_vocab(r))
    if key is not None:
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = tok
    return tok
