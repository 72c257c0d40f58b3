"""`bitnet-verify-receipt RECEIPT [--model M.gguf] [--allowlist A.yml] [--cpu-allowlist C.yml]
[--require-gpu-kernels] [--trusted-key PUB] [--rerun [--rerun-repeats N] [--prompt TEXT]] [--json]`
and `--add-to-allowlist RECEIPT`.

Exit codes: 0 every rule passed, 1 a rule failed, 2 the receipt or a file is unreadable, usage,
or `--rerun` could not be performed here (another machine: it says so, and does not pretend)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import redirect_stdout

from bitnet.cli import UsageError, _Parser, error_line, quiet_broken_pipe
from bitnet.cli.args import console, input_file, markup_safe, positive, utf8
from bitnet.errors import BitNetError
from bitnet.receipts.allowlist import add_from_receipt, load_allowlist
from bitnet.receipts.load import load_receipt, read_receipt
from bitnet.receipts.policy import default_allowlist_path, default_cpu_allowlist_path
from bitnet.receipts.verify import verify_receipt

PROG = "bitnet-verify-receipt"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="verify an inference receipt")
    p.add_argument("receipt", nargs="?", type=input_file, help="receipt JSON file")
    p.add_argument("--model", type=input_file, help="the model file: its sha256 and size must match the receipt")
    p.add_argument("--allowlist", type=input_file, help="GPU allowlist YAML (default: policies/gpu-allowlist.yml)")
    p.add_argument("--cpu-allowlist", type=input_file, help="CPU allowlist YAML (default: policies/cpu-allowlist.yml)")
    p.add_argument("--require-gpu-kernels", action="store_true", help="fail unless a GPU kernel ran")
    p.add_argument("--trusted-key", metavar="PUB", type=input_file, help="require an Ed25519 signature by this public key (bitnet keygen)")
    p.add_argument("--rerun", action="store_true",
                   help="re-run what the receipt describes on this machine (same fingerprint only) and compare")
    p.add_argument("--rerun-repeats", type=positive, default=None, help="re-runs for --rerun (default: policy rerun_repeats)")
    p.add_argument("--prompt", type=utf8, help="for --rerun: the prompt text, when not the benchmark's default")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("--add-to-allowlist", metavar="RECEIPT", type=input_file, help="add this GPU receipt's fingerprint to the allowlist")
    return p


def main(argv: Sequence[str] | None = None, io=None) -> int:
    out = io.stdout if io else sys.stdout
    err = io.stderr if io else sys.stderr
    parser = build_parser()
    try:
        with redirect_stdout(out):  # argparse prints --help to sys.stdout
            args = parser.parse_args(argv)
    except UsageError as e:
        return error_line(e.prog, e, err)
    except SystemExit as e:
        return int(e.code or 0)
    allowlist_path = args.allowlist or default_allowlist_path()
    try:
        if args.add_to_allowlist:
            entry = add_from_receipt(allowlist_path, load_receipt(args.add_to_allowlist))
            print(f"added {entry['name']} ({entry['compute_capability']}) to {allowlist_path}: "
                  f"max {entry['max_bytes_per_s']:.4g} B/s", file=out)
            return 0
        if not args.receipt:
            print("bitnet-verify-receipt: error: give a RECEIPT (or --add-to-allowlist RECEIPT)", file=err)
            return 2
        receipt, raw = read_receipt(args.receipt)
        allowlist = load_allowlist(allowlist_path)
        from bitnet.receipts.cpu_allowlist import load_cpu_allowlist

        cpu_allowlist = load_cpu_allowlist(args.cpu_allowlist or default_cpu_allowlist_path())
        extra: dict = {}
        if args.trusted_key:
            from bitnet.receipts.signing import load_public_key

            extra.update(trusted_key=load_public_key(args.trusted_key), raw=raw)
        result = verify_receipt(receipt, model=args.model, allowlist=allowlist, cpu_allowlist=cpu_allowlist,
                                require_gpu_kernels=args.require_gpu_kernels, extra=extra)
        if args.rerun and result.passed:
            from bitnet.receipts.rerun import rerun

            assert isinstance(receipt, dict)  # verify_receipt passed: it is a receipt object
            extra["rerun"] = rerun(receipt, model=args.model, prompt=args.prompt, repeats=args.rerun_repeats)
            result = verify_receipt(receipt, model=args.model, allowlist=allowlist, cpu_allowlist=cpu_allowlist,
                                    require_gpu_kernels=args.require_gpu_kernels, extra=extra)
    except BitNetError as e:
        return error_line(PROG, e, err)
    except OSError as e:  # the model, key or an allowlist could not be read
        return error_line(PROG, f"{e.filename}: {e.strerror or e}", err)
    try:
        if args.json:
            json.dump(result.to_json(), out, indent=2)
            out.write("\n")
        else:
            _table(result, args.receipt, out)
        out.flush()
    except BrokenPipeError:
        quiet_broken_pipe(out)
    if not result.passed:
        return 1
    if args.rerun and "R-RERUN" in result.skipped_rules:
        print("bitnet-verify-receipt: re-run attestation not performed: " + extra["rerun"].message, file=err)
        return 2
    return 0


def _table(result, path: str, out) -> None:
    from rich.table import Table

    # every string here may come from the receipt file: escaped, so `[/bold]` prints as itself

    skipped = sorted(set(result.skipped_rules))
    t = Table(title=f"{markup_safe(path)}: {'PASS' if result.passed else 'FAIL'}"
              + (f" ({len(skipped)} rule(s) could not run: no evidence)" if skipped else ""))
    t.add_column("rule", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("message", overflow="fold")
    style = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]", "skip": "[yellow]skip[/yellow]"}
    for r in result.results:
        t.add_row(markup_safe(r.rule), style[r.status], markup_safe(r.message))
    console(out).print(t)
    if skipped:  # the verdict says which checks did not run: a PASS covers only the rules that ran
        print(f"not run (the receipt lacks their evidence; see the skip rows): {', '.join(skipped)}", file=out)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
