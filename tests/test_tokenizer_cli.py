"""`bitnet tokenize`, in-process: ids, --json, --file, --add-special, --parse-special,
--decode, and every bad input as one line on stderr with exit code 2."""

from __future__ import annotations

import io
import json
import re
import shlex

import pytest

from bitnet.cli import IO, main
from tests._vocab import REPO, vocab_path


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), IO(out, err)), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def vocab() -> str:
    return str(vocab_path("llama-bpe"))


@pytest.mark.ac5
def test_tokenize_text_json_file_and_flags(vocab, tmp_path):
    rc, out, _ = run("tokenize", vocab, "Hello world", "--json")
    assert rc == 0 and json.loads(out) == {"ids": [9906, 1917]}
    rc, out, _ = run("tokenize", vocab, "Hello world")
    assert rc == 0 and out == "9906 1917\n"
    assert run("tokenize", vocab, "Hello", "--add-special")[1].split() == ["128000", "9906"]
    assert run("tokenize", vocab, "<|eot_id|>", "--parse-special")[1].split() == ["128009"]
    assert len(run("tokenize", vocab, "<|eot_id|>")[1].split()) > 1
    f = tmp_path / "t.txt"
    f.write_text("Hello world", encoding="utf-8")
    assert run("tokenize", vocab, "--file", str(f))[1].split() == ["9906", "1917"]


@pytest.mark.ac5
def test_decode(vocab):
    rc, out, _ = run("tokenize", vocab, "--decode", "9906", "1917")
    assert rc == 0 and out == "Hello world\n"
    rc, out, _ = run("tokenize", vocab, "--decode", "128000", "9906", "--json")
    assert rc == 0 and json.loads(out) == {"text": "Hello"}
    rc, out, _ = run("tokenize", vocab, "--decode", "128000", "9906", "--parse-special")
    assert out == "<|begin_of_text|>Hello\n"


@pytest.mark.parametrize("argv,message", [
    ((), "give TEXT or --file"),
    (("Hello", "--file", "x.txt"), "give TEXT or --file"),
    (("--decode", "999999"), "outside the vocabulary"),
    (("--decode", "-1"), "outside the vocabulary"),
    (("--decode", "1", "--file", "x.txt"), "--decode takes ids only"),
    (("--file", "missing.txt"), "missing.txt"),
])
def test_bad_input_is_one_line_and_exit_2(vocab, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("x", encoding="utf-8")  # exists: the refusal is about the combination
    rc, out, err = run("tokenize", vocab, *argv)
    assert rc == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_bad_file_and_model(tmp_path, vocab):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf\xe9")
    rc, _, err = run("tokenize", vocab, "--file", str(f))
    assert rc == 2 and "not UTF-8" in err and err.count("\n") == 1
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    rc, _, err = run("tokenize", str(junk), "hi")
    assert rc == 2 and err.count("\n") == 1
    rc, _, err = run("tokenize", str(tmp_path / "nope.gguf"), "hi")
    assert rc == 2 and "nope.gguf" in err
    rc, _, err = run("tokenize", vocab, "--decode", "x")  # argparse: usage + one error line, exit 2
    assert rc == 2


HOWTO = REPO / "docs" / "how-to" / "tokenize.md"


def test_howto_transcript_is_what_the_commands_print(tmp_path, monkeypatch):
    """docs/how-to/tokenize.md shows output for its commands; they must print exactly that."""
    text = HOWTO.read_text(encoding="utf-8")
    transcript = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    assert run("synth", "m.gguf")[0] == 0
    commands = re.findall(r"^\$ bitnet (.*)\n((?:(?!\$ ).*\n)*)", transcript, re.M)
    assert len(commands) >= 5
    for command, expected in commands:
        rc, out, err = run(*shlex.split(command))
        assert rc == 0, err
        assert out == expected, command
