"""Running the `bitnet` CLI in-process, as the tests of several areas do."""

from __future__ import annotations

import io

from bitnet.cli import IO, main


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`bitnet ARGV...` through `main(argv, io)`: the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), IO(out, err))
    return rc, out.getvalue(), err.getvalue()
