"""Receipts from measurements: `RunMeasurement` holds what a benchmark run measured,
`build_receipt` turns it into the schema's document, `write_receipt_atomic` writes it (temp file in the same folder, fsync, os.replace)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bitnet import __version__
from bitnet.files.atomic import atomic_write_text
from bitnet.receipts.machine import fingerprint

SCHEMA_VERSION = "1.3.0"  # 1.1: model.projection_bytes/context_length/vocab_size, machine.memory_bandwidth, signature; 1.2: engine receipts (engine, observed; bitnet.receipts.engine_receipt); 1.3: weights (mmap/memory residency of the model file)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class RunMeasurement:
    """Everything a receipt says, as measured by the run that writes it."""

    model_path: Path
    architecture: str
    formats: dict[str, int]  # weight flavor -> number of projection tensors
    weight_bytes_per_token: int
    backend: str
    profile: str
    prompt_text: str
    prompt_ids: list[int]
    generated_ids: list[int]
    max_tokens: int
    seed: int | None
    sampler: dict
    deterministic: bool
    load_s: float
    prefill_s: float
    decode_step_s: list[float]
    total_s: float
    kernels: list[dict]  # whole measured run, as the dispatcher recorded it
    decode_kernels: list[dict]  # the decode phase only
    peak_rss_bytes: int
    gpu: dict | None = None
    threads: int | None = None  # the native kernels' thread count (None for other backends)
    weights: str | None = None  # where the model file's bytes lived: "mmap" or "memory" (BITNET_WEIGHTS)
    projection_bytes: int | None = None  # bytes of every projection tensor (read once per decode step)
    context_length: int | None = None
    vocab_size: int | None = None
    memory_bandwidth: dict | None = None  # bitnet.receipts.probe.measure_bandwidth() of this run
    prefill_cpu_s: float | None = None  # CPU seconds of the calling thread (time.thread_time)
    decode_step_cpu_s: list[float] | None = None
    corrections: list[dict] = field(default_factory=list)  # validation corrections applied at load
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def build_receipt(m: RunMeasurement) -> dict:
    decode_s = float(sum(m.decode_step_s))
    n_gen = len(m.generated_ids)

    def rate(n: int, s: float) -> float:
        return n / s if s > 0 else 0.0

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "bitnet-harness", "version": __version__},
        "created_at": m.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "compute_path": "real",
        "backend": m.backend,
        "profile": m.profile,
        "model": {
            "path": str(m.model_path),
            "sha256": sha256_file(m.model_path),
            "bytes": os.path.getsize(m.model_path),
            "architecture": m.architecture,
            "formats": dict(m.formats),
            "weight_bytes_per_token": int(m.weight_bytes_per_token),
            **{k: int(v) for k, v in (("projection_bytes", m.projection_bytes), ("context_length", m.context_length),
                                      ("vocab_size", m.vocab_size)) if v is not None},
        },
        "prompt": {"tokens": len(m.prompt_ids), "sha256": hashlib.sha256(m.prompt_text.encode("utf-8")).hexdigest()},
        "generation": {
            "max_tokens": m.max_tokens,
            "generated_tokens": n_gen,
            "token_ids": list(map(int, m.generated_ids)),
            "seed": m.seed,
            "sampler": m.sampler,
            "deterministic": m.deterministic,
        },
        "timings": {
            "load_s": m.load_s,
            "prefill_s": m.prefill_s,
            "decode_s": decode_s,
            "total_s": m.total_s,
            "decode_step_s": list(m.decode_step_s),
            **({"prefill_cpu_s": m.prefill_cpu_s} if m.prefill_cpu_s is not None else {}),
            **({"decode_step_cpu_s": list(m.decode_step_cpu_s)} if m.decode_step_cpu_s is not None else {}),
        },
        "throughput": {
            "prefill_tok_s": rate(len(m.prompt_ids), m.prefill_s),
            "decode_tok_s": rate(len(m.decode_step_s), decode_s),
            "e2e_tok_s": rate(n_gen, m.total_s),
        },
        "kernels": m.kernels,
        "decode_kernels": m.decode_kernels,
        "machine": {**fingerprint(m.gpu), **({"memory_bandwidth": m.memory_bandwidth} if m.memory_bandwidth else {})},
        "peak_rss_bytes": int(m.peak_rss_bytes),
        **({"threads": int(m.threads)} if m.threads is not None else {}),
        **({"weights": m.weights} if m.weights is not None else {}),
        **({"corrections": list(m.corrections)} if m.corrections else {}),
    }


def write_receipt_atomic(path: str | os.PathLike[str], receipt: dict) -> Path:
    """Write `receipt` as JSON: a temporary file in the target's folder, fsync, os.replace.
    A reader sees the previous file or the complete new one, never a partial write."""
    return atomic_write_text(path, json.dumps(receipt, indent=2, sort_keys=False) + "\n")


write_receipt = write_receipt_atomic  # the name bitnet benchmark imports
