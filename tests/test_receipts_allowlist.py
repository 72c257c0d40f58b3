"""The GPU fingerprint allowlist (AC18): edited round-trip (comments kept), atomically, from a
receipt that passes every other rule; an entry admits its GPU and bounds it."""

from __future__ import annotations

import copy
import io
import json
import sys
from pathlib import Path

import pytest

from bitnet.cli import IO
from bitnet.cli.verify_receipt import main as verify_main
from bitnet.errors import ReceiptError
from bitnet.receipts.allowlist import add_from_receipt, load_allowlist
from bitnet.receipts.policy import default_allowlist_path, load_yaml, receipt_policy
from bitnet.receipts.verify import verify_receipt

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "receipts"
sys.path.insert(0, str(HERE))
import make_bad  # noqa: E402

ALLOWLIST_WITH_COMMENTS = """\
# top comment that must survive
schema_version: "1.0.0"  # inline comment
# comment before the list
gpus:
  # an entry added by hand, with its own comment
  - name: Some Other GPU
    compute_capability: "8.0"
    max_bytes_per_s: 1.0e+12  # bound comment
    source: hand-written test entry
"""


def run_verify(*argv):
    out, err = io.StringIO(), io.StringIO()
    return verify_main(list(map(str, argv)), IO(out, err)), out.getvalue(), err.getvalue()


@pytest.fixture
def fast_gpu_receipt(measured_receipt) -> dict:
    """The session's real run restated as a fast GPU run, for the allowlist mechanics only."""
    r = copy.deepcopy(measured_receipt[2])
    make_bad.as_fast_gpu(r, 2.0e12)
    return r


@pytest.mark.ac18
def test_add_keeps_comments_and_admits_the_gpu(tmp_path, fast_gpu_receipt):
    al = tmp_path / "gpu-allowlist.yml"
    al.write_text(ALLOWLIST_WITH_COMMENTS)
    r = fast_gpu_receipt
    assert verify_receipt(r, allowlist=load_allowlist(al)).failed_rules == ["R-GPU-ALLOWLIST"]
    rp = tmp_path / "gpu.json"
    rp.write_text(json.dumps(r))
    rc, out, _ = run_verify("--add-to-allowlist", rp, "--allowlist", al)
    assert rc == 0 and "added NVIDIA H100 80GB HBM3" in out
    text = al.read_text()
    for comment in ("# top comment that must survive", "# inline comment", "# comment before the list",
                    "# an entry added by hand, with its own comment", "# bound comment"):
        assert comment in text, comment
    assert text.startswith(ALLOWLIST_WITH_COMMENTS.splitlines()[0])
    entries = load_allowlist(al)["gpus"]
    assert [e["name"] for e in entries] == ["Some Other GPU", "NVIDIA H100 80GB HBM3"]
    assert "receipt" in entries[1]["source"]
    assert not list(tmp_path.glob(".gpu-allowlist.yml.*"))  # atomic write left no temp file
    assert verify_receipt(r, allowlist=load_allowlist(al)).passed
    with pytest.raises(ReceiptError, match="already listed"):
        add_from_receipt(al, r)


@pytest.mark.ac18
def test_the_entry_bound_is_the_measured_rate_with_headroom(tmp_path, fast_gpu_receipt):
    al = tmp_path / "a.yml"
    al.write_text('schema_version: "1.0.0"\ngpus: []\n')
    entry = add_from_receipt(al, fast_gpu_receipt)
    per_step = sum(k["bytes_read"] for k in fast_gpu_receipt["decode_kernels"] if "_gemm" in k["id"]
                   or k["id"].startswith(("lm_head_", "get_rows_"))) / len(fast_gpu_receipt["timings"]["decode_step_s"])
    rate = fast_gpu_receipt["throughput"]["decode_tok_s"] * per_step
    assert entry["max_bytes_per_s"] == pytest.approx(rate * receipt_policy()["allowlist_headroom"], rel=1e-3)


@pytest.mark.ac18
def test_the_entry_tightens_the_ceiling(fast_gpu_receipt):
    """A listed GPU is bounded by its entry, not by the generic ceiling: R-BANDWIDTH-CEILING."""
    gpu = fast_gpu_receipt["machine"]["gpu"]
    al = {"schema_version": "1.0.0", "gpus": [{"name": gpu["name"], "compute_capability": gpu["compute_capability"],
                                                "max_bytes_per_s": 1.0, "source": "test"}]}
    assert verify_receipt(fast_gpu_receipt, allowlist=al).failed_rules == ["R-BANDWIDTH-CEILING"]


@pytest.mark.ac18
def test_only_a_clean_gpu_receipt_can_add(tmp_path, measured_receipt, fast_gpu_receipt):
    al = tmp_path / "a.yml"
    al.write_text('schema_version: "1.0.0"\ngpus: []\n')
    with pytest.raises(ReceiptError, match="no machine.gpu"):
        add_from_receipt(al, measured_receipt[2])
    lying = copy.deepcopy(fast_gpu_receipt)
    lying["throughput"]["decode_tok_s"] *= 3
    with pytest.raises(ReceiptError, match="R-DECODE-TPS"):
        add_from_receipt(al, lying)
    assert load_allowlist(al)["gpus"] == []
    rp = tmp_path / "cpu.json"
    rp.write_text(json.dumps(measured_receipt[2]))
    assert run_verify("--add-to-allowlist", rp, "--allowlist", al)[0] == 2


@pytest.mark.ac18
def test_allowlist_is_schema_checked(tmp_path):
    bad = tmp_path / "al.yml"
    bad.write_text("schema_version: '1.0.0'\ngpus:\n  - name: x\n")
    rc, _, err = run_verify(HERE / "good" / "base.json", "--allowlist", bad)
    assert rc == 2 and "required property" in err
    bad.write_text("gpus: [unclosed\n")
    assert run_verify(HERE / "good" / "base.json", "--allowlist", bad)[0] == 2


@pytest.mark.ac18
def test_committed_allowlist_is_valid_and_every_entry_cites_a_receipt():
    data = load_allowlist(default_allowlist_path())
    for e in data["gpus"]:  # entries come from --add-to-allowlist, never typed-in datasheet figures
        assert e["source"].startswith("receipt "), e
    assert "--add-to-allowlist" in default_allowlist_path().read_text()
    assert load_yaml(default_allowlist_path())["schema_version"] == "1.0.0"
