"""Re-run attestation: run again what a receipt describes, on this machine, and compare.

`rerun(receipt)` re-executes `bitnet benchmark` with the receipt's model (found by sha256),
backend, profile, threads, token count, seed and prompt, `rerun_repeats` times, and judges the
claimed timings against the FASTEST re-measured ones (best of N):

- the claim's mean decode step (wall, 1 / decode_tok_s; and CPU when recorded) may be at most
  `rerun_tolerance` faster than the fastest re-measured step (CPU time of the calling thread
  when the receipt records it, else wall time);
- its prefill may be at most `rerun_prefill_tolerance` faster than the fastest re-measured
  prefill;
- a deterministic (greedy) receipt's token ids must be the re-run's.

Why one-sided, against the fastest step: load can only slow a re-run down, never speed it up.
The floor is the fastest of N x steps re-measured steps, in CPU seconds of the calling thread
(schema 1.1 receipts record them per step): CPU time does not count the time the thread waited
for a core, and the fastest step needs a single clean one. So a claim SLOWER than the re-run
(an honest receipt measured under load, re-run idle or loaded) never fails, and a claim whose
mean step is faster than the machine's fastest step by more than the tolerance fails.
Limits (measured, docs/reference/receipts.md): on a virtual machine CPU time includes time the
hypervisor stole, so under heavy load it still varies between runs (+-25% on the 2-core
development VM at load average 10); there a lie must be larger than that noise to be caught
(x3 always was, x1.5 not reliably). The message carries the load average so a reader can tell.

When the machine's fingerprint (CPU model, flags, cores; GPU name and compute capability for a
cuda receipt) differs from the receipt's, nothing is re-run: the result is `skip` and says so.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from bitnet.errors import ReceiptError


@dataclass
class RerunResult:
    status: str  # pass | fail | skip (not performed: another machine)
    message: str
    remeasured: list[dict] = field(default_factory=list)


def fingerprint_difference(receipt: dict) -> list[str]:
    """What differs between this machine and the receipt's (empty when they match)."""
    from bitnet.receipts.machine import fingerprint

    here, there = fingerprint(), receipt["machine"]
    diff = [f"{k}: receipt {there.get(k)!r}, here {here.get(k)!r}" for k in ("cpu", "cores") if here.get(k) != there.get(k)]
    if set(here["cpu_flags"]) != set(there.get("cpu_flags", [])):
        a, b = set(there.get("cpu_flags", [])), set(here["cpu_flags"])
        diff.append(f"cpu_flags: only in the receipt {sorted(a - b)[:6]}, only here {sorted(b - a)[:6]}")
    if receipt["backend"] == "cuda":
        from bitnet.kernels.cuda import cuda_status

        ok, why = cuda_status()
        if not ok:
            diff.append(f"gpu: the receipt ran on {there.get('gpu', {}).get('name')!r}; here no GPU ({why})")
        else:
            from bitnet.kernels.cuda import gpu_fingerprint

            g, rg = gpu_fingerprint().to_dict(), there.get("gpu") or {}
            if (g["name"], g["compute_capability"]) != (rg.get("name"), rg.get("compute_capability")):
                diff.append(f"gpu: receipt {rg.get('name')!r} ({rg.get('compute_capability')}), here {g['name']!r} ({g['compute_capability']})")
    return diff


def _model_path(receipt: dict, model: str | os.PathLike[str] | None) -> Path:
    from bitnet.receipts.build import sha256_file

    p = Path(model) if model is not None else Path(receipt["model"]["path"])
    if not p.is_file():
        raise ReceiptError(f"--rerun needs the model the receipt ran: {p} does not exist (pass --model M)")
    digest = sha256_file(p)
    if digest != receipt["model"]["sha256"]:
        raise ReceiptError(f"--rerun: {p} has sha256 {digest}, the receipt ran {receipt['model']['sha256']}: "
                           "pass --model with the file the receipt names")
    return p


def _prompt(receipt: dict, prompt: str | None) -> str:
    from bitnet.cli.benchmark_cmd import BENCH_PROMPT

    want = receipt["prompt"]["sha256"]
    for text in ([prompt] if prompt is not None else []) + [BENCH_PROMPT]:
        if hashlib.sha256(text.encode("utf-8")).hexdigest() == want:
            return text
    raise ReceiptError("--rerun: the receipt's prompt is not the benchmark's default prompt"
                       + (" and not --prompt either" if prompt is not None else "; pass --prompt TEXT")
                       + f" (prompt sha256 {want})")


def rerun(receipt: dict, *, model: str | os.PathLike[str] | None = None, prompt: str | None = None,
          repeats: int | None = None) -> RerunResult:
    from bitnet.cli import IO, build_parser
    from bitnet.cli.benchmark_cmd import measure
    from bitnet.receipts.policy import receipt_policy

    diff = fingerprint_difference(receipt)
    if diff:
        return RerunResult("skip", "re-run attestation NOT performed: this machine's fingerprint differs from the "
                           f"receipt's ({'; '.join(diff)}); its throughput claims are not checked against a re-run")
    pol = receipt_policy()
    n = repeats or int(pol["rerun_repeats"])
    path, text = _model_path(receipt, model), _prompt(receipt, prompt)
    g = receipt["generation"]
    argv = ["benchmark", "--model", str(path), "--backend", receipt["backend"], "--profile", receipt["profile"],
            "--tokens", str(g["max_tokens"]), "--prompt", text, "--probe-mib", "16"]
    if receipt.get("corrections"):  # the run applied validation corrections at load
        argv.append("--apply-corrections")
    if receipt.get("threads"):
        argv += ["--threads", str(receipt["threads"])]
    argv += ["--deterministic"] if g["deterministic"] else ([] if g["seed"] is None else ["--seed", str(g["seed"])])
    args = build_parser().parse_args(argv)
    sink = IO(io.StringIO(), io.StringIO())
    runs = []
    for _ in range(n):
        r = measure(args, sink)
        if r is None:
            return RerunResult("skip", "re-run attestation NOT performed: the cuda backend has no device here")
        runs.append(r)
    return judge(receipt, runs, pol)


def judge(receipt: dict, runs: list[dict], pol: dict) -> RerunResult:
    """The band check, separate from running so it can be tested on recorded runs.

    With CPU seconds in the receipt (schema 1.1), the floor is the fastest re-measured CPU
    step of the calling thread: load does not inflate CPU time, and no step's wall time, nor
    its CPU time, can be below the CPU time the same work needs. Without them, the floor is
    the fastest re-measured wall step (load can inflate it: see the module docstring)."""
    tol, ptol = float(pol["rerun_tolerance"]), float(pol["rerun_prefill_tolerance"])
    t = receipt["timings"]
    use_cpu = "decode_step_cpu_s" in t and all("decode_step_cpu_s" in r["timings"] for r in runs)
    key, pkey, what = ("decode_step_cpu_s", "prefill_cpu_s", "CPU") if use_cpu else ("decode_step_s", "prefill_s", "wall")
    floor = min(s for r in runs for s in r["timings"][key])
    pfloor = min(r["timings"][pkey] for r in runs)
    # the claim's MEAN step against the re-run's FASTEST: the claim's own fastest step would
    # carry its run's noise into the comparison and fail honest receipts (measured: the fastest
    # CPU step of separate runs on a loaded 2-core VM spread 4.2-6.6 ms)
    claims = {"mean decode step (wall)": t["decode_s"] / max(len(t["decode_step_s"]), 1)}
    if use_cpu:
        claims["mean decode step (CPU)"] = sum(t[key]) / max(len(t[key]), 1)
    problems = [f"claimed {name} {v:.4g} s is more than {tol:.0%} faster than the fastest re-measured {what} step {floor:.4g} s"
                for name, v in claims.items() if v * (1 + tol) < floor]
    pclaims = {"prefill (wall)": t["prefill_s"], **({"prefill (CPU)": t[pkey]} if use_cpu else {})}
    problems += [f"claimed {name} {v:.4g} s is more than {ptol:.0%} faster than the fastest re-measured {what} prefill {pfloor:.4g} s"
                 for name, v in pclaims.items() if v * (1 + ptol) < pfloor]
    g = receipt["generation"]
    if g["deterministic"] and any(r["generation"]["token_ids"] != g["token_ids"] for r in runs):
        problems.append("the re-run generated other token ids than the receipt records (a deterministic run)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    facts = (f"best of {len(runs)} re-runs, {what} time: fastest decode step {floor:.4g} s, fastest prefill {pfloor:.4g} s; "
             f"claims: " + ", ".join(f"{k} {v:.4g} s" for k, v in {**claims, **pclaims}.items())
             + f"; load average {load:.2f} on {os.cpu_count()} cores")
    if problems:
        return RerunResult("fail", "; ".join(problems) + f" ({facts})", runs)
    return RerunResult("pass", f"claims within the band: {facts}", runs)
