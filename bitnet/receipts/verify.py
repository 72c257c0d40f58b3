"""Receipt verification: every rule has an id, a check that recomputes what can be recomputed,
and a message that says what was expected and what was found.

`RULES` below is the list of rule ids with what each checks; docs/reference/receipts.md lists
the same ids (a test keeps them equal). Policy values come from policies/receipt-policy.yml.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitnet.receipts.build import sha256_file
from bitnet.receipts.policy import load_schema, receipt_policy

#: Kernel id grammar: lowercase ASCII words of [a-z0-9] joined by single underscores, e.g.
#: `i2s_x86_avx2_gemv`, `lm_head_float16_numpy`. No spaces, dashes, capitals or empty words.
KERNEL_ID = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")
SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")

#: Every rule id, in the order the verifier applies them, with what it checks.
RULES: dict[str, str] = {
    "R-SCHEMA-MAJOR": "schema_version is semver with a MAJOR this verifier knows (an unknown major stops verification)",
    "R-SCHEMA": "the receipt validates against inference-receipt.schema.json; created_at is a real UTC RFC 3339 instant",
    "R-COMPUTE-PATH": "compute_path is 'real'",
    "R-KERNELS-EMPTY": "kernels and decode_kernels are both non-empty",
    "R-KERNEL-ID": "every kernel id matches the grammar ^[a-z0-9]+(_[a-z0-9]+)*$",
    "R-KERNEL-MOCK": "no kernel id contains a mock marker (policy mock_markers)",
    "R-KERNEL-STATS": "every kernel record has calls >= 1, rows >= 1, seconds > 0, bytes_read >= 0",
    "R-KERNEL-SUBSET": "each decode_kernels record is part of the kernels record with the same id (calls, bytes, rows, seconds no larger)",
    "R-KERNEL-TIME": "kernel seconds fit inside the timed phases: decode kernels <= decode_s, all kernels <= total_s (policy kernel_time_tolerance)",
    "R-CPU-QUANT-KERNEL": "a numpy/native receipt names a quantized (ternary) kernel (policy quantized_kernel_prefixes)",
    "R-BACKEND-KERNELS": "a CPU receipt lists no GPU kernel; a native receipt lists a native kernel (policy native_kernel_markers)",
    "R-GPU-KERNEL": "a cuda receipt (or --require-gpu-kernels) lists a GPU kernel (policy gpu_kernel_markers)",
    "R-GPU-FINGERPRINT": "a cuda receipt (or --require-gpu-kernels) carries machine.gpu",
    "R-TOKEN-COUNT": "generated_tokens == len(token_ids) == number of timed decode steps",
    "R-TPS-POSITIVE": "every throughput is > 0",
    "R-DECODE-SUM": "decode_s equals the sum of decode_step_s (policy tps_tolerance)",
    "R-DECODE-TPS": "decode_tok_s equals decode steps / decode_s (policy tps_tolerance)",
    "R-PREFILL-TPS": "prefill_tok_s equals prompt tokens / prefill_s (policy tps_tolerance)",
    "R-E2E-TPS": "e2e_tok_s equals generated tokens / total_s (policy tps_tolerance)",
    "R-TIMING-SUM": "total_s >= load_s + prefill_s + decode_s",
    "R-BYTES-PER-TOKEN": "weight bytes the decode kernels read per step match model.weight_bytes_per_token (policy bytes_per_token_tolerance)",
    "R-FILE-FRACTION": "model.weight_bytes_per_token is at least a fraction of the model file (policy min_file_fraction_per_token)",
    "R-BANDWIDTH-CEILING": "decode tok/s x weight bytes per step <= the backend's ceiling (policy bandwidth_ceiling_bytes_per_s), tightened to the allowlist entry's max_bytes_per_s for a listed GPU",
    "R-GPU-ALLOWLIST": "a cuda receipt above the generic bound (policy gpu_plausible_bytes_per_s) has its GPU (name, compute capability) in the allowlist",
    "R-MODEL-SIZE": "with --model: the file's size equals model.bytes",
    "R-MODEL-SHA256": "with --model: the file's sha256 equals model.sha256",
    "R-MODEL-FACTS": "with --model: architecture, weight formats and weight_bytes_per_token recomputed from the file match the receipt",
}


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
    version = receipt.get("schema_version")
    if isinstance(version, str) and SEMVER.match(version):
        major = version.split(".", 1)[0]
        if major != str(pol["schema_major"]):
            res.add("R-SCHEMA-MAJOR", False, f"expected schema_version {pol['schema_major']}.x.y, found {version!r}: "
                    "a receipt of an unknown major version is not verified further")
            return res
        res.add("R-SCHEMA-MAJOR", True, f"schema_version {version}")
    # a missing or malformed schema_version is a schema error, reported by R-SCHEMA below

    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("inference-receipt.schema.json"))
    errors = sorted(validator.iter_errors(receipt), key=lambda e: [str(x) for x in e.absolute_path])
    for e in errors:
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        res.add("R-SCHEMA", False, f"{where}: {e.message}")
    if not errors and (why := _bad_timestamp(receipt["created_at"])):
        res.add("R-SCHEMA", False, f"created_at: expected a UTC RFC 3339 instant, found {receipt['created_at']!r} ({why})")
        errors = [why]
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

    run_by_id = {k["id"]: k for k in kernels}
    not_sub = [k["id"] for k in decode_kernels if k["id"] not in run_by_id
               or any(k[f] > run_by_id[k["id"]][f] for f in ("calls", "bytes_read", "rows", "seconds"))]
    res.add("R-KERNEL-SUBSET", not not_sub,
            f"decode records larger than (or absent from) the whole run's records: {not_sub}" if not_sub
            else "decode records are part of the run's records")
    t = r["timings"]
    ktol = pol["kernel_time_tolerance"]
    k_dec, k_all = sum(k["seconds"] for k in decode_kernels), sum(k["seconds"] for k in kernels)
    res.add("R-KERNEL-TIME", k_dec <= t["decode_s"] * (1 + ktol) and k_all <= t["total_s"] * (1 + ktol),
            f"decode kernels ran {k_dec:.6g} s within decode_s {t['decode_s']:.6g} s; all kernels {k_all:.6g} s "
            f"within total_s {t['total_s']:.6g} s (tolerance {ktol:.0%})")

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

    g, tp = r["generation"], r["throughput"]
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
    where = f"the {backend} ceiling"
    entry = _allowlist_match(allowlist, gpu) if backend == "cuda" else None
    if entry is not None and float(entry["max_bytes_per_s"]) < ceiling:
        ceiling, where = float(entry["max_bytes_per_s"]), f"the allowlist bound for {entry['name']} ({entry['compute_capability']})"
    res.add("R-BANDWIDTH-CEILING", rate <= ceiling,
            f"decode reads {rate:.3g} B/s ({tp['decode_tok_s']:.4g} tok/s x {per_step:,.0f} B/step); {where} is {ceiling:.3g} B/s")
    if backend == "cuda":
        bound = float(pol["gpu_plausible_bytes_per_s"])
        fp = gpu and f"{gpu['name']} ({gpu['compute_capability']})"
        if rate <= bound:
            res.add("R-GPU-ALLOWLIST", True, f"{rate:.3g} B/s is within the generic GPU bound {bound:.3g} B/s")
        else:
            res.add("R-GPU-ALLOWLIST", entry is not None,
                    f"{rate:.3g} B/s exceeds the generic GPU bound {bound:.3g} B/s; GPU {fp} "
                    + ("is in the allowlist" if entry else "is not in the allowlist"))

    if model is not None:
        p = Path(model)
        size = p.stat().st_size
        res.add("R-MODEL-SIZE", size == m["bytes"], f"model file has {size:,} bytes, the receipt says {m['bytes']:,}")
        digest = sha256_file(p)
        res.add("R-MODEL-SHA256", digest == m["sha256"], f"model sha256 {digest}, the receipt says {m['sha256']}")
        _model_facts(res, p, r)
    return res


def _model_facts(res: VerifyResult, path: Path, r: dict) -> None:
    """Recompute from the file what the receipt says about the model's weights."""
    from collections import Counter

    from bitnet.errors import BitNetError
    from bitnet.model.bitnet_model import BitNetModel

    m = r["model"]
    try:
        # a receipt that records validation corrections was measured with them applied
        model = BitNetModel(path, profile=r["profile"], apply_corrections=bool(r.get("corrections")))
    except BitNetError as e:
        res.add("R-MODEL-FACTS", False, f"the model file does not load under profile {r['profile']!r}: {e}")
        return
    facts = {
        "architecture": model.config.arch,
        "formats": dict(Counter(w.flavor for layer in model.layers for w in layer.proj.values())),
        "weight_bytes_per_token": model.bytes_per_token,
    }
    wrong = {k: (m[k], v) for k, v in facts.items() if m[k] != v}
    res.add("R-MODEL-FACTS", not wrong,
            "; ".join(f"{k}: the receipt says {a!r}, the file gives {b!r}" for k, (a, b) in wrong.items())
            if wrong else f"architecture, formats and weight_bytes_per_token ({facts['weight_bytes_per_token']:,}) match the file")


def _bad_timestamp(text: str) -> str | None:
    from datetime import datetime

    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        return str(e)
    return None


def _allowlist_match(allowlist: dict | None, gpu: dict | None) -> dict | None:
    if not allowlist or not gpu:
        return None
    for e in allowlist.get("gpus", []) or []:
        if e["name"] == gpu["name"] and str(e["compute_capability"]) == gpu["compute_capability"]:
            return e
    return None
