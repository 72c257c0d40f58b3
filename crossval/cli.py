"""`bitnet crossval --cpp-dir DIR --model M --prompt "..."`: our logits against libllama's,
position by position. Exit 0 pass, 1 fail, 2 error (the reference or our engine broke).

Registered by the `bitnet` CLI (`bitnet.cli.SUBCOMMANDS`); it lives here so that the dependency
runs one way: crossval uses bitnet, the bitnet library never imports crossval."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from bitnet.cli.logits_cmd import parse_ids
from bitnet.errors import ConfigError
from bitnet.files.atomic import check_writable
from bitnet.model.profiles import PROFILES
from bitnet.progress import add_quiet_arg, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crossval", help="compare our logits with a C++ reference (libllama)")
    p.add_argument("--cpp-dir", required=True, help="reference folder (python -m crossval.setup prints one)")
    p.add_argument("--model", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--ids")
    p.add_argument("--gate", choices=("exact", "cross"), default="exact", help="parity thresholds (policies/parity.yml)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="our numerics profile (default: the model's)")
    p.add_argument("--greedy", type=int, default=8,
                   help="greedy tokens to compare; as many teacher-forced decode steps are gated")
    p.add_argument("--backend", default="numpy", help="our kernel backend (numpy, native, ...)")
    p.add_argument("--deep", action="store_true",
                   help="the per-layer teacher-forced gate decides alone; the end-to-end comparison is reported "
                        "beside it, not gating (deep random models, e.g. the 2B-4T shape)")
    p.add_argument("--no-per-layer", action="store_true", help="skip the per-layer gate (end to end only)")
    p.add_argument("--no-strict", action="store_true", help="allow fallbacks on our side (default: strict)")
    p.add_argument("--apply-corrections", action="store_true",
                   help="apply the validation policy's named corrections on our side (recorded in the receipt)")
    p.add_argument("--receipt", help="write a parity receipt here (atomically)")
    p.add_argument("--json", action="store_true")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    from crossval.compare import crossval_model
    from crossval.reference import locate

    locate(args.cpp_dir, "--cpp-dir")  # a wrong folder is one line naming this option, before any work
    if not Path(args.model).is_file():
        raise ConfigError(f"--model {args.model}: no such file")
    if args.receipt:
        check_writable(args.receipt, "--receipt")

    if args.ids is not None:
        ids = parse_ids(args.ids)
    else:
        from bitnet.tokenizer import load_tokenizer

        ids = load_tokenizer(args.model).encode(args.prompt, add_special=True, parse_special=True)
    with progress(f"crossval: libllama worker, then our engine, on {len(ids)} positions + {args.greedy} greedy",
                  stream=io.stderr, quiet=args.quiet):
        r = crossval_model(args.cpp_dir, args.model, ids, profile=args.gate, numerics=args.profile,
                           n_greedy=args.greedy, strict=not args.no_strict, receipt=args.receipt,
                           apply_corrections=args.apply_corrections, backend=args.backend,
                           per_layer=not args.no_per_layer, end_to_end="report" if args.deep else "gate")
    if args.json:
        json.dump({"verdict": r.verdict, "reason": r.reason, "first_divergence": r.first_divergence,
                   "greedy_match": r.greedy_match, "positions": [asdict(p) for p in r.positions],
                   "family": r.family, "bounds": r.bounds, "nonfinite": asdict(r.nonfinite) if r.nonfinite else None,
                   "decode": {"tokens": r.decode_tokens, "first_divergence": r.decode_first_divergence,
                              "greedy_degenerate": r.greedy_degenerate,
                              "positions": [asdict(p) for p in r.decode_positions]},
                   "layers": {"positions": r.layers, "first_divergence": r.layer_first_divergence}}, io.stdout, indent=2)
        io.stdout.write("\n")
    elif r.verdict == "error":  # nothing was compared: one line on stderr, not a table title
        print(f"bitnet crossval: {' '.join(r.reason.split())}", file=io.stderr)
    else:
        _table(r, io)
    return {"pass": 0, "fail": 1}.get(r.verdict, 2)


def _table(r, io) -> None:
    from rich.console import Console
    from rich.table import Table

    fam = f", {r.family} bounds" if r.family else ""
    t = Table(title=f"crossval: {r.verdict.upper()} ({r.profile}{fam}) - {r.reason}")
    for c in ("pos", "1-cos", "rel max|d|", "KL", "top-1 ours/ref", "top-5 overlap"):
        t.add_column(c, justify="right")
    for label, rows, first in (("", r.positions, r.first_divergence), ("d", r.decode_positions, r.decode_first_divergence)):
        for p in rows:  # decode steps are labelled d0, d1, ...: teacher-forced through the KV cache
            mark = " <" if p.position == first else ""
            t.add_row(f"{label}{p.position}", f"{p.one_minus_cos:.2e}", f"{p.rel_max_abs:.2e}", f"{p.kl:.2e}",
                      f"{p.top1_ours}/{p.top1_ref}{mark}", f"{p.top5_overlap:.1f}")
    Console(file=io.stdout, width=120).print(t)
    if r.layers:
        lt = Table(title="per layer, teacher-forced on the reference's input")
        for c in ("layer", "median rel max|d|", "max rel max|d|", "1-cos", "worst pos"):
            lt.add_column(c, justify="right")
        for x in r.layers:
            mark = " <" if x["layer"] == r.layer_first_divergence else ""
            lt.add_row(f"{x['layer']}{mark}", f"{x['median_rel_abs']:.2e}", f"{x['max_rel_abs']:.2e}",
                       f"{x['max_one_minus_cos']:.2e}", str(x["worst_position"]))
        Console(file=io.stdout, width=120).print(lt)
    if r.greedy_match is not None:
        print(f"greedy: {r.greedy_match:.3f} exact match; ours {r.greedy_ours}; reference {r.greedy_ref}", file=io.stdout)
