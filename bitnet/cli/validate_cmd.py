"""`bitnet validate MODEL [--policy F] [--json] [--strict] [--apply-corrections]`: judge a model
against the validation policy before running it.

Exit codes: 0 no check failed (warnings allowed unless --strict), 1 a check failed (or, with
--strict, warned), 2 the model or the policy could not be read."""

from __future__ import annotations

import argparse
import json

from bitnet.cli.args import input_file
from bitnet.validate import load_policy, validate_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a model against the validation policy (mis-conversions)")
    p.add_argument("model", type=input_file, help="GGUF model")
    p.add_argument("--policy", type=input_file, help="validation policy YAML (default: policies/model-validation.yml)")
    p.add_argument("--json", action="store_true", help="machine-readable report (every check)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--apply-corrections", action="store_true",
                   help="apply the policy's named corrections (reported, never silent)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    policy = load_policy(args.policy)
    report = validate_model(args.model, policy=policy, apply_corrections=args.apply_corrections)
    verdict = report.verdict(args.strict)
    if args.json:
        json.dump(report.to_json(args.strict), io.stdout, indent=2)
        io.stdout.write("\n")
    else:
        _table(report, verdict, io.stdout)
    return 1 if verdict == "fail" else 0


_STYLE = {"pass": "[green]pass[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]",
          "skip": "[dim]skip[/dim]"}


def _table(report, verdict: str, out) -> None:
    from rich.console import Console
    from rich.table import Table

    from bitnet.cli.args import markup_safe as escape  # markup, control characters, lone surrogates

    t = Table(title=escape(f"{report.path} ({report.architecture}): {verdict.upper()}"), show_lines=False)
    for col in ("rule", "status", "subject", "measured", "bound", "note"):
        t.add_column(col, overflow="fold", no_wrap=col in ("rule", "status"))
    for rule, status, subject, measured, bound, note in report.rows():
        t.add_row(rule, _STYLE[status], escape(subject), escape(measured), escape(bound), escape(note))
    console = Console(file=out, width=160)
    console.print(t)
    n = {s: sum(c.status == s for c in report.checks) for s in ("pass", "warn", "fail", "skip")}
    console.print(escape(f"{len(report.checks)} checks: {n['pass']} pass, {n['warn']} warn, {n['fail']} fail, "
                         f"{n['skip']} skip in {report.seconds:.2f} s; policy {report.policy}"))
    for c in report.corrections:
        console.print(escape(f"correction applied: {c.id} ({c.action}) to {len(c.tensors)} tensors: {', '.join(c.tensors[:4])}"
                             + (" ..." if len(c.tensors) > 4 else "")))
