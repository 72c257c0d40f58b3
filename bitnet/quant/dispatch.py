"""Kernel dispatcher (float weights only on this branch; the formats work replaces this).

The dispatcher is the one place that picks a kernel and records what ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import FormatError
from bitnet.gguf.reader import GGUFReader


@dataclass(frozen=True)
class PackedWeight:
    name: str
    flavor: str
    out_features: int
    in_features: int
    raw: np.ndarray
    scale: float | None = None


@dataclass
class KernelRecord:
    id: str
    calls: int = 0
    bytes_read: int = 0
    rows: int = 0
    seconds: float = 0.0


@dataclass
class KernelLog:
    records: dict[str, KernelRecord] = field(default_factory=dict)

    def record(self, kernel_id: str, *, bytes_read: int, rows: int, seconds: float) -> None:
        r = self.records.setdefault(kernel_id, KernelRecord(kernel_id))
        r.calls += 1
        r.bytes_read += bytes_read
        r.rows += rows
        r.seconds += seconds

    def snapshot(self) -> list[KernelRecord]:
        return [KernelRecord(**vars(r)) for r in self.records.values()]

    def reset(self) -> None:
        self.records.clear()


KERNEL_LOG = KernelLog()


def load_weight(reader: GGUFReader, name: str, *, strict: bool | None = None) -> PackedWeight:
    t = reader.tensor(name)
    if t.ggml_type is None or t.ggml_type.name not in ("F32", "F16"):
        raise FormatError(f"{reader.path}: tensor {name!r} is {t.type_name}; no kernel on this branch")
    arr = reader.array(t)
    return PackedWeight(name, t.ggml_type.name.lower(), arr.shape[0], arr.shape[1], arr)


def _absmax_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.maximum(np.abs(x).max(axis=1, keepdims=True).astype(np.float64), 1e-5)
    s = (127.0 / m).astype(np.float32)
    return np.clip(np.rint(x * s), -128, 127).astype(np.int8), s


def matmul(x: np.ndarray, w: PackedWeight, profile: str = "per-token-absmax") -> np.ndarray:
    t0 = time.perf_counter()
    if profile == "none":
        y = x.astype(np.float32) @ w.raw.T.astype(np.float32)
        kid = f"{w.flavor}_gemm_numpy"
    elif profile == "per-token-absmax":
        q, s = _absmax_int8(x)
        y = (q.astype(np.float32) @ w.raw.T.astype(np.float32)) / s
        kid = f"{w.flavor}_i8act_gemm_numpy"
    else:
        raise FormatError(f"activation profile {profile!r} not available for {w.flavor}")
    KERNEL_LOG.record(kid, bytes_read=w.raw.nbytes, rows=x.shape[0], seconds=time.perf_counter() - t0)
    return y.astype(np.float32)
