"""Progress on long steps (issue 15): drawn on stderr when it is a terminal (a pty here), with
what is being done and the elapsed time; nothing with --quiet or when stderr is not a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.progress import enabled, progress

ROOT = Path(__file__).resolve().parents[1]


def run_with_pty_stderr(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run argv with stderr on a pseudo-terminal (what a user's terminal is); returns (rc,
    stdout, stderr as the terminal received it)."""
    master, slave = os.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("NO_COLOR", None)
    env.pop("CI", None)
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not b:
            break
        chunks.append(b)
    out = p.stdout.read().decode()
    rc = p.wait()
    os.close(master)
    return rc, out, b"".join(chunks).decode(errors="replace")


def test_synth_shows_what_and_elapsed_on_a_terminal(tmp_path):
    rc, out, err = run_with_pty_stderr([sys.executable, "-m", "bitnet", "synth", "m.gguf", "--format", "i2_s"],
                                       tmp_path)
    assert rc == 0, err
    assert "synthesising tiny bitnet-b1.58 i2_s" in err
    assert re.search(r"\d:\d\d:\d\d", err), err  # elapsed time column
    assert "wrote" in out and "synthesising" not in out  # stdout stays the command's result


def test_quiet_and_non_terminal_draw_nothing(tmp_path):
    rc, out, err = run_with_pty_stderr([sys.executable, "-m", "bitnet", "synth", "m.gguf", "--quiet"], tmp_path)
    assert rc == 0 and "synthesising" not in err
    r = subprocess.run([sys.executable, "-m", "bitnet", "synth", "n.gguf"], cwd=tmp_path, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and r.stderr == ""


def test_disabled_progress_is_a_noop(capsys):
    import io

    s = io.StringIO()
    assert not enabled(s)
    with progress("x", total=3, stream=s) as update:
        update(advance=1, what="y")
    assert s.getvalue() == ""


def test_cmake_build_output_drives_the_bar():
    from crossval.setup import _run

    seen = []
    script = "print('[  3%] Building C object ggml/src/ggml.c.o'); print('noise'); print('[100%] Linking CXX shared library libllama.so')"
    _run([sys.executable, "-c", script], sys.stderr,
         on_line=lambda line: __import__("crossval.setup", fromlist=["_cmake_percent"])._cmake_percent(
             line, lambda **kw: seen.append(kw)))
    assert [kw["completed"] for kw in seen] == [3, 100]
    assert "ggml.c.o" in seen[0]["what"]


def test_failing_step_keeps_its_output_for_the_error():
    from bitnet.errors import BridgeError
    from crossval.setup import _run

    with pytest.raises(BridgeError, match=r"failed \(3\)[\s\S]*boom"):
        _run([sys.executable, "-c", "import sys; print('out'); sys.stderr.write('boom'); sys.exit(3)"], sys.stderr)
