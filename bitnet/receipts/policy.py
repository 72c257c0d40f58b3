"""Where the receipt schemas and policies live, and loading them.

One source of truth each: `schemas/*.schema.json` and `policies/*.yml` at the repository root.
Nothing under `bitnet/` is a second copy that could drift. Lookup order:

1. `BITNET_SCHEMA_DIR` / `BITNET_POLICY_DIR`, when set;
2. the repository folders next to the package (a source checkout or an editable install,
   recognised by the repository's pyproject.toml beside them, so a stray `schemas/` folder in
   site-packages is never taken for ours);
3. `bitnet/_resources/{schemas,policies}` inside an installed wheel. `setup.py`'s `build_py`
   step copies the repository folders there at build time. The copy exists only in build
   output, never in the source tree, so the repository folders stay the one source.

Why a build-time copy rather than moving the files into the package: the folders are
project-level artefacts that CI, docs and crossval read by path. Why not a symlink: wheels and
sdists do not carry symlinks portably.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from bitnet.errors import ReceiptError

_ROOT = Path(__file__).resolve().parents[2]
PACKAGED = "_resources"  # bitnet/_resources/{schemas,policies} in a built wheel


def _packaged(kind: str) -> Path | None:
    try:
        p = Path(str(resources.files("bitnet") / PACKAGED / kind))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - zip imports
        return None
    return p if p.is_dir() else None


def _find(kind: str, env: str) -> Path:
    from bitnet.settings import VARS, settings

    key = next(k for k, v in VARS.items() if v.name == env)
    configured = getattr(settings(), key)
    if configured:
        return configured
    repo = _ROOT / kind
    if repo.is_dir() and (_ROOT / "pyproject.toml").is_file():
        return repo
    return _packaged(kind) or repo


def schema_dir() -> Path:
    return _find("schemas", "BITNET_SCHEMA_DIR")


def policy_dir() -> Path:
    return _find("policies", "BITNET_POLICY_DIR")


def is_packaged_copy(path: str | os.PathLike[str]) -> bool:
    """True for a file inside an installed wheel's `_resources` (read-only policy, not a
    file the tool should edit)."""
    pk = _packaged("policies")
    return pk is not None and Path(path).resolve().is_relative_to(pk.resolve())


@cache
def load_schema(name: str) -> dict[str, Any]:
    p = schema_dir() / name
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReceiptError(f"schema {p} not found: install from a source checkout or a built wheel, "
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


def default_cpu_allowlist_path() -> Path:
    return policy_dir() / "cpu-allowlist.yml"
