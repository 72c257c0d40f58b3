"""Model rules (with `--model`): the file the receipt names, and what its tensors say the
kernels must have read. One function per rule; see `rules.py`."""

from __future__ import annotations

from collections.abc import Iterator

from bitnet.receipts.rules import SKIP, Ctx, Outcome, ok, rule

#: receipt model fields R-MODEL-FACTS compares with the file (the optional ones only when recorded)
FACTS = ("architecture", "formats", "weight_bytes_per_token", "projection_bytes", "context_length", "vocab_size")


@rule("R-MODEL-SIZE", "with --model: the file's size equals model.bytes")
def model_size(c: Ctx) -> Iterator[Outcome]:
    if c.model_path is not None:
        size = c.model_path.stat().st_size
        yield ok(size == c.r["model"]["bytes"], f"model file has {size:,} bytes, the receipt says {c.r['model']['bytes']:,}")


@rule("R-MODEL-SHA256", "with --model: the file's sha256 equals model.sha256")
def model_sha(c: Ctx) -> Iterator[Outcome]:
    if c.model_path is not None:
        from bitnet.receipts.build import sha256_file

        digest = sha256_file(c.model_path)
        yield ok(digest == c.r["model"]["sha256"], f"model sha256 {digest}, the receipt says {c.r['model']['sha256']}")


@rule("R-MODEL-FACTS", "with --model: architecture, weight formats, weight_bytes_per_token (and projection_bytes, context_length, vocab_size when recorded) recomputed from the file match the receipt")
def model_facts(c: Ctx) -> Iterator[Outcome]:
    if c.model_path is None:
        return
    mf, m = c.model_facts, c.r["model"]
    if not isinstance(mf, dict):  # a str: why the file's facts could not be read
        yield ok(False, str(mf))
        return
    wrong = {k: (m[k], mf[k]) for k in FACTS if k in m and m[k] != mf[k]}
    yield ok(not wrong, "; ".join(f"{k}: the receipt says {a!r}, the file gives {b!r}" for k, (a, b) in wrong.items())
             if wrong else f"{', '.join(k for k in FACTS if k in m)} match the file")


@rule("R-MODEL-TENSORS", "with --model: each decode lm_head call reads the file's lm_head bytes and each embedding lookup one row of it")
def model_tensors(c: Ctx) -> Iterator[Outcome]:
    mf = c.model_facts
    if not isinstance(mf, dict):
        return
    if c.missing(["decode_kernels"]):
        yield (SKIP, c.cannot_run(["decode_kernels"]))
        return
    bad = []
    for k in c.decode:
        per_call = k["bytes_read"] / k["calls"]
        if c.is_weight(k["id"]) and not c.is_quant(k["id"]) and not c.is_op(k["id"], "get_rows") and per_call != mf["lm_head_bytes"]:
            bad.append(f"{k['id']} reads {per_call:,.1f} B/call, the lm_head holds {mf['lm_head_bytes']:,}")
        if c.is_op(k["id"], "get_rows") and per_call != mf["embedding_row_bytes"]:
            bad.append(f"{k['id']} reads {per_call:,.1f} B/call, an embedding row is {mf['embedding_row_bytes']:,}")
    yield ok(not bad, "; ".join(bad) if bad else "lm_head and embedding kernels read the file's tensor bytes")


from bitnet.receipts import rules_options  # noqa: E402,F401  (the next rules in the table)
