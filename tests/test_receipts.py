"""Receipts: a real benchmark receipt passes; every lie in the adversarial corpus is rejected by
its rule; hand edits of measured fields fail; the allowlist keeps its comments (AC13, AC14,
AC15, AC18)."""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.cli import IO
from bitnet.cli import main as bitnet_main
from bitnet.cli.verify_receipt import main as verify_main
from bitnet.receipts.allowlist import add_from_receipt, load_allowlist
from bitnet.receipts.verify import verify_receipt

HERE = Path(__file__).resolve().parent / "receipts"
sys.path.insert(0, str(HERE))
import make_bad  # noqa: E402

BASE = json.loads((HERE / "good" / "base.json").read_text())


def run_verify(*argv):
    out, err = io.StringIO(), io.StringIO()
    return verify_main(list(argv), IO(out, err)), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, bitnet_model_factory):
    """A receipt written by `bitnet benchmark` on a freshly synthesised I2_S model."""
    model = bitnet_model_factory(fmt="i2_s", seed=3)
    out = tmp_path_factory.mktemp("receipt") / "inference.json"
    o, e = io.StringIO(), io.StringIO()
    rc = bitnet_main(["benchmark", "--model", str(model), "--tokens", "6", "--deterministic",
                      "--backend", "numpy", "--out", str(out)], IO(o, e))
    assert rc == 0, e.getvalue()
    return model, out, json.loads(out.read_text())


@pytest.mark.ac14
def test_benchmark_receipt_passes_every_rule(real_run):
    model, path, receipt = real_run
    result = verify_receipt(receipt, model=model)
    assert result.passed, [r for r in result.results if not r.passed]
    assert {"R-MODEL-SHA256", "R-MODEL-SIZE", "R-BYTES-PER-TOKEN", "R-DECODE-TPS"} <= {r.rule for r in result.results}
    assert receipt["backend"] == "numpy" and receipt["generation"]["generated_tokens"] == 6
    assert any(k["id"].startswith("i2s_x86_") for k in receipt["decode_kernels"])
    assert run_verify(str(path), "--model", str(model))[0] == 0


@pytest.mark.ac13
def test_committed_base_receipt_passes():
    assert verify_receipt(BASE).passed


def test_corpus_is_reproducible_and_large_enough():
    assert len(make_bad.MUTATIONS) >= 30
    for name in make_bad.MUTATIONS:
        committed = json.loads((HERE / "bad" / f"{name}.json").read_text())
        assert committed == make_bad.mutate(BASE, name), f"{name}.json is stale: run tests/receipts/make_bad.py"


@pytest.mark.ac13
@pytest.mark.parametrize("name", sorted(make_bad.MUTATIONS))
def test_each_lie_is_rejected_by_its_rule(name, tmp_path):
    rule, _, needs_model = make_bad.MUTATIONS[name]
    receipt = json.loads((HERE / "bad" / f"{name}.json").read_text())
    model = None
    if needs_model:  # a file whose size and digest are those the base receipt recorded, but for the lie
        model = tmp_path / "model.gguf"
        model.write_bytes(b"\0" * BASE["model"]["bytes"])
    result = verify_receipt(receipt, model=model, allowlist={"schema_version": "1.0.0", "gpus": []})
    assert not result.passed
    assert rule in result.failed_rules, (rule, result.failed_rules)
    rc, out, _ = run_verify(str(HERE / "bad" / f"{name}.json"), "--json",
                            *(["--model", str(model)] if model else []))
    assert rc == 1 and rule in [r["rule"] for r in json.loads(out)["rules"] if not r["passed"]]


# load_s is bounded (total >= load + prefill + decode) but not recomputable: lowering it is
# undetectable by design, so it is not in this list (docs/reference/receipts.md says so)
MEASURED = ["timings.prefill_s", "timings.decode_s", "timings.total_s",
            "throughput.prefill_tok_s", "throughput.decode_tok_s", "throughput.e2e_tok_s",
            "model.weight_bytes_per_token", "generation.generated_tokens", "prompt.tokens"]


@pytest.mark.ac14
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(MEASURED), factor=st.sampled_from([0.5, 0.8, 1.25, 2.0, 10.0]))
def test_editing_a_measured_field_fails(real_run, field, factor):
    model, _, receipt = real_run
    r = copy.deepcopy(receipt)
    a, b = field.split(".")
    v = r[a][b]
    r[a][b] = type(v)(v * factor) if isinstance(v, float) else max(0, int(round(v * factor)) + (1 if factor > 1 else -1))
    assert not verify_receipt(r, model=model).passed, field


@pytest.mark.ac14
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_editing_token_ids_or_steps_fails(real_run, data):
    model, _, receipt = real_run
    r = copy.deepcopy(receipt)
    which = data.draw(st.sampled_from(["drop_id", "add_id", "drop_step", "scale_step", "kernel_bytes", "sha"]))
    if which == "drop_id":
        r["generation"]["token_ids"].pop()
    elif which == "add_id":
        r["generation"]["token_ids"].append(1)
    elif which == "drop_step":
        r["timings"]["decode_step_s"].pop()
    elif which == "scale_step":
        r["timings"]["decode_step_s"][0] *= 50
    elif which == "kernel_bytes":
        for k in r["decode_kernels"]:
            k["bytes_read"] //= 3
    else:
        r["model"]["sha256"] = "f" * 64
    assert not verify_receipt(r, model=model).passed, which


def test_unreadable_receipt_is_exit_2(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{not json")
    rc, _, err = run_verify(str(p))
    assert rc == 2 and "not JSON" in err
    assert run_verify(str(tmp_path / "missing.json"))[0] == 2
    assert run_verify()[0] == 2


@pytest.mark.ac15
def test_cuda_benchmark_skips_cleanly_without_a_gpu(tmp_path, bitnet_tiny_model):
    from bitnet.cuda import cuda_status

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


ALLOWLIST_WITH_COMMENTS = """\
# top comment that must survive
schema_version: "1.0.0"  # inline comment
gpus: []
"""


def _gpu_receipt(real_run) -> dict:
    """The real run's receipt restated as a GPU run, for exercising the allowlist mechanics."""
    _, _, receipt = real_run
    r = copy.deepcopy(receipt)
    make_bad._as_gpu(with_gpu_kernels=True, fast=1e-7)(r)
    return r


@pytest.mark.ac18
def test_allowlist_add_keeps_comments_and_admits_the_gpu(tmp_path, real_run):
    al = tmp_path / "gpu-allowlist.yml"
    al.write_text(ALLOWLIST_WITH_COMMENTS)
    r = _gpu_receipt(real_run)
    before = verify_receipt(r, allowlist=load_allowlist(al))
    assert before.failed_rules == ["R-GPU-ALLOWLIST"]
    rp = tmp_path / "gpu.json"
    rp.write_text(json.dumps(r))
    rc, out, _ = run_verify("--add-to-allowlist", str(rp), "--allowlist", str(al))
    assert rc == 0 and "added NVIDIA H100 80GB HBM3" in out
    text = al.read_text()
    assert "# top comment that must survive" in text and "# inline comment" in text
    assert verify_receipt(r, allowlist=load_allowlist(al)).passed
    from bitnet.errors import ReceiptError

    with pytest.raises(ReceiptError, match="already listed"):
        add_from_receipt(al, r)


@pytest.mark.ac18
def test_allowlist_bound_is_enforced_and_schema_checked(tmp_path, real_run):
    r = _gpu_receipt(real_run)
    al = {"schema_version": "1.0.0", "gpus": [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                                                "max_bytes_per_s": 1.0, "source": "test"}]}
    assert "R-GPU-ALLOWLIST" in verify_receipt(r, allowlist=al).failed_rules
    bad = tmp_path / "al.yml"
    bad.write_text("schema_version: '1.0.0'\ngpus:\n  - name: x\n")
    rc, _, err = run_verify(str(HERE / "good" / "base.json"), "--allowlist", str(bad))
    assert rc == 2 and "required property" in err


@pytest.mark.ac18
def test_committed_allowlist_is_valid():
    from bitnet.receipts.policy import default_allowlist_path

    load_allowlist(default_allowlist_path())


def test_console_script(real_run):
    exe = shutil.which("bitnet-verify-receipt")
    if exe is None:
        pytest.skip("console script not installed")
    model, path, _ = real_run
    r = subprocess.run([exe, str(path), "--model", str(model), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["passed"] is True
    r = subprocess.run([exe, str(HERE / "bad" / "mock_kernel.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "R-KERNEL-MOCK" in r.stdout


@pytest.mark.ac14
@pytest.mark.ac15
@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "ci").glob("*.json")), ids=lambda p: p.name)
def test_committed_receipts_of_real_runs_verify(path):
    """ci/ holds receipts of real runs (CPU native on this machine; CUDA on an H100): each passes
    every rule that does not need the model file."""
    receipt = json.loads(path.read_text())
    result = verify_receipt(receipt)
    assert result.passed, result.failed_rules
    if receipt["backend"] == "cuda":
        assert receipt["machine"]["gpu"]["name"] and any("_cuda" in k["id"] for k in receipt["decode_kernels"])
