"""The one function that turns a receipt file into Python data: `load_receipt(path)`.

Why a loader of its own rather than `json.load`: a receipt comes from another machine (CI, a
vendor, an attacker), and `json.load` accepts things the verifier must never see or cannot
report cleanly. Each refusal below is a `ReceiptError` naming the file and the reason, so the
CLI exits 2 ("could not read the input") instead of 1 ("a rule failed") or a traceback:

- bytes that are not UTF-8 (a UTF-16 or Latin-1 file, with the encoding named when a BOM or the
  NUL pattern gives it away), and lone surrogates smuggled in as ``\\ud800`` escapes (they
  cannot be printed or written back as UTF-8);
- nesting deeper than `MAX_DEPTH`, checked on the raw text *before* parsing, because CPython's
  JSON scanner recurses and would raise RecursionError (or crash) on 100,000 brackets;
- numbers a receipt cannot hold: floats that overflow to infinity (``1e400``) and integers
  beyond 64 bits (``10**400``: later arithmetic on them overflows floats). The literals
  NaN/Infinity/-Infinity (not JSON, but what Python's json writes) are read as floats so that
  the verifier's R-FINITE gate fails the receipt (exit 1: a non-finite figure is a failed
  check, not an unreadable file);
- duplicate keys in one object (JSON leaves the winner unspecified; naming the key beats
  silently verifying whichever copy the parser kept);
- files larger than `MAX_BYTES` (a receipt is kilobytes).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import ReceiptError

#: deepest nesting of objects/arrays accepted (a real receipt nests 4 levels)
MAX_DEPTH = 64
#: largest receipt file read (a real one is a few KiB; decode_step_s lists grow with tokens)
MAX_BYTES = 64 * 1024 * 1024
#: integers a receipt may hold: signed 64-bit, like every counter it records
INT_LIMIT = 2**63

_BOMS = ((b"\xef\xbb\xbf", "UTF-8 with a byte-order mark"), (b"\xff\xfe", "UTF-16 little-endian"),
         (b"\xfe\xff", "UTF-16 big-endian"))


def _refuse(path: str, why: str) -> ReceiptError:
    return ReceiptError(f"{path}: {why}")


def _text(path: str, raw: bytes) -> str:
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise _refuse(path, f"encoded as {name}; a receipt must be UTF-8 without a BOM")
    if b"\x00" in raw:
        raise _refuse(path, "holds NUL bytes: UTF-16 or UTF-32 without a byte-order mark? A receipt must be UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _refuse(path, f"not UTF-8: byte {e.start} (0x{raw[e.start]:02x}): {e.reason} "
                            "(Latin-1 or another 8-bit encoding?)") from None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def _max_depth(text: str) -> int:
    """Deepest bracket nesting outside strings, counted without recursion (strings blanked by a
    regex, brackets summed by NumPy), so the check itself cannot overflow the stack."""
    b = np.frombuffer(_STRING.sub('""', text).encode("utf-8"), np.uint8)
    if b.size == 0:
        return 0
    step = np.zeros(b.size, np.int64)
    step[(b == ord("[")) | (b == ord("{"))] = 1
    step[(b == ord("]")) | (b == ord("}"))] = -1
    return int(np.cumsum(step).max())


def _object(path: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise _refuse(path, f"duplicate key {k!r} in one JSON object")
            out[k] = v
        return out

    return hook


def _int(path: str):
    def parse(s: str) -> int:
        if len(s.lstrip("-")) > 19 or not -INT_LIMIT <= (v := int(s)) < INT_LIMIT:
            raise _refuse(path, f"integer {s[:24]}{'...' if len(s) > 24 else ''} ({len(s)} digits) "
                                f"is outside the signed 64-bit range")
        return v

    return parse


def _float(path: str):
    def parse(s: str) -> float:
        v = float(s)
        if not np.isfinite(v):
            raise _refuse(path, f"number {s[:24]} overflows a 64-bit float")
        return v

    return parse


def _constant(path: str):
    def parse(name: str) -> float:
        return float(name)  # judged by the verifier's R-FINITE rule

    return parse


def _check_strings(path: str, data: Any) -> None:
    """Every key and string must encode as UTF-8 (no lone surrogates from \\uD800 escapes)."""
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                _utf8(path, k)
                stack.append(v)
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str):
            _utf8(path, x)


def _utf8(path: str, s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _refuse(path, f"string {s[:40]!r} holds a lone surrogate (U+{ord(s[e.start]):04X}) that is "
                            "not a character") from None


def parse_receipt(raw: bytes, path: str = "<receipt>") -> Any:
    """Decode and parse receipt bytes with every refusal above; returns the JSON value."""
    text = _text(path, raw)
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise _refuse(path, f"JSON nests {depth} levels deep, more than the {MAX_DEPTH} a receipt may")
    try:
        data = json.loads(text, object_pairs_hook=_object(path), parse_int=_int(path),
                          parse_float=_float(path), parse_constant=_constant(path))
    except json.JSONDecodeError as e:
        raise _refuse(path, f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # unreachable after the depth check; kept so no input escapes untyped
        raise _refuse(path, "JSON nests too deeply") from None
    _check_strings(path, data)
    return data


def load_receipt(path: str | os.PathLike[str]) -> Any:
    """Read a receipt (or any JSON the receipt tools take) from `path`; `ReceiptError` names the
    file and the reason for every refusal (missing, a directory, unreadable, too large, not
    UTF-8, not JSON, too deep, a non-finite or too-large number, a duplicate key)."""
    return read_receipt(path)[0]


def read_receipt(path: str | os.PathLike[str]) -> tuple[Any, bytes]:
    """`load_receipt`, also returning the file's bytes (a signature covers the bytes)."""
    p = Path(path)
    name = str(path)
    if p.is_dir():
        raise _refuse(name, "is a directory, expected a receipt JSON file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as e:
        raise _refuse(name, e.strerror or str(e)) from None
    if len(raw) > MAX_BYTES:
        raise _refuse(name, f"larger than {MAX_BYTES:,} bytes; not a receipt")
    return parse_receipt(raw, name), raw
