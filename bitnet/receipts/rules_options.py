"""Rules that run only when asked for: `--trusted-key` (signatures) and `--rerun` (re-run
attestation). One function per rule; see `rules.py`."""

from __future__ import annotations

from collections.abc import Iterator

from bitnet.receipts.rules import SKIP, Ctx, Outcome, ok, rule


@rule("R-SIGNATURE", "with --trusted-key: the receipt is signed (Ed25519) by that key, over its canonical content, and its bytes are exactly the writer's form")
def signature(c: Ctx) -> Iterator[Outcome]:
    if "trusted_key" not in c.extra:
        return
    from bitnet.receipts.signing import check_signature

    yield ok(*check_signature(c.r, c.extra["trusted_key"], c.extra.get("raw")))


@rule("R-RERUN", "with --rerun: on a machine with the same fingerprint, the claimed decode throughput is within the documented band of the re-measured one (policy rerun_*)")
def rerun(c: Ctx) -> Iterator[Outcome]:
    res = c.extra.get("rerun")
    if res is None:
        return
    if res.status == "skip":
        yield (SKIP, res.message)
    else:
        yield ok(res.status == "pass", res.message)
