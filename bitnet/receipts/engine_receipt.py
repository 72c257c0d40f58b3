"""Receipts of an external engine (`bitnet benchmark --engine SPEC`, schema 1.2).

The harness times the engine through its adapter (`Engine.timed_greedy`): every figure in the
receipt is the harness's own measurement around the adapter's calls, never a number the engine
reports. What the harness cannot see of an engine is left out of the receipt, and the receipt
says so field by field in `observed`:

    "observed": {"measured":     {"timings.total_s": "how the harness measured it", ...},
                 "not_observed": {"kernels": "why the harness could not see it", ...}}

Every field of `OBSERVABLE` is in exactly one of the two maps; a measured field is present, a
not-observed one is absent (R-OBSERVED), and what is claimed as measured must be something the
harness can see of that engine kind (R-ENGINE-SEES, policy engine_observable). Kernel rows are
never observed for an external engine: the harness's kernel log sees only its own kernels.

What the harness does measure itself, for every engine: the model's facts (read from the file),
the prompt's tokens (its own tokenizer: the engine is given ids), the generated ids (the
engine's answer), the machine's fingerprint and its memory-bandwidth probe.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from datetime import UTC, datetime

from bitnet import __version__
from bitnet.engines.protocol import EngineError, TimedRun
from bitnet.errors import ConfigError

SCHEMA_VERSION = "1.2.0"

#: the receipt fields a harness receipt always holds and an engine receipt holds only when the
#: harness could see them (dotted paths), with what each is
OBSERVABLE: dict[str, str] = {
    "timings.load_s": "seconds to load the model",
    "timings.prefill_s": "seconds of the prompt evaluation",
    "timings.decode_s": "sum of the decode steps",
    "timings.decode_step_s": "seconds of each decode step",
    "timings.total_s": "seconds of the whole run",
    "timings.prefill_cpu_s": "CPU seconds of the calling thread in prefill",
    "timings.decode_step_cpu_s": "CPU seconds of the calling thread per decode step",
    "throughput.prefill_tok_s": "prompt tokens / prefill_s",
    "throughput.decode_tok_s": "decode steps / decode_s",
    "throughput.e2e_tok_s": "generated tokens / total_s",
    "kernels": "the harness's kernel log of the run",
    "decode_kernels": "the decode phase's part of the kernel log",
    "peak_rss_bytes": "peak resident memory of the process that ran the engine",
    "threads": "threads the engine ran with",
    "machine.memory_bandwidth": "the run's memory-bandwidth probe",
}

#: derived fields: measured exactly when what they are derived from is
DERIVED = {"timings.decode_s": "timings.decode_step_s", "throughput.prefill_tok_s": "timings.prefill_s",
           "throughput.decode_tok_s": "timings.decode_step_s", "throughput.e2e_tok_s": "timings.total_s"}

KERNELS_WHY = "the harness's kernel log sees only its own kernels, never an external engine's"


def get_path(r: dict, path: str) -> tuple[bool, object]:
    """(present, value) of a dotted path in a receipt."""
    x: object = r
    for part in path.split("."):
        if not isinstance(x, dict) or part not in x:
            return False, None
        x = x[part]
    return True, x


def is_reference_spec(spec: str) -> bool:
    from bitnet.engines.registry import parse_spec

    return parse_spec(spec)[0] == "reference"


def apply_reference_spec(args: argparse.Namespace) -> None:
    """`--engine reference[:PROFILE][@BACKEND]` is the harness's own engine: the ordinary
    benchmark with that profile and backend (every field measured, kernels included)."""
    from bitnet.engines.registry import parse_spec

    _, arg = parse_spec(args.engine)
    profile, _, backend = arg.partition("@")
    if profile:
        args.profile = profile
    if backend:
        if backend not in ("numpy", "native", "cuda"):
            raise ConfigError(f"--engine {args.engine}: unknown backend {backend!r}; expected numpy, native or cuda")
        args.backend = backend


def check_engine_options(args: argparse.Namespace) -> None:
    """Options of the harness's own engine make no sense for another: refused before any work."""
    if args.seed is not None:
        raise ConfigError("--seed: an external engine is benchmarked greedily (deterministic); drop --seed")
    given = [o for o, v in (("--backend", args.backend), ("--profile", args.profile), ("--threads", args.threads),
                            ("--weights", getattr(args, "weights", None))) if v]
    if given:
        raise ConfigError(f"{', '.join(given)} choose how the harness's own engine runs; --engine {args.engine} "
                          "runs the engine it names (its adapter decides its numerics and threads)")


def measure_engine(args: argparse.Namespace, io, model_path) -> dict:
    """Time `args.engine` on `model_path` (one greedy run; adapters that keep state between calls
    warm up inside `timed_greedy`, a cmd program starts cold every request) and build its receipt."""
    from bitnet.engine import Engine as Harness
    from bitnet.engines.registry import open_engine, parse_spec
    from bitnet.receipts.machine import fingerprint
    from bitnet.receipts.model_facts import facts_of_model
    from bitnet.receipts.probe import measure_bandwidth

    harness = Harness(model_path)  # the model's facts and the prompt's ids come from the harness, not the engine
    facts = facts_of_model(harness.model)
    prompt_ids = harness.encode(args.prompt)
    del harness
    engine = open_engine(args.engine)
    try:
        engine.load(model_path)
        info = engine.describe()
        engine.require("greedy")
        run = engine.timed_greedy(prompt_ids, args.tokens)
    finally:
        engine.close()
    if len(run.ids) != args.tokens:
        raise EngineError(f"{args.engine}: asked for {args.tokens} greedy tokens, the engine returned {len(run.ids)}")
    threads = run.threads or os.cpu_count() or 1
    probe = measure_bandwidth(threads, args.probe_mib)
    receipt = build_engine_receipt(
        spec=args.engine, kind=parse_spec(args.engine)[0], info=info.to_dict(), model_path=model_path, facts=facts,
        prompt_text=args.prompt, prompt_ids=prompt_ids, max_tokens=args.tokens, run=run,
        machine={**fingerprint(), "memory_bandwidth": probe})
    tp = receipt["throughput"]
    print(f"{args.engine}: " + ", ".join(f"{k} {v:.2f}" for k, v in tp.items())
          + f" ({len(prompt_ids)} prompt tokens, {len(run.ids)} generated); not observed: "
          + (", ".join(receipt["observed"]["not_observed"]) or "nothing"), file=io.stdout)
    return receipt


def build_engine_receipt(*, spec: str, kind: str, info: dict, model_path, facts: dict, prompt_text: str,
                         prompt_ids: list[int], max_tokens: int, run: TimedRun, machine: dict,
                         created_at: datetime | None = None) -> dict:
    """The receipt of one timed engine run: measured fields present, the others absent and
    named in observed.not_observed with the reason."""
    from bitnet.receipts.build import sha256_file

    def rate(n: int, s: float) -> float:
        return n / s if s > 0 else 0.0

    timings: dict = {"total_s": run.total_s}
    throughput: dict = {"e2e_tok_s": rate(len(run.ids), run.total_s)}
    if run.load_s is not None:
        timings["load_s"] = run.load_s
    if run.prefill_s is not None:
        timings["prefill_s"] = run.prefill_s
        throughput["prefill_tok_s"] = rate(len(prompt_ids), run.prefill_s)
    if run.decode_step_s is not None:
        timings["decode_s"] = float(sum(run.decode_step_s))
        timings["decode_step_s"] = list(run.decode_step_s)
        throughput["decode_tok_s"] = rate(len(run.decode_step_s), timings["decode_s"])
    r: dict = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "bitnet-harness", "version": __version__},
        "engine": {"spec": spec, "kind": kind, **{k: str(info[k]) for k in ("name", "version", "build", "numerics")}},
        "created_at": (created_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "compute_path": "real",
        "backend": kind,
        "profile": str(info["numerics"]) or "unknown",
        "model": {"path": str(model_path), "sha256": sha256_file(model_path), "bytes": os.path.getsize(model_path),
                  **{k: facts[k] for k in ("architecture", "formats", "weight_bytes_per_token", "projection_bytes",
                                           "context_length", "vocab_size")}},
        "prompt": {"tokens": len(prompt_ids), "sha256": hashlib.sha256(prompt_text.encode("utf-8")).hexdigest()},
        "generation": {"max_tokens": max_tokens, "generated_tokens": len(run.ids), "token_ids": list(run.ids),
                       "seed": None, "sampler": {"greedy": True}, "deterministic": True},
        "timings": timings,
        "throughput": throughput,
        "machine": machine,
    }
    if run.peak_rss_bytes is not None:
        r["peak_rss_bytes"] = int(run.peak_rss_bytes)
    if run.threads is not None:
        r["threads"] = int(run.threads)
    measured = {k: v for k, v in run.how.items() if k in OBSERVABLE}
    for k, src in DERIVED.items():
        if src in measured:
            measured[k] = f"{OBSERVABLE[k]}, computed from the measured {src}"
    if "memory_bandwidth" in machine:
        measured["machine.memory_bandwidth"] = "the harness's copy probe, same run, same machine"
    not_observed = {k: run.why_not.get(k) or run.why_not.get(DERIVED.get(k, ""))
                    or (KERNELS_WHY if k in ("kernels", "decode_kernels") else f"the {kind} adapter does not measure it")
                    for k in OBSERVABLE if k not in measured}
    r["observed"] = {"measured": measured, "not_observed": not_observed}
    missing = [k for k in measured if not get_path(r, k)[0]] + [k for k in not_observed if get_path(r, k)[0]]
    if missing:  # the adapter's `how` and its figures disagree: a bug in the adapter, not a receipt to write
        raise EngineError(f"{spec}: the adapter's timed run says it measured fields it left empty or the reverse: {missing}")
    return r
