"""Receipt rules: gates, then what the receipt must say about itself (kernels against tokens and
phases, tokens against the model's limits). One function per rule; see `rules.py`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

from bitnet.receipts.rules import (
    KERNEL_ID,
    PASS,
    SEMVER,
    SKIP,
    Ctx,
    KernelId,
    KernelIdError,
    Outcome,
    close,
    ok,
    parse_utc,
    rule,
    walk_numbers,
)

# -- gates ------------------------------------------------------------------------------------


@rule("R-SCHEMA-MAJOR", "schema_version is semver with a MAJOR this verifier knows (an unknown major stops verification)", gate=True)
def schema_major(c: Ctx) -> Iterator[Outcome]:
    version = c.r.get("schema_version") if isinstance(c.r, dict) else None
    if isinstance(version, str) and SEMVER.match(version):  # malformed: R-SCHEMA reports it
        major = version.split(".", 1)[0]
        yield ok(major == str(c.pol["schema_major"]),
                 f"schema_version {version}" if major == str(c.pol["schema_major"]) else
                 f"expected schema_version {c.pol['schema_major']}.x.y, found {version!r}: a receipt of an "
                 "unknown major version is not verified further")


@rule("R-FINITE", "every number in the receipt is finite (no NaN, no Infinity anywhere)", gate=True)
def finite(c: Ctx) -> Iterator[Outcome]:
    if not isinstance(c.r, dict):
        return  # R-SCHEMA reports a document that is not an object
    bad = [p for p, v in walk_numbers(c.r) if not math.isfinite(v)]
    yield ok(not bad, f"non-finite numbers at {bad[:5]}" if bad else "every number is finite")


@rule("R-SCHEMA", "the receipt validates against inference-receipt.schema.json; created_at is a real UTC RFC 3339 instant", gate=True)
def schema(c: Ctx) -> Iterator[Outcome]:
    import jsonschema

    from bitnet.receipts.policy import load_schema

    if not isinstance(c.r, dict):
        yield ok(False, f"expected a JSON object, found {type(c.r).__name__}")
        return
    validator = jsonschema.Draft202012Validator(load_schema("inference-receipt.schema.json"))
    errors = sorted(validator.iter_errors(c.r), key=lambda e: [str(x) for x in e.absolute_path])
    for e in errors:
        yield ok(False, f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    if errors:
        return
    try:
        parse_utc(c.r["created_at"])
    except ValueError as e:
        yield ok(False, f"created_at: expected a UTC RFC 3339 instant, found {c.r['created_at']!r} ({e})")
        return
    yield ok(True, "valid against inference-receipt.schema.json")


# -- engine receipts (schema 1.2): what the harness saw ---------------------------------------


@rule("R-OBSERVED", "an engine receipt (schema >= 1.2, `engine`) names every observable field once, in observed.measured or observed.not_observed; a measured field holds a value, a not-observed one holds none")
def observed(c: Ctx) -> Iterator[Outcome]:
    if "engine" not in c.r:
        return  # the harness's own run: every field measured (the schema requires them)
    from bitnet.receipts.engine_receipt import DERIVED, OBSERVABLE, get_path

    bad = []
    major_minor = tuple(int(x) for x in c.r["schema_version"].split(".")[:2])
    if major_minor < (1, 2):
        bad.append(f"schema_version {c.r['schema_version']} predates engine receipts (1.2.0)")
    measured, absent = c.r["observed"]["measured"], c.r["observed"]["not_observed"]
    both = sorted(set(measured) & set(absent))
    unnamed = sorted(set(OBSERVABLE) - set(measured) - set(absent))
    bad += [f"named both measured and not observed: {both}"] if both else []
    bad += [f"named neither measured nor not observed: {unnamed}"] if unnamed else []
    bad += [f"{p} is declared measured but the receipt holds no value" for p in sorted(measured) if not get_path(c.r, p)[0]]
    bad += [f"{p} is declared not observed but carries a value" for p in sorted(absent) if get_path(c.r, p)[0]]
    bad += [f"{d} is declared measured but {src}, which it is computed from, is not"
            for d, src in DERIVED.items() if d in measured and src not in measured]
    yield ok(not bad, "; ".join(bad) if bad else
             f"{len(measured)} fields measured by the harness, {len(absent)} not observed (absent, each with its reason)")


@rule("R-ENGINE-SEES", "an engine receipt claims as measured only what the harness can see of that engine kind (policy engine_observable: never kernel rows); backend and engine.spec name engine.kind")
def engine_sees(c: Ctx) -> Iterator[Outcome]:
    eng = c.r.get("engine")
    if eng is None:
        return
    from bitnet.engines.registry import parse_spec

    kind, table = eng["kind"], c.pol["engine_observable"]
    can = set(table.get(kind, table["default"]))
    bad = []
    if c.r["backend"] != kind:
        bad.append(f"backend {c.r['backend']!r} is not the engine's kind {kind!r}")
    try:
        spec_kind = parse_spec(eng["spec"])[0]
    except Exception as e:  # noqa: BLE001 - any refusal of the spec is the finding
        spec_kind = f"(unparsable: {e})"
    if spec_kind != kind:
        bad.append(f"engine.spec {eng['spec']!r} names kind {spec_kind!r}, not {kind!r}")
    claimed = sorted(set(c.r["observed"]["measured"]) - can)
    if claimed:
        bad.append(f"claims {claimed} measured; the harness cannot see them of a {kind!r} engine "
                   f"(it sees {sorted(can)})")
    yield ok(not bad, "; ".join(bad) if bad else f"what is claimed measured is what the harness sees of a {kind!r} engine")


# -- what ran ----------------------------------------------------------------------------------


@rule("R-COMPUTE-PATH", "compute_path is 'real'")
def compute_path(c: Ctx) -> Iterator[Outcome]:
    yield ok(c.r["compute_path"] == "real", f"expected compute_path 'real', found {c.r['compute_path']!r}")


@rule("R-CREATED-AT", "created_at is not in the future (policy max_clock_skew_s)")
def created_at(c: Ctx) -> Iterator[Outcome]:
    t = parse_utc(c.r["created_at"])
    skew = timedelta(seconds=c.pol["max_clock_skew_s"])
    yield ok(t <= c.now + skew, f"created_at {c.r['created_at']} vs now {c.now:%Y-%m-%dT%H:%M:%SZ} "
             f"(allowed clock skew {c.pol['max_clock_skew_s']} s)")


@rule("R-KERNELS-EMPTY", "kernels and decode_kernels are both non-empty", needs=("kernels", "decode_kernels"))
def kernels_empty(c: Ctx) -> Iterator[Outcome]:
    yield ok(bool(c.kernels) and bool(c.decode),
             f"expected kernels for the run and its decode phase, found {len(c.kernels)} and {len(c.decode)}")


@rule("R-KERNEL-ID", "every kernel id matches the grammar ^[a-z0-9]+(_[a-z0-9]+)*$ and parses into its fields (weights, activations, op, backend, variant) with a known backend", needs=("kernels", "decode_kernels"))
def kernel_id(c: Ctx) -> Iterator[Outcome]:
    bad = sorted({k["id"] for k in c.kernels + c.decode if c.kid(k["id"]) is None})
    if not bad:
        yield ok(True, "kernel ids well formed")
        return
    why = []
    for kid in bad:
        try:
            KernelId.parse(kid)
        except KernelIdError as e:
            why.append(str(e))
    yield ok(False, f"kernel ids must match {KERNEL_ID.pattern} and parse: {'; '.join(why)}")


@rule("R-KERNEL-UNIQUE", "no kernel id appears twice in kernels or in decode_kernels (the log has one record per kernel)", needs=("kernels", "decode_kernels"))
def kernel_unique(c: Ctx) -> Iterator[Outcome]:
    dup = {name: sorted(i for i, n in Counter(k["id"] for k in ks).items() if n > 1)
           for name, ks in (("kernels", c.kernels), ("decode_kernels", c.decode))}
    dup = {k: v for k, v in dup.items() if v}
    yield ok(not dup, f"duplicated kernel records: {dup}" if dup else "one record per kernel id")


@rule("R-KERNEL-MOCK", "no kernel id contains a mock marker (policy mock_markers)", needs=("kernels", "decode_kernels"))
def kernel_mock(c: Ctx) -> Iterator[Outcome]:
    mock = [k["id"] for k in c.kernels + c.decode if any(mk in k["id"].lower() for mk in c.pol["mock_markers"])]
    yield ok(not mock, f"mock/placeholder kernel ids: {mock}" if mock else "no mock kernel ids")


@rule("R-KERNEL-STATS", "every kernel record has calls >= 1, rows >= 1, seconds > 0, bytes_read >= 0", needs=("kernels", "decode_kernels"))
def kernel_stats(c: Ctx) -> Iterator[Outcome]:
    bad = [k["id"] for k in c.kernels + c.decode if k["calls"] < 1 or k["seconds"] <= 0 or k["bytes_read"] < 0 or k["rows"] < 1]
    yield ok(not bad, f"kernels with calls < 1, rows < 1, seconds <= 0 or negative bytes: {bad}" if bad
             else "kernel records are measurements")


@rule("R-KERNEL-SUBSET", "each decode_kernels record is part of the kernels record with the same id (calls, bytes, rows, seconds no larger)", needs=("kernels", "decode_kernels"))
def kernel_subset(c: Ctx) -> Iterator[Outcome]:
    run = {k["id"]: k for k in c.kernels}
    bad = [k["id"] for k in c.decode if k["id"] not in run
           or any(k[f] > run[k["id"]][f] for f in ("calls", "bytes_read", "rows", "seconds"))]
    yield ok(not bad, f"decode records larger than (or absent from) the whole run's records: {bad}" if bad
             else "decode records are part of the run's records")


@rule("R-KERNEL-TIME", "kernel seconds fit inside the timed phases: decode kernels <= decode_s, prefill kernels <= prefill_s, all <= total_s (policy kernel_time_tolerance)", needs=("kernels", "decode_kernels", "timings.prefill_s", "timings.decode_s", "timings.total_s"))
def kernel_time(c: Ctx) -> Iterator[Outcome]:
    t, tol = c.r["timings"], c.pol["kernel_time_tolerance"]
    k_dec = sum(k["seconds"] for k in c.decode)
    k_all = sum(k["seconds"] for k in c.kernels)
    k_pre = sum(k["seconds"] for k in c.prefill())
    yield ok(k_dec <= t["decode_s"] * (1 + tol) and k_pre <= t["prefill_s"] * (1 + tol) and k_all <= t["total_s"] * (1 + tol),
             f"decode kernels {k_dec:.6g} s within decode_s {t['decode_s']:.6g} s; prefill kernels {k_pre:.6g} s within "
             f"prefill_s {t['prefill_s']:.6g} s; all kernels {k_all:.6g} s within total_s {t['total_s']:.6g} s (tolerance {tol:.0%})")


@rule("R-KERNEL-FLOOR", "no kernel record is faster than physics allows: seconds >= calls x the per-call floor of where it ran + bytes / the backend ceiling (policy min_call_seconds, bandwidth_ceiling_bytes_per_s)", needs=("kernels", "decode_kernels"))
def kernel_floor(c: Ctx) -> Iterator[Outcome]:
    floors, ceil = c.pol["min_call_seconds"], c.pol["bandwidth_ceiling_bytes_per_s"]
    bad = []
    for k in c.kernels + c.decode:
        kind = c.kind(k["id"])
        floor = k["calls"] * float(floors[kind]) + k["bytes_read"] / float(ceil["cuda" if kind == "cuda" else "native"])
        if k["seconds"] < floor:
            bad.append(f"{k['id']} {k['seconds']:.3g} s < {floor:.3g} s")
    yield ok(not bad, f"kernels faster than their physical floor: {bad[:4]}" if bad else "every kernel record is above its floor")


# -- backend against kernels ----------------------------------------------------------------


@rule("R-CPU-QUANT-KERNEL", "a numpy/native receipt names a quantized (ternary) kernel: a matmul whose weights field is a ternary format (policy kernel_formats)")
def cpu_quant(c: Ctx) -> Iterator[Outcome]:
    if c.r["backend"] in ("numpy", "native"):
        ids = sorted({k["id"] for k in c.kernels + c.decode})
        yield ok(any(c.is_quant(i) for i in ids),
                 f"a CPU receipt must name a quantized kernel (weights {sorted(c.pol['kernel_formats'])}); found {ids}")


@rule("R-BACKEND-KERNELS", "a CPU receipt lists no GPU (or cuBLAS) kernel and no GPU fingerprint; a native receipt lists a native kernel (by the backend field)")
def backend_kernels(c: Ctx) -> Iterator[Outcome]:
    backend = c.r["backend"]
    if backend not in ("numpy", "native"):
        return
    ids = sorted({k["id"] for k in c.kernels + c.decode})
    gpu_ids = [i for i in ids if c.is_gpu(i)]
    gpu = c.r["machine"].get("gpu")
    yield ok(not gpu_ids and gpu is None,
             f"a {backend} receipt lists GPU kernels {gpu_ids}" if gpu_ids else
             f"a {backend} receipt carries a GPU fingerprint ({gpu['name']}): only a cuda run records one" if gpu else
             "no GPU kernels or GPU on a CPU receipt")
    if backend == "native":
        yield ok(any(c.is_native(i) for i in ids), f"a native receipt must name a native kernel; found {ids}")


@rule("R-GPU-KERNEL", "a cuda receipt (or --require-gpu-kernels) lists a GPU kernel (backend field cuda or cublas)")
def gpu_kernel(c: Ctx) -> Iterator[Outcome]:
    if c.r["backend"] == "cuda" or c.require_gpu_kernels:
        if c.missing(["kernels", "decode_kernels"]):
            yield (SKIP, c.cannot_run(c.missing(["kernels", "decode_kernels"])))
            return
        ids = sorted({k["id"] for k in c.kernels + c.decode})
        yield ok(any(c.is_gpu(i) for i in ids), f"a GPU receipt must name a GPU kernel; found {ids}")


@rule("R-GPU-TERNARY", "on a cuda receipt every quantized (ternary) matmul ran on the GPU")
def gpu_ternary(c: Ctx) -> Iterator[Outcome]:
    if c.r["backend"] == "cuda":
        cpu = sorted({k["id"] for k in c.kernels + c.decode if c.is_quant(k["id"]) and not c.is_gpu(k["id"])})
        yield ok(not cpu, f"a cuda receipt whose ternary matmuls ran on the CPU: {cpu}" if cpu
                 else "every ternary matmul ran on the GPU")


@rule("R-GPU-FINGERPRINT", "a cuda receipt (or --require-gpu-kernels) carries machine.gpu")
def gpu_fingerprint(c: Ctx) -> Iterator[Outcome]:
    if c.r["backend"] == "cuda" or c.require_gpu_kernels:
        gpu = c.r["machine"].get("gpu")
        yield ok(gpu is not None, "a GPU receipt must carry machine.gpu" if gpu is None
                 else f"GPU {gpu['name']} ({gpu['compute_capability']})")


@rule("R-KERNEL-ISA", "every native kernel's variant (instruction set) is in the recorded cpu_flags (policy isa_flags)", needs=("kernels", "decode_kernels"))
def kernel_isa(c: Ctx) -> Iterator[Outcome]:
    flags = set(c.r["machine"]["cpu_flags"])
    bad = []
    for kid in sorted({k["id"] for k in c.kernels + c.decode}):
        parsed = c.kid(kid)
        need = c.pol["isa_flags"].get(parsed.variant) if parsed is not None and parsed.backend == "native" else None
        if need is not None and not flags & set(need):
            bad.append(f"{kid} needs one of {need}")
    yield ok(not bad, f"kernels for an instruction set the recorded CPU lacks: {bad}" if bad
             else "every kernel's instruction set is in cpu_flags")


@rule("R-WEIGHT-TYPES", "every quantized kernel is for a weight type the model has (policy kernel_formats)", needs=("kernels", "decode_kernels"))
def weight_types(c: Ctx) -> Iterator[Outcome]:
    formats = set(c.r["model"]["formats"])
    bad = []
    for kid in sorted({k["id"] for k in c.kernels + c.decode if c.is_quant(k["id"])}):
        fmt = c.weight_format(kid)
        if fmt not in formats:
            bad.append(f"{kid} ({fmt})")
    yield ok(not bad, f"kernels for weight types the model does not have ({sorted(formats)}): {bad}" if bad
             else f"quantized kernels match the model's formats {sorted(formats)}")


# -- kernel rows against the tokens --------------------------------------------------------


def _ternary_tensors(c: Ctx) -> int:
    """Projection tensors in a ternary format: the ones the quantized kernels multiply."""
    ternary = set(c.pol["kernel_formats"].values())
    return sum(n for f, n in c.r["model"]["formats"].items() if f in ternary)


@rule("R-PROJ-CALLS", "decode runs one projection call per weight tensor per step; prefill a positive multiple of the tensor count", needs=("kernels", "decode_kernels", "timings.decode_step_s"))
def proj_calls(c: Ctx) -> Iterator[Outcome]:
    n_w = _ternary_tensors(c)
    if n_w == 0:
        yield (SKIP, f"model.formats {c.r['model']['formats']} has no ternary projection tensor: no call count to check")
        return
    dec = sum(k["calls"] for k in c.decode if c.is_quant(k["id"]))
    pre = sum(k["calls"] for k in c.prefill() if c.is_quant(k["id"]))
    yield ok(dec == n_w * c.n_steps and pre >= n_w and pre % n_w == 0,
             f"decode projection calls {dec} (expected {n_w} tensors x {c.n_steps} steps = {n_w * c.n_steps}); "
             f"prefill projection calls {pre} (expected a positive multiple of {n_w})")


@rule("R-DECODE-ROWS", "decode kernels run one token row per call; the lm_head and the embedding lookup run once per step", needs=("decode_kernels", "timings.decode_step_s"))
def decode_rows(c: Ctx) -> Iterator[Outcome]:
    bad = [f"{k['id']} rows {k['rows']} != calls {k['calls']}" for k in c.decode if k["rows"] != k["calls"]]
    heads = [k for k in c.decode if c.is_per_step(k["id"])]
    bad += [f"{k['id']} calls {k['calls']} != steps {c.n_steps}" for k in heads if k["calls"] != c.n_steps]
    yield ok(not bad, f"decode records disagree with batch-1 decoding: {bad[:4]}" if bad
             else "one row per decode call; one lm_head and one lookup per step")


@rule("R-PREFILL-ROWS", "prefill projection rows = prompt tokens x projection tensors; the embedding lookup reads one row per prompt token", needs=("kernels", "decode_kernels"))
def prefill_rows(c: Ctx) -> Iterator[Outcome]:
    n_w, n_p = _ternary_tensors(c), c.r["prompt"]["tokens"]
    pre = c.prefill()
    rows = sum(k["rows"] for k in pre if c.is_quant(k["id"]))
    lookup = sum(k["rows"] for k in pre if c.is_op(k["id"], "get_rows"))
    has_lookup = any(c.is_op(k["id"], "get_rows") for k in c.kernels)
    yield ok(rows == n_p * n_w and (lookup == n_p or not has_lookup),
             f"prefill projection rows {rows} (expected {n_p} prompt tokens x {n_w} tensors = {n_p * n_w}); "
             f"embedding rows {lookup} (expected {n_p})")


# -- tokens ------------------------------------------------------------------------------------


@rule("R-TOKEN-COUNT", "generated_tokens == len(token_ids) == number of timed decode steps")
def token_count(c: Ctx) -> Iterator[Outcome]:
    g = c.r["generation"]
    n_ids = len(g["token_ids"])
    if c.missing(["timings.decode_step_s"]):  # an engine seen from outside: no steps to count
        yield ok(g["generated_tokens"] == n_ids, f"generated_tokens {g['generated_tokens']}, token ids {n_ids} must be equal")
        yield (SKIP, c.cannot_run(["timings.decode_step_s"]) + " (the count of timed decode steps)")
        return
    yield ok(g["generated_tokens"] == n_ids == c.n_steps,
             f"generated_tokens {g['generated_tokens']}, token ids {n_ids}, timed decode steps {c.n_steps} must be equal")


@rule("R-MAX-TOKENS", "generated_tokens <= max_tokens")
def max_tokens(c: Ctx) -> Iterator[Outcome]:
    g = c.r["generation"]
    yield ok(g["generated_tokens"] <= g["max_tokens"], f"generated {g['generated_tokens']} tokens, max_tokens {g['max_tokens']}")


@rule("R-CONTEXT", "prompt tokens + generated tokens <= the model's context length (model.context_length or the --model file)")
def context(c: Ctx) -> Iterator[Outcome]:
    f = c.fact("context_length")
    n = c.r["prompt"]["tokens"] + c.r["generation"]["generated_tokens"]
    if f is None:
        yield (SKIP, "the receipt records no model.context_length and no --model was given: not checked")
        return
    yield ok(n <= f[0], f"{n} positions (prompt + generated) within the context length {f[0]} from {f[1]}")


@rule("R-VOCAB", "every generated token id < the model's vocabulary size (model.vocab_size or the --model file)")
def vocab(c: Ctx) -> Iterator[Outcome]:
    f = c.fact("vocab_size")
    if f is None:
        yield (SKIP, "the receipt records no model.vocab_size and no --model was given: not checked")
        return
    bad = [i for i in c.r["generation"]["token_ids"] if i >= f[0]]
    yield ok(not bad, f"token ids outside the vocabulary of {f[0]} (from {f[1]}): {bad[:8]}" if bad
             else f"every token id < {f[0]} (from {f[1]})")


# -- timings and throughputs -----------------------------------------------------------------


@rule("R-TPS-POSITIVE", "every throughput is > 0")
def tps_positive(c: Ctx) -> Iterator[Outcome]:
    tp = c.r["throughput"]
    yield ok(all(tp[k] > 0 for k in tp), f"all throughputs must be > 0, found {tp}")


@rule("R-DECODE-SUM", "decode_s equals the sum of decode_step_s (policy tps_tolerance)", needs=("timings.decode_s", "timings.decode_step_s"))
def decode_sum(c: Ctx) -> Iterator[Outcome]:
    t = c.r["timings"]
    s = float(sum(t["decode_step_s"]))
    yield ok(close(s, t["decode_s"], c.pol["tps_tolerance"]), f"decode_s {t['decode_s']} vs sum of steps {s}")


def _rate_rule(c: Ctx, name: str, n: int, seconds: float, what: str) -> Iterator[Outcome]:
    if seconds <= 0:
        yield ok(False, f"{what} is 0: nothing was timed")
        return
    expect = n / seconds
    got = c.r["throughput"][name]
    yield ok(close(got, expect, c.pol["tps_tolerance"]), f"{name} {got:.6g}, recomputed {expect:.6g} from {n} / {seconds:.6g} s")


@rule("R-DECODE-TPS", "decode_tok_s equals decode steps / decode_s (policy tps_tolerance)", needs=("timings.decode_s", "timings.decode_step_s", "throughput.decode_tok_s"))
def decode_tps(c: Ctx) -> Iterator[Outcome]:
    yield from _rate_rule(c, "decode_tok_s", c.n_steps, c.r["timings"]["decode_s"], "decode_s")


@rule("R-PREFILL-TPS", "prefill_tok_s equals prompt tokens / prefill_s (policy tps_tolerance)", needs=("timings.prefill_s", "throughput.prefill_tok_s"))
def prefill_tps(c: Ctx) -> Iterator[Outcome]:
    yield from _rate_rule(c, "prefill_tok_s", c.r["prompt"]["tokens"], c.r["timings"]["prefill_s"], "prefill_s")


@rule("R-E2E-TPS", "e2e_tok_s equals generated tokens / total_s (policy tps_tolerance)", needs=("timings.total_s", "throughput.e2e_tok_s"))
def e2e_tps(c: Ctx) -> Iterator[Outcome]:
    yield from _rate_rule(c, "e2e_tok_s", c.r["generation"]["generated_tokens"], c.r["timings"]["total_s"], "total_s")


@rule("R-CPU-TIME", "the calling thread's CPU seconds fit inside the wall seconds of each phase (prefill, every decode step), one CPU figure per step (policy cpu_time_tolerance, cpu_time_slack_s)", needs=("timings.prefill_s", "timings.decode_step_s"))
def cpu_time(c: Ctx) -> Iterator[Outcome]:
    t = c.r["timings"]
    if "decode_step_cpu_s" not in t and "prefill_cpu_s" not in t:
        yield (SKIP, "the receipt records no CPU seconds (timings.decode_step_cpu_s, prefill_cpu_s): not checked")
        return
    tol, slack = c.pol["cpu_time_tolerance"], c.pol["cpu_time_slack_s"]
    steps, cpu = t["decode_step_s"], t.get("decode_step_cpu_s")
    bad = []
    if cpu is not None and len(cpu) != len(steps):
        bad.append(f"{len(cpu)} CPU figures for {len(steps)} decode steps")
    elif cpu is not None:
        bad += [f"step {i}: CPU {c_:.4g} s > wall {w:.4g} s" for i, (w, c_) in enumerate(zip(steps, cpu, strict=True))
                if c_ > w * (1 + tol) + slack]
    if t.get("prefill_cpu_s", 0.0) > t["prefill_s"] * (1 + tol) + slack:
        bad.append(f"prefill: CPU {t['prefill_cpu_s']:.4g} s > wall {t['prefill_s']:.4g} s")
    yield ok(not bad, f"one thread cannot run longer than the wall clock: {bad[:4]}" if bad
             else "CPU seconds within wall seconds for prefill and every decode step")


@rule("R-TIMING-SUM", "total_s >= load_s + prefill_s + decode_s", needs=("timings.load_s", "timings.prefill_s", "timings.decode_s", "timings.total_s"))
def timing_sum(c: Ctx) -> Iterator[Outcome]:
    t = c.r["timings"]
    parts = t["load_s"] + t["prefill_s"] + t["decode_s"]
    yield ok(t["total_s"] >= parts * (1 - 1e-9), f"total_s {t['total_s']:.6g} must be >= load + prefill + decode = {parts:.6g}")


# -- bytes ---------------------------------------------------------------------------------------


@rule("R-BYTES-PER-TOKEN", "weight bytes the decode kernels read per step match model.weight_bytes_per_token (policy bytes_per_token_tolerance)", needs=("decode_kernels", "timings.decode_step_s"))
def bytes_per_token(c: Ctx) -> Iterator[Outcome]:
    m, tol = c.r["model"], c.pol["bytes_per_token_tolerance"]
    yield ok(c.n_steps > 0 and close(c.weight_bytes_per_step, m["weight_bytes_per_token"], tol),
             f"decode kernels read {c.weight_bytes_per_step:,.0f} weight bytes per step; the model needs "
             f"{m['weight_bytes_per_token']:,} (tolerance {tol:.0%})")


@rule("R-PROJ-BYTES", "the projection kernels read exactly the projection tensors' bytes per decode step (model.projection_bytes or the --model file)", needs=("decode_kernels", "timings.decode_step_s"))
def proj_bytes(c: Ctx) -> Iterator[Outcome]:
    f = c.fact("projection_bytes")
    if f is None:
        yield (SKIP, "the receipt records no model.projection_bytes and no --model was given: not checked")
        return
    per_step = sum(k["bytes_read"] for k in c.decode if c.is_quant(k["id"])) / max(c.n_steps, 1)
    yield ok(per_step == f[0], f"projection kernels read {per_step:,.1f} bytes per step; the tensors hold {f[0]:,} (from {f[1]})")


@rule("R-FILE-FRACTION", "model.weight_bytes_per_token is at least a fraction of the model file (policy min_file_fraction_per_token)")
def file_fraction(c: Ctx) -> Iterator[Outcome]:
    m, frac = c.r["model"], c.pol["min_file_fraction_per_token"]
    yield ok(m["weight_bytes_per_token"] >= frac * m["bytes"],
             f"weight_bytes_per_token {m['weight_bytes_per_token']:,} must be >= {frac:.0%} of the {m['bytes']:,}-byte model file")


@rule("R-RSS-RAM", "peak_rss_bytes <= machine.memory_bytes; a CPU run's peak RSS holds at least the weights it read per token (policy min_rss_fraction_of_weights)", needs=("peak_rss_bytes",))
def rss_ram(c: Ctx) -> Iterator[Outcome]:
    rss, ram = c.r["peak_rss_bytes"], c.r["machine"]["memory_bytes"]
    # the lower bound only where the weights are known to live in the process's memory (a CPU
    # run of the harness; an engine may offload them to a device)
    low = c.pol["min_rss_fraction_of_weights"] * c.r["model"]["weight_bytes_per_token"] if c.r["backend"] in ("numpy", "native") else 0
    yield ok(low <= rss <= ram, f"peak RSS {rss:,} B must be <= RAM {ram:,} B and >= {low:,.0f} B of weights read per token")


from bitnet.receipts import rules_machine  # noqa: E402,F401  (the next rules in the table)

__all__ = ["PASS", "SKIP"]
