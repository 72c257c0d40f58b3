"""The receipts reference lists exactly the verifier's rule ids and policy values (AC13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bitnet.receipts.policy import receipt_policy
from bitnet.receipts.verify import RULES

DOC = Path(__file__).resolve().parents[1] / "docs" / "reference" / "receipts.md"


@pytest.mark.ac13
def test_reference_lists_every_rule_id():
    text = DOC.read_text(encoding="utf-8")
    table = re.findall(r"^\| `(R-[A-Z0-9-]+)` \|", text, re.M)
    assert table == list(RULES)
    mentioned = set(re.findall(r"\bR-[A-Z0-9]+(?:-[A-Z0-9]+)*\b", text))
    assert mentioned <= set(RULES), mentioned - set(RULES)


@pytest.mark.ac13
def test_reference_lists_every_policy_value():
    text = DOC.read_text(encoding="utf-8")
    for key in receipt_policy():
        assert f"`{key}`" in text, key
