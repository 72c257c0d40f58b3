"""`bitnet` command line: `main(argv) -> exit code`, one module per subcommand.

Each subcommand module in `SUBCOMMANDS` exposes `register(subparsers)` (adds its parser and sets
`func`) and a `run(args, io) -> int`. Typed project errors become one line on stderr and exit
code 2; nothing prints a traceback for bad input.

Exit codes: 0 success, 1 a check ran and failed (verification, parity), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Sequence
from contextlib import redirect_stdout
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
    "bitnet.cli.convert_cmd",
    "bitnet.cli.run_cmd",
    "bitnet.cli.logits_cmd",
    "bitnet.cli.tokenize_cmd",
    "bitnet.cli.benchmark_cmd",
    "bitnet.cli.keygen_cmd",
    "crossval.cli",
    "bitnet.cli.fetch_cmd",
]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141


@dataclass
class IO:
    """The streams a command writes to (tests pass StringIO)."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)


class UsageError(Exception):
    """A command line argparse refused; `main` prints it as one line and returns 2."""

    def __init__(self, prog: str, message: str):
        super().__init__(f"{message} (see {prog} --help)")
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors; keep that, one line
        raise UsageError(self.prog, message)


def quiet_broken_pipe(stream: TextIO) -> int:
    """The reader of stdout went away (`bitnet inspect --json | head`): no traceback, and no
    second BrokenPipeError when the interpreter flushes stdout at exit. Exit 141 (128 + SIGPIPE),
    as a shell reports a writer killed by SIGPIPE: the output was not all delivered, and it is
    neither a pass (0) nor a failed check (1)."""
    import os

    if stream is sys.stdout:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
    return EXIT_BROKEN_PIPE


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bitnet", description="BitNet b1.58 reference implementation and test harness")
    parser.add_argument("--version", action="version", version=f"bitnet-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for modname in SUBCOMMANDS:
        importlib.import_module(modname).register(sub)
    return parser


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The parser, built once per process: building it costs ~0.1 s (argparse and gettext), and
    tests and the fuzz suite call `main` thousands of times. Parsing leaves it unchanged."""
    return build_parser()


def main(argv: Sequence[str] | None = None, io: IO | None = None) -> int:
    io = io or IO()
    parser = _parser()
    try:
        with redirect_stdout(io.stdout):  # argparse prints --help/--version to sys.stdout
            args = parser.parse_args(argv)
    except UsageError as e:
        return error_line(e.prog, e, io.stderr)
    except SystemExit as e:  # --help/--version
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(io.stdout)
        return EXIT_USAGE
    try:
        return int(args.func(args, io))
    except BrokenPipeError:
        return quiet_broken_pipe(io.stdout)
    except BitNetError as e:
        return error_line(f"bitnet {args.command}", e, io.stderr)
    except OSError as e:  # a file named on the command line could not be read or written
        return error_line(f"bitnet {args.command}", f"{e.filename}: {e.strerror or e}", io.stderr)
    except KeyboardInterrupt:
        print(f"bitnet {args.command}: interrupted", file=io.stderr)
        return 130


def error_line(prog: str, err: object, stream: TextIO) -> int:
    """Print one line `prog: error: reason` (newlines and control characters from the error
    folded so it stays one line) and return exit code 2."""
    from bitnet.cli.args import plain

    text = plain(str(err).replace("\r\n", " ").replace("\n", " "))
    try:
        print(f"{prog}: error: {text}", file=stream)
    except BrokenPipeError:
        pass
    return EXIT_USAGE


def console_main() -> None:
    sys.exit(main())
