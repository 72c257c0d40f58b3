"""`python -m bitnet.tokenizer.fetch_vocab`: llama.cpp's vocab files from the PyPI sdist.

Downloads the llama-cpp-python sdist into a fresh cache (tens of MB), so it is marked slow and
skips, with pip's reason, where PyPI cannot be reached.
"""

from __future__ import annotations

import pytest

from bitnet.tokenizer import load_tokenizer
from bitnet.tokenizer.fetch_vocab import main
from bitnet.toolchain.sdist import SdistError
from tests._vocab import read_cases


@pytest.mark.slow
@pytest.mark.ac5
def test_fetch_vocab_downloads_and_the_vectors_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
    dest = tmp_path / "vocab"
    try:
        rc = main(["--dest", str(dest)])
    except SdistError as e:  # pragma: no cover - network dependent
        pytest.skip(f"PyPI not reachable: {e}")
    if rc != 0:
        err = capsys.readouterr().err
        if "pip could not download" in err:
            pytest.skip(f"PyPI not reachable: {err.strip()[-300:]}")
    assert rc == 0
    names = {p.name for p in dest.iterdir()}
    for n in ("llama-bpe", "llama-spm", "gpt-2", "qwen2"):
        assert {f"ggml-vocab-{n}.gguf", f"ggml-vocab-{n}.gguf.inp", f"ggml-vocab-{n}.gguf.out"} <= names
    t = load_tokenizer(dest / "ggml-vocab-qwen2.gguf")
    for text, ids in read_cases(dest / "ggml-vocab-qwen2.gguf"):
        assert t.encode(text, add_special=False) == ids
