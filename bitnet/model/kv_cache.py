"""A KV cache that checks every access (AC3) and every allocation.

Layout per layer: `[n_kv_heads, capacity, head_dim]` for K and for V. The capacity grows on
demand (doubling, capped at `max_ctx`), so a model whose metadata claims a context of 2**24
tokens costs nothing until positions are written; each growth first computes the bytes the new
capacity needs and refuses (KVCacheError, with that size) above `budget_bytes`
(`KV_BUDGET_BYTES`, 16 GiB, by default) instead of letting NumPy raise MemoryError. Every
append and view checks the layer index, the head count, head_dim and the position against the
context limit and raises `KVCacheError` with the limits in the message: an overflow is an
error, never a silent truncation. Conditions that are worth a warning but not an error (values
that overflow an F16 cache, a cache more than 90% full) are reported once per layer, not once
per token.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import KVCacheError

FILL_WARNING = 0.9
#: default ceiling on the bytes one KV cache may hold (K and V, every layer). The 2B-4T model at
#: its full 4096-token context needs 0.63 GB in F32; 16 GiB covers a 100k-token context for it.
KV_BUDGET_BYTES = 16 * 2**30
#: first capacity allocated (positions); grows by doubling
INITIAL_CAPACITY = 256


class KVCacheWarning(UserWarning):
    pass


@dataclass
class KVCache:
    n_layer: int
    n_kv_heads: int
    max_ctx: int
    head_dim: int
    dtype: np.dtype = np.dtype(np.float32)
    budget_bytes: int = KV_BUDGET_BYTES
    k: list[np.ndarray] = field(init=False, repr=False)
    v: list[np.ndarray] = field(init=False, repr=False)
    length: list[int] = field(init=False)
    _warned: set[tuple[int, str]] = field(init=False, default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_kv_heads", "max_ctx", "head_dim"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v <= 0:
                raise KVCacheError(f"KV cache {name} must be a positive integer, got {v!r}")
        self.dtype = np.dtype(self.dtype)
        if self.dtype not in (np.float32, np.float16):
            raise KVCacheError(f"KV cache dtype must be float32 or float16, got {self.dtype}")
        self.length = [0] * self.n_layer
        self.k, self.v = [], []
        self._grow(min(self.max_ctx, INITIAL_CAPACITY))

    def bytes_for(self, positions: int) -> int:
        """Bytes K and V of every layer take for `positions` positions."""
        return 2 * self.n_layer * self.n_kv_heads * positions * self.head_dim * self.dtype.itemsize

    @property
    def capacity(self) -> int:
        """Positions allocated now (<= max_ctx)."""
        return self.k[0].shape[1] if self.k else 0

    def _grow(self, need: int) -> None:
        new = min(self.max_ctx, max(need, 2 * self.capacity))
        size = self.bytes_for(new)
        if size > self.budget_bytes:
            raise KVCacheError(
                f"KV cache for {new} positions would need {size:,} bytes ({self.n_layer} layers x K,V x "
                f"{self.n_kv_heads} heads x {self.head_dim} x {self.dtype.itemsize} B), more than the "
                f"budget of {self.budget_bytes:,} bytes; use a shorter context (max_ctx)")
        shape = (self.n_kv_heads, new, self.head_dim)
        old = self.capacity
        ks, vs = [], []
        for i in range(self.n_layer):
            k, v = np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)
            if old:
                k[:, :old], v[:, :old] = self.k[i], self.v[i]
            ks.append(k)
            vs.append(v)
        self.k, self.v = ks, vs

    @classmethod
    def for_config(cls, cfg, max_ctx: int | None = None, dtype=np.float32,
                   budget_bytes: int = KV_BUDGET_BYTES) -> KVCache:
        """A cache for a ModelConfig; head_dim is checked against embedding/heads."""
        if cfg.n_embd % cfg.n_head:
            raise KVCacheError(f"head_dim is not an integer: embedding {cfg.n_embd} / heads {cfg.n_head}")
        n = cfg.n_ctx if max_ctx is None else max_ctx
        if n > cfg.n_ctx:
            raise KVCacheError(f"requested context {n} exceeds the model's context_length {cfg.n_ctx}")
        return cls(cfg.n_layer, cfg.n_head_kv, n, cfg.head_dim, np.dtype(dtype), budget_bytes)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layer:
            raise KVCacheError(f"layer {layer} out of range: the cache has {self.n_layer} layers (0..{self.n_layer - 1})")

    def append(self, layer: int, pos: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store k, v of shape [n_kv_heads, T, head_dim] at positions pos..pos+T-1.

        `pos` may rewind (overwrite from an earlier position, as a prompt edit does) but not
        leave a gap after the layer's current length."""
        self._check_layer(layer)
        for nm, a in (("k", k), ("v", v)):
            if a.ndim != 3:
                raise KVCacheError(f"layer {layer}: {nm} must be [n_kv_heads, T, head_dim], got shape {a.shape}")
            if a.shape[0] != self.n_kv_heads:
                raise KVCacheError(f"layer {layer}: {nm} has {a.shape[0]} heads, the cache holds {self.n_kv_heads}")
            if a.shape[2] != self.head_dim:
                raise KVCacheError(f"layer {layer}: {nm} head_dim {a.shape[2]} != cache head_dim {self.head_dim}")
        if k.shape[1] != v.shape[1]:
            raise KVCacheError(f"layer {layer}: k has {k.shape[1]} positions, v has {v.shape[1]}")
        t = k.shape[1]
        if pos < 0 or pos > self.length[layer]:
            raise KVCacheError(f"layer {layer}: append at position {pos} leaves a gap (layer holds {self.length[layer]} positions)")
        end = pos + t
        if end > self.max_ctx:
            raise KVCacheError(
                f"layer {layer}: context overflow: positions {pos}..{end - 1} exceed the cache's "
                f"max context {self.max_ctx} (max position {self.max_ctx - 1})"
            )
        if end > self.capacity:
            self._grow(end)
        if self.dtype == np.float16:
            big = max(float(np.abs(k).max(initial=0)), float(np.abs(v).max(initial=0)))
            if big > 65504.0:
                self._warn_once(layer, "f16-overflow", f"layer {layer}: K/V magnitude {big:.3g} overflows the F16 cache (stored as inf)")
        self.k[layer][:, pos:end] = k
        self.v[layer][:, pos:end] = v
        self.length[layer] = end
        if end >= FILL_WARNING * self.max_ctx:
            self._warn_once(layer, "fill", f"layer {layer}: KV cache {end}/{self.max_ctx} positions full")

    def view(self, layer: int, end: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """K, V for positions 0..end-1 (default: all stored), as views, no copy."""
        self._check_layer(layer)
        n = self.length[layer] if end is None else end
        if not 0 <= n <= self.length[layer]:
            raise KVCacheError(f"layer {layer}: view of {n} positions, but only {self.length[layer]} are stored")
        return self.k[layer][:, :n], self.v[layer][:, :n]

    def reset(self) -> None:
        self.length = [0] * self.n_layer

    def _warn_once(self, layer: int, kind: str, msg: str) -> None:
        if (layer, kind) in self._warned:
            return
        self._warned.add((layer, kind))
        warnings.warn(msg, KVCacheWarning, stacklevel=3)
