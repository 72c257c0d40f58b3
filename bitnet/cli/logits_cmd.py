"""`bitnet logits`: write every position's logits for parity debugging."""

from __future__ import annotations

import argparse
import io as _io

import numpy as np

from bitnet.cli.args import output_file, utf8
from bitnet.cli.backend_args import add_backend_args, select_backend
from bitnet.cli.run_cmd import add_model_args, resolve_model
from bitnet.engine import Engine
from bitnet.errors import ConfigError
from bitnet.files.atomic import atomic_write_bytes, check_writable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logits", help="write logits for every prompt position to an .npz")
    add_model_args(p)
    add_backend_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", type=utf8, help="text to tokenize (with BOS as the model asks)")
    src.add_argument("--ids", help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--out", type=output_file, required=True, help="output .npz (prompt_ids, logits[T, V], profile)")
    p.set_defaults(func=run)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise ConfigError("--ids is empty")
    return ids


def run(args: argparse.Namespace, io) -> int:
    check_writable(args.out, "--out")
    backend = select_backend(args, io, "logits")
    engine = Engine(resolve_model(args, io), profile=args.profile, strict=args.strict,
                    apply_corrections=args.apply_corrections, weights=args.weights)
    ids = parse_ids(args.ids) if args.ids is not None else engine.encode(args.prompt)
    logits = engine.logits(ids)
    buf = _io.BytesIO()
    np.savez(buf, prompt_ids=np.asarray(ids, np.int64), logits=logits, profile=np.array(engine.model.profile.name))
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}: logits {logits.shape[0]} x {logits.shape[1]} (profile {engine.model.profile.name}, backend {backend})", file=io.stdout)
    return 0
