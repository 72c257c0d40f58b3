"""Generate the adversarial receipt corpus: one lie per file, each with the rules that must
reject it.

    python tests/receipts/make_bad.py        # rewrites tests/receipts/bad/ from good/base.json

`good/base.json` is the receipt of a real `bitnet benchmark --backend numpy --deterministic
--tokens 8` run on the default model (`synthesize(fmt="i2_s", seed=0)`, reproducible byte for
byte, so `--model` lies are checked against the real file). Each mutation tells one lie and
forges everything derivable from it consistently: timings, throughputs, kernel seconds and bytes.
So the named rule is what catches it, not a side effect. `bad/expected.yml` names, for each file,
the exact set of rules that fail (almost always one) and whether the check needs `--model` or
an allowlist.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "580.159.04",
       "cuda_driver_api": "13.0", "memory_bytes": 85017493504}


def _set(path: str, value) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        *head, last = path.split(".")
        d = r
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return f


def _del(path: str) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        *head, last = path.split(".")
        d = r
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d[k]
        del d[int(last) if isinstance(d, list) else last]
    return f


def _retime(r: dict, steps: list[float]) -> None:
    """Replace the decode steps and recompute every derived figure consistently, kernel
    seconds included (scaled with the decode time they are part of)."""
    t, tp = r["timings"], r["throughput"]
    scale = sum(steps) / t["decode_s"]
    run = {k["id"]: k for k in r["kernels"]}
    for k in r["decode_kernels"]:
        new = k["seconds"] * scale
        run[k["id"]]["seconds"] += new - k["seconds"]
        k["seconds"] = new
    t["decode_step_s"] = steps
    t["decode_s"] = sum(steps)
    t["total_s"] = t["load_s"] + t["prefill_s"] + t["decode_s"] + 1e-6
    tp["decode_tok_s"] = len(steps) / t["decode_s"]
    tp["e2e_tok_s"] = r["generation"]["generated_tokens"] / t["total_s"]


def _rename_kernels(old: str, new: str) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        for ks in (r["kernels"], r["decode_kernels"]):
            for k in ks:
                k["id"] = k["id"].replace(old, new)
    return f


def _scale_decode_bytes(factor: float) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        for k in r["decode_kernels"]:
            k["bytes_read"] = int(k["bytes_read"] * factor)
    return f


def _too_fast(seconds: float) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        _retime(r, [seconds] * len(r["timings"]["decode_step_s"]))
    return f


def _as_gpu(with_gpu_kernels: bool, fast: float | None = None, fingerprint: bool = True) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        r["backend"] = "cuda"
        if fingerprint:
            r["machine"]["gpu"] = dict(GPU)
        if with_gpu_kernels:
            _rename_kernels("_gemm_numpy", "_cuda_gemm")(r)
        if fast is not None:
            _too_fast(fast)(r)
    return f


def as_fast_gpu(r: dict, rate: float) -> None:
    """Restate a real CPU receipt as a GPU run that read `rate` weight bytes/s, physically
    consistent otherwise: every weight kernel on the GPU, the model (file, bytes per token,
    kernel bytes) scaled up to reach `rate` at the measured tok/s, and the GPU kernels given 90%
    of the decode time left after the CPU kernels, so no kernel beats its own floor. For tests
    of the GPU allowlist mechanics, which need a fast GPU receipt that breaks no other rule."""
    r["backend"] = "cuda"
    r["machine"]["gpu"] = dict(GPU)
    for ks in (r["kernels"], r["decode_kernels"]):
        for k in ks:
            if k["id"].startswith(("lm_head_", "get_rows_", "f16_f32act_")) or "_gemm" in k["id"]:
                k["id"] = k["id"].replace("_numpy", "") + "_cuda"
    steps = len(r["timings"]["decode_step_s"])
    per_step = sum(k["bytes_read"] for k in r["decode_kernels"] if k["id"].endswith("_cuda")) / steps
    factor = int(rate / (r["throughput"]["decode_tok_s"] * per_step)) + 1
    for key in ("weight_bytes_per_token", "bytes", "projection_bytes"):
        if key in r["model"]:
            r["model"][key] *= factor
    t = r["timings"]
    gpu = [k for k in r["decode_kernels"] if k["id"].endswith("_cuda")]
    run = {k["id"]: k for k in r["kernels"]}
    for k in gpu:
        extra = k["bytes_read"] * (factor - 1)
        k["bytes_read"] += extra
        run[k["id"]]["bytes_read"] += extra
    budget = 0.9 * (t["decode_s"] - sum(k["seconds"] for k in r["decode_kernels"] if not k["id"].endswith("_cuda")))
    total = sum(k["bytes_read"] for k in gpu)
    for k in gpu:
        new = budget * k["bytes_read"] / total
        run[k["id"]]["seconds"] += new - k["seconds"]
        k["seconds"] = new


def _drop_token(r: dict) -> None:
    r["generation"]["token_ids"].pop()


def _drop_step(r: dict) -> None:
    """One timed step fewer, its kernel work removed too: only the count disagrees."""
    steps = r["timings"]["decode_step_s"]
    keep = (len(steps) - 1) / len(steps)
    run = {k["id"]: k for k in r["kernels"]}
    for k in r["decode_kernels"]:
        for f in ("calls", "bytes_read", "rows"):
            new = int(round(k[f] * keep))
            run[k["id"]][f] -= k[f] - new
            k[f] = new
    _retime(r, steps[:-1])


def _claim_more_tokens(r: dict) -> None:
    """generated_tokens + 1, with e2e tok/s forged to match the claim."""
    g = r["generation"]
    g["generated_tokens"] += 1
    r["throughput"]["e2e_tok_s"] = g["generated_tokens"] / r["timings"]["total_s"]


def _halve_decode_s(r: dict) -> None:
    """decode_s halved, decode tok/s doubled and kernel seconds halved to match; the steps
    still say otherwise."""
    r["timings"]["decode_s"] *= 0.5
    r["throughput"]["decode_tok_s"] *= 2
    run = {k["id"]: k for k in r["kernels"]}
    for k in r["decode_kernels"]:
        run[k["id"]]["seconds"] -= k["seconds"] / 2
        k["seconds"] /= 2


def _total_below_parts(r: dict) -> None:
    t = r["timings"]
    t["total_s"] = t["prefill_s"] + t["decode_s"]  # load_s left out of the total
    r["throughput"]["e2e_tok_s"] = r["generation"]["generated_tokens"] / t["total_s"]


def _claim_bigger_model(factor: int) -> Callable[[dict], None]:
    """weight_bytes_per_token x factor with the decode kernels' bytes forged to match (file size
    too, so R-FILE-FRACTION holds): only the model file can expose it."""
    def f(r: dict) -> None:
        r["model"]["weight_bytes_per_token"] *= factor
        r["model"]["bytes"] *= factor
        if "projection_bytes" in r["model"]:  # schema 1.1 receipts record it
            r["model"]["projection_bytes"] *= factor
        run = {k["id"]: k for k in r["kernels"]}
        for k in r["decode_kernels"]:
            extra = k["bytes_read"] * (factor - 1)
            k["bytes_read"] += extra
            run[k["id"]]["bytes_read"] += extra
    return f


def _inflate_decode_kernel(field_: str) -> Callable[[dict], None]:
    """A decode record claims more than the run's record of the same kernel."""
    def f(r: dict) -> None:
        k = r["decode_kernels"][0]
        run = next(x for x in r["kernels"] if x["id"] == k["id"])
        k[field_] = run[field_] * 2
    return f


def _kernel_seconds_beyond_decode(r: dict) -> None:
    """The decode kernels say they ran 3x longer than the decode phase the steps timed."""
    t = r["timings"]
    total = sum(k["seconds"] for k in r["decode_kernels"])
    run = {k["id"]: k for k in r["kernels"]}
    for k in r["decode_kernels"]:
        new = k["seconds"] / total * t["decode_s"] * 3
        run[k["id"]]["seconds"] += new - k["seconds"]
        k["seconds"] = new


def _double(path: str) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        a, b = path.split(".")
        r[a][b] = r[a][b] * 2
    return f


#: An allowlist that lists the corpus GPU with a bound of 2e12 B/s. A test input, not a
#: measured figure: it exercises "listed, but faster than its own entry".
TEST_ALLOWLIST = {"schema_version": "1.0.0", "gpus": [dict(name=GPU["name"], compute_capability=GPU["compute_capability"],
                                                          max_bytes_per_s=2.0e12, source="test fixture, not a measurement")]}


def _rename_gpu(r: dict) -> None:
    r["machine"]["gpu"]["name"] = "NVIDIA Imaginary 9000"


def _both(kernel_prefix: str, **changes: Callable[[dict], None]) -> Callable[[dict], None]:
    """Change fields of the decode record whose id starts with `kernel_prefix` and move the
    whole run's record of the same kernel by the same amount (prefill untouched)."""
    def f(r: dict) -> None:
        run = {k["id"]: k for k in r["kernels"]}
        for k in r["decode_kernels"]:
            if k["id"].startswith(kernel_prefix):
                for fld, fn in changes.items():
                    new = fn(k[fld])
                    run[k["id"]][fld] += new - k[fld]
                    k[fld] = new
    return f


def _duplicate_decode_record(kernel_prefix: str) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        k = next(x for x in r["decode_kernels"] if x["id"].startswith(kernel_prefix))
        r["decode_kernels"].append(copy.deepcopy(k))
    return f


def _one_ns_kernels(r: dict) -> None:
    """Every decode kernel 'ran' in 1 ns (the run's records moved to match)."""
    _both("", seconds=lambda s: 1e-9)(r)


def _avx512_without_flag(r: dict) -> None:
    _rename_kernels("i2s_x86_i8act_gemm_numpy", "i2s_x86_avx512_gemv")(r)
    r["machine"]["cpu_flags"] = [f for f in r["machine"]["cpu_flags"] if f != "avx512f"]


def _fewer_prompt_tokens(r: dict) -> None:
    """prompt.tokens halved, prefill tok/s forged to match; the kernels' rows say otherwise."""
    r["prompt"]["tokens"] //= 2
    r["throughput"]["prefill_tok_s"] = r["prompt"]["tokens"] / r["timings"]["prefill_s"]


def _big_model_at_cache_speed(factor: int) -> Callable[[dict], None]:
    """A model `factor` x bigger (file, bytes per token, decode kernel bytes and RSS forged
    consistently) decoded at the tiny model's speed: above the CPU's bound."""
    def f(r: dict) -> None:
        _claim_bigger_model(factor)(r)
        r["peak_rss_bytes"] = int(r["model"]["weight_bytes_per_token"] * 1.1)
    return f


PROBE = {"method": "numpy.copyto of a 256 MiB float64 buffer split over 2 thread(s), best of 5; bytes = read + write",
         "bytes_per_s": 5.0e12, "threads": 2, "buffer_bytes": 268435456, "seconds": 1.0e-4}


#: name -> (rules that must fail, exactly; mutation; needs --model; allowlist to verify with)
MUTATIONS: dict[str, tuple[list[str], Callable[[dict], None], bool, dict | None]] = {
    "mock_kernel": (["R-KERNEL-MOCK"], _rename_kernels("i2s_x86_i8act_gemm_numpy", "i2s_mock_gemm_numpy"), False, None),
    "placeholder_kernel": (["R-KERNEL-MOCK"], _rename_kernels("rms_norm_f32_numpy", "placeholder_rms_norm"), False, None),
    "fake_kernel": (["R-KERNEL-MOCK"], _rename_kernels("i2s_x86", "i2s_fake"), False, None),
    "fallback_only_kernel": (["R-KERNEL-MOCK"], _rename_kernels("i2s_x86_i8act_gemm_numpy", "i2s_fallback_only_gemm"), False, None),
    "empty_kernels": (["R-KERNELS-EMPTY", "R-KERNEL-SUBSET", "R-PROJ-CALLS", "R-PREFILL-ROWS"], _set("kernels", []), False, None),
    "empty_decode_kernels": (["R-KERNELS-EMPTY", "R-KERNEL-TIME", "R-PROJ-CALLS", "R-PREFILL-ROWS", "R-BYTES-PER-TOKEN"], _set("decode_kernels", []), False, None),
    "zero_decode_tps": (["R-TPS-POSITIVE", "R-DECODE-TPS"], _set("throughput.decode_tok_s", 0.0), False, None),
    "negative_e2e_tps": (["R-TPS-POSITIVE", "R-E2E-TPS"], _set("throughput.e2e_tok_s", -1.0), False, None),
    "decode_tps_inflated": (["R-DECODE-TPS"], _double("throughput.decode_tok_s"), False, None),
    "prefill_tps_inflated": (["R-PREFILL-TPS"], _double("throughput.prefill_tok_s"), False, None),
    "e2e_tps_inflated": (["R-E2E-TPS"], _double("throughput.e2e_tok_s"), False, None),
    "generated_count_mismatch": (["R-TOKEN-COUNT", "R-MAX-TOKENS"], _claim_more_tokens, False, None),
    "token_ids_short": (["R-TOKEN-COUNT"], _drop_token, False, None),
    "decode_steps_short": (["R-TOKEN-COUNT"], _drop_step, False, None),
    "decode_sum_mismatch": (["R-DECODE-SUM"], _halve_decode_s, False, None),
    "total_below_parts": (["R-TIMING-SUM"], _total_below_parts, False, None),
    "claims_bigger_model_than_read": (["R-BYTES-PER-TOKEN"], lambda r: r["model"].update(weight_bytes_per_token=r["model"]["weight_bytes_per_token"] * 10), False, None),
    "bytes_per_token_far_below": (["R-BYTES-PER-TOKEN"], _scale_decode_bytes(0.01), False, None),
    "model_file_larger_than_read": (["R-FILE-FRACTION"], lambda r: r["model"].update(bytes=r["model"]["bytes"] * 10), False, None),
    "faster_than_bandwidth_ceiling": (["R-KERNEL-FLOOR", "R-BANDWIDTH-CEILING", "R-CPU-CALL-FLOOR"], _too_fast(1e-10), False, None),
    "decode_kernel_exceeds_run_bytes": (["R-KERNEL-SUBSET"], _inflate_decode_kernel("bytes_read"), False, None),
    "decode_kernel_exceeds_run_calls": (["R-KERNEL-SUBSET", "R-DECODE-ROWS", "R-PREFILL-ROWS"], _inflate_decode_kernel("calls"), False, None),
    "kernel_seconds_beyond_decode": (["R-KERNEL-TIME"], _kernel_seconds_beyond_decode, False, None),
    "gpu_receipt_with_cpu_kernels": (["R-GPU-KERNEL", "R-GPU-TERNARY"], _as_gpu(with_gpu_kernels=False), False, None),
    "cpu_receipt_with_gpu_kernels": (["R-BACKEND-KERNELS"], _rename_kernels("lm_head_float16_numpy", "lm_head_f16_cuda_gemm"), False, None),
    "cpu_receipt_without_quantized_kernel": (["R-CPU-QUANT-KERNEL", "R-PROJ-CALLS", "R-DECODE-ROWS", "R-PREFILL-ROWS"], _rename_kernels("i2s_x86_i8act", "f32_f32act"), False, None),
    "native_receipt_without_native_kernel": (["R-BACKEND-KERNELS"], _set("backend", "native"), False, None),
    "fast_gpu_not_in_allowlist": (["R-KERNEL-FLOOR", "R-GPU-ALLOWLIST", "R-CPU-CALL-FLOOR"], _as_gpu(with_gpu_kernels=True, fast=1e-7), False, None),
    "fast_gpu_other_name_than_listed": (["R-KERNEL-FLOOR", "R-GPU-ALLOWLIST", "R-CPU-CALL-FLOOR"], lambda r: (_as_gpu(with_gpu_kernels=True, fast=1e-7)(r), _rename_gpu(r)), False, TEST_ALLOWLIST),
    "listed_gpu_beyond_its_bound": (["R-KERNEL-FLOOR", "R-BANDWIDTH-CEILING", "R-CPU-CALL-FLOOR"], _as_gpu(with_gpu_kernels=True, fast=1e-7), False, TEST_ALLOWLIST),
    "gpu_receipt_without_fingerprint": (["R-GPU-FINGERPRINT"], _as_gpu(with_gpu_kernels=True, fingerprint=False), False, None),
    "wrong_sha256": (["R-MODEL-SHA256"], _set("model.sha256", "0" * 64), True, None),
    "wrong_model_size": (["R-MODEL-SIZE"], lambda r: r["model"].update(bytes=r["model"]["bytes"] + 1), True, None),
    "forged_bigger_model": (["R-PROJ-BYTES", "R-MODEL-SIZE", "R-MODEL-FACTS", "R-MODEL-TENSORS"], _claim_bigger_model(3), True, None),
    "wrong_architecture": (["R-MODEL-FACTS"], _set("model.architecture", "llama"), True, None),
    "wrong_formats": (["R-WEIGHT-TYPES", "R-MODEL-FACTS"], _set("model.formats", {"tq2_0": 14}), True, None),
    "unknown_schema_major": (["R-SCHEMA-MAJOR"], _set("schema_version", "2.0.0"), False, None),
    "missing_schema_version": (["R-SCHEMA"], _del("schema_version"), False, None),
    "schema_version_not_semver": (["R-SCHEMA"], _set("schema_version", "1.0"), False, None),
    "missing_throughput": (["R-SCHEMA"], _del("throughput"), False, None),
    "missing_machine": (["R-SCHEMA"], _del("machine"), False, None),
    "missing_kernel_seconds": (["R-SCHEMA"], _del("decode_kernels.0.seconds"), False, None),
    "wrong_type_generated": (["R-SCHEMA"], lambda r: r["generation"].update(generated_tokens=str(r["generation"]["generated_tokens"])), False, None),
    "wrong_type_token_ids": (["R-SCHEMA"], _set("generation.token_ids", "83 204 357"), False, None),
    "negative_token_id": (["R-SCHEMA"], _set("generation.token_ids.0", -5), False, None),
    "created_at_not_utc": (["R-SCHEMA"], _set("created_at", "2026-11-22T12:00:00+02:00"), False, None),
    "created_at_impossible_date": (["R-SCHEMA"], _set("created_at", "2026-13-45T25:61:00Z"), False, None),
    "negative_prefill": (["R-SCHEMA"], _set("timings.prefill_s", -1.0), False, None),
    "negative_decode_step": (["R-SCHEMA"], _set("timings.decode_step_s.0", -0.001), False, None),
    "unknown_field": (["R-SCHEMA"], lambda r: r.update(verified_by="trust me"), False, None),
    "unknown_backend": (["R-SCHEMA"], _set("backend", "tpu"), False, None),
    "malformed_sha256": (["R-SCHEMA"], _set("model.sha256", "abc"), False, None),
    "compute_path_mock": (["R-COMPUTE-PATH"], _set("compute_path", "mock"), False, None),
    "bad_kernel_id_grammar": (["R-KERNEL-ID", "R-KERNEL-SUBSET"], _set("kernels.0.id", "I2S-Kernel"), False, None),
    "kernel_zero_calls": (["R-KERNEL-STATS", "R-DECODE-ROWS"], _set("decode_kernels.0.calls", 0), False, None),
    "kernel_zero_seconds": (["R-KERNEL-STATS", "R-KERNEL-FLOOR", "R-CPU-CALL-FLOOR"], _set("decode_kernels.0.seconds", 0.0), False, None),
    "kernel_negative_bytes": (["R-KERNEL-STATS"], _set("decode_kernels.1.bytes_read", -1), False, None),
    "nan_decode_tps": (["R-FINITE"], _set("throughput.decode_tok_s", float("nan")), False, None),
    "infinite_kernel_seconds": (["R-FINITE"], _set("decode_kernels.2.seconds", float("inf")), False, None),
    "created_at_in_the_future": (["R-CREATED-AT"], _set("created_at", "2999-11-22T12:05:58.685363Z"), False, None),
    "decode_record_listed_twice": (["R-KERNEL-UNIQUE"], _duplicate_decode_record("rope_"), False, None),
    "one_ns_decode_kernels": (["R-KERNEL-FLOOR", "R-CPU-CALL-FLOOR"], _one_ns_kernels, False, None),
    "cuda_receipt_ternary_on_cpu": (["R-GPU-TERNARY"], lambda r: (_as_gpu(with_gpu_kernels=False)(r), _rename_kernels("lm_head_float16_numpy", "lm_head_float16_cuda")(r)), False, None),
    "cpu_receipt_with_gpu_fingerprint": (["R-BACKEND-KERNELS"], lambda r: r["machine"].update(gpu=dict(GPU)), False, None),
    "cpu_receipt_with_cublas_lm_head": (["R-BACKEND-KERNELS"], _rename_kernels("lm_head_float16_numpy", "lm_head_f16_cublas"), False, None),
    "avx512_kernel_without_avx512f": (["R-KERNEL-ISA"], _avx512_without_flag, False, None),
    "kernel_for_absent_weight_type": (["R-WEIGHT-TYPES"], _rename_kernels("i2s_x86_i8act", "tq2_0_i8act"), False, None),
    "half_the_projection_calls": (["R-PROJ-CALLS"], _both("i2s_", calls=lambda n: n // 2, rows=lambda n: n // 2), False, None),
    "lm_head_twice_per_step": (["R-DECODE-ROWS"], _both("lm_head_", calls=lambda n: n * 2, rows=lambda n: n * 2), False, None),
    "prompt_tokens_disagree_with_rows": (["R-PREFILL-ROWS"], _fewer_prompt_tokens, False, None),
    "more_tokens_than_max_tokens": (["R-MAX-TOKENS"], _set("generation.max_tokens", 4), False, None),
    "run_longer_than_context": (["R-CONTEXT"], lambda r: r["model"].update(context_length=100), False, None),
    "token_id_outside_vocab": (["R-VOCAB"], _set("generation.token_ids.3", 999999), True, None),
    "projection_bytes_off": (["R-PROJ-BYTES"], _both("i2s_", bytes_read=lambda b: b + 8000), True, None),
    "lm_head_bytes_off": (["R-MODEL-TENSORS"], _both("lm_head_", bytes_read=lambda b: b + 8000), True, None),
    "rss_above_ram": (["R-RSS-RAM"], lambda r: r.update(peak_rss_bytes=r["machine"]["memory_bytes"] * 2), False, None),
    "implausible_bandwidth_probe": (["R-BANDWIDTH-PROBE"], lambda r: r["machine"].update(memory_bandwidth=dict(PROBE)), False, None),
    "cpu_seconds_beyond_wall": (["R-CPU-TIME"], lambda r: r["timings"].update(decode_step_cpu_s=[s * 2 for s in r["timings"]["decode_step_s"]]), False, None),
    "big_model_at_cache_speed": (["R-CPU-CEILING"], _big_model_at_cache_speed(600), False, None),
}


def mutate(base: dict, name: str) -> dict:
    r = copy.deepcopy(base)
    MUTATIONS[name][1](r)
    return r


def expected_yaml() -> str:
    """bad/expected.yml: for each file, the rules that must fail (exactly these), and what the
    check needs. Plain YAML, written without a library so the generator has no dependencies."""
    lines = ["# Generated by tests/receipts/make_bad.py: do not edit by hand.",
             "# FILE: {rules: the exact set of rule ids that fail, model: verify with --model <the base",
             "#        model>, allowlist: verify with this allowlist (else an empty one)}"]
    for name, (rules, _, needs_model, allowlist) in MUTATIONS.items():
        lines.append(f"{name}.json:")
        lines.append(f"  rules: [{', '.join(rules)}]")
        lines.append(f"  model: {'true' if needs_model else 'false'}")
        lines.append(f"  allowlist: {json.dumps(allowlist) if allowlist else 'null'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    base = json.loads((HERE / "good" / "base.json").read_text())
    out = HERE / "bad"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    for name in MUTATIONS:
        (out / f"{name}.json").write_text(json.dumps(mutate(base, name), indent=2) + "\n")
    (out / "expected.yml").write_text(expected_yaml())
    print(f"wrote {len(MUTATIONS)} receipts into {out}")


if __name__ == "__main__":
    main()
