"""Receipt verification: every rule has an id, a check that recomputes what can be recomputed,
and a message that says what was expected and what was found.

Rules (see docs/reference/receipts.md): R-SCHEMA-MAJOR, R-SCHEMA, R-COMPUTE-PATH,
R-KERNELS-EMPTY, R-KERNEL-ID, R-KERNEL-MOCK, R-KERNEL-STATS, R-CPU-QUANT-KERNEL,
R-BACKEND-KERNELS, R-GPU-KERNEL, R-GPU-FINGERPRINT, R-TOKEN-COUNT, R-TPS-POSITIVE,
R-DECODE-SUM, R-DECODE-TPS, R-PREFILL-TPS, R-E2E-TPS, R-TIMING-SUM, R-BYTES-PER-TOKEN,
R-FILE-FRACTION, R-BANDWIDTH-CEILING, R-GPU-ALLOWLIST, R-MODEL-SHA256, R-MODEL-SIZE.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitnet.receipts.build import sha256_file
from bitnet.receipts.policy import load_schema, receipt_policy

KERNEL_ID = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    message: str


@dataclass
class VerifyResult:
    results: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed_rules(self) -> list[str]:
        return [r.rule for r in self.results if not r.passed]

    def add(self, rule: str, ok: bool, message: str) -> None:
        self.results.append(RuleResult(rule, bool(ok), message))

    def to_json(self) -> dict:
        return {"passed": self.passed, "rules": [r.__dict__ for r in self.results]}


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-12)


def verify_receipt(receipt: Any, *, model: str | os.PathLike[str] | None = None,
                   allowlist: dict | None = None, require_gpu_kernels: bool = False) -> VerifyResult:
    """Apply every rule. Rules that need well-formed data run only when the schema passed."""
    pol = receipt_policy()
    res = VerifyResult()
    if not isinstance(receipt, dict):
        res.add("R-SCHEMA", False, f"expected a JSON object, found {type(receipt).__name__}")
        return res
    version = str(receipt.get("schema_version", ""))
    major = version.split(".", 1)[0]
    if major != str(pol["schema_major"]):
        res.add("R-SCHEMA-MAJOR", False, f"expected schema_version {pol['schema_major']}.x.y, found {version!r}")
        return res
    res.add("R-SCHEMA-MAJOR", True, f"schema_version {version}")

    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("inference-receipt.schema.json"))
    errors = sorted(validator.iter_errors(receipt), key=lambda e: list(e.absolute_path))
    for e in errors:
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        res.add("R-SCHEMA", False, f"{where}: {e.message}")
    if errors:
        return res
    res.add("R-SCHEMA", True, "valid against inference-receipt.schema.json")

    r = receipt
    res.add("R-COMPUTE-PATH", r["compute_path"] == "real", f"expected compute_path 'real', found {r['compute_path']!r}")

    kernels, decode_kernels = r["kernels"], r["decode_kernels"]
    res.add("R-KERNELS-EMPTY", bool(kernels) and bool(decode_kernels),
            f"expected kernels for the run and its decode phase, found {len(kernels)} and {len(decode_kernels)}")
    ids = [k["id"] for k in kernels + decode_kernels]
    bad_ids = [i for i in ids if not KERNEL_ID.match(i)]
    res.add("R-KERNEL-ID", not bad_ids, f"kernel ids must match {KERNEL_ID.pattern}; bad: {bad_ids}" if bad_ids else "kernel ids well formed")
    mock = [i for i in ids if any(mk in i.lower() for mk in pol["mock_markers"])]
    res.add("R-KERNEL-MOCK", not mock, f"mock/placeholder kernel ids: {mock}" if mock else "no mock kernel ids")
    bad_stats = [k["id"] for k in kernels + decode_kernels if k["calls"] < 1 or k["seconds"] <= 0 or k["bytes_read"] < 0 or k["rows"] < 1]
    res.add("R-KERNEL-STATS", not bad_stats,
            f"kernels with calls < 1, rows < 1, seconds <= 0 or negative bytes: {bad_stats}" if bad_stats else "kernel records are measurements")

    backend = r["backend"]
    quant = [i for i in ids if i.startswith(tuple(pol["quantized_kernel_prefixes"]))]
    cuda_ids = [i for i in ids if any(mk in i for mk in pol["gpu_kernel_markers"])]
    native_ids = [i for i in ids if any(mk in i for mk in pol["native_kernel_markers"])]
    if backend in ("numpy", "native"):
        res.add("R-CPU-QUANT-KERNEL", bool(quant),
                f"a CPU receipt must name a quantized kernel (prefixes {pol['quantized_kernel_prefixes']}); found {sorted(set(ids))}")
        res.add("R-BACKEND-KERNELS", not cuda_ids, f"a {backend} receipt lists GPU kernels: {cuda_ids}" if cuda_ids else "no GPU kernels on a CPU receipt")
        if backend == "native":
            res.add("R-BACKEND-KERNELS", bool(native_ids), f"a native receipt must name a native kernel; found {sorted(set(ids))}")
    gpu = r["machine"].get("gpu")
    if backend == "cuda" or require_gpu_kernels:
        res.add("R-GPU-KERNEL", bool(cuda_ids), f"a GPU receipt must name a GPU kernel; found {sorted(set(ids))}")
        res.add("R-GPU-FINGERPRINT", gpu is not None, "a GPU receipt must carry machine.gpu" if gpu is None else f"GPU {gpu['name']} ({gpu['compute_capability']})")

    g, t, tp = r["generation"], r["timings"], r["throughput"]
    n_ids, n_steps = len(g["token_ids"]), len(t["decode_step_s"])
    res.add("R-TOKEN-COUNT", g["generated_tokens"] == n_ids == n_steps,
            f"generated_tokens {g['generated_tokens']}, token ids {n_ids}, timed decode steps {n_steps} must be equal")
    tol = pol["tps_tolerance"]
    res.add("R-TPS-POSITIVE", all(tp[k] > 0 for k in tp), f"all throughputs must be > 0, found {tp}")
    step_sum = float(sum(t["decode_step_s"]))
    res.add("R-DECODE-SUM", _close(step_sum, t["decode_s"], tol), f"decode_s {t['decode_s']} vs sum of steps {step_sum}")
    if t["decode_s"] > 0:
        expect = n_steps / t["decode_s"]
        res.add("R-DECODE-TPS", _close(tp["decode_tok_s"], expect, tol),
                f"decode_tok_s {tp['decode_tok_s']:.6g}, recomputed {expect:.6g} from {n_steps} steps / {t['decode_s']:.6g} s")
    else:
        res.add("R-DECODE-TPS", False, "decode_s is 0: no decode was timed")
    if t["prefill_s"] > 0:
        expect = r["prompt"]["tokens"] / t["prefill_s"]
        res.add("R-PREFILL-TPS", _close(tp["prefill_tok_s"], expect, tol), f"prefill_tok_s {tp['prefill_tok_s']:.6g}, recomputed {expect:.6g}")
    else:
        res.add("R-PREFILL-TPS", False, "prefill_s is 0: no prefill was timed")
    if t["total_s"] > 0:
        expect = g["generated_tokens"] / t["total_s"]
        res.add("R-E2E-TPS", _close(tp["e2e_tok_s"], expect, tol), f"e2e_tok_s {tp['e2e_tok_s']:.6g}, recomputed {expect:.6g}")
    else:
        res.add("R-E2E-TPS", False, "total_s is 0")
    parts = t["load_s"] + t["prefill_s"] + t["decode_s"]
    res.add("R-TIMING-SUM", t["total_s"] >= parts * (1 - 1e-9), f"total_s {t['total_s']:.6g} must be >= load + prefill + decode = {parts:.6g}")

    m = r["model"]
    wpat = re.compile(pol["weight_kernel_pattern"])
    weight_bytes = sum(k["bytes_read"] for k in decode_kernels if wpat.search(k["id"]))
    per_step = weight_bytes / n_steps if n_steps else 0.0
    wtol = pol["bytes_per_token_tolerance"]
    res.add("R-BYTES-PER-TOKEN", n_steps > 0 and _close(per_step, m["weight_bytes_per_token"], wtol),
            f"decode kernels read {per_step:,.0f} weight bytes per step; the model needs {m['weight_bytes_per_token']:,} (tolerance {wtol:.0%})")
    frac = pol["min_file_fraction_per_token"]
    res.add("R-FILE-FRACTION", m["weight_bytes_per_token"] >= frac * m["bytes"],
            f"weight_bytes_per_token {m['weight_bytes_per_token']:,} must be >= {frac:.0%} of the {m['bytes']:,}-byte model file")
    rate = tp["decode_tok_s"] * per_step
    ceiling = float(pol["bandwidth_ceiling_bytes_per_s"][backend])
    res.add("R-BANDWIDTH-CEILING", rate <= ceiling, f"decode reads {rate:.3g} B/s; the {backend} ceiling is {ceiling:.3g} B/s")
    if backend == "cuda":
        bound = float(pol["gpu_plausible_bytes_per_s"])
        if rate > bound:
            entry = _allowlist_match(allowlist, gpu)
            if entry is None:
                res.add("R-GPU-ALLOWLIST", False, f"{rate:.3g} B/s exceeds the generic GPU bound {bound:.3g} B/s and GPU "
                        f"{gpu and (gpu['name'], gpu['compute_capability'])} is not in the allowlist")
            else:
                res.add("R-GPU-ALLOWLIST", rate <= entry["max_bytes_per_s"],
                        f"{rate:.3g} B/s vs the allowlist bound {entry['max_bytes_per_s']:.3g} B/s for {entry['name']}")

    if model is not None:
        p = Path(model)
        size = p.stat().st_size
        res.add("R-MODEL-SIZE", size == m["bytes"], f"model file has {size:,} bytes, the receipt says {m['bytes']:,}")
        digest = sha256_file(p)
        res.add("R-MODEL-SHA256", digest == m["sha256"], f"model sha256 {digest}, the receipt says {m['sha256']}")
    return res


def _allowlist_match(allowlist: dict | None, gpu: dict | None) -> dict | None:
    if not allowlist or not gpu:
        return None
    for e in allowlist.get("gpus", []) or []:
        if e["name"] == gpu["name"] and str(e["compute_capability"]) == gpu["compute_capability"]:
            return e
    return None
