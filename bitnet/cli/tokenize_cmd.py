"""`bitnet tokenize MODEL.gguf TEXT`: ids as llama.cpp would produce them; `--decode` back.

Bad input (no text, both TEXT and --file, a file that is not UTF-8, an id outside the
vocabulary, a GGUF without a tokenizer) is a typed error: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bitnet.cli.args import input_file, utf8
from bitnet.errors import ConfigError, TokenizerError
from bitnet.tokenizer import load_tokenizer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="tokenize text (or --decode ids) with a GGUF's tokenizer")
    p.add_argument("model", type=input_file, help="GGUF file with tokenizer.ggml.* metadata (a vocab-only file works)")
    p.add_argument("text", nargs="?", type=utf8, help="text to tokenize")
    p.add_argument("--file", type=input_file, help="read the text from this file (UTF-8)")
    p.add_argument("--add-special", action="store_true", help="add BOS/EOS as the vocabulary asks")
    p.add_argument("--parse-special", action="store_true",
                   help="turn special-token text into its ids (with --decode: render control tokens)")
    p.add_argument("--decode", nargs="+", type=int, metavar="ID", help="decode these ids instead")
    p.add_argument("--json", action="store_true", help='print {"ids": [...]} (or {"text": ...})')
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    tok = load_tokenizer(args.model)
    if args.decode is not None:
        if args.text is not None or args.file is not None:
            raise ConfigError("--decode takes ids only: drop TEXT/--file")
        text = tok.decode(args.decode, special=args.parse_special)
        print(json.dumps({"text": text}, ensure_ascii=False) if args.json else text, file=io.stdout)
        return 0
    if (args.text is None) == (args.file is None):
        raise ConfigError("give TEXT or --file F (one of them)")
    if args.file is None:
        text = args.text
    else:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError(f"{args.file}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    ids = tok.encode(text, add_special=args.add_special, parse_special=args.parse_special)
    if args.json:
        print(json.dumps({"ids": ids}), file=io.stdout)
    else:
        print(" ".join(map(str, ids)), file=io.stdout)
    return 0
