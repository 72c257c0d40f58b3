"""Re-run attestation: run again what a receipt describes, on this machine, and compare.

`rerun(receipt)` re-executes `bitnet benchmark` with the receipt's model (found by sha256),
backend, profile, threads, weights residency, token count, seed and prompt (or, for an engine receipt, the same
`--engine` spec), and judges the claim against the re-runs (`judge`):

- the claim's fastest decode step may be at most `rerun_tolerance` faster than the fastest
  re-measured step (CPU seconds of the calling thread when both sides recorded them, else wall
  seconds per step, else, for an engine seen only from outside, the whole run's wall time);
- its prefill may be at most `rerun_prefill_tolerance` faster than the fastest re-measured one;
- a deterministic (greedy) receipt's token ids must be the re-run's.

Why one-sided, fastest against fastest: load only slows a re-run down, never speeds it up, so
the machine's fastest re-measured step is an upper bound on how fast it can go (up to noise),
and no honest run goes faster than its machine. The re-runs are sequential: at least
`rerun_repeats`, and more while the claim is outside the band, up to `rerun_max_repeats`: a pass
needs one re-run as slow as the claim, a failure needs every re-run faster than it. So an honest
receipt fails only if all of up to `rerun_max_repeats` re-runs were slowed beyond the band.
What this cannot detect (measured, docs/reference/receipts.md): a claim within the band of the
machine's best. On the shared 2-core VM at load average 8-12 the fastest CPU step of separate
12-token runs of the tiny model spread 2.2x (4.2-9.3 ms, in two clusters), so a x1.5 edit of a
run from the slow cluster claims no more than the machine does on a good run, and passes: no
re-run can tell it from an honest fast run. The message carries the load average.
Re-runs decode at least `rerun_min_steps` tokens when the context has room (more chances at the
fastest step); a deterministic receipt's ids are compared on the first ones.

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


def rerun_tokens(receipt: dict, min_steps: int) -> int:
    """Tokens each re-run decodes: the receipt's, raised to `min_steps` when the model's context
    (recorded since 1.1) has room. More steps give the machine more chances at its fastest step
    (measured: the fastest of 48 steps is below the fastest of 12 in most runs under load); the
    first tokens are the receipt's own run, so a deterministic receipt's ids are compared on them."""
    n = int(receipt["generation"]["max_tokens"])
    ctx = receipt["model"].get("context_length")
    if ctx is None:
        return n
    room = int(ctx) - int(receipt["prompt"]["tokens"]) - 1
    return max(n, min(int(min_steps), room))


def rerun_argv(receipt: dict, path: Path, text: str, tokens: int | None = None) -> list[str]:
    """The `bitnet benchmark` command line that re-executes what the receipt describes."""
    g = receipt["generation"]
    argv = ["benchmark", "--model", str(path), "--tokens", str(tokens or g["max_tokens"]), "--prompt", text,
            "--probe-mib", "16"]
    if "engine" in receipt:  # an external engine: the same spec, timed the same way
        return argv + ["--engine", receipt["engine"]["spec"]]
    argv += ["--backend", receipt["backend"], "--profile", receipt["profile"]]
    if receipt.get("corrections"):  # the run applied validation corrections at load
        argv.append("--apply-corrections")
    if receipt.get("threads"):
        argv += ["--threads", str(receipt["threads"])]
    # a receipt from before schema 1.3 has no `weights`: those runs read the file through its map
    argv += ["--weights", receipt.get("weights", "mmap")]
    return argv + (["--deterministic"] if g["deterministic"] else ([] if g["seed"] is None else ["--seed", str(g["seed"])]))


def rerun(receipt: dict, *, model: str | os.PathLike[str] | None = None, prompt: str | None = None,
          repeats: int | None = None, max_repeats: int | None = None) -> RerunResult:
    """Re-run `repeats` times (policy rerun_repeats), then, while the claim is outside the band,
    again up to `max_repeats` (policy rerun_max_repeats): a pass needs one re-run as slow as the
    claim, a failure needs every re-run faster than it by more than the band."""
    from bitnet.cli import IO, build_parser
    from bitnet.cli.benchmark_cmd import measure
    from bitnet.receipts.policy import receipt_policy

    diff = fingerprint_difference(receipt)
    if diff:
        return RerunResult("skip", "re-run attestation NOT performed: this machine's fingerprint differs from the "
                           f"receipt's ({'; '.join(diff)}); its throughput claims are not checked against a re-run")
    pol = receipt_policy()
    n = repeats or int(pol["rerun_repeats"])
    n_max = max(n, max_repeats or int(pol["rerun_max_repeats"]))
    path, text = _model_path(receipt, model), _prompt(receipt, prompt)
    # an engine seen only from outside is compared on its whole run: the same tokens, no more
    tokens = rerun_tokens(receipt, int(pol["rerun_min_steps"])) if "decode_step_s" in receipt["timings"] else None
    args = build_parser().parse_args(rerun_argv(receipt, path, text, tokens))
    sink = IO(io.StringIO(), io.StringIO())
    runs: list[dict] = []
    while len(runs) < n_max:
        r = measure(args, sink)
        if r is None:
            return RerunResult("skip", "re-run attestation NOT performed: the cuda backend has no device here")
        runs.append(r)
        if len(runs) >= n and judge(receipt, runs, pol).status == "pass":
            break
    return judge(receipt, runs, pol)


def _clock(receipt: dict, runs: list[dict]) -> tuple[str, str, str]:
    """(per-step key, prefill key, name) of the best clock both sides recorded: CPU seconds of
    the calling thread, else wall seconds per step, else (an engine seen from outside) the
    whole run's wall time."""
    t = receipt["timings"]
    if "decode_step_cpu_s" in t and all("decode_step_cpu_s" in r["timings"] for r in runs):
        return "decode_step_cpu_s", "prefill_cpu_s", "CPU"
    if "decode_step_s" in t and all("decode_step_s" in r["timings"] for r in runs):
        return "decode_step_s", "prefill_s", "wall"
    return "", "", "whole-run wall"


def judge(receipt: dict, runs: list[dict], pol: dict) -> RerunResult:
    """The band check, separate from running so it can be tested on recorded runs.

    Like is compared with like: the claim's FASTEST decode step against the FASTEST step of
    every re-run (best of N x steps), on the best clock both recorded (`_clock`). A claim fails
    when its fastest step is more than `rerun_tolerance` faster than the machine's fastest
    re-measured one: no honest run on this machine goes faster than the machine can. Load only
    slows the re-runs (their floor rises), which can only turn a failure into a pass, so the
    decision errs towards the claim; `rerun` keeps re-running while the claim is outside the
    band, so an honest claim fails only when every one of `rerun_max_repeats` re-runs was
    slowed beyond the band (docs/reference/receipts.md gives the measured figures)."""
    tol, ptol = float(pol["rerun_tolerance"]), float(pol["rerun_prefill_tolerance"])
    t = receipt["timings"]
    key, pkey, what = _clock(receipt, runs)
    problems, facts = [], []
    if key:
        floor = min(s for r in runs for s in r["timings"][key])
        claim = min(t[key]) if t[key] else float("inf")
        facts.append(f"fastest decode step: claimed {claim:.4g} s, re-measured {floor:.4g} s")
        if claim * (1 + tol) < floor:
            problems.append(f"the claimed fastest decode step {claim:.4g} s is more than {tol:.0%} faster than the "
                            f"fastest re-measured one, {floor:.4g} s ({what} time)")
    if pkey and pkey in t and all(pkey in r["timings"] for r in runs):
        pfloor = min(r["timings"][pkey] for r in runs)
        facts.append(f"prefill: claimed {t[pkey]:.4g} s, fastest re-measured {pfloor:.4g} s")
        if t[pkey] * (1 + ptol) < pfloor:
            problems.append(f"the claimed prefill {t[pkey]:.4g} s is more than {ptol:.0%} faster than the fastest "
                            f"re-measured prefill {pfloor:.4g} s ({what} time)")
    if not key:  # an engine seen from outside: its whole request is all there is to compare
        floor = min(r["timings"]["total_s"] for r in runs)
        facts.append(f"whole run: claimed {t['total_s']:.4g} s, fastest re-measured {floor:.4g} s")
        if t["total_s"] * (1 + tol) < floor:
            problems.append(f"the claimed whole run {t['total_s']:.4g} s is more than {tol:.0%} faster than the "
                            f"fastest re-measured one, {floor:.4g} s")
    g = receipt["generation"]
    if g["deterministic"] and any(r["generation"]["token_ids"][:len(g["token_ids"])] != g["token_ids"] for r in runs):
        problems.append("the re-run generated other token ids than the receipt records (a deterministic run)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    summary = (f"best of {len(runs)} re-run(s), {what} time: " + "; ".join(facts)
               + f"; load average {load:.2f} on {os.cpu_count()} cores")
    if problems:
        return RerunResult("fail", "; ".join(problems) + f" ({summary})", runs)
    return RerunResult("pass", f"claims within the band: {summary}", runs)
