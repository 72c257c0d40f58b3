"""Hostile receipts: one loader refuses them with a typed one-line error, exit 2 (AC25).

The issue's examples (UTF-16 and Latin-1 files, nesting 100,000 deep, 10**400, NaN, duplicate
keys, markup and lone surrogates in a kernel id or GPU name), then Hypothesis over arbitrary
JSON-ish text, then the structure-aware mutator (tests/_receipt_mutator.py) in a subprocess under
an address-space limit: a sample here, thousands under `-m slow`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.cli import IO
from bitnet.cli.verify_receipt import main as verify_main
from bitnet.errors import ReceiptError
from bitnet.receipts.load import MAX_DEPTH, load_receipt, parse_receipt

pytestmark = pytest.mark.ac25

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "fixtures" / "receipts" / "good" / "base.json"


def _verify(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = verify_main(list(argv), IO(out, err))
    return rc, out.getvalue(), err.getvalue()


def _good_text() -> str:
    return GOOD.read_text(encoding="utf-8")


EXAMPLES = [
    ("utf16", lambda t: t.encode("utf-16"), "UTF-16"),
    ("utf16-no-bom", lambda t: t.encode("utf-16-le"), "NUL bytes"),
    ("utf8-bom", lambda t: t.encode("utf-8-sig"), "byte-order mark"),
    ("latin1", lambda t: t.replace('"real"', '"r\u00e9al"').encode("latin-1"), "not UTF-8"),
    ("deep", lambda t: b"[" * 100_000 + b"]" * 100_000, "nests 100000 levels"),
    ("deep-in-string-is-fine-but-deep-outside-not", lambda t: ('{"a": "' + "[" * 500 + '", "b": ' + "[" * 65 + "]" * 65 + "}").encode(),
     "nests 66 levels"),
    ("huge-int", lambda t: t.replace('"calls": ', '"calls": 1' + "0" * 400 + ", \"x\": ", 1).encode(), "outside the signed 64-bit"),
    ("huge-float", lambda t: t.replace('"calls": ', '"calls": 1e400, "x": ', 1).encode(), "overflows a 64-bit float"),
    ("duplicate", lambda t: t.replace("{", '{"compute_path": "mock", ', 1).encode(), "duplicate key 'compute_path'"),
    ("surrogate", lambda t: t.replace('"real"', '"\\ud800"', 1).encode(), "lone surrogate"),
    ("not-json", lambda t: t[: len(t) // 2].encode(), "not JSON"),
    ("empty", lambda t: b"", "not JSON"),
]


@pytest.mark.parametrize("case", EXAMPLES, ids=[c[0] for c in EXAMPLES])
def test_unreadable_receipts_exit_2_with_one_line(case, tmp_path):
    _, make, text = case
    path = tmp_path / "r.json"
    path.write_bytes(make(_good_text()))
    for extra in ((), ("--json",)):
        rc, out, err = _verify(str(path), *extra)
        assert rc == 2 and out == "" and err.count("\n") == 1 and text in err and str(path) in err, err


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_fail_the_finite_rule(tmp_path, literal):
    path = tmp_path / "r.json"
    path.write_bytes(_good_text().replace('"calls": ', f'"calls": {literal}, "x": ', 1).encode())
    rc, out, err = _verify(str(path), "--json")
    assert rc == 1 and err == "" and "R-FINITE" in out, (out, err)


def test_markup_in_a_receipt_prints_as_text(tmp_path):
    doc = json.loads(_good_text())
    doc["kernels"][0]["id"] = "i2s_[/bold]_gemv"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    rc, out, err = _verify(str(path))
    assert rc == 1 and err == "" and "[/bold]" in out  # a failed rule (grammar), shown literally


def test_loader_depth_limit_is_exact_and_ignores_brackets_in_strings():
    ok = ("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()
    assert parse_receipt(ok) is not None
    with pytest.raises(ReceiptError, match=f"nests {MAX_DEPTH + 1} levels"):
        parse_receipt(("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode())
    assert parse_receipt(json.dumps({"s": "[" * 1000 + '\\"{'}).encode()) == {"s": "[" * 1000 + '\\"{'}


def test_loader_reads_the_good_receipt_like_json(tmp_path):
    assert load_receipt(GOOD) == json.loads(_good_text())
    with pytest.raises(ReceiptError, match="is a directory"):
        load_receipt(tmp_path)
    with pytest.raises(ReceiptError, match="No such file"):
        load_receipt(tmp_path / "missing.json")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                 max_leaves=30).map(lambda x: json.dumps(x, allow_nan=True).encode()),
))
def test_hypothesis_any_bytes_parse_or_raise_receipt_error(raw):
    try:
        parse_receipt(raw)
    except ReceiptError as e:
        assert "\n" not in str(e)


def _worker(bases: Path, tmp: Path, seed: int, count: int) -> dict:
    out = tmp / f"receipts-{seed}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "tests._fuzz_worker", "receipts", "--bases", str(bases),
                        "--seed", str(seed), "--count", str(count), "--out", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=7200)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def test_receipt_fuzz_sample(tmp_path):
    rep = _worker(GOOD.parent, tmp_path, seed=0, count=120)
    assert not rep["failures"], json.dumps(rep["failures"][:10], indent=1)
    assert rep["cases"] == 120
    seen = rep["outcomes"]["table"]
    assert seen.get("refused", 0) > 0 and seen.get("rule-failed", 0) > 0


@pytest.mark.slow
def test_receipt_fuzz_thousands(tmp_path):
    rep = _worker(GOOD.parent, tmp_path, seed=7, count=int(os.environ.get("BITNET_FUZZ_RECEIPTS", "3000")))
    print("FUZZ-RECEIPTS", json.dumps({"cases": rep["cases"], "seconds": round(rep["seconds"], 1),
                                       "outcomes": rep["outcomes"]["table"], "failures": len(rep["failures"])}))
    assert not rep["failures"], json.dumps(rep["failures"][:10], indent=1)
