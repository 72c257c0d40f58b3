"""The `bitnet` CLI in-process (main(argv, io) -> exit code) and through the console script."""

from __future__ import annotations

import io as _io
import json
import shutil
import subprocess

import pytest

from bitnet.cli import IO, main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = _io.StringIO(), _io.StringIO()
    rc = main(list(argv), IO(out, err))
    return rc, out.getvalue(), err.getvalue()


def test_synth_then_inspect_json(tmp_path):
    path = tmp_path / "m.gguf"
    rc, out, _ = run("synth", str(path), "--arch", "bitnet", "--format", "f16", "--seed", "4")
    assert rc == 0 and "weights are random" in out
    rc, out, _ = run("inspect", str(path), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["metadata"]["general.architecture"]["value"] == "bitnet"
    toks = doc["metadata"]["tokenizer.ggml.tokens"]["value"]
    assert toks["length"] == 384 and len(toks["head"]) == 8  # long arrays summarised
    t = {x["name"]: x for x in doc["tensors"]}
    assert t["blk.0.ffn_down.weight"]["shape"] == [512, 256]
    assert t["blk.0.ffn_down.weight"]["type"] == "F16"
    assert t["blk.0.ffn_down.weight"]["bytes"] == 512 * 256 * 2


def test_inspect_table(tmp_path):
    path = tmp_path / "m.gguf"
    run("synth", str(path))
    rc, out, _ = run("inspect", str(path))
    assert rc == 0
    assert "token_embd.weight" in out and "bitnet-b1.58.block_count" in out and "x384" in out


@pytest.mark.parametrize("content", [b"", b"GGUF", b"NOPE" * 10, b"GGUF\x03\x00\x00\x00" + b"\xff" * 16])
def test_inspect_bad_file_one_line_exit_2(tmp_path, content):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    rc, out, err = run("inspect", str(p))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("bitnet inspect: error: ") and "Traceback" not in err


def test_missing_file_and_usage(tmp_path):
    rc, _, err = run("inspect", str(tmp_path / "nope.gguf"))
    assert rc == 2 and "nope.gguf" in err
    assert run()[0] == 2
    assert run("inspect")[0] == 2


@pytest.mark.ac8
def test_console_script_demo():
    exe = shutil.which("bitnet")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    r = subprocess.run([exe, "inspect", "--demo", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metadata"]["general.architecture"]["value"] == "bitnet-b1.58"
    r = subprocess.run([exe, "inspect", "/nonexistent.gguf"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
