"""`bitnet synth OUT.gguf`: write a deterministic synthetic BitNet model."""

from __future__ import annotations

import argparse
import os
import time

from bitnet.cli.args import input_file, output_file, seed
from bitnet.progress import add_quiet_arg, progress
from bitnet.quant.encoders import FORMATS
from bitnet.synth import ARCHS, PRESETS, synthesize


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a deterministic synthetic BitNet model (random weights)")
    p.add_argument("out", type=output_file, help="output .gguf path (written atomically)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--arch", default="bitnet-b1.58", choices=ARCHS,
                   help="bitnet-b1.58: Microsoft/bitnet.cpp layout; bitnet: upstream llama.cpp layout")
    p.add_argument("--format", dest="fmt", default="f32", choices=sorted(FORMATS),
                   help="weight format of the seven projections (embeddings and norms stay float)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--vocab", type=input_file, help="copy tokenizer.* metadata from this vocab GGUF instead of the built-in vocab")
    p.add_argument("--embed-format", choices=("f32", "f16"), help="token embedding type (default: f32 for f32 models, else f16)")
    p.add_argument("--output-weight", action="store_true", help="write an untied output.weight")
    p.add_argument("--size-deviation", type=int, default=0, metavar="BYTES",
                   help="add (or remove, if negative) BYTES at the end of every projection: a malformed file for strict-loader tests")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    from bitnet.files.atomic import check_writable

    check_writable(args.out, "output")
    t0 = time.perf_counter()
    with progress(f"synthesising {args.preset} {args.arch} {args.fmt} -> {args.out}", total=1,
                  stream=io.stderr, quiet=args.quiet) as update:
        path = synthesize(args.out, preset=args.preset, arch=args.arch, fmt=args.fmt, seed=args.seed,
                          vocab_gguf=args.vocab, embed_format=args.embed_format, output_weight=args.output_weight,
                          size_deviation=args.size_deviation,
                          on_progress=lambda done, total: update(completed=done, total=total))
    dt = time.perf_counter() - t0
    print(f"wrote {path} ({os.path.getsize(path):,} bytes, {args.preset}, {args.arch}, {args.fmt}, "
          f"seed {args.seed}) in {dt:.2f} s -- weights are random, not a trained model", file=io.stdout)
    return 0
