"""`bitnet crossval --engine SPEC [--reference SPEC] --model M (--prompt TEXT | --ids ...)`: the
engine under test against a reference engine (default: ours), position by position.
Exit 0 pass, 1 fail, 2 error or skipped (an engine broke, or lacks what the comparison needs).

`--cpp-dir DIR` is the older spelling of `--engine reference --reference libllama:DIR` (our
engine judged against libllama); with it, `--profile` may still name our numerics profile.

Registered by the `bitnet` CLI (`bitnet.cli.SUBCOMMANDS`); it lives here so that the dependency
runs one way: crossval uses bitnet, the bitnet library never imports crossval.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from bitnet.cli.args import (
    console,
    count,
    finite_float,
    input_dir,
    input_file,
    markup_safe,
    output_file,
    utf8,
)
from bitnet.cli.logits_cmd import parse_ids
from bitnet.errors import ConfigError
from bitnet.files.atomic import check_writable
from bitnet.model.profiles import PROFILES
from bitnet.progress import add_quiet_arg, progress

GATES = ("exact", "cross")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crossval", help="compare an engine's logits with a reference engine's (default: ours)")
    p.add_argument("--engine", metavar="SPEC",
                   help='engine under test: reference[:PROFILE][@BACKEND], libllama:DIR, hf:[DIR], cmd:"PROGRAM ARGS", '
                        "or a plugin kind (docs/how-to/validate-your-engine.md)")
    p.add_argument("--reference", metavar="SPEC", default=None, help="the engine to compare against (default: reference)")
    p.add_argument("--cpp-dir", type=input_dir, help="older spelling of --engine reference --reference libllama:DIR")
    p.add_argument("--model", type=input_file, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", type=utf8, help="text, tokenized by the model's own tokenizer (ours) so both sides get the same ids")
    src.add_argument("--ids", help="comma-separated token ids")
    p.add_argument("--profile", choices=GATES + tuple(sorted(PROFILES)), default=None,
                   help="parity gate exact|cross (policies/parity.yml; default exact); with --cpp-dir a numerics "
                        "profile name still selects our side's numerics")
    p.add_argument("--gate", choices=GATES, default=None, help="same as --profile exact|cross")
    p.add_argument("--greedy", type=count, default=8, help="greedy tokens to compare (0: none)")
    p.add_argument("--timeout", type=finite_float, default=None, help="seconds per engine call (default: the shared parity timeout)")
    p.add_argument("--no-strict", action="store_true", help="with --cpp-dir: allow fallbacks on our side (default: strict)")
    p.add_argument("--apply-corrections", action="store_true",
                   help="apply the validation policy's named corrections in our engine(s) (recorded in the receipt)")
    p.add_argument("--receipt", type=output_file, help="write a parity receipt naming both engines here (atomically)")
    p.add_argument("--json", action="store_true")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def _specs(args) -> tuple[str, str, str]:
    gate = args.gate or (args.profile if args.profile in GATES else None) or "exact"
    numerics = args.profile if args.profile in PROFILES else None
    if args.cpp_dir:
        if args.engine or args.reference:
            raise ConfigError("--cpp-dir is the older spelling of --engine reference --reference libllama:DIR; "
                              "give one or the other")
        return "reference" + (f":{numerics}" if numerics else ""), f"libllama:{args.cpp_dir}", gate
    if not args.engine:
        raise ConfigError("name the engine under test: --engine SPEC (or --cpp-dir DIR for ours against libllama)")
    if numerics:
        raise ConfigError(f"--profile {numerics}: a numerics profile goes into the engine spec "
                          f"(e.g. --reference reference:{numerics}); --profile here is the gate: exact or cross")
    return args.engine, args.reference or "reference", gate


def run(args: argparse.Namespace, io) -> int:
    from bitnet.engines import open_engine
    from crossval.pair import compare_engines
    from crossval.timeouts import PARITY_TIMEOUT_S

    engine_spec, ref_spec, gate = _specs(args)
    if args.cpp_dir:
        from crossval.reference import locate

        locate(args.cpp_dir, "--cpp-dir")  # a wrong folder is one line naming this option, before any work
    if not Path(args.model).is_file():
        raise ConfigError(f"--model {args.model}: no such file")
    if args.receipt:
        check_writable(args.receipt, "--receipt")
    if args.greedy < 0:
        raise ConfigError(f"--greedy must be >= 0, got {args.greedy}")
    if args.ids is not None:
        ids = parse_ids(args.ids)
    else:
        from bitnet.tokenizer import load_tokenizer

        ids = load_tokenizer(args.model).encode(args.prompt, add_special=True, parse_special=True)
    engine, reference = open_engine(engine_spec), open_engine(ref_spec)
    if args.cpp_dir:
        engine.strict = not args.no_strict
    timeout = args.timeout or PARITY_TIMEOUT_S
    for e in (engine, reference):
        if hasattr(e, "timeout"):
            e.timeout = timeout
        if args.apply_corrections and hasattr(e, "apply_corrections"):
            e.apply_corrections = True
    try:
        with progress(f"crossval: {engine_spec} against {ref_spec} on {len(ids)} positions + {args.greedy} greedy",
                      stream=io.stderr, quiet=args.quiet):
            c = compare_engines(engine, reference, args.model, ids, gate=gate, n_greedy=args.greedy,
                                receipt=args.receipt, timeout=timeout)
    finally:
        engine.close()
        reference.close()
    r = c.result
    if args.json:
        json.dump({"verdict": r.verdict, "reason": r.reason, "profile": r.profile,
                   "engine": c.engine.to_dict() if c.engine else None,
                   "reference": c.reference.to_dict() if c.reference else None,
                   "first_divergence": r.first_divergence, "greedy_match": r.greedy_match,
                   "greedy_first_divergence": r.greedy_first_divergence,
                   "positions": [asdict(p) for p in r.positions],
                   "receipt": str(c.receipt) if c.receipt else None}, io.stdout, indent=2)
        io.stdout.write("\n")
    elif r.verdict == "error":  # nothing was compared: one line on stderr, not a table title
        print(f"bitnet crossval: {' '.join(r.reason.split())}", file=io.stderr)
    else:
        _table(c, io)
    return {"pass": 0, "fail": 1}.get(r.verdict, 2)


def _table(c, io) -> None:
    from rich.table import Table

    r = c.result
    con = console(io.stdout, width=120)
    for side, info in (("engine", c.engine), ("reference", c.reference)):
        if info:
            con.print(f"{side}: {info.spec} - {info.name} {info.version} ({info.build}; numerics {info.numerics})",
                      markup=False, highlight=False)
    t = Table(title=markup_safe(f"crossval: {r.verdict.upper()} ({r.profile}) - {r.reason}"))
    for col in ("pos", "cosine", "max_abs", "KL", "top-1 engine/ref", "top-5 overlap"):
        t.add_column(col, justify="right")
    for p in r.positions:
        mark = " <" if p.position == r.first_divergence else ""
        t.add_row(str(p.position), f"{p.cosine:.7f}", f"{p.max_abs:.3g}", f"{p.kl:.2e}",
                  f"{p.top1_ours}/{p.top1_ref}{mark}", f"{p.top5_overlap:.1f}")
    con.print(t)
    if r.greedy_match is not None:
        print(f"greedy: {r.greedy_match:.3f} exact match; engine {r.greedy_ours}; reference {r.greedy_ref}", file=io.stdout)
    if c.receipt:
        print(f"receipt: {c.receipt}", file=io.stdout)
