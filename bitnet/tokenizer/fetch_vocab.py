"""Fetch llama.cpp's vocabulary test files (`ggml-vocab-*.gguf` + `.inp`/`.out` vectors).

    python -m bitnet.tokenizer.fetch_vocab [--dest DIR] [--version 0.3.36]

Why from there: the `llama-cpp-python` sdist on PyPI vendors llama.cpp, `models/` included, so
the vectors come with a pinned llama.cpp through an ordinary package client
(`pip download --no-deps --no-binary :all: llama-cpp-python==VERSION`) and nothing else. The
sdist is unpacked once into the project cache (`bitnet.toolchain.sdist`); the files are copied to DEST,
by default `vocab_cache_dir()`, where the tokenizer tests look for extra vocabularies (as well
as `$BITNET_VOCAB_DIR` and `<repo>/../shared/vocab`). Same as `bitnet fetch-vocab DIR`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bitnet.errors import BitNetError
from bitnet.files.cache import cache_dir
from bitnet.progress import add_quiet_arg, progress
from bitnet.toolchain.sdist import LLAMA_CPP_PYTHON_VERSION, extract_vocab


def vocab_cache_dir() -> Path:
    """Default destination: `<project cache>/vocab`."""
    return cache_dir("vocab")


def fetch(dest: str | Path | None = None, version: str = LLAMA_CPP_PYTHON_VERSION) -> list[Path]:
    """Copy every `ggml-vocab-*` file of the sdist to `dest`; returns the copied paths."""
    return extract_vocab(dest if dest is not None else vocab_cache_dir(), version)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitnet.tokenizer.fetch_vocab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=None, help="folder to copy the files into (default: the project cache's vocab/)")
    ap.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION, help="llama-cpp-python version")
    add_quiet_arg(ap)
    args = ap.parse_args(argv)
    try:
        with progress(f"fetching llama.cpp vocab files (llama-cpp-python {args.version} sdist)", quiet=args.quiet):
            files = fetch(args.dest, args.version)
    except BitNetError as e:
        print(f"fetch_vocab: error: {e}", file=sys.stderr)
        return 2
    print(f"copied {len(files)} files into {files[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
