"""Special-token partition, as llama.cpp's `tokenizer_st_partition`.

Why: before any pre-tokenizer runs, llama.cpp cuts the text at every occurrence of its special
tokens (CONTROL, USER_DEFINED and UNKNOWN types after load-time retyping), longest text first,
each token in turn over the fragments the previous ones left. With parse_special=False only
USER_DEFINED tokens cut (as Hugging Face's tokenizers pre-split added tokens). A token with the
RSTRIP/LSTRIP attribute (phi-3, jina `<mask>`) also eats the ASCII whitespace (C `isspace`:
space, \\t, \\n, \\v, \\f, \\r) to its right/left.
"""

from __future__ import annotations

from bitnet.tokenizer.load import CONTROL, UNKNOWN, Vocab

_C_SPACE = " \t\n\v\f\r"


def partition(vocab: Vocab, text: str, parse_special: bool) -> list[str | int]:
    """`text` as a list of raw-text fragments (str) and special token ids (int), in order."""
    frags: list[str | int] = [text] if text else []
    for sid in vocab.specials:
        if not parse_special and vocab.types[sid] in (CONTROL, UNKNOWN):
            continue
        st = vocab.tokens[sid]
        lstrip, rstrip = sid in vocab.lstrip, sid in vocab.rstrip
        out: list[str | int] = []
        hit = False
        for f in frags:
            if isinstance(f, int) or st not in f:
                out.append(f)
                continue
            hit = True
            parts = f.split(st)
            for i, p in enumerate(parts):
                if lstrip and i < len(parts) - 1:
                    p = p.rstrip(_C_SPACE)
                if rstrip and i > 0:
                    p = p.lstrip(_C_SPACE)
                if p:
                    out.append(p)
                if i < len(parts) - 1:
                    out.append(sid)
        if hit:
            frags = out
    return frags
