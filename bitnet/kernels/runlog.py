"""The run log: what executed, how often, on how many bytes and rows, for how long.

The dispatcher records every matmul here with the id of the kernel that actually ran (the
kernel reports it); the model records its non-matmul ops (norms, RoPE, attention, the FFN
activation) through `timed`. Receipts are built from `KERNEL_LOG.snapshot()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from bitnet.kernels.ids import KernelId


@dataclass
class KernelRecord:
    id: str
    calls: int = 0
    bytes_read: int = 0
    rows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class KernelLog:
    """Aggregated records per kernel id, thread-safe."""

    def __init__(self) -> None:
        self._records: dict[str, KernelRecord] = {}
        self._lock = threading.Lock()

    def record(self, kernel_id: KernelId | str, *, bytes_read: int, rows: int, seconds: float) -> None:
        key = kernel_id if isinstance(kernel_id, str) else kernel_id.render()
        with self._lock:
            r = self._records.setdefault(key, KernelRecord(key))
            r.calls += 1
            r.bytes_read += int(bytes_read)
            r.rows += int(rows)
            r.seconds += float(seconds)

    def record_many(self, items: Iterable[tuple[str, int, int, float]]) -> None:
        """Several records (kernel id, bytes read, rows, seconds) under one lock: a block run
        natively (bitnet.model.native_layer) reports its ~14 kernels at once."""
        with self._lock:
            for key, nbytes, rows, seconds in items:
                r = self._records.setdefault(key, KernelRecord(key))
                r.calls += 1
                r.bytes_read += int(nbytes)
                r.rows += int(rows)
                r.seconds += float(seconds)

    def snapshot(self) -> list[KernelRecord]:
        with self._lock:
            return [KernelRecord(**asdict(r)) for r in self._records.values()]

    def reset(self) -> None:
        with self._lock:
            self._records.clear()


KERNEL_LOG = KernelLog()


@contextmanager
def timed(kernel_id: KernelId | str, bytes_read: int, rows: int) -> Iterator[None]:
    """Record one non-matmul op in the log, timed around the work itself."""
    t0 = time.perf_counter()
    yield
    KERNEL_LOG.record(kernel_id, bytes_read=bytes_read, rows=rows, seconds=time.perf_counter() - t0)
