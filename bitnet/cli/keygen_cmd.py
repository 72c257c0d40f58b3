"""`bitnet keygen --out KEY`: a new Ed25519 key pair for signed receipts (the [sign] extra).

KEY is the private key (PKCS#8 PEM, created with mode 0600, never overwritten); KEY.pub is the
public key (64 lowercase hex digits) to hand to `bitnet-verify-receipt --trusted-key`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing receipts")
    p.add_argument("--out", required=True, help="private key path (KEY.pub gets the public key)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    from bitnet.receipts.signing import keygen

    priv, pub = keygen(args.out)
    print(f"wrote {priv} (private, mode 0600) and {pub} (public: bitnet-verify-receipt --trusted-key {pub})", file=io.stdout)
    return 0
