"""Model validation: judge a GGUF against `policies/model-validation.yml` before it runs.

`validate_model(path)` streams over the file once per tensor and returns a `ValidationReport`
(one `Check` per rule and subject: pass / warn / fail / skip, the measured value, the bound and
where the bound comes from). `bitnet validate` prints it; the engine runs the same validation
at load (`bitnet.validate.load`). Rules live in `bitnet.validate.rules`, one function each.
"""

from __future__ import annotations

import os
import time

from bitnet.gguf.reader import GGUFReader
from bitnet.validate.context import Context
from bitnet.validate.policy import Policy, PolicyError, load_policy
from bitnet.validate.report import AppliedCorrection, Check, ValidationReport
from bitnet.validate.rules import RULES

__all__ = ["AppliedCorrection", "Check", "Policy", "PolicyError", "RULES", "ValidationReport",
           "load_policy", "validate_model", "validate_reader"]


def validate_reader(reader: GGUFReader, *, policy: Policy | None = None,
                    apply_corrections: bool = False) -> ValidationReport:
    """Run every rule of the policy over an open file."""
    t0 = time.perf_counter()
    pol = policy or load_policy()
    arch = reader.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    ctx = Context(reader, arch, pol.for_arch(arch) if arch else None, apply_corrections=apply_corrections)
    report = ValidationReport(str(reader.path), str(pol.path), arch)
    for r in RULES.values():
        report.checks.extend(r.fn(ctx))
        if ctx.policy is None:  # arch.supported failed: every other rule needs the policy
            break
    report.corrections = _merge(ctx.applied)
    report.seconds = time.perf_counter() - t0
    return report


def validate_model(path: str | os.PathLike[str], *, policy: Policy | None = None,
                   apply_corrections: bool = False) -> ValidationReport:
    with GGUFReader(path) as r:
        return validate_reader(r, policy=policy, apply_corrections=apply_corrections)


def _merge(applied: list[AppliedCorrection]) -> list[AppliedCorrection]:
    """One entry per correction id, listing every tensor it was applied to."""
    out: dict[str, AppliedCorrection] = {}
    for a in applied:
        prev = out.get(a.id)
        out[a.id] = a if prev is None else AppliedCorrection(a.id, a.rule, prev.tensors + a.tensors, a.action)
    return list(out.values())
