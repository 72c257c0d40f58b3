"""Receipts of real runs (AC14): a `bitnet benchmark` receipt made in this session passes every
rule, and editing any figure it measured makes verification fail (Hypothesis)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.cli import IO
from bitnet.cli import main as bitnet_main
from bitnet.receipts.verify import RULES, verify_receipt

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ac14
def test_benchmark_receipt_passes_every_rule(measured_receipt):
    model, _, receipt = measured_receipt
    result = verify_receipt(receipt, model=model)
    assert result.passed, [r for r in result.results if not r.passed]
    applied = {r.rule for r in result.results}
    # a numpy receipt with --model exercises every rule but the GPU ones and the engine-receipt ones
    assert applied == set(RULES) - {"R-GPU-KERNEL", "R-GPU-TERNARY", "R-GPU-FINGERPRINT", "R-GPU-ALLOWLIST",
                                     "R-SIGNATURE", "R-RERUN", "R-OBSERVED", "R-ENGINE-SEES"}
    # a receipt of this version records everything its rules need: nothing is skipped
    assert result.skipped_rules == [], [r for r in result.results if r.status == "skip"]
    assert receipt["backend"] == "numpy" and receipt["compute_path"] == "real"
    assert receipt["generation"]["generated_tokens"] == 6 == len(receipt["timings"]["decode_step_s"])
    assert any(k["id"].startswith("i2s_") for k in receipt["decode_kernels"])
    assert "gpu" not in receipt["machine"]  # never a GPU fingerprint for a CPU run


# load_s is bounded (total >= load + prefill + decode) but not recomputable, so lowering it is
# undetectable by design; docs/reference/receipts.md lists what cannot be checked
MEASURED = ["timings.prefill_s", "timings.decode_s", "timings.total_s",
            "throughput.prefill_tok_s", "throughput.decode_tok_s", "throughput.e2e_tok_s",
            "model.weight_bytes_per_token", "model.bytes", "generation.generated_tokens", "prompt.tokens"]


@pytest.mark.ac14
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(MEASURED), factor=st.sampled_from([0.5, 0.8, 1.25, 2.0, 10.0]))
def test_editing_a_measured_field_fails(measured_receipt, field, factor):
    model, _, receipt = measured_receipt
    r = copy.deepcopy(receipt)
    a, b = field.split(".")
    v = r[a][b]
    r[a][b] = type(v)(v * factor) if isinstance(v, float) else max(0, int(round(v * factor)) + (1 if factor > 1 else -1))
    assert not verify_receipt(r, model=model).passed, field


EDITS = ["drop_id", "add_id", "drop_step", "scale_step", "shrink_kernel_bytes", "grow_kernel_bytes",
         "grow_kernel_seconds", "grow_kernel_calls", "sha", "rename_kernel_mock", "formats", "arch"]


@pytest.mark.ac14
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(EDITS), data=st.data())
def test_editing_ids_steps_kernels_or_model_facts_fails(measured_receipt, which, data):
    model, _, receipt = measured_receipt
    r = copy.deepcopy(receipt)
    dk = r["decode_kernels"]
    i = data.draw(st.integers(0, len(dk) - 1))
    steps = r["timings"]["decode_step_s"]
    if which == "drop_id":
        r["generation"]["token_ids"].pop()
    elif which == "add_id":
        r["generation"]["token_ids"].append(1)
    elif which == "drop_step":
        steps.pop()
    elif which == "scale_step":
        j = data.draw(st.integers(0, len(steps) - 1))
        steps[j] *= data.draw(st.sampled_from([0.0, 0.1, 3.0, 50.0]))
    elif which == "shrink_kernel_bytes":
        for k in dk:
            k["bytes_read"] //= 3
    elif which == "grow_kernel_bytes":
        k = next(k for k in dk if "_gemm" in k["id"] or "_gemv" in k["id"])
        k["bytes_read"] *= 2
    elif which == "grow_kernel_seconds":
        dk[i]["seconds"] += r["timings"]["total_s"]
    elif which == "grow_kernel_calls":
        dk[i]["calls"] *= 2
    elif which == "sha":
        r["model"]["sha256"] = "f" * 64
    elif which == "rename_kernel_mock":
        for ks in (r["kernels"], dk):
            for k in ks:
                if k["id"] == dk[i]["id"]:
                    k["id"] = "mock_" + k["id"]
    elif which == "formats":
        r["model"]["formats"] = {"tq2_0": sum(r["model"]["formats"].values())}
    else:
        r["model"]["architecture"] = "bitnet"
    assert not verify_receipt(r, model=model).passed, which


@pytest.mark.ac14
@pytest.mark.ac15
@pytest.mark.parametrize("path", sorted((ROOT / "ci").glob("*.json")), ids=lambda p: p.name)
def test_committed_receipts_of_real_runs_verify(path):
    """ci/ holds receipts of real runs (CPU native on this machine; CUDA on an H100): each passes
    every rule that does not need the model file."""
    receipt = json.loads(path.read_text())
    result = verify_receipt(receipt)
    assert result.passed, [r for r in result.results if r.status == "fail"]
    if receipt["backend"] == "cuda":
        assert receipt["machine"]["gpu"]["name"] and any("_cuda" in k["id"] for k in receipt["decode_kernels"])


@pytest.mark.ac15
def test_cuda_benchmark_skips_cleanly_without_a_gpu(tmp_path, bitnet_tiny_model):
    from bitnet.kernels.cuda import cuda_status

    if cuda_status()[0]:
        pytest.skip("a CUDA device is present: the skip path does not apply")
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "gpu.json"
    rc = bitnet_main(["benchmark", "--model", str(bitnet_tiny_model), "--backend", "cuda", "--out", str(target)], IO(out, err))
    assert rc == 0 and out.getvalue().startswith("SKIP: no CUDA device available")
    assert not target.exists()


def test_failed_run_writes_nothing(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF")
    target = tmp_path / "r.json"
    out, err = io.StringIO(), io.StringIO()
    assert bitnet_main(["benchmark", "--model", str(bad), "--out", str(target)], IO(out, err)) == 2
    assert not target.exists()


@pytest.mark.ac14
@pytest.mark.ac20
def test_native_benchmark_receipt_names_the_variant_and_threads(tmp_path, bitnet_model_factory):
    from bitnet.kernels import dispatch
    from bitnet.kernels.native import best_variant, native_status

    if not native_status()[0]:
        pytest.skip(f"native kernels unavailable: {native_status()[1]}")
    model = bitnet_model_factory(fmt="tq2_0", arch="bitnet", seed=5)
    target = tmp_path / "native.json"
    try:
        rc = bitnet_main(["benchmark", "--model", str(model), "--tokens", "4", "--deterministic",
                          "--backend", "native", "--threads", "1", "--out", str(target)], IO(io.StringIO(), io.StringIO()))
    finally:
        dispatch.set_backend("numpy")
    assert rc == 0
    receipt = json.loads(target.read_text())
    assert receipt["backend"] == "native" and receipt["threads"] == 1
    ids = {k["id"] for k in receipt["decode_kernels"]}
    assert f"tq2_0_{best_variant()}_gemv" in ids, ids
    result = verify_receipt(receipt, model=model)
    assert result.passed, [r for r in result.results if r.status == "fail"]
