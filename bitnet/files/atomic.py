"""Atomic file output: write to a temporary file in the target's folder, fsync, rename.

A reader never sees a half-written file, and a failure leaves the previous file untouched.
The file ends up with the mode a plain `open(path, "w")` would give it (0666 less the umask),
or the mode of the file it replaces: `mkstemp` creates 0600, which made every GGUF, receipt and
`.npz` unreadable to other users (CI artifacts) whatever the umask said."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by the
    set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """`with atomic_open(p) as fh: fh.write(...)`: p appears complete, or not at all."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {target}: it is a directory", str(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:  # name the path the user gave, not a hidden temp file
        raise type(e)(e.errno, f"cannot write {target}: {e.strerror}", str(target)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), _final_mode(target))
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_writable(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail fast, before any work, when `path` cannot be written: it is a directory, or its
    nearest existing ancestor is not a writable directory. Raises ConfigError naming the option
    and the path as given (a benchmark must not run for minutes and then fail on its output)."""
    from bitnet.errors import ConfigError

    target = Path(path)
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"{option} {path}: is a directory; give a file path (e.g. {target / 'out.json'})")
    parent = target.parent if str(target.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK) and not os.access(target.parent, os.W_OK):
        raise ConfigError(f"{option} {path}: not writable")
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
