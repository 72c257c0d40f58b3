"""The receipt rule table: one small function per rule, each with an id and a one-line reason.

Adding a rule = one function decorated with `@rule(ID, reason)`; the table order is the order
the verifier applies them and the order `docs/reference/receipts.md` lists them (a test keeps
both equal). A rule function takes the verification context and yields outcomes
`(status, message)` with status `pass`, `fail` or `skip`; it yields nothing when it does not
apply (a GPU rule on a CPU receipt). `skip` means the evidence the rule needs is absent (an
older receipt without the field, no `--model`): it is listed, never counted as a pass.

Rules come in three groups, so each can assume what the earlier group established:
gates (`gate=True`: schema major, schema, finite numbers; a failed gate stops verification),
receipt rules (self-consistency, the machine, the model), and option rules that run only when
the caller asked for them (`--model`, `--trusted-key`, `--rerun`, which live in their modules).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from bitnet.kernels.ids import GPU_BACKENDS, GRAMMAR, MATMUL_OPS, KernelId, KernelIdError

PASS, FAIL, SKIP = "pass", "fail", "skip"
Outcome = tuple[str, str]

#: Kernel id grammar: lowercase ASCII words of [a-z0-9] joined by single underscores, e.g.
#: `i2s_x86_avx2_gemv`, `lm_head_float16_numpy`. No spaces, dashes, capitals or empty words.
#: Rules read an id's fields (`bitnet.kernels.ids.KernelId.parse`), never its substrings.
KERNEL_ID = GRAMMAR
SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Rule:
    id: str
    reason: str
    check: Callable[[Ctx], Iterator[Outcome]]
    gate: bool = False
    #: receipt fields (dotted paths) the rule reads; on a receipt that lacks one (an engine
    #: receipt's "not observed" field) the rule does not run and is listed as `skip`, with why
    needs: tuple[str, ...] = ()


TABLE: list[Rule] = []


def rule(rule_id: str, reason: str, *, gate: bool = False, needs: tuple[str, ...] = ()):
    def add(fn: Callable[[Ctx], Iterator[Outcome]]):
        if any(r.id == rule_id for r in TABLE):
            raise ValueError(f"rule {rule_id} registered twice")
        TABLE.append(Rule(rule_id, reason, fn, gate, needs))
        return fn
    return add


def ok(cond: bool, message: str) -> Outcome:
    return (PASS if cond else FAIL, message)


def close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-12)


@dataclass
class Ctx:
    """What the rules look at: the receipt, the policy, the allowlists, and (with --model) the
    facts recomputed from the model file. Derived figures are computed once, here."""

    r: dict
    pol: dict
    gpu_allowlist: dict | None = None
    cpu_allowlist: dict | None = None
    model_path: Path | None = None
    require_gpu_kernels: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    extra: dict = field(default_factory=dict)  # option rules' inputs (trusted key, rerun result)

    # -- fields an engine receipt may not have observed --------------------------------------
    def missing(self, paths: tuple[str, ...] | list[str]) -> list[str]:
        """The fields of `paths` this receipt does not hold."""
        from bitnet.receipts.engine_receipt import get_path

        return [p for p in paths if not get_path(self.r, p)[0]]

    def cannot_run(self, missing: list[str]) -> str:
        """Why a rule could not run: the fields it needs and, for an engine receipt, the
        receipt's own reason for not having them."""
        why = (self.r.get("observed") or {}).get("not_observed") or {}
        reasons = sorted({why[p] for p in missing if isinstance(why, dict) and isinstance(why.get(p), str)})
        eng = self.r.get("engine")
        who = f"the {eng.get('kind')} engine receipt" if isinstance(eng, dict) else "the receipt"
        return (f"not run: {who} does not hold {', '.join(missing)}"
                + (f" (not observed: {'; '.join(reasons)})" if reasons else ""))

    # -- kernels -----------------------------------------------------------------------------
    @property
    def kernels(self) -> list[dict]:
        return self.r["kernels"]

    @property
    def decode(self) -> list[dict]:
        return self.r["decode_kernels"]

    @cached_property
    def n_steps(self) -> int:
        return len(self.r["timings"]["decode_step_s"])

    @cached_property
    def parsed(self) -> dict[str, KernelId | None]:
        """Every kernel id parsed once into its fields; None for an id that does not parse
        (R-KERNEL-ID fails it; the other rules treat it as a NumPy kernel of no weight format)."""
        out: dict[str, KernelId | None] = {}
        for k in self.kernels + self.decode:
            try:
                out[k["id"]] = KernelId.parse(k["id"])
            except KernelIdError:
                out[k["id"]] = None
        return out

    def kid(self, kid: str) -> KernelId | None:
        return self.parsed[kid] if kid in self.parsed else None

    def is_gpu(self, kid: str) -> bool:
        k = self.kid(kid)
        return k is not None and k.backend in GPU_BACKENDS

    def is_native(self, kid: str) -> bool:
        k = self.kid(kid)
        return k is not None and k.backend == "native"

    def weight_format(self, kid: str) -> str | None:
        """The ternary format a matmul's weights field names (policy kernel_formats: the
        weights field's leading words -> format), None for any other kernel."""
        k = self.kid(kid)
        if k is None or not k.weights:
            return None
        return next((f for head, f in self.pol["kernel_formats"].items()
                     if k.weights == head or k.weights.startswith(head + "_")), None)

    def is_quant(self, kid: str) -> bool:
        return self.weight_format(kid) is not None

    def is_op(self, kid: str, op: str) -> bool:
        """An element-wise op whose op field is `op` (optionally followed by a dtype tag, as
        in `get_rows_float16_numpy`)."""
        k = self.kid(kid)
        return k is not None and not k.weights and (k.op == op or k.op.startswith(op + "_"))

    def is_weight(self, kid: str) -> bool:
        """A kernel whose bytes_read are weight bytes: a matmul, or an op of policy weight_ops."""
        k = self.kid(kid)
        if k is None:
            return False
        return k.op in MATMUL_OPS or any(self.is_op(kid, op) for op in self.pol["weight_ops"])

    def is_per_step(self, kid: str) -> bool:
        """A kernel that runs once per decode step: an op of policy per_step_ops, or a matmul
        over float weights (policy per_step_weights: the lm_head)."""
        k = self.kid(kid)
        if k is None:
            return False
        return any(self.is_op(kid, op) for op in self.pol["per_step_ops"]) or (
            k.op in MATMUL_OPS and k.weights in self.pol["per_step_weights"])

    def kind(self, kid: str) -> str:
        """Where a kernel ran: `cuda`, `native` or `numpy` (everything dispatched from Python)."""
        return "cuda" if self.is_gpu(kid) else "native" if self.is_native(kid) else "numpy"

    def prefill(self) -> list[dict]:
        """The whole run's records minus the decode records: what prefill ran."""
        dec = {k["id"]: k for k in self.decode}
        out = []
        for k in self.kernels:
            d = dec.get(k["id"])
            p = {f: k[f] - (d[f] if d else 0) for f in ("calls", "bytes_read", "rows", "seconds")}
            if p["calls"] > 0:
                out.append({"id": k["id"], **p})
        return out

    @cached_property
    def weight_bytes_per_step(self) -> float:
        b = sum(k["bytes_read"] for k in self.decode if self.is_weight(k["id"]))
        return b / self.n_steps if self.n_steps else 0.0

    @cached_property
    def cpu_weight_bytes_per_step(self) -> float:
        b = sum(k["bytes_read"] for k in self.decode if self.is_weight(k["id"]) and not self.is_gpu(k["id"]))
        return b / self.n_steps if self.n_steps else 0.0

    @property
    def decode_rate(self) -> float:
        """Weight bytes per second the decode phase claims (tok/s x bytes per step)."""
        return self.r["throughput"]["decode_tok_s"] * self.weight_bytes_per_step

    # -- the model: recorded in the receipt, or recomputed from --model --------------------------
    @cached_property
    def model_facts(self) -> dict | str | None:
        """Facts from the model file (a dict), the reason it does not load (a str), or None
        without --model."""
        if self.model_path is None:
            return None
        from bitnet.receipts.model_facts import model_facts

        # a receipt that records validation corrections was measured with them applied
        # an engine receipt's profile is the engine's claimed numerics: the file loads under its own
        profile = None if "engine" in self.r else self.r["profile"]
        return model_facts(self.model_path, profile, apply_corrections=bool(self.r.get("corrections")))

    def fact(self, key: str) -> tuple[Any, str] | None:
        """A model fact and where it came from: the model file when given (it is the
        evidence), else the receipt's own record, else None."""
        mf = self.model_facts
        if isinstance(mf, dict) and key in mf:
            return mf[key], "the model file"
        if key in self.r["model"]:
            return self.r["model"][key], "the receipt"
        return None

    # -- the machine -----------------------------------------------------------------------------
    @cached_property
    def cpu_entry(self) -> dict | None:
        from bitnet.receipts.cpu_allowlist import match_cpu

        return match_cpu(self.cpu_allowlist, self.r["machine"])

    @property
    def cpu_threads(self) -> int:
        """Threads the CPU side may have used: the native thread count when recorded, else every
        core (NumPy's BLAS may use them all), never more than the cores."""
        m = self.r["machine"]
        t = self.r.get("threads")
        return max(1, min(int(t), m["cores"]) if t else m["cores"])


def walk_numbers(x: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from walk_numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from walk_numbers(v, f"{path}/{i}")
    elif isinstance(x, float):
        yield path or "(root)", x


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Importing the rule modules fills TABLE in their order.
from bitnet.receipts import rules_core  # noqa: E402,F401
