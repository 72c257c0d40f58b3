"""Signed receipts: Ed25519 over the canonical receipt (the optional `[sign]` extra,
`cryptography`).

What is signed: the receipt without its `signature` member, serialized canonically (sorted keys,
no whitespace, ASCII, no NaN). What is checked: the signature over those bytes with the trusted
public key, AND that the file's bytes are exactly the writer's serialization of what they parse
to. The second check is what makes *any* one-byte change fail: a change that keeps the parsed
content (whitespace, `\\u0061` for `a`, `1E-05` for `1e-05`) changes the bytes without changing
the canonical form, so the signature alone would not see it. Keys and signatures are lowercase
hex, decoded and re-encoded to refuse other spellings of the same bytes (base64 has unused
trailing bits; hex has upper case).

Keys: `bitnet keygen --out K` writes K (PKCS#8 PEM private key, created with mode 0600, never
overwritten) and K.pub (the raw public key, hex). A private key readable by group or others is
refused, as ssh does.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from bitnet.errors import ReceiptError

ALGORITHM = "ed25519"


def _crypto():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ReceiptError("signing receipts needs the `cryptography` package: pip install 'bitnet-harness[sign]'") from None
    return ed25519


def canonical_bytes(receipt: dict) -> bytes:
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def serialize(receipt: dict) -> str:
    """The receipt writer's exact text (bitnet.receipts.build.write_receipt)."""
    return json.dumps(receipt, indent=2, sort_keys=False) + "\n"


def _unhex(text: object, what: str, n: int) -> bytes:
    if not isinstance(text, str):
        raise ReceiptError(f"{what}: expected lowercase hex, found {type(text).__name__}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ReceiptError(f"{what}: not hex") from None
    if raw.hex() != text or len(raw) != n:
        raise ReceiptError(f"{what}: expected {2 * n} lowercase hex digits, found {len(text)} characters")
    return raw


def keygen(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new private key (mode 0600, refusing to overwrite) and its public key (K.pub)."""
    ed = _crypto()  # first: a missing `cryptography` is a typed error naming the extra
    from cryptography.hazmat.primitives import serialization

    priv_path, pub_path = Path(out), Path(str(out) + ".pub")
    for p in (priv_path, pub_path):
        if p.exists():
            raise ReceiptError(f"{p} exists: refusing to overwrite a key")
    key = ed.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode is 0600 whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    from bitnet.files.atomic import atomic_write_text

    atomic_write_text(pub_path, pub.hex() + "\n")
    os.chmod(pub_path, 0o644)  # a public key is meant to be handed out
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike[str]):
    ed = _crypto()  # first: a missing `cryptography` is a typed error naming the extra
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    try:
        mode = p.stat().st_mode
        data = p.read_bytes()
    except OSError as e:
        raise ReceiptError(f"signing key {p}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ReceiptError(f"signing key {p} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ReceiptError(f"signing key {p}: not a PEM private key ({e})") from None
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise ReceiptError(f"signing key {p}: not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ReceiptError(f"trusted key {p}: {getattr(e, 'strerror', None) or e}") from None
    return _unhex(text, f"trusted key {p}", 32)


def sign_receipt(receipt: dict, key_path: str | os.PathLike[str]) -> dict:
    """The receipt with a `signature` member (placed last) over its canonical bytes."""
    _crypto()  # first: a missing `cryptography` is a typed error naming the extra
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(key_path)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = {k: v for k, v in receipt.items() if k != "signature"}
    sig = key.sign(canonical_bytes(body))
    return {**body, "signature": {"algorithm": ALGORITHM, "public_key": pub.hex(), "value": sig.hex()}}


def check_signature(receipt: dict, trusted: bytes, raw: bytes | None) -> tuple[bool, str]:
    """(ok, message): signed, in the writer's exact form, and signed by `trusted`."""
    ed = _crypto()  # first: a missing `cryptography` is a typed error naming the extra
    from cryptography.exceptions import InvalidSignature

    sig = receipt.get("signature")
    if not isinstance(sig, dict):
        return False, "the receipt is unsigned; --trusted-key requires a signature"
    if raw is not None and raw != serialize(receipt).encode("utf-8"):
        return False, "the file's bytes are not the receipt writer's form of its content: it was altered after signing"
    try:
        pub = _unhex(sig.get("public_key"), "signature.public_key", 32)
        value = _unhex(sig.get("value"), "signature.value", 64)
    except ReceiptError as e:
        return False, str(e)
    if sig.get("algorithm") != ALGORITHM:
        return False, f"signature.algorithm {sig.get('algorithm')!r}: expected {ALGORITHM!r}"
    if pub != trusted:
        return False, f"signed by key {pub.hex()[:16]}..., not the trusted key {trusted.hex()[:16]}..."
    try:
        ed.Ed25519PublicKey.from_public_bytes(trusted).verify(value, canonical_bytes(receipt))
    except InvalidSignature:
        return False, "the Ed25519 signature does not match the receipt's content: altered or wrongly signed"
    return True, f"signed by the trusted key {trusted.hex()[:16]}... (Ed25519)"
