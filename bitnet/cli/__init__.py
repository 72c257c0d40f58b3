"""`bitnet` command line: `main(argv) -> exit code`, one module per subcommand.

Each subcommand module in `SUBCOMMANDS` exposes `register(subparsers)` (adds its parser and sets
`func`) and a `run(args, io) -> int`. Typed project errors become one line on stderr and exit
code 2; nothing prints a traceback for bad input.

Exit codes: 0 success, 1 a check ran and failed (verification, parity), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from bitnet import __version__
from bitnet.errors import BitNetError

#: Subcommand modules, in the order `bitnet --help` lists them. The CLI is the one layer above
#: both `bitnet` and `crossval`: `crossval` owns its subcommand (`crossval.cli`), imported here
#: by name only, so no module of the `bitnet` library imports `crossval` (which imports `bitnet`).
SUBCOMMANDS = [
    "bitnet.cli.inspect_cmd",
    "bitnet.cli.validate_cmd",
    "bitnet.cli.synth_cmd",
    "bitnet.cli.run_cmd",
    "bitnet.cli.logits_cmd",
    "bitnet.cli.tokenize_cmd",
    "bitnet.cli.benchmark_cmd",
    "bitnet.cli.keygen_cmd",
    "crossval.cli",
    "bitnet.cli.fetch_cmd",
]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


@dataclass
class IO:
    """The streams a command writes to (tests pass StringIO)."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors; keep that, one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bitnet", description="BitNet b1.58 reference implementation and test harness")
    parser.add_argument("--version", action="version", version=f"bitnet-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for modname in SUBCOMMANDS:
        importlib.import_module(modname).register(sub)
    return parser


def main(argv: Sequence[str] | None = None, io: IO | None = None) -> int:
    io = io or IO()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors and --help/--version
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(io.stdout)
        return EXIT_USAGE
    try:
        return int(args.func(args, io))
    except BitNetError as e:
        print(f"bitnet {args.command}: error: {e}", file=io.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"bitnet {args.command}: error: {e.filename}: {e.strerror}", file=io.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"bitnet {args.command}: interrupted", file=io.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())
