"""The adversarial corpus (AC13): one lie per receipt, each rejected by exactly the rules
`fixtures/receipts/bad/expected.yml` names; the committed good receipt passes every rule."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from bitnet.cli import IO
from bitnet.cli.verify_receipt import main as verify_main
from bitnet.receipts.build import sha256_file
from bitnet.receipts.policy import load_yaml
from bitnet.receipts.verify import RULES, verify_receipt

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "receipts"
sys.path.insert(0, str(HERE))
import make_bad  # noqa: E402

BASE = json.loads((HERE / "good" / "base.json").read_text())
EXPECTED = load_yaml(HERE / "bad" / "expected.yml")
EMPTY_ALLOWLIST = {"schema_version": "1.0.0", "gpus": []}


def test_base_model_is_the_one_measured(receipt_base_model):
    assert sha256_file(receipt_base_model) == BASE["model"]["sha256"]


@pytest.mark.ac13
def test_committed_base_receipt_passes_every_rule(receipt_base_model):
    result = verify_receipt(BASE, model=receipt_base_model)
    assert result.passed, [r for r in result.results if not r.passed]
    assert {"R-MODEL-SHA256", "R-MODEL-SIZE", "R-MODEL-FACTS"} <= {r.rule for r in result.results}


def test_corpus_is_reproducible_and_large_enough():
    assert len(make_bad.MUTATIONS) >= 30
    files = {p.name for p in (HERE / "bad").glob("*.json")}
    assert files == {f"{n}.json" for n in make_bad.MUTATIONS} == set(EXPECTED)
    for name in make_bad.MUTATIONS:
        committed = json.loads((HERE / "bad" / f"{name}.json").read_text())
        # compared as JSON text: the NaN lies are not equal to themselves as numbers
        assert json.dumps(committed) == json.dumps(make_bad.mutate(BASE, name)), f"{name}.json is stale: run fixtures/receipts/make_bad.py"
    assert (HERE / "bad" / "expected.yml").read_text() == make_bad.expected_yaml()


def test_corpus_exercises_every_rule():
    named = {rule for e in EXPECTED.values() for rule in e["rules"]}
    assert named <= set(RULES)
    # the option rules have their own tests (test_receipts_signing.py, test_receipts_rerun.py)
    assert set(RULES) - named == {"R-SIGNATURE", "R-RERUN"}, f"rules no lie exercises: {set(RULES) - named}"


def _check(name: str, base_model: Path):
    e = EXPECTED[name]
    receipt = json.loads((HERE / "bad" / name).read_text())
    model = base_model if e["model"] else None
    return e, receipt, model, verify_receipt(receipt, model=model, allowlist=e["allowlist"] or EMPTY_ALLOWLIST)


@pytest.mark.ac13
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_lie_fails_exactly_its_rules(name, receipt_base_model):
    e, _, _, result = _check(name, receipt_base_model)
    assert not result.passed
    assert sorted(set(result.failed_rules)) == sorted(e["rules"]), [r for r in result.results if not r.passed]
    for r in result.results:  # every failure says what was expected and found
        assert r.message.strip()


@pytest.mark.ac13
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_lie_fails_through_the_cli(name, receipt_base_model, tmp_path):
    e = EXPECTED[name]
    argv = [str(HERE / "bad" / name), "--json"]
    if e["model"]:
        argv += ["--model", str(receipt_base_model)]
    if e["allowlist"]:
        al = tmp_path / "allowlist.yml"
        al.write_text(json.dumps(e["allowlist"]))  # JSON is YAML
        argv += ["--allowlist", str(al)]
    out, err = io.StringIO(), io.StringIO()
    rc = verify_main(argv, IO(out, err))
    failed = {r["rule"] for r in json.loads(out.getvalue())["rules"] if r["status"] == "fail"}
    assert rc == 1 and failed == set(e["rules"]), (rc, failed, err.getvalue())
