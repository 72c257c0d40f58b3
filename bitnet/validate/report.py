"""What validation found: one `Check` per (rule, subject), gathered in a `ValidationReport`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

STATUSES = ("pass", "warn", "fail", "skip")
_ORDER = {"fail": 0, "warn": 1, "skip": 2, "pass": 3}


@dataclass(frozen=True)
class Check:
    rule: str
    subject: str  # a metadata key, a tensor name, or "model"
    status: str  # pass / warn / fail / skip (could not be evaluated: a prior check failed)
    measured: str = ""
    bound: str = ""
    message: str = ""
    source: str = ""  # where the bound comes from (the policy's `source`)
    correction: str | None = None  # id of a correction that fixes it (available or applied)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AppliedCorrection:
    id: str
    rule: str
    tensors: tuple[str, ...]
    action: str

    def to_json(self) -> dict:
        return {"id": self.id, "rule": self.rule, "tensors": list(self.tensors), "action": self.action}


@dataclass
class ValidationReport:
    path: str
    policy: str
    architecture: str | None
    checks: list[Check] = field(default_factory=list)
    corrections: list[AppliedCorrection] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def verdict(self, strict: bool = False) -> str:
        if self.failures or (strict and self.warnings):
            return "fail"
        return "warn" if self.warnings else "pass"

    def failed_rules(self) -> list[str]:
        return sorted({c.rule for c in self.failures})

    def to_json(self, strict: bool = False) -> dict:
        return {
            "model": self.path,
            "policy": self.policy,
            "architecture": self.architecture,
            "verdict": self.verdict(strict),
            "strict": strict,
            "counts": {s: sum(c.status == s for c in self.checks) for s in STATUSES},
            "failed_rules": self.failed_rules(),
            "corrections": [c.to_json() for c in self.corrections],
            "seconds": self.seconds,
            "checks": [c.to_json() for c in self.checks],
        }

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Table rows: every warn/fail/skip check on its own; the passes of one rule folded into
        one row (subjects counted, measured values listed when few)."""
        out = []
        by_rule: dict[str, list[Check]] = defaultdict(list)
        for c in self.checks:
            by_rule[c.rule].append(c)
        for rule, cs in by_rule.items():
            for c in sorted((c for c in cs if c.status != "pass"), key=lambda c: _ORDER[c.status]):
                note = c.message + (f" [correction: {c.correction}]" if c.correction else "")
                out.append((rule, c.status, c.subject, c.measured, c.bound, note))
            ok = [c for c in cs if c.status == "pass"]
            if len(ok) == 1:
                c = ok[0]
                note = c.message + (f" [corrected: {c.correction}]" if c.correction else "")
                out.append((rule, "pass", c.subject, c.measured, c.bound, note))
            elif ok:
                vals = [c.measured for c in ok if c.measured]
                measured = _span(vals)
                corr = sorted({c.correction for c in ok if c.correction})
                note = f"corrected: {', '.join(corr)}" if corr else ""
                bounds = {c.bound for c in ok}
                bound = ok[0].bound if len(bounds) == 1 else "per subject (--json)"
                out.append((rule, "pass", f"{len(ok)} subjects", measured, bound, note))
        return out


def _span(vals: list[str]) -> str:
    nums = []
    for v in vals:
        try:
            nums.append(float(v))
        except ValueError:
            return vals[0] if len(set(vals)) == 1 else f"{len(set(vals))} values"
    if not nums:
        return ""
    lo, hi = min(nums), max(nums)
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g} .. {hi:.4g}"
