"""AC5: Unicode-correct pre-tokenization, pinned to the Unicode version llama.cpp uses.

llama.cpp classifies codepoints with its own Unicode 15.1 table; the `regex` package follows a
newer Unicode. The expected ids below were produced by libllama (llama-cpp-python 0.3.36's
llama.cpp) for codepoints assigned after 15.1; `regex` alone would split them differently.
"""

from __future__ import annotations

import re

import pytest
import regex

from bitnet.tokenizer.pretokenize import PATTERNS, split
from bitnet.tokenizer.unicode import (
    UNASSIGNED,
    as_wregex_sees,
    cn_ranges,
    pin_to_15_1,
    regex_knows_15_1,
)
from tests._vocab import tokenizer, vocab_files, vocab_path

#: (vocab, text, libllama's ids with add_special=false)
LIBLLAMA = [
    ("llama-bpe", "\U000136ff/e", [172, 241, 249, 123, 14, 68]),  # Egyptian Hieroglyphs Ext-A (16.0)
    ("llama-bpe", "x\u0897y", [87, 156, 95, 245, 88]),  # ARABIC PEPET (16.0, a mark)
    ("llama-bpe", "\U0002ebf0a", [172, 106, 107, 108, 64]),  # CJK Ext I (15.1): a letter in both
    ("gpt-2", "\U00013521'll", [172, 241, 242, 94, 6, 297]),
    ("gpt-2", "a\U00010d40b", [64, 172, 238, 113, 222, 65]),  # Garay digit (16.0)
    ("gpt-2", " \U0001e5d0x", [220, 172, 252, 245, 238, 87]),
    ("llama-spm", "\U000136ff/e", [29871, 243, 150, 158, 194, 29914, 29872]),
    ("qwen2", "\U000136ff/e", [124373, 249, 123, 14, 68]),
    ("qwen2", "1\U00010d402", [16, 123934, 113, 222, 17]),
    ("deepseek-llm", "|>  \u3000<|end", [66325, 243, 88946, 27, 91, 409]),  # U+3000 seen as \v by wregex
    ("deepseek-llm", "a\u3000\u3001b", [64, 88946, 537, 65]),
]


@pytest.mark.ac5
@pytest.mark.parametrize("name,text,expected", LIBLLAMA, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(LIBLLAMA)])
def test_codepoints_newer_than_llama_cpp_table(name, text, expected):
    assert tokenizer(vocab_path(name)).encode(text, add_special=False) == expected


@pytest.mark.ac5
def test_installed_regex_knows_unicode_15_1():
    assert regex_knows_15_1(), "the `regex` package predates Unicode 15.1; upgrade it"


def test_pinning_keeps_offsets_and_only_touches_unassigned():
    text = "a\U000136ff b\u0378\U0002ebf0"
    pinned = pin_to_15_1(text)
    assert len(pinned) == len(text)
    assert pinned == f"a{UNASSIGNED} b{UNASSIGNED}\U0002ebf0"
    assert pin_to_15_1("plain text") == "plain text"
    assert as_wregex_sees("a\u3000b\xa0c d") == "a\x0bb\x0bc d"


@pytest.mark.parametrize("family", sorted(PATTERNS))
def test_pieces_always_concatenate_back(family):
    text = "Hello, wörld! 12345 \u3000\u3001 'LL \U000136ff\r\n\n  x\u2029 \U0001f999"
    pieces = split(text, family)
    assert "".join(pieces) == text and all(pieces)


def _llama_cpp_unicode_data():
    for p in vocab_files().values():
        src = p.parent.parent / "src" / "unicode-data.cpp"  # the unpacked sdist's llama.cpp
        if src.is_file():
            return src.read_text()
    pytest.skip("llama.cpp's src/unicode-data.cpp not on disk (run python -m bitnet.tokenizer.fetch_vocab)")


FLAG_CLASSES = {0x0001: "U", 0x0002: "N", 0x0004: "L", 0x0008: "Z", 0x0010: "M", 0x0020: "P", 0x0040: "S", 0x0080: "C"}


@pytest.mark.slow
@pytest.mark.ac5
def test_classes_equal_llama_cpp_table_for_every_codepoint():
    """Every codepoint's class (letter, number, mark, punctuation, symbol, separator, other,
    unassigned) as `regex` sees the pinned text equals llama.cpp's `unicode_ranges_flags`, and
    `\\s` equals `unicode_set_whitespace`. ~20 s: marked slow."""
    src = _llama_cpp_unicode_data()
    body = src.split("unicode_ranges_flags = {")[1].split("};")[0]
    starts = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+)\}", body)]
    starts = [(a, f) for a, f in starts if a < 0x110000]  # the table ends with a sentinel
    ws_body = src.split("unicode_set_whitespace = {")[1].split("};")[0]
    ws = {int(x, 16) for x in re.findall(r"0x([0-9A-F]+)", ws_body)}
    probes = [("N", r"\p{N}"), ("L", r"\p{L}"), ("Z", r"\p{Z}"), ("M", r"\p{M}"), ("P", r"\p{P}"),
              ("S", r"\p{S}"), ("C", r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}]")]
    rx = {k: regex.compile(p) for k, p in probes}
    space = regex.compile(r"\s")
    bad = []
    for i, (start, flags) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else 0x110000
        want = FLAG_CLASSES[flags]
        for cp in range(start, end):
            ch = pin_to_15_1(chr(cp))
            got = next((k for k, r in rx.items() if r.match(ch)), "U")
            if got != want:
                bad.append((hex(cp), want, got))
    assert bad == [], bad[:20]
    assert {cp for cp in range(0x110000) if space.match(chr(cp))} == ws
    assert cn_ranges() == [(s, (starts[i + 1][0] if i + 1 < len(starts) else 0x110000) - 1)
                           for i, (s, f) in enumerate(starts) if f == 0x0001]
