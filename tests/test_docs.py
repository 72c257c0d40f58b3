"""Docs: commands in `<!-- doc-test -->` blocks run as written; performance figures name the
machine they were measured on (AC17)."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest

from bitnet.cli import IO, main

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- doc-test -->\s*```bash\n(.*?)```", re.S)
FIGURE = re.compile(r"\b\d+(?:\.\d+)?\s*(?:tok/s|GB/s|MB/s|KB/s|ms\b|µs\b|s per)", re.I)
MACHINE = re.compile(r"measured on", re.I)
ROOT = Path(__file__).resolve().parents[1]


def _verify_receipt(argv, io_):
    from bitnet.cli.verify_receipt import main as verify_main

    # doc commands name repository paths (policies/...) relative to the checkout
    return verify_main([str(ROOT / a) if a.startswith(("policies/", "schemas/")) else a for a in argv], io_)


def _bitnet(argv, io_):
    # an engine spec may name the repository's example engine (examples/...) relative to the checkout
    return main([a.replace(" examples/", f" {ROOT}/examples/") if a.startswith("cmd:") else a for a in argv], io_)


RUNNERS = {"bitnet": _bitnet, "bitnet-verify-receipt": _verify_receipt}


def doc_blocks():
    for md in sorted(DOCS.rglob("*.md")):
        for i, block in enumerate(BLOCK.findall(md.read_text(encoding="utf-8"))):
            yield pytest.param(md, block, id=f"{md.relative_to(DOCS)}#{i}")


@pytest.mark.ac17
@pytest.mark.parametrize("md,block", list(doc_blocks()))
def test_doc_commands_run(md, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
    for line in block.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] in RUNNERS, f"{md}: only {sorted(RUNNERS)} commands are run by this test: {line}"
        out, err = io.StringIO(), io.StringIO()
        rc = RUNNERS[argv[0]](argv[1:], IO(out, err))
        assert rc == 0, f"{md}: `{line}` exited {rc}: {err.getvalue()}"


@pytest.mark.ac17
@pytest.mark.parametrize("md", sorted(DOCS.rglob("*.md")) + [README], ids=lambda p: p.name)
def test_figures_name_their_machine(md):
    text = md.read_text(encoding="utf-8")
    figures = FIGURE.findall(text)
    if figures:
        assert MACHINE.search(text), f"{md}: performance figures {figures[:3]} without 'measured on <machine>'"


def quick_start_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [ln for b in blocks for ln in b.strip().splitlines()]


@pytest.mark.ac8
def test_readme_quick_start_is_install_and_run_then_pytest():
    install_and_run, tests = quick_start_commands()
    assert install_and_run.startswith("pip install -e '.[dev]' && bitnet ")
    assert tests == "pytest"


@pytest.mark.ac8
def test_readme_main_command_runs_through_the_console_script(tmp_path):
    import os
    import shutil
    import subprocess

    exe = shutil.which("bitnet")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    main_cmd = quick_start_commands()[0].split("&&", 1)[1].strip()
    env = dict(os.environ, BITNET_CACHE_DIR=str(tmp_path / "cache"))  # a fresh machine's cache
    r = subprocess.run([exe, *shlex.split(main_cmd)[1:]], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


@pytest.mark.crossval
@pytest.mark.ac26
def test_crossval_howto_step3_runs_as_written(pytestconfig, tmp_path):
    """docs/how-to/crossval.md step 3, run in a shell from an empty folder as a user would (the
    `$(python -m crossval.setup --print-dir)` included), against the reference pytest was given."""
    import os
    import subprocess
    import sys

    cpp = pytestconfig.getoption("--bitnet-cpp-dir")
    if not cpp:
        pytest.skip("needs --bitnet-cpp-dir")
    text = (DOCS / "how-to" / "crossval.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"<!-- crossval-howto -->\s*```bash\n(.*?)```", text, re.S)
    script = block.replace("$(python -m crossval.setup --print-dir)", cpp)
    env = dict(os.environ, BITNET_CACHE_DIR=str(tmp_path / "cache"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    bitnet = f"{sys.executable} -m bitnet"
    script = "\n".join(ln.replace("bitnet ", bitnet + " ", 1) if ln.startswith("bitnet ") else ln
                       for ln in script.splitlines())
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "PASS" in r.stdout and (tmp_path / "parity.json").is_file()
    # and a bitnet-b1.58 model is refused with the arch facts, not "could not load" alone
    subprocess.run([sys.executable, "-m", "bitnet", "synth", "b158.gguf"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    r = subprocess.run([sys.executable, "-m", "bitnet", "crossval", "--cpp-dir", cpp, "--model", "b158.gguf",
                        "--prompt", "Hello"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    assert "'bitnet-b1.58'" in r.stderr and "BitNet archs: bitnet" in r.stderr, r.stderr
    assert "Traceback" not in r.stdout + r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "bitnet", "crossval", "--cpp-dir", str(tmp_path / "nope"), "--model",
                        "m.gguf", "--prompt", "Hello"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "--cpp-dir" in r.stderr and "--bitnet-cpp-dir" not in r.stderr, r.stderr
