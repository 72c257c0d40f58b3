"""Parity metrics and verdicts (always run, no C++ needed) and the worker's crash isolation (AC4,
AC16)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from crossval.parity import (
    compare,
    parity_receipt,
    position_metrics,
    skipped,
    thresholds,
    write_parity_receipt,
)
from crossval.runner import run_reference
from crossval.timeouts import PARITY_TIMEOUT_S


def test_metrics_on_known_inputs():
    a = np.array([[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]], np.float32)
    (p,) = position_metrics(a, a)
    assert p.cosine == pytest.approx(1.0) and p.max_abs == 0 and p.kl == pytest.approx(0, abs=1e-12)
    assert p.top1_ours == p.top1_ref == 2 and p.top5_overlap == 1.0
    b = a.copy()
    b[0, 0] = 5.0
    (q,) = position_metrics(a, b)
    assert q.max_abs == 4.0 and q.top1_ref == 0 and q.kl > 0.5
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert q.cosine == pytest.approx(float((a64 * b64).sum() / np.linalg.norm(a64) / np.linalg.norm(b64)), rel=1e-12)


@pytest.mark.ac16
def test_verdicts_and_first_divergence():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 50)).astype(np.float32)
    assert compare(ref + 1e-6, ref, "exact").verdict == "pass"
    bad = ref.copy()
    bad[3:] = rng.standard_normal((3, 50))
    r = compare(bad, ref, "exact")
    assert r.verdict == "fail" and r.first_divergence == 3 and "position 3 diverges" in r.reason
    g = compare(ref, ref, "exact", greedy_ours=[1, 2, 3, 9], greedy_ref=[1, 2, 3, 4])
    assert g.verdict == "fail" and g.greedy_match == 0.75 and g.greedy_first_divergence == 3
    assert compare(ref, ref, "cross", greedy_ours=[1] * 20 + [2], greedy_ref=[1] * 21).verdict == "pass"


@pytest.mark.ac16
def test_a_skip_is_never_a_pass():
    s = skipped("no reference")
    assert s.verdict == "skipped" and not s.passed
    assert thresholds("exact")["min_cosine"] == 0.9999 and thresholds("cross")["min_cosine"] == 0.99


@pytest.mark.ac4
def test_one_shared_timeout():
    import inspect

    from crossval.compare import crossval_model

    assert PARITY_TIMEOUT_S == 60.0
    assert inspect.signature(run_reference).parameters["timeout"].default == PARITY_TIMEOUT_S
    assert inspect.signature(crossval_model).parameters["timeout"].default == PARITY_TIMEOUT_S


@pytest.mark.ac4
def test_worker_crash_becomes_an_error_outcome(tmp_path):
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    r = run_reference(tmp_path, tmp_path / "m.gguf", ids=[1], worker_argv=crash)
    assert not r.ok and "crash" in r.error and "SIGSEGV" in r.error


@pytest.mark.ac4
def test_worker_hang_becomes_a_timeout(tmp_path):
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    r = run_reference(tmp_path, tmp_path / "m.gguf", ids=[1], worker_argv=hang, timeout=1.0)
    assert not r.ok and r.error.startswith("timeout")


@pytest.mark.ac4
def test_crossval_model_reports_error_verdicts(tmp_path, bitnet_tiny_model):
    from crossval.compare import crossval_model

    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"]
    r = crossval_model(tmp_path, bitnet_tiny_model, [1, 2], worker_argv=crash)
    assert r.verdict == "error" and "SIGABRT" in r.reason and not r.passed


def test_wrong_cpp_dir_lists_what_was_looked_for(tmp_path):
    from bitnet.errors import BridgeError
    from crossval.reference import locate

    with pytest.raises(BridgeError, match="looked for:.*include/llama.h"):
        locate(tmp_path)


@pytest.mark.ac4
def test_parity_receipt_is_schema_valid_and_atomic(tmp_path, bitnet_tiny_model):
    ref = np.random.default_rng(1).standard_normal((3, 20)).astype(np.float32)
    r = compare(ref, ref, "exact")
    doc = parity_receipt(r, model=bitnet_tiny_model, prompt_ids=[1, 2, 3],
                         engine={"spec": "reference:llama.cpp@numpy", "name": "ours", "version": "0.1.0",
                                 "build": "backend numpy", "numerics": "llama.cpp"},
                         reference={"spec": "libllama:/x", "name": "libllama (upstream)", "version": "test",
                                    "build": "/x/libllama.so", "numerics": "llama.cpp"},
                         timings={"reference_s": 0.1})
    out = tmp_path / "p.json"
    write_parity_receipt(out, doc)
    assert json.loads(out.read_text())["verdict"] == "pass"
    doc["verdict"] = "maybe"
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        write_parity_receipt(tmp_path / "q.json", doc)
    assert not (tmp_path / "q.json").exists()
