"""argparse types and terminal-safe output shared by every command.

Why: a bad argument must be refused by argparse (exit 2, one line naming the option) before a
command starts, not deep inside it as a traceback; and every string that came from a file
(metadata, tensor names, receipt fields) is printed through `markup_safe`, because Rich reads
`[/INST]` as markup and a terminal reads ESC as a command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: largest seed accepted (NumPy takes any non-negative int; receipts store it as int64)
MAX_SEED = 2**63 - 1


def _int(text: str, what: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None


def seed(text: str) -> int:
    """A sampling seed: an integer 0..2**63-1."""
    v = _int(text, "seed")
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{MAX_SEED}, got {v}")
    return v


def count(text: str) -> int:
    """A count that may be zero (e.g. tokens to generate)."""
    v = _int(text, "count")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive(text: str) -> int:
    v = _int(text, "value")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def utf8(text: str) -> str:
    """Text from the command line that must be valid UTF-8 (Python hands undecodable argv bytes
    over as lone surrogates; tokenizing those would silently produce garbage ids)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        byte = ord(bad) - 0xDC00 if 0xDC80 <= ord(bad) <= 0xDCFF else None
        what = f"byte 0x{byte:02x}" if byte is not None else f"U+{ord(bad):04X}"
        raise argparse.ArgumentTypeError(f"is not valid UTF-8 ({what} at character {e.start})") from None
    return text


def nonempty_utf8(text: str) -> str:
    if text == "":
        raise argparse.ArgumentTypeError("must not be empty")
    return utf8(text)


def input_file(text: str) -> str:
    """A path that must name an existing regular file (not a directory)."""
    utf8(text)
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory, expected a file")
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: permission denied")
    return text


def input_dir(text: str) -> str:
    """A path that must name an existing directory."""
    utf8(text)
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, expected a directory")
    return text


def output_file(text: str) -> str:
    """A file to write (atomically): a non-empty UTF-8 path. Whether it can be written (not a
    directory, a writable folder) is checked by `bitnet.files.atomic.check_writable` at the start
    of each writing command, before any work, with the option's name in the message."""
    utf8(text)
    if text == "":
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def output_dir(text: str) -> str:
    """A folder to write into: absent (it is created) or a directory, never an existing file."""
    utf8(text)
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory; refusing to replace it")
    return text


# -- output ------------------------------------------------------------------------------------
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F)}


def plain(s: object) -> str:
    """`s` as printable text: control characters (ESC included) as \\xNN, lone surrogates (from
    undecodable bytes) as \\udcNN, so neither a terminal nor a UTF-8 stream can choke on it."""
    text = str(s).translate(_CONTROL)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def markup_safe(s: object) -> str:
    """`plain(s)` with Rich markup escaped: `[/INST]` prints as itself."""
    from rich.markup import escape

    return escape(plain(s))


def console(stream, width: int = 140):
    """A Rich console for file-derived text: no emoji codes, no auto-highlighting."""
    from rich.console import Console

    return Console(file=stream, width=width, soft_wrap=False, emoji=False, highlight=False)
