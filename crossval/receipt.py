"""Reading parity receipts of every schema generation this harness wrote.

- 2.x (current): both sides are named engines (`engine`, `reference`: spec, name, version,
  build, numerics).
- 1.x (legacy): "ours vs libllama". Still verified against its own schema, then presented in
  the 2.x shape: `engine` is our reference engine, `reference` the libllama build it records.
- any other major: refused with a ReceiptError saying which majors this harness reads.

`verify_parity_receipt` re-checks a receipt's verdict against its own per-position numbers and
the gate thresholds of its profile (policies/parity.yml): a `pass` whose numbers fail the gate
is reported, not trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bitnet.errors import ReceiptError

SCHEMAS = {1: "parity-receipt-v1.schema.json", 2: "parity-receipt.schema.json"}


def _major(doc: dict) -> int:
    v = doc.get("schema_version")
    try:
        return int(str(v).split(".")[0])
    except ValueError:
        raise ReceiptError(f"parity receipt: schema_version {v!r} is not semver MAJOR.MINOR.PATCH") from None


def load_parity_receipt(path: str | os.PathLike[str]) -> dict:
    """The receipt at `path`, schema-checked, in the 2.x shape (a 1.x one upgraded, with
    `upgraded_from` set)."""
    import jsonschema

    from bitnet.receipts.policy import load_schema

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReceiptError(f"{p}: not a readable JSON parity receipt: {e}") from None
    if not isinstance(doc, dict):
        raise ReceiptError(f"{p}: a parity receipt is a JSON object")
    major = _major(doc)
    if major not in SCHEMAS:
        raise ReceiptError(f"{p}: parity receipt schema_version {doc.get('schema_version')!r}: this harness reads "
                           f"majors {sorted(SCHEMAS)} (1.x legacy ours-vs-libllama, 2.x named engines); "
                           "a newer major needs a newer bitnet-harness")
    try:
        jsonschema.validate(doc, load_schema(SCHEMAS[major]))
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path)) or "(top)"
        raise ReceiptError(f"{p}: parity receipt (schema {major}.x) invalid at {where}: {e.message}") from None
    return upgrade_v1(doc) if major == 1 else doc


def upgrade_v1(doc: dict) -> dict:
    """A 1.x receipt in the 2.x shape; the facts it did not record say "unknown"."""
    ours, ref = doc["ours"], doc["reference"]
    numerics = str(ours.get("numerics_profile", "unknown"))
    backend = str(ours.get("backend", "unknown"))
    out = {k: v for k, v in doc.items() if k not in ("ours", "reference", "greedy")}
    out["engine"] = {"spec": f"reference:{numerics}@{backend}", "name": "bitnet-harness reference",
                     "version": str(doc["tool"]["version"]), "build": f"backend {backend}", "numerics": numerics}
    out["reference"] = {"spec": "libllama:" + str(Path(ref["libllama"]).parent), "name": f"libllama ({ref['api']})",
                        "version": str(ref["version"]), "build": str(ref["libllama"]),
                        "numerics": {"upstream": "llama.cpp", "bitnet.cpp-fork": "bitnet.cpp"}.get(ref["api"], "unknown")}
    g = doc["greedy"]
    out["greedy"] = {"engine": g.get("ours", []), "reference": g.get("reference", []), "match": g.get("match"),
                     "first_divergence": g.get("first_divergence")}
    out["upgraded_from"] = doc["schema_version"]
    return out


def verify_parity_receipt(doc: dict) -> list[str]:
    """Problems with a (2.x-shaped) receipt's verdict given its own numbers; [] when it holds."""
    from crossval.parity import thresholds

    problems = []
    th = thresholds(doc["profile"])
    bad = [p["position"] for p in doc["positions"]
           if p["cosine"] < th["min_cosine"] or p["kl"] > th["max_kl"] or p["top1_ours"] != p["top1_ref"]]
    first = bad[0] if bad else None
    if doc["verdict"] in ("pass", "fail") and first != doc["first_divergence"]:
        problems.append(f"first_divergence is {doc['first_divergence']}, the positions' numbers give {first}")
    if doc["verdict"] == "pass":
        if bad:
            problems.append(f"verdict pass, but position {first} fails the {doc['profile']} gate")
        if not doc["positions"]:
            problems.append("verdict pass with no positions compared")
        m = doc["greedy"].get("match")
        if m is not None and m < th["min_greedy_match"]:
            problems.append(f"verdict pass, but greedy match {m} < {th['min_greedy_match']}")
    return problems
