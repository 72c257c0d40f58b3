"""Where the tokenizer tests find llama.cpp's vocabularies and their test vectors.

Looked up, first hit per vocabulary wins: `$BITNET_VOCAB_DIR`, `<repo>/../shared/vocab` (CI's
fresh clone has `shared/` beside the repo), the folder `python -m bitnet.tokenizer.fetch_vocab`
fills by default, and the unpacked llama-cpp-python sdist in the project cache.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "vocab"
SEP = "\n__ggml_vocab_test__\n"

#: vocabularies whose every vector case passes (checked here); others found on disk are
#: expected to be refused with a TokenizerError (test_unsupported_vocabs_are_refused)
SUPPORTED = ("llama-bpe", "llama-spm", "gpt-2", "phi-3", "qwen2", "qwen35", "falcon", "mpt",
             "starcoder", "refact", "command-r", "deepseek-llm", "deepseek-coder")
CORE = ("llama-bpe", "llama-spm", "gpt-2")


def vocab_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("BITNET_VOCAB_DIR"):
        dirs.append(Path(os.environ["BITNET_VOCAB_DIR"]))
    dirs.append(SHARED)
    from bitnet.files.cache import cache_dir

    root = cache_dir()
    dirs.append(root / "vocab")
    dirs += sorted(root.glob("sdist/llama_cpp_python-*/vendor/llama.cpp/models"))
    return [d for d in dirs if d.is_dir()]


@cache
def vocab_files() -> dict[str, Path]:
    """name ("llama-bpe") -> its ggml-vocab-NAME.gguf, first folder wins."""
    found: dict[str, Path] = {}
    for d in vocab_dirs():
        for g in sorted(d.glob("ggml-vocab-*.gguf")):
            found.setdefault(g.name[len("ggml-vocab-"):-len(".gguf")], g)
    return found


def vocab_path(name: str) -> Path:
    p = vocab_files().get(name)
    if p is None:
        pytest.skip(f"ggml-vocab-{name}.gguf not found: put llama.cpp's vocab files in ../shared/vocab, "
                    "$BITNET_VOCAB_DIR, or run `python -m bitnet.tokenizer.fetch_vocab`")
    return p


def read_cases(gguf: Path) -> list[tuple[str, list[int]]]:
    inp = gguf.with_name(gguf.name + ".inp")
    out = gguf.with_name(gguf.name + ".out")
    texts = inp.read_text(encoding="utf-8").split(SEP)
    if texts and texts[-1] == "":
        texts = texts[:-1]
    lines = out.read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in lines[i].split()]) for i, t in enumerate(texts)]


_TOKENIZERS: dict[Path, object] = {}


def tokenizer(path: Path):
    """One tokenizer per file for the whole session (loading LLaMA-3's takes ~0.5 s)."""
    from bitnet.tokenizer import load_tokenizer

    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]
