"""Progress on long steps: a rich spinner (or a bar when the total is known) with the step's
name and the elapsed time, drawn on stderr.

Shown only when stderr is a terminal and the command was not given `--quiet`: a CI log, a
redirected `2>file` or a test's StringIO gets nothing, and stdout stays clean for what a
command prints as its result (`ref="$(python -m crossval.setup --print-dir)"` still shows the
build's progress on the terminal). The display is transient: it disappears when the step ends,
leaving the command's own one-line messages.

    with progress("building libllama", total=100, stream=io.stderr) as update:
        update(completed=45)          # or update(advance=1); also update(what="...")
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Update = Callable[..., None]


def enabled(stream: TextIO | None = None, quiet: bool = False) -> bool:
    """Whether progress is drawn on `stream` (default stderr)."""
    if quiet:
        return False
    stream = stream if stream is not None else sys.stderr
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
    from rich.console import Console

    c = Console(file=stream)
    return c.is_terminal and not c.is_dumb_terminal


def add_quiet_arg(parser) -> None:
    """The one spelling of the option that turns the display off."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress display (drawn on stderr only when stderr is a terminal)")


def _noop(**_: object) -> None:
    return None


@contextmanager
def progress(what: str, *, total: float | None = None, stream: TextIO | None = None,
             quiet: bool = False) -> Iterator[Update]:
    """A live spinner/bar for one step; yields `update(completed=, advance=, total=, what=)`."""
    if not enabled(stream, quiet):
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    if total is not None:
        columns[2:2] = [BarColumn(), TaskProgressColumn()]
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stream or sys.stderr), transient=True) as p:
        task = p.add_task(what, total=total)

        def update(*, completed: float | None = None, advance: float | None = None,
                   total: float | None = None, what: str | None = None) -> None:
            kw: dict = {}
            if completed is not None:
                kw["completed"] = completed
            if advance is not None:
                kw["advance"] = advance
            if total is not None:
                kw["total"] = total
            if what is not None:
                kw["description"] = what
            p.update(task, **kw)

        yield update
