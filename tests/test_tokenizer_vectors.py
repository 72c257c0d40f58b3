"""AC5: llama.cpp's own tokenizer test vectors, every case, one test per case.

The vectors (`ggml-vocab-NAME.gguf.inp/.out`) are llama.cpp's `tests/test-tokenizer-0` inputs
and the ids libllama produced for them (add_special=false, parse_special=false).
"""

from __future__ import annotations

import pytest

from bitnet.tokenizer import TokenizerError, load_tokenizer
from tests._vocab import CORE, SHARED, SUPPORTED, read_cases, tokenizer, vocab_files


def _cases():
    for name in SUPPORTED:
        path = vocab_files().get(name)
        if path is None or not path.with_name(path.name + ".inp").is_file():
            continue
        for i, (text, ids) in enumerate(read_cases(path)):
            yield pytest.param(path, text, ids, id=f"{name}-{i}")


CASES = list(_cases())


@pytest.mark.ac5
@pytest.mark.skipif(not CASES, reason="no llama.cpp vocab vectors found: see ../shared/vocab, $BITNET_VOCAB_DIR "
                    "or `python -m bitnet.tokenizer.fetch_vocab`")
@pytest.mark.parametrize("path,text,expected", CASES)
def test_llama_cpp_vector(path, text, expected):
    assert tokenizer(path).encode(text, add_special=False, parse_special=False) == expected


@pytest.mark.ac5
def test_core_vocabularies_are_all_covered():
    """The three vocabularies shipped in ../shared/vocab must never silently drop out."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found (CI keeps shared/ beside the repo)")
    names = {c.id.rsplit("-", 1)[0] for c in CASES}
    assert set(CORE) <= names
    for name in CORE:
        n = sum(1 for c in CASES if c.id.rsplit("-", 1)[0] == name)
        assert n == len(read_cases(SHARED / f"ggml-vocab-{name}.gguf")) and n > 0


#: model types llama.cpp has that this project does not implement
UNSUPPORTED = {"bert-bge": "bert", "gemma-4": "gemma4", "nomic-bert-moe": "t5"}


@pytest.mark.ac5
def test_other_vocabs_load_or_are_refused():
    """Vocabularies on disk beyond the vector-checked ones: WordPiece/UGM/Gemma-4 models raise a
    TokenizerError naming the model type rather than tokenizing wrongly; the rest (aquila,
    baichuan, gpt-neox have no vectors upstream) load and round-trip ASCII."""
    others = {n: p for n, p in vocab_files().items() if n not in SUPPORTED}
    if not others:
        pytest.skip("only vector-checked vocabularies on disk")
    for name, path in sorted(others.items()):
        if name in UNSUPPORTED:
            with pytest.raises(TokenizerError, match=f"'{UNSUPPORTED[name]}' is not supported"):
                load_tokenizer(path)
            continue
        t = load_tokenizer(path)
        text = "Hello world, 2024!"
        assert t.decode(t.encode(text, add_special=False)) == text, name
