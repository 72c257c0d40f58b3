"""The machine side of receipts (AC23): the bandwidth probe the benchmark records, the CPU
allowlist (schema, finite positive bounds, matching by name and flags), allowlist bounds that
are NaN or infinite, and the rule table's shape."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bitnet.errors import ReceiptError
from bitnet.receipts.allowlist import validate_allowlist
from bitnet.receipts.cpu_allowlist import load_cpu_allowlist, match_cpu, validate_cpu_allowlist
from bitnet.receipts.policy import default_cpu_allowlist_path
from bitnet.receipts.probe import measure_bandwidth
from bitnet.receipts.rules import TABLE
from bitnet.receipts.verify import RULES, verify_receipt

ROOT = Path(__file__).resolve().parents[1]
BASE = json.loads((ROOT / "fixtures" / "receipts" / "good" / "base.json").read_text())


@pytest.mark.ac23
def test_the_probe_measures_and_says_how():
    p = measure_bandwidth(threads=2, mib=8, repeats=2)
    assert p["bytes_per_s"] > 0 and p["threads"] == 2 and p["buffer_bytes"] == 8 << 20
    assert "copyto" in p["method"] and "best of 2" in p["method"] and p["seconds"] > 0
    with pytest.raises(ValueError):
        measure_bandwidth(threads=0)


@pytest.mark.ac23
def test_benchmark_records_the_probe_and_the_model_limits(measured_receipt):
    _, _, r = measured_receipt
    assert r["schema_version"] == "1.3.0"
    assert r["machine"]["memory_bandwidth"]["bytes_per_s"] > 0
    assert {"projection_bytes", "context_length", "vocab_size"} <= set(r["model"])
    t = r["timings"]
    assert len(t["decode_step_cpu_s"]) == len(t["decode_step_s"]) and t["prefill_cpu_s"] > 0


@pytest.mark.ac23
def test_committed_cpu_allowlist_is_valid_and_matches_by_name_and_flags():
    al = load_cpu_allowlist(default_cpu_allowlist_path())
    intel = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx2", "avx512f", "avx_vnni", "avx512_fp16"]}
    assert match_cpu(al, intel)["name"] == "Intel(R) Xeon(R) Processor"
    assert match_cpu(al, {**intel, "cpu_flags": ["avx2"]}) is None  # same name, another generation
    assert match_cpu(al, {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "sse4a", "fma"]})["name"] == "AMD EPYC"
    assert all(e["source"].strip() for e in al["cpus"])


@pytest.mark.ac23
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_allowlist_bounds_must_be_finite_and_positive(bad):
    cpu = {"schema_version": "1.0.0", "cpus": [{"name": "X", "flags": [], "max_bytes_per_s_per_thread": 1e10,
                                               "min_call_seconds": {"rms_norm_f32_numpy": 1e-6}, "source": "t"}]}
    for where in ("max_bytes_per_s_per_thread", "floor"):
        c = copy.deepcopy(cpu)
        if where == "floor":
            c["cpus"][0]["min_call_seconds"]["rms_norm_f32_numpy"] = bad
        else:
            c["cpus"][0][where] = bad
        with pytest.raises(ReceiptError):
            validate_cpu_allowlist(c)
    gpu = {"schema_version": "1.0.0", "gpus": [{"name": "G", "compute_capability": "9.0", "max_bytes_per_s": bad, "source": "t"}]}
    with pytest.raises(ReceiptError):
        validate_allowlist(gpu)


@pytest.mark.ac23
def test_created_at_is_judged_against_the_verifier_clock():
    r = copy.deepcopy(BASE)
    assert "R-CREATED-AT" not in verify_receipt(r, now=datetime(2026, 11, 22, 12, 5, tzinfo=UTC)).failed_rules
    assert "R-CREATED-AT" in verify_receipt(r, now=datetime(2026, 11, 21, tzinfo=UTC)).failed_rules


@pytest.mark.ac23
def test_non_finite_numbers_stop_verification():
    r = copy.deepcopy(BASE)
    r["timings"]["decode_step_s"][3] = float("-inf")
    res = verify_receipt(r)
    assert res.failed_rules == ["R-FINITE"] and [x.rule for x in res.results] == ["R-SCHEMA-MAJOR", "R-FINITE"]


@pytest.mark.ac23
def test_every_rule_is_one_function_with_a_reason():
    assert list(RULES) == [r.id for r in TABLE] and len(set(RULES)) == len(RULES) >= 45
    assert all(r.reason and "\n" not in r.reason for r in TABLE)
    assert len({r.check for r in TABLE}) == len(TABLE)


@pytest.mark.ac23
def test_without_a_cpu_allowlist_only_generic_bounds_apply():
    lie = copy.deepcopy(json.loads((ROOT / "ci" / "native-2b4t-shape-i2_s.json").read_text()))
    for k in lie["decode_kernels"] + lie["kernels"]:
        k["seconds"] /= 10
    assert "R-CPU-CALL-FLOOR" in verify_receipt(lie).failed_rules
    assert "R-CPU-CALL-FLOOR" in verify_receipt(lie, cpu_allowlist=None).skipped_rules
