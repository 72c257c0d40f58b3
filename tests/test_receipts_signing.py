"""Signed receipts (AC24): `bitnet keygen` writes a 0600 private key; `--trusted-key` refuses
unsigned, altered and wrongly signed receipts; flipping any one byte of a signed receipt is
rejected (Hypothesis over positions and values)."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("cryptography", reason="signed receipts need the [sign] extra (cryptography)")

from bitnet.cli import IO  # noqa: E402
from bitnet.cli import main as bitnet_main  # noqa: E402
from bitnet.cli.verify_receipt import main as verify_main  # noqa: E402
from bitnet.errors import ReceiptError  # noqa: E402
from bitnet.receipts.signing import keygen, load_private_key, serialize, sign_receipt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = json.loads((ROOT / "fixtures" / "receipts" / "good" / "base.json").read_text())


def verify(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return verify_main([str(a) for a in argv], IO(out, err)), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return keygen(d / "k"), keygen(d / "other")


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys) -> bytes:
    (priv, _), _ = keys
    return serialize(sign_receipt(BASE, priv)).encode("utf-8")


@pytest.mark.ac24
def test_keygen_writes_a_private_key_nobody_else_can_read(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert bitnet_main(["keygen", "--out", str(tmp_path / "k")], IO(out, err)) == 0, err.getvalue()
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert len((tmp_path / "k.pub").read_text().strip()) == 64
    assert bitnet_main(["keygen", "--out", str(tmp_path / "k")], IO(out, err)) == 2  # never overwritten
    assert "exists" in err.getvalue()
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(ReceiptError, match="group or others"):
        load_private_key(tmp_path / "k")


@pytest.mark.ac24
def test_a_signed_receipt_passes_with_its_key(tmp_path, keys, signed):
    (_, pub), _ = keys
    (tmp_path / "r.json").write_bytes(signed)
    rc, out, err = verify(tmp_path / "r.json", "--trusted-key", pub, "--json")
    assert rc == 0, out
    assert {"rule": "R-SIGNATURE", "status": "pass"}.items() <= next(
        r for r in json.loads(out)["rules"] if r["rule"] == "R-SIGNATURE").items()


@pytest.mark.ac24
def test_unsigned_wrong_key_and_altered_receipts_are_refused(tmp_path, keys, signed):
    (_, pub), (other_priv, other_pub) = keys
    cases = {
        "unsigned": serialize(BASE),
        "other key": signed.decode(),
        "altered": serialize({**json.loads(signed), "profile": "reference"}),
        "re-signed by another key": serialize(sign_receipt(BASE, other_priv)),
    }
    for name, text in cases.items():
        p = tmp_path / "r.json"
        p.write_text(text)
        key = other_pub if name == "other key" else pub
        rc, out, _ = verify(p, "--trusted-key", key, "--json")
        failed = [r["rule"] for r in json.loads(out)["rules"] if r["status"] == "fail"]
        assert rc == 1 and "R-SIGNATURE" in failed, (name, failed)


@pytest.mark.ac24
def test_a_content_preserving_edit_is_refused(tmp_path, keys, signed):
    """Whitespace or another spelling of the same JSON keeps the signed content; the
    byte-exact form check refuses it all the same."""
    (_, pub), _ = keys
    p = tmp_path / "r.json"
    p.write_bytes(signed.replace(b'"compute_path": "real"', b'"compute_path":  "real"'))
    rc, out, _ = verify(p, "--trusted-key", pub, "--json")
    assert rc == 1 and "altered after signing" in out


@pytest.mark.ac24
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipping_any_byte_is_rejected(tmp_path, keys, signed, data):
    (_, pub), _ = keys
    pos = data.draw(st.integers(0, len(signed) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor")
    flipped = bytearray(signed)
    flipped[pos] ^= mask
    p = tmp_path / "flipped.json"
    p.write_bytes(bytes(flipped))
    rc, _, _ = verify(p, "--trusted-key", pub)
    assert rc in (1, 2), (pos, mask)  # 1: a rule failed; 2: no longer a readable receipt


@pytest.mark.ac24
def test_benchmark_refuses_a_bad_key_before_running(tmp_path):
    (tmp_path / "k").write_text("not a key")
    os.chmod(tmp_path / "k", 0o600)
    out, err = io.StringIO(), io.StringIO()
    rc = bitnet_main(["benchmark", "--sign-key", str(tmp_path / "k"), "--out", str(tmp_path / "r.json")], IO(out, err))
    assert rc == 2 and "not a PEM private key" in err.getvalue() and not (tmp_path / "r.json").exists()
