"""The validation policy: `policies/model-validation.yml`, checked against its schema on load.

The policy is data: required keys and tensors per architecture, shapes as symbols of the
config, allowed types per tensor role, envelopes with their sources, and the corrections a
user may ask for. Rules (`bitnet.validate.rules`) read it; nothing here judges a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bitnet.errors import BitNetError, ConfigError


class PolicyError(ConfigError):
    """The validation policy file is unreadable or does not match its schema."""


@dataclass(frozen=True)
class Envelope:
    name: str
    fail: tuple[float | None, float | None]
    warn: tuple[float | None, float | None]
    source: str

    def status(self, value: float) -> str:
        """pass / warn / fail for a measured value (a non-finite value always fails)."""
        if value != value or value in (float("inf"), float("-inf")):
            return "fail"
        if not _inside(value, self.fail):
            return "fail"
        return "pass" if _inside(value, self.warn) else "warn"

    def describe(self) -> str:
        parts = [f"{what} {_fmt(b)}" for what, b in (("fail", self.fail), ("warn", self.warn)) if b != (None, None)]
        return "; ".join(parts)


def _inside(v: float, b: tuple[float | None, float | None]) -> bool:
    lo, hi = b
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def _fmt(b: tuple[float | None, float | None]) -> str:
    lo, hi = b
    if lo is None:
        return f"> {hi:.4g}"
    if hi is None:
        return f"< {lo:.4g}"
    return f"outside [{lo:.4g}, {hi:.4g}]"


@dataclass(frozen=True)
class ArchPolicy:
    arch: str
    doc: dict[str, Any]
    corrections: dict[str, dict[str, Any]]  # id -> correction entry (those this arch allows)

    def envelope(self, name: str) -> Envelope:
        e = self.doc["envelopes"][name]
        return Envelope(name, tuple(e["fail"]), tuple(e["warn"]), e["source"])

    @property
    def required_keys(self) -> list[str]:
        return list(self.doc["required_keys"])

    @property
    def recommended_keys(self) -> list[str]:
        return list(self.doc["recommended_keys"])

    def tensor_specs(self, n_layer: int) -> dict[str, dict[str, Any]]:
        """Every tensor name the policy knows for a model of n_layer blocks -> its spec."""
        t = self.doc["tensors"]
        out = dict(t["global"])
        for i in range(max(n_layer, 0)):
            for suffix, spec in t["per_layer"].items():
                out[f"blk.{i}.{suffix}"] = spec
        return out

    def allowed_types(self, role: str) -> list[str]:
        return list(self.doc["types"][role]["allowed"])

    def types_source(self, role: str) -> str:
        return str(self.doc["types"][role]["source"])

    def file_type(self, ft: int) -> str | None:
        return self.doc["file_types"].get(str(ft))


@dataclass(frozen=True)
class Policy:
    path: Path
    doc: dict[str, Any]

    @property
    def archs(self) -> list[str]:
        return sorted(self.doc["architectures"])

    def for_arch(self, arch: str) -> ArchPolicy | None:
        a = self.doc["architectures"].get(arch)
        if a is None:
            return None
        corr = {c: self.doc["corrections"][c] for c in a["corrections"]}
        return ArchPolicy(arch, a, corr)


def default_policy_path() -> Path:
    from bitnet.receipts.policy import policy_dir

    return policy_dir() / "model-validation.yml"


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Read and schema-check a policy (the default one is cached)."""
    if path is None:
        return _default()
    return _load(Path(path))


@cache
def _default() -> Policy:
    return _load(default_policy_path())


def _load(p: Path) -> Policy:
    import jsonschema

    from bitnet.receipts.policy import load_schema, load_yaml

    try:
        doc = load_yaml(p)
    except BitNetError as e:
        raise PolicyError(f"validation policy: {e}") from None
    try:
        jsonschema.validate(doc, load_schema("model-validation.schema.json"))
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path)) or "(top)"
        raise PolicyError(f"{p}: does not match schemas/model-validation.schema.json at {where}: {e.message}") from None
    for arch, a in doc["architectures"].items():
        for c in a["corrections"]:
            if c not in doc["corrections"]:
                raise PolicyError(f"{p}: architecture {arch} names correction {c!r}, which the file does not define")
    return Policy(p, doc)
