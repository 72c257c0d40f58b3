"""Generate the adversarial receipt corpus: one lie per file, each with the rule that must
reject it.

    python tests/receipts/make_bad.py        # rewrites tests/receipts/bad/ from good/base.json

`good/base.json` is the receipt of a real `bitnet benchmark --backend numpy --deterministic
--tokens 8` run on the default model. Every mutation keeps the rest of the receipt consistent
where it can, so the named rule, not a side effect, is what catches it.
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
            d = d[k]
        del d[last]
    return f


def _retime(r: dict, steps: list[float]) -> None:
    """Replace the decode steps and recompute every derived figure consistently."""
    t, tp = r["timings"], r["throughput"]
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


def _drop_token(r: dict) -> None:
    r["generation"]["token_ids"].pop()


def _drop_step(r: dict) -> None:
    _retime(r, r["timings"]["decode_step_s"][:-1])


def _double(path: str) -> Callable[[dict], None]:
    def f(r: dict) -> None:
        a, b = path.split(".")
        r[a][b] = r[a][b] * 2
    return f


#: name -> (rule that must reject it, mutation, needs --model)
MUTATIONS: dict[str, tuple[str, Callable[[dict], None], bool]] = {
    "mock_kernel": ("R-KERNEL-MOCK", _set("decode_kernels.0.id", "i2s_mock_gemm_numpy"), False),
    "placeholder_kernel": ("R-KERNEL-MOCK", _set("kernels.0.id", "placeholder_gemm"), False),
    "fake_kernel": ("R-KERNEL-MOCK", _rename_kernels("i2s_x86", "i2s_fake"), False),
    "empty_kernels": ("R-KERNELS-EMPTY", _set("kernels", []), False),
    "empty_decode_kernels": ("R-KERNELS-EMPTY", _set("decode_kernels", []), False),
    "zero_decode_tps": ("R-TPS-POSITIVE", _set("throughput.decode_tok_s", 0.0), False),
    "decode_tps_inflated": ("R-DECODE-TPS", _double("throughput.decode_tok_s"), False),
    "prefill_tps_inflated": ("R-PREFILL-TPS", _double("throughput.prefill_tok_s"), False),
    "e2e_tps_inflated": ("R-E2E-TPS", _double("throughput.e2e_tok_s"), False),
    "generated_count_mismatch": ("R-TOKEN-COUNT", lambda r: r["generation"].update(generated_tokens=r["generation"]["generated_tokens"] + 1), False),
    "token_ids_short": ("R-TOKEN-COUNT", _drop_token, False),
    "decode_steps_short": ("R-TOKEN-COUNT", _drop_step, False),
    "decode_sum_mismatch": ("R-DECODE-SUM", lambda r: r["timings"].update(decode_s=r["timings"]["decode_s"] * 0.5), False),
    "total_below_parts": ("R-TIMING-SUM", lambda r: r["timings"].update(total_s=r["timings"]["prefill_s"]), False),
    "claims_bigger_model_than_read": ("R-BYTES-PER-TOKEN", lambda r: r["model"].update(weight_bytes_per_token=r["model"]["weight_bytes_per_token"] * 10), False),
    "bytes_per_token_far_below": ("R-BYTES-PER-TOKEN", _scale_decode_bytes(0.01), False),
    "model_file_larger_than_read": ("R-FILE-FRACTION", lambda r: r["model"].update(bytes=r["model"]["bytes"] * 10), False),
    "faster_than_bandwidth_ceiling": ("R-BANDWIDTH-CEILING", _too_fast(1e-10), False),
    "gpu_receipt_with_cpu_kernels": ("R-GPU-KERNEL", _as_gpu(with_gpu_kernels=False), False),
    "cpu_receipt_with_gpu_kernels": ("R-BACKEND-KERNELS", _rename_kernels("lm_head_float16_numpy", "lm_head_f16_cuda_gemm"), False),
    "cpu_receipt_without_quantized_kernel": ("R-CPU-QUANT-KERNEL", _rename_kernels("i2s_x86_i8act", "f32_f32act"), False),
    "native_receipt_without_native_kernel": ("R-BACKEND-KERNELS", _set("backend", "native"), False),
    "fast_gpu_not_in_allowlist": ("R-GPU-ALLOWLIST", _as_gpu(with_gpu_kernels=True, fast=1e-7), False),
    "gpu_receipt_without_fingerprint": ("R-GPU-FINGERPRINT", _as_gpu(with_gpu_kernels=True, fingerprint=False), False),
    "wrong_sha256": ("R-MODEL-SHA256", _set("model.sha256", "0" * 64), True),
    "wrong_model_size": ("R-MODEL-SIZE", lambda r: r["model"].update(bytes=r["model"]["bytes"] + 1), True),
    "unknown_schema_major": ("R-SCHEMA-MAJOR", _set("schema_version", "2.0.0"), False),
    "missing_throughput": ("R-SCHEMA", _del("throughput"), False),
    "missing_machine": ("R-SCHEMA", _del("machine"), False),
    "wrong_type_generated": ("R-SCHEMA", lambda r: r["generation"].update(generated_tokens=str(r["generation"]["generated_tokens"])), False),
    "created_at_not_utc": ("R-SCHEMA", _set("created_at", "2026-11-22T12:00:00+02:00"), False),
    "negative_prefill": ("R-SCHEMA", _set("timings.prefill_s", -1.0), False),
    "unknown_field": ("R-SCHEMA", lambda r: r.update(verified_by="trust me"), False),
    "unknown_backend": ("R-SCHEMA", _set("backend", "tpu"), False),
    "malformed_sha256": ("R-SCHEMA", _set("model.sha256", "abc"), False),
    "compute_path_mock": ("R-COMPUTE-PATH", _set("compute_path", "mock"), False),
    "bad_kernel_id_grammar": ("R-KERNEL-ID", _set("kernels.0.id", "I2S-Kernel"), False),
    "kernel_zero_calls": ("R-KERNEL-STATS", _set("decode_kernels.0.calls", 0), False),
    "kernel_zero_seconds": ("R-KERNEL-STATS", _set("decode_kernels.0.seconds", 0.0), False),
}


def mutate(base: dict, name: str) -> dict:
    r = copy.deepcopy(base)
    MUTATIONS[name][1](r)
    return r


def main() -> None:
    base = json.loads((HERE / "good" / "base.json").read_text())
    out = HERE / "bad"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    for name in MUTATIONS:
        (out / f"{name}.json").write_text(json.dumps(mutate(base, name), indent=2) + "\n")
    print(f"wrote {len(MUTATIONS)} receipts into {out}")


if __name__ == "__main__":
    main()
