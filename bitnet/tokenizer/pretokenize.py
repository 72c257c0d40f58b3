"""Pre-tokenizers: the regex splits llama.cpp applies before BPE, keyed by `tokenizer.ggml.pre`.

The patterns are llama.cpp's (`src/llama-vocab.cpp`, `llm_tokenizer_bpe` constructor, as
vendored in llama-cpp-python 0.3.36). llama.cpp applies the patterns of a pre-tokenizer one
after another: each splits every piece left by the previous one into its matches AND the text
between matches (`unicode_regex_split_stl`), so nothing is ever dropped. Unicode classes
(`\\p{L}`, `\\p{N}`, ...) come from the `regex` package, pinned to Unicode 15.1 as llama.cpp's
own codepoint table is (`bitnet.tokenizer.unicode`); its `\\s` is exactly llama.cpp's
whitespace set (`unicode_set_whitespace`, checked codepoint by codepoint).

llama.cpp runs the gpt2 and llama3 patterns through hand-written matchers
(`unicode_regex_split_custom_gpt2/_llama3`) and the others through std::regex on a "collapsed"
text (one byte per codepoint standing for its class); both only ever ask a codepoint's class
from that table, so running the same patterns with `regex` on the pinned text gives the same
pieces (fuzzed against libllama; see docs/reference/tokenizers.md). Patterns without
`\\p{..}` (deepseek's literal ranges) run on the original codepoints with non-ASCII whitespace
turned into U+000B, as llama.cpp feeds std::wregex.
"""

from __future__ import annotations

from functools import cache

import regex

from bitnet.tokenizer.unicode import as_wregex_sees, pin_to_15_1

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
           r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

#: pre-tokenizer family -> its patterns, in the order llama.cpp applies them
PATTERNS: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "llama3": (_LLAMA3,),
    "gpt2": (_GPT2,),
    "qwen2": (_QWEN2,),
    "qwen35": (_QWEN35,),
    "starcoder": (r"\p{N}", _GPT2),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"),
    "deepseek-coder": (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\p{N}"),
    # written with escapes: the ranges contain compatibility characters (U+2126 OHM SIGN,
    # U+212A KELVIN SIGN) that editors may silently normalise
    "deepseek-llm": (
        r"[\r\n]",
        "\\s?[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
        "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
        "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf"
        "\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
        "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4"
        "\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
        "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
        "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
        "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
        "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
        "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
        r"\s+\Z",  # std::regex `$` is end of input only; Python's also matches before a final \n
        "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
        r"\p{N}+",
    ),
}

#: `tokenizer.ggml.pre` value -> (family, ignore_merges) as llama.cpp maps them
#: (`llama_vocab::impl::load`; aliases that only pick a family are included)
PRE_TYPES: dict[str, tuple[str, bool]] = {
    "default": ("default", False),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                     "lfm2", "jina-v5-nano"), ("llama3", True)),
    "dbrx": ("llama3", False), "smaug-bpe": ("llama3", False),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "a.x-4.0", "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe",
                     "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling"), ("gpt2", False)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2"), ("qwen2", False)),
    "qwen35": ("qwen35", False),
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
                     "mellum2"), ("starcoder", False)),
    "falcon": ("falcon", False),
    "deepseek-coder": ("deepseek-coder", False),
    "deepseek-llm": ("deepseek-llm", False),
}

#: pre-tokenizers for which llama.cpp turns `clean_spaces` off (llama_detokenize leaves spaces
#: before punctuation alone); every other BPE vocabulary cleans them
CLEAN_SPACES_OFF = frozenset({
    "command-r", "deepseek-coder", "deepseek-llm", "deepseek-r1-qwen", "qwen2", "kormo", "f2llmv2",
    "qwen35", "smollm", "trillion", "granite-docling",
})


#: pre-tokenizers after which llama.cpp adds BOS unless `tokenizer.ggml.add_bos_token` says no
ADD_BOS_BY_DEFAULT = frozenset(k for k, (fam, ignore) in PRE_TYPES.items() if fam == "llama3" and ignore)


@cache
def _compiled(family: str) -> tuple[tuple[regex.Pattern, bool], ...]:
    """The family's patterns, each with whether it uses Unicode classes (and so the pinned text)."""
    return tuple((regex.compile(p), "\\p{" in p) for p in PATTERNS[family])


def split(text: str, family: str) -> list[str]:
    """Apply a family's patterns in turn; matches and the gaps between them become pieces.

    Every pattern cuts every piece left by the previous one (`unicode_regex_split_stl`), so the
    pieces always concatenate back to `text`. Matching runs on the text as llama.cpp's matcher
    sees it -- `pin_to_15_1(text)` for patterns with Unicode classes, `as_wregex_sees(text)`
    for the others -- and pieces are cut from `text` at the same offsets (both views keep one
    codepoint per codepoint).
    """
    if not text:
        return []
    pinned = wide = None
    spans = [(0, len(text))]
    for rx, uses_classes in _compiled(family):
        if uses_classes:
            src = pinned = pin_to_15_1(text) if pinned is None else pinned
        else:
            src = wide = as_wregex_sees(text) if wide is None else wide
        out: list[tuple[int, int]] = []
        for a, b in spans:
            start = a
            for m in rx.finditer(src if (a, b) == (0, len(src)) else src[a:b]):
                s, e = m.span()
                s += a
                e += a
                if s > start:
                    out.append((start, s))
                if e > s:
                    out.append((s, e))
                start = e
            if start < b:
                out.append((start, b))
        spans = out
    return [text[a:b] for a, b in spans]
