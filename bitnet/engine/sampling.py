"""Token sampling: greedy, temperature, top-k, top-p, repetition penalty, from a seeded
NumPy Generator so the same seed gives the same tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bitnet.errors import ConfigError, NonFiniteLogitsError


@dataclass(frozen=True)
class SamplerConfig:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.0  # llama.cpp semantics: logits of seen tokens / p if > 0, * p if < 0
    repeat_last_n: int = 64
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repeat_penalty <= 0:
            raise ConfigError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = "greedy" if self.is_greedy else "sample"
        return d


def apply_repeat_penalty(logits: np.ndarray, history: list[int], penalty: float, last_n: int) -> np.ndarray:
    if penalty == 1.0 or not history:
        return logits
    ids = np.unique(np.asarray(history[-last_n:] if last_n > 0 else history, dtype=np.int64))
    out = logits.copy()
    sel = out[ids]
    out[ids] = np.where(sel > 0, sel / penalty, sel * penalty)
    return out


def check_finite(logits: np.ndarray, where: str = "logits") -> None:
    """Raise NonFiniteLogitsError naming the first non-finite position (row, token id)."""
    if not np.isfinite(logits).all():
        bad = np.argwhere(~np.isfinite(logits))[0]
        at = ", ".join(str(int(i)) for i in bad)
        value = logits[tuple(bad)]
        raise NonFiniteLogitsError(f"{where}: non-finite value {value} at index [{at}] "
                                   f"({int((~np.isfinite(logits)).sum())} of {logits.size} are NaN/inf); "
                                   "the model's weights or metadata are corrupt")


def sample(logits: np.ndarray, cfg: SamplerConfig, rng: np.random.Generator, history: list[int],
           position: int | None = None) -> int:
    """Pick one token id from a row of logits; NonFiniteLogitsError if any is NaN or infinite."""
    check_finite(logits, "logits" if position is None else f"logits at position {position}")
    z = apply_repeat_penalty(logits.astype(np.float64), history, cfg.repeat_penalty, cfg.repeat_last_n)
    if cfg.is_greedy:
        return int(np.argmax(z))
    z = z / cfg.temperature
    order = np.argsort(-z, kind="stable")
    if cfg.top_k > 0:
        order = order[: cfg.top_k]
    zs = z[order]
    p = np.exp(zs - zs.max())
    p /= p.sum()
    if cfg.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), cfg.top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])
