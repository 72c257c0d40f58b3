"""Receipt verification: apply the rule table (`bitnet.receipts.rules`) to a receipt.

Each rule has an id, a one-line reason and one small function that recomputes what can be
recomputed and says what was expected and what was found. `RULES` maps every id to its reason,
in the order they are applied; docs/reference/receipts.md lists the same ids (a test keeps them
equal). Policy values come from policies/receipt-policy.yml, machine bounds from
policies/cpu-allowlist.yml and policies/gpu-allowlist.yml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bitnet.receipts.policy import receipt_policy
from bitnet.receipts.rules import FAIL, PASS, SKIP, TABLE, Ctx

#: Every rule id, in the order the verifier applies them, with what it checks.
RULES: dict[str, str] = {r.id: r.reason for r in TABLE}


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    message: str
    status: str = PASS  # pass | fail | skip (the evidence the rule needs is absent)


@dataclass
class VerifyResult:
    results: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No rule failed. Skipped rules are listed as skipped, never as passed."""
        return not any(r.status == FAIL for r in self.results)

    @property
    def failed_rules(self) -> list[str]:
        return [r.rule for r in self.results if r.status == FAIL]

    @property
    def skipped_rules(self) -> list[str]:
        return [r.rule for r in self.results if r.status == SKIP]

    @property
    def not_run(self) -> list[RuleResult]:
        """The checks that could not run (the evidence is absent): listed, never passed."""
        return [r for r in self.results if r.status == SKIP]

    def add(self, rule: str, ok: bool, message: str) -> None:
        self.results.append(RuleResult(rule, bool(ok), message, PASS if ok else FAIL))

    def to_json(self) -> dict:
        return {"passed": self.passed, "rules": [r.__dict__ for r in self.results],
                "not_run": sorted({r.rule for r in self.not_run})}


def verify_receipt(receipt: Any, *, model: str | os.PathLike[str] | None = None,
                   allowlist: dict | None = None, require_gpu_kernels: bool = False,
                   cpu_allowlist: dict | None | bool = True, now: datetime | None = None,
                   extra: dict | None = None) -> VerifyResult:
    """Apply every rule. A failed gate (schema major, finite numbers, schema) stops verification:
    the rules after it assume a well-formed document.

    `allowlist` is the GPU allowlist; `cpu_allowlist` the CPU one (True: the policy's default
    file; None or False: no CPU allowlist, every CPU is unlisted). `extra` carries the option
    rules' inputs (`trusted_key`, `raw`, `rerun`)."""
    if cpu_allowlist is True:
        from bitnet.receipts.cpu_allowlist import load_cpu_allowlist
        from bitnet.receipts.policy import default_cpu_allowlist_path

        cpu_allowlist = load_cpu_allowlist(default_cpu_allowlist_path())
    ctx = Ctx(receipt, receipt_policy(), gpu_allowlist=allowlist, cpu_allowlist=cpu_allowlist or None,
              model_path=Path(model) if model is not None else None, require_gpu_kernels=require_gpu_kernels,
              extra=extra or {})
    if now is not None:
        ctx.now = now
    res = VerifyResult()
    for r in TABLE:
        missing = ctx.missing(r.needs) if r.needs else []
        if missing:  # an engine receipt without a field the rule reads: not run, and said so
            res.results.append(RuleResult(r.id, False, ctx.cannot_run(missing), SKIP))
            continue
        outcomes = list(r.check(ctx))
        for status, message in outcomes:
            res.results.append(RuleResult(r.id, status == PASS, message, status))
        if r.gate and any(s == FAIL for s, _ in outcomes):
            break
    return res
