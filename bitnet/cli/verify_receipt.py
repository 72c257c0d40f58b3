"""`bitnet-verify-receipt RECEIPT [--model M.gguf] [--allowlist A.yml] [--require-gpu-kernels]
[--json]` and `--add-to-allowlist RECEIPT`.

Exit codes: 0 every rule passed, 1 a rule failed, 2 the receipt or a file is unreadable, or
usage."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bitnet.cli import UsageError, _Parser, error_line, quiet_broken_pipe
from bitnet.cli.args import console, input_file, markup_safe
from bitnet.errors import BitNetError
from bitnet.receipts.allowlist import add_from_receipt, load_allowlist
from bitnet.receipts.load import load_receipt
from bitnet.receipts.policy import default_allowlist_path
from bitnet.receipts.verify import verify_receipt

PROG = "bitnet-verify-receipt"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="verify an inference receipt")
    p.add_argument("receipt", nargs="?", type=input_file, help="receipt JSON file")
    p.add_argument("--model", type=input_file, help="the model file: its sha256 and size must match the receipt")
    p.add_argument("--allowlist", type=input_file, help="GPU allowlist YAML (default: policies/gpu-allowlist.yml)")
    p.add_argument("--require-gpu-kernels", action="store_true", help="fail unless a GPU kernel ran")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("--add-to-allowlist", metavar="RECEIPT", type=input_file, help="add this GPU receipt's fingerprint to the allowlist")
    return p


def main(argv: Sequence[str] | None = None, io=None) -> int:
    out = io.stdout if io else sys.stdout
    err = io.stderr if io else sys.stderr
    parser = build_parser()
    try:
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
        receipt = load_receipt(args.receipt)
        allowlist = load_allowlist(allowlist_path)
        result = verify_receipt(receipt, model=args.model, allowlist=allowlist,
                                require_gpu_kernels=args.require_gpu_kernels)
    except BitNetError as e:
        return error_line(PROG, e, err)
    except OSError as e:  # the model or allowlist could not be read
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
    return 0 if result.passed else 1


def _table(result, path: str, out) -> None:
    from rich.table import Table

    # every string here may come from the receipt file: escaped, so `[/bold]` prints as itself
    t = Table(title=f"{markup_safe(path)}: {'PASS' if result.passed else 'FAIL'}")
    t.add_column("rule", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("message", overflow="fold")
    for r in result.results:
        t.add_row(markup_safe(r.rule), "[green]pass[/green]" if r.passed else "[red]FAIL[/red]", markup_safe(r.message))
    console(out).print(t)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
