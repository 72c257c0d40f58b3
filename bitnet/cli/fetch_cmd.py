"""`bitnet fetch-vocab DEST`: llama.cpp's vocabulary test files from the llama-cpp-python sdist."""

from __future__ import annotations

import argparse

from bitnet.cli.args import output_dir
from bitnet.progress import add_quiet_arg, progress
from bitnet.toolchain.sdist import LLAMA_CPP_PYTHON_VERSION, extract_vocab


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch-vocab", help="download llama.cpp's ggml-vocab-* test files (PyPI sdist)")
    p.add_argument("dest", type=output_dir, help="folder to copy the files into (created; an existing file is refused)")
    p.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION, help="llama-cpp-python version")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    with progress(f"fetching llama.cpp vocab files (llama-cpp-python {args.version} sdist)", stream=io.stderr,
                  quiet=args.quiet):
        files = extract_vocab(args.dest, args.version)
    print(f"copied {len(files)} files into {args.dest}", file=io.stdout)
    return 0
