"""The GPU fingerprint allowlist (AC18): YAML edited round-trip, so comments survive."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from bitnet.errors import ReceiptError
from bitnet.files.atomic import atomic_write_text
from bitnet.receipts.policy import is_packaged_copy, load_schema, receipt_policy


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip mode: comments and key order are kept
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def load_allowlist(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        data = _yaml().load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReceiptError(f"allowlist {p}: no such file") from None
    except Exception as e:
        raise ReceiptError(f"allowlist {p}: not valid YAML: {e}") from None
    validate_allowlist(data, p)
    return data


def validate_allowlist(data: Any, where: Path | str = "allowlist") -> None:
    import jsonschema

    plain = _plain(data)
    errors = list(jsonschema.Draft202012Validator(load_schema("gpu-allowlist.schema.json")).iter_errors(plain))
    if errors:
        e = errors[0]
        raise ReceiptError(f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    from bitnet.receipts.cpu_allowlist import require_finite_positive

    for i, e in enumerate(plain.get("gpus") or []):
        require_finite_positive(e["max_bytes_per_s"], f"{where}: gpus/{i}/max_bytes_per_s")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def add_from_receipt(path: str | os.PathLike[str], receipt: dict) -> dict:
    """Add (or tighten nothing, refuse a duplicate of) the receipt's GPU; written atomically.
    The bound is `allowlist_headroom` x the decode bytes/s the receipt measured."""
    from bitnet.receipts.verify import verify_receipt

    gpu = receipt.get("machine", {}).get("gpu") if isinstance(receipt, dict) else None
    if not gpu:
        raise ReceiptError("the receipt has no machine.gpu: only a GPU receipt can add a fingerprint")
    check = verify_receipt(receipt, allowlist=None)
    blocking = [x for x in check.failed_rules if x != "R-GPU-ALLOWLIST"]
    if blocking:
        raise ReceiptError(f"the receipt fails {blocking}: fix the receipt before trusting its figures")
    p = Path(path)
    if is_packaged_copy(p):
        raise ReceiptError(f"{p} is the installed package's read-only copy: pass --allowlist PATH to the "
                           "repository's policies/gpu-allowlist.yml (or your own file)")
    data = load_allowlist(p)
    for e in data["gpus"]:
        if e["name"] == gpu["name"] and str(e["compute_capability"]) == gpu["compute_capability"]:
            raise ReceiptError(f"{p}: {gpu['name']} ({gpu['compute_capability']}) is already listed")
    wpat_rate = _measured_rate(receipt)
    entry = {
        "name": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "max_bytes_per_s": float(f"{wpat_rate * receipt_policy()['allowlist_headroom']:.4g}"),
        "source": f"receipt {receipt['created_at']} (driver {gpu.get('driver')}), "
                  f"{receipt_policy()['allowlist_headroom']}x its measured {wpat_rate:.4g} B/s",
    }
    data["gpus"].append(entry)
    validate_allowlist(data, p)
    buf = io.StringIO()
    _yaml().dump(data, buf)
    atomic_write_text(p, buf.getvalue())
    return entry


def _measured_rate(receipt: dict) -> float:
    from bitnet.receipts.rules import Ctx

    return Ctx(receipt, receipt_policy()).decode_rate
