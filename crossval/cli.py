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
    p.add_argument("--greedy", type=count, default=8,
                   help="greedy tokens to compare (0: none); for ours against libllama as many teacher-forced "
                        "decode steps are gated")
    p.add_argument("--timeout", type=finite_float, default=None, help="seconds per engine call (default: the shared parity timeout)")
    p.add_argument("--deep", action="store_true",
                   help="the per-layer teacher-forced gate decides alone; the end-to-end comparison is reported "
                        "beside it, not gating (deep random models, e.g. the 2B-4T shape); any pair where one side "
                        "forces its layers and the other captures them")
    p.add_argument("--no-per-layer", action="store_true",
                   help="skip the per-layer gate (end to end only)")
    p.add_argument("--prompt-mode", choices=("batch", "stepwise"), default="batch",
                   help="ours against libllama: the prompt in one batch (default) or one token per decode through the "
                        "KV cache on both sides; comparing the two localises a fault to the reference's batched path")
    p.add_argument("--backend", choices=("numpy", "native", "cpu", "cuda"), default=None,
                   help="our engine's kernel backend (shorthand for @BACKEND in its spec; native keeps 2B-class "
                        "models within the timeout)")
    p.add_argument("--no-strict", action="store_true", help="with --cpp-dir: allow fallbacks on our side (default: strict)")
    p.add_argument("--apply-corrections", action="store_true",
                   help="apply the validation policy's named corrections in our engine(s) (recorded in the receipt)")
    p.add_argument("--trace", action="store_true",
                   help="op-by-op trace: every named intermediate of both sides compared in graph order, free-running "
                        "and teacher-forced per layer; prints the first divergent op (ours against libllama, or ours "
                        "against ours); the receipt records it under \"trace\"")
    p.add_argument("--receipt", type=output_file, help="write a parity receipt naming both engines here (atomically)")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="write a self-contained HTML parity report (report.html) and a PNG summary (summary.png) "
                        "into DIR (needs the [report] extra: matplotlib)")
    p.add_argument("--json", action="store_true")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def _specs(args) -> tuple[str, str, str]:
    engine, ref, gate = _specs_given(args)
    backend = getattr(args, "backend", None)
    if backend:
        if engine.split(":", 1)[0].split("@", 1)[0] != "reference" or "@" in engine:
            raise ConfigError(f"--backend {backend}: it sets our engine's backend (--engine reference[:PROFILE] or "
                              f"--cpp-dir); the engine under test is {engine!r}")
        engine += f"@{backend}"
    return engine, ref, gate


def _specs_given(args) -> tuple[str, str, str]:
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


#: what the table and --json say when the pair is not ours against libllama
NOT_AVAILABLE = ("decode-step gates: not available for this pair (they need ours, "
                 "--engine reference[:PROFILE][@BACKEND], against --reference libllama:DIR); the per-layer gate "
                 "applies where the engines offer it (the reason says)")


def _libllama_pair(engine_spec: str, ref_spec: str, strict: bool | None):
    """(numerics, backend, cpp_dir, strict) when the pair is our engine against a libllama build
    (the pair crossval.compare gates with decode steps and per layer), else None. The specs are
    opened (and closed) here, so a malformed one fails as open_engine says."""
    from bitnet.engines import open_engine
    from bitnet.engines.reference import ReferenceEngine
    from crossval.engine import LibllamaEngine

    e, r = open_engine(engine_spec), open_engine(ref_spec)
    try:
        if not (isinstance(e, ReferenceEngine) and isinstance(r, LibllamaEngine)):
            return None
        return e.profile, e.backend, r.cpp_dir, strict if strict is not None else e.strict
    finally:
        e.close()
        r.close()


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
    if args.report:
        _check_report_dir(args.report)
    if args.greedy < 0:
        raise ConfigError(f"--greedy must be >= 0, got {args.greedy}")
    if args.ids is not None:
        ids = parse_ids(args.ids)
    else:
        from bitnet.tokenizer import load_tokenizer

        ids = load_tokenizer(args.model).encode(args.prompt, add_special=True, parse_special=True)
    timeout = args.timeout or PARITY_TIMEOUT_S
    pair = _libllama_pair(engine_spec, ref_spec, strict=not args.no_strict if args.cpp_dir else None)
    if pair is None and args.prompt_mode != "batch":
        raise ConfigError(f"--prompt-mode {args.prompt_mode}: available only for ours against libllama "
                          f"(--engine reference[:PROFILE][@BACKEND] --reference libllama:DIR), not {engine_spec} "
                          f"against {ref_spec}")
    if pair is not None:  # ours against libllama: decode-step and per-layer gates too (crossval.compare)
        numerics, backend, cpp_dir, strict = pair
        from crossval.compare import crossval_libllama

        with progress(f"crossval: {engine_spec} against {ref_spec} on {len(ids)} positions + {args.greedy} greedy",
                      stream=io.stderr, quiet=args.quiet):
            c = crossval_libllama(cpp_dir, args.model, ids, profile=gate, numerics=numerics, n_greedy=args.greedy,
                                  strict=strict, backend=backend, receipt=args.receipt, timeout=timeout,
                                  per_layer=not args.no_per_layer, end_to_end="report" if args.deep else "gate",
                                  apply_corrections=args.apply_corrections, trace=args.trace,
                                  prompt_mode=args.prompt_mode)
        extra = None
    else:
        engine, reference = open_engine(engine_spec), open_engine(ref_spec)
        for e in (engine, reference):
            if hasattr(e, "timeout"):
                e.timeout = timeout
            if args.apply_corrections and hasattr(e, "apply_corrections"):
                e.apply_corrections = True
        try:
            with progress(f"crossval: {engine_spec} against {ref_spec} on {len(ids)} positions + {args.greedy} greedy",
                          stream=io.stderr, quiet=args.quiet):
                op_trace = _ours_pair_trace(engine, reference, args.model, ids, gate) if args.trace else None
                c = compare_engines(engine, reference, args.model, ids, gate=gate, n_greedy=args.greedy,
                                    receipt=None if op_trace else args.receipt, timeout=timeout,
                                    per_layer=not args.no_per_layer, end_to_end="report" if args.deep else "gate")
                if op_trace is not None:
                    c.result.trace = op_trace
                    if args.receipt and c.verdict in ("pass", "fail", "skipped"):
                        from crossval.parity import parity_receipt, write_parity_receipt

                        c.receipt = write_parity_receipt(args.receipt, parity_receipt(
                            c.result, model=Path(args.model), prompt_ids=ids, engine=c.engine.to_dict(),
                            reference=c.reference.to_dict(), timings=c.timings))
        finally:
            engine.close()
            reference.close()
        extra = NOT_AVAILABLE
    r = c.result
    report = _write_report(c, args, ids, extra) if args.report else None
    if args.json:
        json.dump({"verdict": r.verdict, "reason": r.reason, "profile": r.profile,
                   "engine": c.engine.to_dict() if c.engine else None,
                   "reference": c.reference.to_dict() if c.reference else None,
                   **({"report": {"html": str(report.html), "png": str(report.png)}} if report else {}),
                   "first_divergence": r.first_divergence, "greedy_match": r.greedy_match,
                   "greedy_first_divergence": r.greedy_first_divergence,
                   "positions": [asdict(p) for p in r.positions],
                   "family": r.family, "bounds": r.bounds, "nonfinite": asdict(r.nonfinite) if r.nonfinite else None,
                   "decode": {"tokens": r.decode_tokens, "first_divergence": r.decode_first_divergence,
                              "greedy_degenerate": r.greedy_degenerate,
                              "positions": [asdict(p) for p in r.decode_positions]},
                   "layers": {"positions": r.layers, "first_divergence": r.layer_first_divergence},
                   **({"not_available": extra} if extra else {}),
                   **({"trace": r.trace} if r.trace is not None else {}),
                   **({"deep": r.deep} if r.deep is not None else {}),
                   "receipt": str(c.receipt) if c.receipt else None}, io.stdout, indent=2)
        io.stdout.write("\n")
    elif r.verdict == "error":  # nothing was compared: one line on stderr, not a table title
        print(f"bitnet crossval: {' '.join(r.reason.split())}", file=io.stderr)
    else:
        _table(c, io, extra)
    if report and not args.json:
        print(f"report: {report.html} (summary {report.png})", file=io.stdout)
    return {"pass": 0, "fail": 1}.get(r.verdict, 2)


def _check_report_dir(path: str) -> None:
    """Before any work: matplotlib is installed (else the typed error naming the [report] extra)
    and DIR is a folder that can be made and written."""
    import os

    from crossval.report import require_matplotlib

    require_matplotlib()
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--report {path}: exists and is not a directory; give a folder for the report")
    if target.is_dir():
        if not os.access(target, os.W_OK | os.X_OK):
            raise ConfigError(f"--report {path}: not writable")
    else:
        check_writable(target / "report.html", "--report")


def _write_report(c, args, ids, not_available: str | None):
    from crossval.report import write_report
    from crossval.report_data import report_data

    return write_report(report_data(c, args.model, ids, notes=[not_available] if not_available else None),
                        args.report)


def _table(c, io, not_available: str | None = None) -> None:
    from rich.table import Table

    r = c.result
    con = console(io.stdout, width=120)
    for side, info in (("engine", c.engine), ("reference", c.reference)):
        if info:
            con.print(f"{side}: {info.spec} - {info.name} {info.version} ({info.build}; numerics {info.numerics})",
                      markup=False, highlight=False)
    fam = f", {r.family} bounds" if r.family else ""
    t = Table(title=markup_safe(f"crossval: {r.verdict.upper()} ({r.profile}{fam}) - {r.reason}"))
    for col in ("pos", "cosine", "1-cos", "max_abs", "rel max|d|", "KL", "top-1 engine/ref", "top-5 overlap"):
        t.add_column(col, justify="right")
    for label, rows, first in (("", r.positions, r.first_divergence), ("d", r.decode_positions, r.decode_first_divergence)):
        for p in rows:  # decode steps are labelled d0, d1, ...: teacher-forced through the KV cache
            mark = " <" if p.position == first else ""
            t.add_row(f"{label}{p.position}", f"{p.cosine:.7f}", f"{p.one_minus_cos:.2e}", f"{p.max_abs:.3g}",
                      f"{p.rel_max_abs:.2e}", f"{p.kl:.2e}", f"{p.top1_ours}/{p.top1_ref}{mark}",
                      f"{p.top5_overlap:.1f}")
    con.print(t)
    if r.layers:
        sub = all(x.get("op") for x in r.layers)  # sub-layer forcing: each layer names its worst sub-block
        lt = Table(title="per layer, teacher-forced on the reference's input"
                         + (", every sub-block on the reference's tensors" if sub else ""))
        for col in ("layer", "median rel max|d|", "max rel max|d|", "1-cos", "worst pos") + (("sub-block",) if sub else ()):
            lt.add_column(col, justify="right")
        for x in r.layers:
            mark = " <" if x["layer"] == r.layer_first_divergence else ""
            lt.add_row(f"{x['layer']}{mark}", f"{x['median_rel_abs']:.2e}", f"{x['max_rel_abs']:.2e}",
                       f"{x['max_one_minus_cos']:.2e}", str(x["worst_position"]), *((x["op"],) if sub else ()))
        con.print(lt)
    if r.greedy_match is not None:
        print(f"greedy: {r.greedy_match:.3f} exact match; engine {r.greedy_ours}; reference {r.greedy_ref}", file=io.stdout)
    if not_available:
        print(not_available, file=io.stdout)
    if r.trace is not None:
        _print_trace(r.trace, io)
    if c.receipt:
        print(f"receipt: {c.receipt}", file=io.stdout)


def _ours_pair_trace(engine, reference, model, ids: list[int], gate: str) -> dict:
    """The op-by-op trace of ours against ours (two numerics profiles or backends of our
    engine); any other pair without libllama has no named intermediates to compare."""
    from bitnet.engines.reference import ReferenceEngine
    from bitnet.kernels import dispatch
    from bitnet.model import BitNetModel
    from crossval.trace import build_trace, record_engine, trace_to_dict

    if not (isinstance(engine, ReferenceEngine) and isinstance(reference, ReferenceEngine)):
        raise ConfigError(f"--trace compares named intermediates: it needs ours (--engine reference[:PROFILE][@BACKEND]) "
                          f"against libllama:DIR or against ours, not {engine.spec} against {reference.spec}")
    dispatch.set_backend(reference.backend)
    ref_model = BitNetModel(model, profile=reference.profile, strict=reference.strict)
    try:
        ref = record_engine(ref_model, ids)
    finally:
        ref_model.close()
    dispatch.set_backend(engine.backend)
    m = BitNetModel(model, profile=engine.profile, strict=engine.strict)
    try:
        return trace_to_dict(build_trace(m, ids, ref, {}, reference=reference.spec, profile=gate))
    finally:
        m.close()


def _print_trace(trace: dict, io) -> None:
    """The trace's verdict and the ops around the first divergent one (crossval.trace)."""
    from crossval.trace import format_trace_dict

    for line in format_trace_dict(trace):
        print(line, file=io.stdout)
