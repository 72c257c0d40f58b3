"""Hostile and clumsy command lines: exit 2 with exactly one stderr line, no traceback (AC25)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.cli import IO
from bitnet.cli.verify_receipt import main as verify_main
from tests._cli import run_cli as _cli

pytestmark = pytest.mark.ac25

ROOT = Path(__file__).resolve().parents[1]


def _one_line_2(rc: int, err: str, *texts: str) -> None:
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for t in texts:
        assert t in err, err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from bitnet.synth import synthesize

    return str(synthesize(tmp_path_factory.mktemp("hostile") / "m.gguf", fmt="i2_s"))


def test_a_directory_where_a_file_is_expected(tmp_path, model):
    d = str(tmp_path)
    for argv in (["inspect", d], ["run", "--model", d], ["tokenize", d, "hi"], ["logits", "--model", d, "--ids", "1", "--out", "x"],
                 ["benchmark", "--model", d], ["synth", "x.gguf", "--vocab", d], ["validate", d],
                 ["crossval", "--cpp-dir", d, "--model", d, "--ids", "1"], ["tokenize", model, "--file", d]):
        rc, _, err = _cli(*argv)
        _one_line_2(rc, err, "is a directory, expected a file")
    rc, out, err = _one(verify_main, "x.json", "--model", d)
    _one_line_2(rc, err)
    rc, _, err = _cli("logits", "--model", model, "--ids", "1", "--out", d)
    _one_line_2(rc, err, f"--out {d}: is a directory")
    rc, _, err = _cli("synth", d)
    _one_line_2(rc, err, "is a directory")


def _one(fn, *argv):
    out, err = io.StringIO(), io.StringIO()
    return fn(list(argv), IO(out, err)), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv,text", [
    (["run", "--seed", "-1"], "seed must be in 0.."),
    (["run", "--seed", "abc"], "seed must be an integer"),
    (["run", "--seed", str(2**64)], "seed must be in 0.."),
    (["run", "--max-tokens", "-3"], "must be >= 0"),
    (["run", "--top-k", "-1"], "must be >= 0"),
    (["run", "--temperature", "nan"], "finite"),
    (["run", "--stop", ""], "must not be empty"),
    (["run", "--threads", "0"], "must be >= 1"),
    (["benchmark", "--tokens", "0"], "must be >= 1"),
    (["crossval", "--cpp-dir", "/nonexistent-dir", "--model", "x", "--ids", "1"], "no such directory"),
    (["inspect", "/nonexistent.gguf"], "no such file"),
])
def test_bad_arguments_are_refused_by_argparse(argv, text):
    rc, out, err = _cli(*argv)
    _one_line_2(rc, err, text)
    assert out == ""


def test_system_without_chat_is_refused(model):
    rc, _, err = _cli("run", "--model", model, "--system", "be terse", "--backend", "numpy")
    _one_line_2(rc, err, "--system", "--chat")


def test_fetch_vocab_onto_an_existing_file_refuses_and_leaves_it(tmp_path):
    f = tmp_path / "vocab"
    f.write_text("precious", encoding="utf-8")
    rc, _, err = _cli("fetch-vocab", str(f))
    _one_line_2(rc, err, "exists and is not a directory")
    assert f.read_text(encoding="utf-8") == "precious"


def test_invalid_utf8_prompt_is_rejected(model):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for argv in ([b"run", b"--model", model.encode(), b"--prompt", b"caf\xe9"], [b"tokenize", model.encode(), b"\xff\xfe"]):
        r = subprocess.run([sys.executable.encode(), b"-m", b"bitnet", *argv], capture_output=True, env=env, timeout=300)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 2 and err.count("\n") == 1 and "not valid UTF-8" in err and "Traceback" not in err, err


def test_stdout_closed_early_is_quiet(model):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(f"{sys.executable} -m bitnet inspect --json --full-arrays {model} | head -c 100 >/dev/null; "
                       "echo \"rc=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash", capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.stderr == "" and r.stdout.strip() in ("rc=141", "rc=0"), (r.stdout, r.stderr)


def test_refused_and_failed_logits_leave_no_file(model, tmp_path):
    out = tmp_path / "sub" / "l.npz"
    rc, _, err = _cli("logits", "--model", model, "--ids", "1,999999", "--out", str(out), "--backend", "numpy")
    assert rc == 2 and not out.exists() and not list(tmp_path.rglob("*.tmp")), err
