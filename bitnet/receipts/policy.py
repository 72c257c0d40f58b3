"""Where the receipt schemas and policies live, and loading them.

One source of truth each: `schemas/*.schema.json` and `policies/*.yml` at the repository root
(the folders DEVELOPERS.md names). They are found next to the installed package, which holds
for a source checkout and an editable install (the README's install); `BITNET_POLICY_DIR` and
`BITNET_SCHEMA_DIR` point elsewhere.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from bitnet.errors import ReceiptError

_ROOT = Path(__file__).resolve().parents[2]


def schema_dir() -> Path:
    return Path(os.environ.get("BITNET_SCHEMA_DIR") or _ROOT / "schemas")


def policy_dir() -> Path:
    return Path(os.environ.get("BITNET_POLICY_DIR") or _ROOT / "policies")


@cache
def load_schema(name: str) -> dict[str, Any]:
    p = schema_dir() / name
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReceiptError(f"schema {p} not found: install from a source checkout (pip install -e .) "
                           "or set BITNET_SCHEMA_DIR") from None


def load_yaml(path: str | os.PathLike[str]) -> Any:
    from ruamel.yaml import YAML

    p = Path(path)
    try:
        return YAML(typ="safe").load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReceiptError(f"{p}: no such file") from None
    except Exception as e:  # ruamel raises many types for bad YAML
        raise ReceiptError(f"{p}: not valid YAML: {e}") from None


@cache
def receipt_policy() -> dict[str, Any]:
    return load_yaml(policy_dir() / "receipt-policy.yml")


def default_allowlist_path() -> Path:
    return policy_dir() / "gpu-allowlist.yml"
