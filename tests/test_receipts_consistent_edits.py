"""Consistent-edit generators (AC23): a careful liar scales every time by 1/k and every rate by
k, kernel seconds and CPU seconds included, so every self-consistency rule still holds. The
machine bounds (CPU allowlist, generic floors) must reject such an edit of every receipt in
ci/ at x10 without --rerun, and every unedited receipt must pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.receipts.verify import verify_receipt

ROOT = Path(__file__).resolve().parents[1]
CI = sorted((ROOT / "ci").glob("*.json"))
BASE = ROOT / "fixtures" / "receipts" / "good" / "base.json"
EMPTY_GPU = {"schema_version": "1.0.0", "gpus": []}

#: the self-consistency rules a consistent edit must leave passing (what makes it "careful")
SELF_CONSISTENCY = {"R-DECODE-SUM", "R-DECODE-TPS", "R-PREFILL-TPS", "R-E2E-TPS", "R-TIMING-SUM", "R-KERNEL-TIME",
                    "R-KERNEL-SUBSET", "R-TOKEN-COUNT", "R-BYTES-PER-TOKEN", "R-PROJ-CALLS", "R-CPU-TIME"}


def consistent_edit(receipt: dict, k: float) -> dict:
    """Every time / k, every rate x k, everything else untouched."""
    r = copy.deepcopy(receipt)
    t = r["timings"]
    for key in ("load_s", "prefill_s", "decode_s", "total_s", "prefill_cpu_s"):
        if key in t:
            t[key] /= k
    for key in ("decode_step_s", "decode_step_cpu_s"):
        if key in t:
            t[key] = [s / k for s in t[key]]
    for key in r["throughput"]:
        r["throughput"][key] *= k
    for ks in (r.get("kernels", []), r.get("decode_kernels", [])):  # an engine receipt may have none
        for x in ks:
            x["seconds"] /= k
    probe = r["machine"].get("memory_bandwidth")
    if probe:  # the liar's probe "measured" a k-times faster machine too
        probe["bytes_per_s"] *= k
        probe["seconds"] /= k
    return r


def _load(p: Path) -> dict:
    return json.loads(p.read_text())


@pytest.mark.ac23
@pytest.mark.parametrize("path", CI + [BASE], ids=lambda p: p.name)
def test_every_committed_receipt_passes(path):
    result = verify_receipt(_load(path), allowlist=EMPTY_GPU)
    assert result.passed, [r for r in result.results if r.status == "fail"]


@pytest.mark.ac23
@pytest.mark.parametrize("path", CI + [BASE], ids=lambda p: p.name)
def test_a_consistent_x10_edit_fails_without_rerun(path):
    lie = consistent_edit(_load(path), 10.0)
    result = verify_receipt(lie, allowlist=EMPTY_GPU)
    assert not result.passed
    # careful: the self-consistency rules are all still satisfied; a machine bound caught it
    assert not set(result.failed_rules) & SELF_CONSISTENCY, result.failed_rules
    assert set(result.failed_rules) <= {"R-CPU-CEILING", "R-CPU-CALL-FLOOR", "R-KERNEL-FLOOR", "R-BANDWIDTH-PROBE",
                                        "R-BANDWIDTH-CEILING", "R-GPU-ALLOWLIST"}


@pytest.mark.ac23
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.floats(min_value=10.0, max_value=1e6), which=st.sampled_from(CI + [BASE]))
def test_any_larger_consistent_edit_fails(k, which):
    assert not verify_receipt(consistent_edit(_load(which), k), allowlist=EMPTY_GPU).passed


@pytest.mark.ac23
@pytest.mark.parametrize("path", CI + [BASE], ids=lambda p: p.name)
def test_a_slower_claim_is_never_a_machine_failure(path):
    """Scaling the other way (a slower machine, a loaded one) breaks no machine bound."""
    result = verify_receipt(consistent_edit(_load(path), 0.25), allowlist=EMPTY_GPU)
    assert result.passed, [r for r in result.results if r.status == "fail"]


@pytest.mark.ac23
def test_the_issue_x50_edit_is_now_rejected():
    """The edit issue 13 reported: ci/native-2b4t-shape-i2_s.json at x50 (726 tok/s, 855 GB/s
    on a 2-core CPU) passed before; the CPU allowlist's bound and floors reject it."""
    lie = consistent_edit(_load(ROOT / "ci" / "native-2b4t-shape-i2_s.json"), 50.0)
    assert lie["throughput"]["decode_tok_s"] == pytest.approx(725.85, rel=1e-3)
    assert {"R-CPU-CEILING", "R-CPU-CALL-FLOOR"} <= set(verify_receipt(lie, allowlist=EMPTY_GPU).failed_rules)


@pytest.mark.ac23
def test_an_unlisted_cpu_gets_only_the_generic_bounds():
    """What the docs say honestly: renaming the CPU escapes the allowlist; the generic per-core
    bound and floors still hold the worst lies."""
    r = _load(ROOT / "ci" / "native-2b4t-shape-i2_s.json")
    r["machine"]["cpu"] = "Some Unlisted CPU"
    assert verify_receipt(consistent_edit(r, 10.0), allowlist=EMPTY_GPU).passed
    assert "R-CPU-CEILING" in verify_receipt(consistent_edit(r, 20.0), allowlist=EMPTY_GPU).failed_rules
