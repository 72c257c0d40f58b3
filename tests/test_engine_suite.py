"""The parity suite as a product (AC22): `pytest --engine=SPEC` run from a folder outside this
repository, and the teeth of the gates through the cmd: protocol (a faulty external engine
built from ours with each planted fault must fail, naming the first diverging position; the
unplanted one passes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bitnet.engines import open_engine
from crossval.pair import compare_engines

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engines" / "harness_engine.py"
FAULTY = Path(__file__).resolve().parent / "engines" / "faulty_engine.py"
PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]

pytestmark = pytest.mark.ac22


def _faults():
    """Planted faults of crossval.faults that reach the prompt logits (the cmd protocol compares
    prompt positions and greedy ids, not teacher-forced decode steps)."""
    from crossval.faults import FAULTS

    names = ["rope_pairing_swapped", "attn_sub_norm_skipped", "weight_scale_off_0.1pct", "tq2_0_bit_order_reversed",
             "kv_position_off_by_one"]
    assert set(names) <= set(FAULTS)
    return names


@pytest.fixture(scope="module")
def tq2(bitnet_model_factory):
    return bitnet_model_factory(arch="bitnet", fmt="tq2_0", seed=7)


@pytest.mark.ac16
@pytest.mark.parametrize("fault", ["none", *_faults()])
def test_planted_faults_through_the_cmd_protocol(tq2, fault):
    faulty = open_engine(f'cmd:"{sys.executable}" "{FAULTY}" --fault {fault} --profile llama.cpp')
    c = compare_engines(faulty, open_engine("reference:llama.cpp"), tq2, PROMPT, gate="exact", n_greedy=4)
    if fault == "none":
        assert c.verdict == "pass", c.result.reason
        return
    r = c.result
    assert r.verdict == "fail", (fault, r.reason)
    assert r.first_divergence is not None and f"position {r.first_divergence} diverges" in r.reason


def _run_suite(pytester, *args):
    """The suite from an empty folder outside the repo, as an engine author would run it."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-v", *args)


def test_pytest_engine_runs_the_suite_from_any_folder(pytester, tmp_path):
    from bitnet.synth import synthesize

    user = synthesize(tmp_path / "my-model.gguf", arch="bitnet-b1.58", fmt="i2_s", seed=2)
    spec = f'--engine=cmd:"{sys.executable}" "{EXAMPLE}" --loads bitnet-b1.58/i2_s'
    r = _run_suite(pytester, spec, f"--bitnet-gguf={user}", f"--engine-receipts={tmp_path / 'receipts'}")
    out = r.stdout.str()
    assert r.ret == 0, out[-3000:]
    # every claimed model compared, the unclaimed ones skipped with the reason, nothing else
    assert "test_logits_and_greedy[bitnet-b1.58/i2_s] PASSED" in out
    assert "does not claim to load bitnet/tq1_0" in out
    assert "test_long_prompt_past_512[bitnet-b1.58] PASSED" in out
    assert "test_tokenizer_parity PASSED" in out
    assert "test_user_model[my-model.gguf] PASSED" in out
    r.assert_outcomes(passed=5, skipped=16)
    from crossval.receipt import load_parity_receipt, verify_parity_receipt

    receipts = sorted((tmp_path / "receipts").glob("*.json"))
    assert [p.name for p in receipts] == [
        "test_logits_and_greedy_bitnet-b1.58_i2_s_.json",
        "test_long_prompt_past_512_bitnet-b1.58_.json", "test_user_model_my-model.gguf_.json"]
    for p in receipts:
        doc = load_parity_receipt(p)
        assert doc["verdict"] == "pass" and verify_parity_receipt(doc) == []
        assert doc["engine"]["name"] == "harness-example" and doc["reference"]["spec"] == "reference"


def test_a_faulty_engine_fails_the_suite_naming_the_position(pytester):
    spec = f'--engine=cmd:"{sys.executable}" "{FAULTY}" --fault kv_position_off_by_one --loads bitnet/tq2_0 --profile llama.cpp'
    r = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "-v", spec, "-k", "logits_and_greedy")
    out = r.stdout.str()
    assert r.ret == 1, out[-3000:]
    assert "test_logits_and_greedy[bitnet/tq2_0] FAILED" in out
    import re

    m = re.search(r"FAIL \(exact\): first diverging position (\d+): position (\d+) diverges", out)
    assert m and m.group(1) == m.group(2), out[-3000:]


def test_without_an_engine_the_suite_skips_with_the_reason(pytester):
    r = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "--pyargs", "crossval.parity_suite")
    assert "no engine under test: pass --engine=SPEC" in r.stdout.str()
    assert r.parseoutcomes().get("passed", 0) == 0
