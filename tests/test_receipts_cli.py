"""`bitnet-verify-receipt` in-process and as a process (AC13): exit 0 pass, 1 fail, 2 unreadable
or usage; a rich table by default, JSON with --json."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.cli import IO
from bitnet.cli.verify_receipt import main as verify_main

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "fixtures" / "receipts"
GOOD = HERE / "good" / "base.json"


def run_verify(*argv):
    out, err = io.StringIO(), io.StringIO()
    return verify_main(list(map(str, argv)), IO(out, err)), out.getvalue(), err.getvalue()


@pytest.mark.ac13
def test_pass_prints_a_table_and_exits_0(receipt_base_model):
    rc, out, _ = run_verify(GOOD, "--model", receipt_base_model)
    assert rc == 0
    assert "PASS" in out and "R-MODEL-SHA256" in out and "R-BANDWIDTH-CEILING" in out


@pytest.mark.ac13
def test_fail_names_the_rule_and_exits_1():
    rc, out, _ = run_verify(HERE / "bad" / "mock_kernel.json")
    assert rc == 1 and "FAIL" in out and "R-KERNEL-MOCK" in out and "i2s_mock_gemm_numpy" in out


@pytest.mark.ac13
def test_json_output_lists_every_applied_rule():
    rc, out, _ = run_verify(GOOD, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["passed"] is True
    assert all(set(r) == {"rule", "passed", "message", "status"} for r in doc["rules"])
    assert all(r["passed"] == (r["status"] == "pass") for r in doc["rules"])


@pytest.mark.ac13
def test_require_gpu_kernels_fails_a_cpu_receipt():
    rc, out, _ = run_verify(GOOD, "--require-gpu-kernels", "--json")
    failed = {r["rule"] for r in json.loads(out)["rules"] if r["status"] == "fail"}
    assert rc == 1 and failed == {"R-GPU-KERNEL", "R-GPU-FINGERPRINT"}


def test_unreadable_or_usage_is_exit_2(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{not json")
    rc, _, err = run_verify(p)
    assert rc == 2 and "not JSON" in err
    assert run_verify(tmp_path / "missing.json")[0] == 2
    assert run_verify()[0] == 2  # no receipt
    assert run_verify(GOOD, "--no-such-flag")[0] == 2  # argparse usage error
    assert run_verify(GOOD, "--model", tmp_path / "missing.gguf")[0] == 2
    assert run_verify(GOOD, "--allowlist", tmp_path / "missing.yml")[0] == 2


def test_a_json_array_is_a_schema_failure(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("[1, 2]")
    rc, out, _ = run_verify(p, "--json")
    assert rc == 1 and [r["rule"] for r in json.loads(out)["rules"]] == ["R-SCHEMA"]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.ac13
def test_module_entry_point_runs_as_a_process(receipt_base_model):
    cmd = [sys.executable, "-m", "bitnet.cli.verify_receipt"]
    r = subprocess.run([*cmd, str(GOOD), "--model", str(receipt_base_model), "--json"],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0 and json.loads(r.stdout)["passed"] is True, r.stderr
    r = subprocess.run([*cmd, str(HERE / "bad" / "unknown_schema_major.json")],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 1 and "R-SCHEMA-MAJOR" in r.stdout


def test_console_script_when_installed(tmp_path):
    exe = shutil.which("bitnet-verify-receipt")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    r = subprocess.run([exe, str(HERE / "bad" / "mock_kernel.json")], capture_output=True, text=True,
                       timeout=120, env=_env())
    assert r.returncode == 1 and "R-KERNEL-MOCK" in r.stdout
    r = subprocess.run([exe, str(tmp_path / "nope.json")], capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 2
