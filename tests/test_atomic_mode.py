"""Atomic writes give files the umask's mode (not mkstemp's 0600) and stay atomic (AC26)."""

from __future__ import annotations

import os
import stat

import pytest

from bitnet.files.atomic import atomic_open, atomic_write_text, current_umask

pytestmark = pytest.mark.ac26


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_gets_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    p = atomic_write_text(tmp_path / "r.json", "{}\n")
    assert mode(p) == expected
    assert p.read_text() == "{}\n"
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_replacing_keeps_the_existing_mode(tmp_path, umask):
    umask(0o022)
    p = tmp_path / "a.yml"
    p.write_text("old\n")
    os.chmod(p, 0o640)
    atomic_write_text(p, "new\n")
    assert mode(p) == 0o640 and p.read_text() == "new\n"


def test_failure_leaves_the_old_file_and_no_temp(tmp_path, umask):
    umask(0o077)
    p = tmp_path / "x.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(p) as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["x.bin"]


def test_gguf_and_receipt_outputs_are_readable_by_others(tmp_path, umask):
    """The files issue 15 found at 0600: a synthesised GGUF (the streaming writer)."""
    from bitnet.synth import synthesize

    umask(0o022)
    g = synthesize(tmp_path / "m.gguf", preset="tiny", fmt="i2_s", seed=0)
    assert mode(g) == 0o644


@pytest.mark.parametrize("how", ["dir", "slash", "file-parent"])
def test_benchmark_out_fails_fast_naming_the_path(tmp_path, how):
    """`bitnet benchmark --out DIR` stops before running (no model load, no measurement) with
    exit 2 and one line naming the path given, not a hidden temp file."""
    import io as _io

    from bitnet.cli import IO, main

    if how == "dir":
        out = tmp_path
    elif how == "slash":
        out = f"{tmp_path}/new-folder/"
    else:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "r.json"
    o, e = _io.StringIO(), _io.StringIO()
    junk = tmp_path / "junk.gguf"  # a file (argparse checks that), but loading it would fail
    junk.write_bytes(b"not a model")
    rc = main(["benchmark", "--backend", "numpy", "--model", str(junk),
               "--out", str(out)], IO(o, e))
    assert rc == 2
    err = e.getvalue().strip()
    assert len(err.splitlines()) == 1 and f"--out {out}" in err and ".tmp" not in err
    assert "junk.gguf" not in err  # failed before even looking at the model
