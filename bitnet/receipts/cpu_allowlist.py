"""The CPU fingerprint allowlist (policies/cpu-allowlist.yml): bounds for known CPUs that do not
depend on anything a receipt says about its own speed.

An entry matches a receipt when `machine.cpu` equals its `name` and every flag in its `flags` is
in `machine.cpu_flags` (a virtual machine often reports a generic model name such as
"Intel(R) Xeon(R) Processor"; the flags tell its generations apart). Each entry bounds the
decode bytes/s per thread and, optionally, the fastest per-call time of named kernels; every
bound comes from a measurement named in `source`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from bitnet.errors import ReceiptError
from bitnet.receipts.policy import load_schema


def load_cpu_allowlist(path: str | os.PathLike[str]) -> dict:
    from bitnet.receipts.allowlist import _plain, _yaml

    p = Path(path)
    try:
        data = _yaml().load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReceiptError(f"CPU allowlist {p}: no such file") from None
    except Exception as e:
        raise ReceiptError(f"CPU allowlist {p}: not valid YAML: {e}") from None
    data = _plain(data)
    validate_cpu_allowlist(data, p)
    return data


def validate_cpu_allowlist(data: Any, where: Path | str = "CPU allowlist") -> None:
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(load_schema("cpu-allowlist.schema.json")).iter_errors(data))
    if errors:
        e = errors[0]
        raise ReceiptError(f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    for i, e in enumerate(data["cpus"]):
        bounds = {"max_bytes_per_s_per_thread": e["max_bytes_per_s_per_thread"],
                  **{f"min_call_seconds/{k}": v for k, v in (e.get("min_call_seconds") or {}).items()}}
        for k, v in bounds.items():
            require_finite_positive(v, f"{where}: cpus/{i}/{k}")


def require_finite_positive(v: Any, what: str) -> None:
    """JSON Schema's `exclusiveMinimum: 0` lets NaN through (every comparison with NaN is
    false) and accepts infinity: a bound must be a finite number > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ReceiptError(f"{what}: expected a finite number > 0, found {v!r}")


def match_cpu(allowlist: dict | None, machine: dict) -> dict | None:
    if not allowlist:
        return None
    flags = set(machine.get("cpu_flags") or [])
    for e in allowlist.get("cpus", []):
        if e["name"] == machine.get("cpu") and set(e["flags"]) <= flags:
            return e
    return None
