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


# ---- --backend / --threads (run, logits, benchmark share bitnet.cli.backend_args) ------------


@pytest.fixture
def restore_backend():
    from bitnet.kernels import dispatch

    yield
    dispatch.set_backend("numpy")


def test_run_reports_the_backend_that_ran(tmp_path, restore_backend):
    from bitnet.kernels.native import native_status

    path = tmp_path / "m.gguf"
    assert run("synth", str(path), "--seed", "3")[0] == 0
    rc, out, _ = run("run", "--model", str(path), "--max-tokens", "3", "--greedy", "--backend", "numpy", "--json")
    assert rc == 0 and json.loads(out)["backend"] == "numpy"
    rc, out, err = run("run", "--model", str(path), "--max-tokens", "3", "--greedy", "--backend", "cpu", "--json")
    assert rc == 0
    want = "native" if native_status()[0] else "numpy"
    assert json.loads(out)["backend"] == want
    if want == "numpy":
        assert "native backend unavailable" in err  # a fallback is said, never silent


def test_threads_and_backend_are_checked(tmp_path, restore_backend, monkeypatch):
    path = tmp_path / "m.gguf"
    assert run("synth", str(path), "--seed", "3")[0] == 0
    rc, _, err = run("run", "--model", str(path), "--threads", "0")
    assert rc == 2 and "--threads: must be >= 1" in err
    monkeypatch.setenv("BITNET_BACKEND", "cuda")  # the benchmark's choice only
    rc, _, err = run("run", "--model", str(path))
    assert rc == 2 and "BITNET_BACKEND" in err
    rc, _, err = run("logits", "--model", str(path), "--ids", "1,2", "--out", str(tmp_path / "l.npz"), "--backend", "bogus")
    assert rc == 2


@pytest.mark.ac9
def test_cpu_backend_without_native_kernels_falls_back_out_loud_and_strict_refuses(tmp_path):
    exe = shutil.which("bitnet")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    import os

    path = tmp_path / "m.gguf"
    assert run("synth", str(path), "--seed", "3")[0] == 0
    env = {**os.environ, "BITNET_NATIVE": "0"}
    env.pop("BITNET_BACKEND", None)
    r = subprocess.run([exe, "run", "--model", str(path), "--max-tokens", "2", "--greedy", "--json"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backend"] == "numpy" and "native backend unavailable" in r.stderr
    r = subprocess.run([exe, "run", "--model", str(path), "--max-tokens", "2", "--strict"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "strict mode refuses" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [("--help",), ("--version",), ("run", "--help"), ("crossval", "--help")])
def test_help_and_version_go_to_the_io_stream(argv, capsys):
    """`main(argv, io)` writes only to the streams it was given: argparse's --help and --version
    go to sys.stdout unless redirected, which a caller capturing `io` would never see."""
    rc, out, err = run(*argv)
    assert rc == 0 and err == ""
    assert ("usage: bitnet" in out) or out.startswith("bitnet-harness ")
    assert capsys.readouterr().out == ""


def test_verify_receipt_help_goes_to_the_io_stream(capsys):
    from bitnet.cli.verify_receipt import main as verify_main

    o, e = _io.StringIO(), _io.StringIO()
    assert verify_main(["--help"], IO(o, e)) == 0
    assert "usage:" in o.getvalue() and capsys.readouterr().out == ""
