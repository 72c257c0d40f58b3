"""The engine protocol: what the harness asks of any engine it judges.

An engine is named by a spec string (`reference:bitnet.cpp@native`, `libllama:DIR`, `hf:`,
`cmd:"PROGRAM ARGS"`, or a third-party kind from the `bitnet_harness.engines` entry points),
loads one model, and answers with float32 logits for every prompt position, a greedy
continuation, and optionally token ids for a text. What it cannot do it says up front in its
`Capabilities`: a check that needs a missing capability is skipped with that reason, never
passed (`require`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bitnet.errors import BitNetError, CapabilityMissing

CAPABILITIES = ("logits", "greedy", "tokenize")


class EngineError(BitNetError):
    """The engine under test broke (crash, hang, malformed answer): a comparison that meets one
    ends with verdict `error`, carrying this message."""


@dataclass(frozen=True)
class EngineInfo:
    """What `describe()` returns; parity receipts record it for both sides of a comparison."""

    spec: str
    name: str
    version: str
    build: str
    numerics: str  # the numerics profile the engine claims (`reference`, `llama.cpp`, ...) or "unknown"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do. `loads` lists the (arch, weight format) pairs it claims to load;
    None means "any: judge me on the models you give me"."""

    logits: bool = True
    greedy: bool = True
    tokenize: bool = False
    loads: tuple[tuple[str, str], ...] | None = None
    max_tokens: int | None = None  # longest sequence it evaluates (None: the model's context)
    why_not: dict[str, str] = field(default_factory=dict, hash=False)  # capability -> reason it is missing

    def claims(self, arch: str, fmt: str) -> bool:
        return self.loads is None or (arch, fmt) in self.loads


@dataclass
class EngineOutput:
    """One evaluation: logits [T, V] float32 for every prompt position and the greedy ids."""

    logits: np.ndarray
    greedy: list[int]
    seconds: float = 0.0


@dataclass
class TimedRun:
    """A greedy generation timed by the harness (`Engine.timed_greedy`), for `bitnet benchmark
    --engine`. Every figure is the harness's own measurement around the adapter's calls, never a
    number the engine reports; what the harness could not see is None, and `why_not` says why.
    `how` and `why_not` are keyed by the receipt field they fill (`timings.prefill_s`, ...)."""

    ids: list[int]
    total_s: float
    load_s: float | None = None
    prefill_s: float | None = None
    decode_step_s: list[float] | None = None
    peak_rss_bytes: int | None = None
    threads: int | None = None
    how: dict[str, str] = field(default_factory=dict)
    why_not: dict[str, str] = field(default_factory=dict)


class Engine(ABC):
    """Base class of every adapter. Subclasses implement `load`, `logits`, `describe` and set
    `capabilities`; `greedy`/`tokenize` raise CapabilityMissing unless overridden."""

    kind: str = "?"

    def __init__(self, spec: str):
        self.spec = spec
        self.model: Path | None = None

    capabilities: Capabilities = Capabilities()

    def load(self, model: str | os.PathLike[str]) -> None:
        """Remember the model (adapters that run in another process load it there)."""
        p = Path(model)
        if not p.exists():
            raise EngineError(f"{self.spec}: model {p} does not exist")
        self.model = p

    @abstractmethod
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 [len(ids), n_vocab]: every prompt position, one fresh sequence."""

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        raise CapabilityMissing(self._missing("greedy"))

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        raise CapabilityMissing(self._missing("tokenize"))

    def tokenize_many(self, texts: Sequence[str], add_special: bool = False,
                      parse_special: bool = False) -> list[list[int]]:
        """Many texts at once (adapters that pay a process start per call override this)."""
        return [self.tokenize(t, add_special, parse_special) for t in texts]

    @abstractmethod
    def describe(self) -> EngineInfo: ...

    def evaluate(self, ids: Sequence[int], n_greedy: int = 0) -> EngineOutput:
        """Logits and (when n_greedy) the greedy continuation in one go: adapters that pay a
        process start per call override this to ask for both at once."""
        import time

        t0 = time.perf_counter()
        lg = check_logits(self.spec, self.logits(ids), len(ids))
        g = self.greedy(ids, n_greedy) if n_greedy else []
        return EngineOutput(lg, [int(i) for i in g], time.perf_counter() - t0)

    def timed_greedy(self, ids: Sequence[int], n: int) -> TimedRun:
        """`n` greedy tokens after `ids`, timed from outside: the wall time of the whole request
        is all the harness can see of an opaque engine. Adapters that can time the phases in
        harness code (libllama's worker, the in-process hf model) override this."""
        import time

        self.require("greedy")
        t0 = time.perf_counter()
        g = self.greedy(ids, n)
        total = time.perf_counter() - t0
        why = f"a {self.kind} engine is seen from outside: only the whole request's wall time"
        return TimedRun([int(i) for i in g], total,
                        how={"timings.total_s": "wall time of the whole greedy request (start, load, prompt, every "
                                                "token), perf_counter in the harness around the adapter call"},
                        why_not={k: why for k in ("timings.load_s", "timings.prefill_s", "timings.decode_step_s",
                                                  "peak_rss_bytes", "threads")})

    def require(self, capability: str) -> None:
        """Raise CapabilityMissing (a skip, with the reason) when the engine lacks it."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {CAPABILITIES}")
        if not getattr(self.capabilities, capability):
            raise CapabilityMissing(self._missing(capability))

    def _missing(self, capability: str) -> str:
        why = self.capabilities.why_not.get(capability, "the engine does not declare it")
        return f"engine {self.spec} cannot {capability}: {why}"

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing
        """Release what `load` took (processes, memory)."""

    def _need_model(self) -> Path:
        if self.model is None:
            raise EngineError(f"{self.spec}: load(model) first")
        return self.model


class RoundTripEngine(Engine):
    """An adapter whose every call is one round trip to another process (libllama's worker, an
    external program): `evaluate` and `tokenize_many` are the primitives it implements, and the
    single questions are asked through them so that each costs one process start, not two."""

    @abstractmethod
    def evaluate(self, ids: Sequence[int], n_greedy: int = 0) -> EngineOutput: ...

    @abstractmethod
    def tokenize_many(self, texts: Sequence[str], add_special: bool = False,
                      parse_special: bool = False) -> list[list[int]]: ...

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.evaluate(ids, 0).logits

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        return self.evaluate(ids, n).greedy

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        return self.tokenize_many([text], add_special, parse_special)[0]


def check_logits(spec: str, logits: object, n_ids: int) -> np.ndarray:
    """An engine's logits must be float32 [T, V] with T = the number of ids and every value
    finite; anything else is an engine error that names what was found."""
    a = np.asarray(logits)
    if a.ndim != 2 or a.shape[0] != n_ids or a.shape[1] < 1:
        raise EngineError(f"{spec}: logits have shape {list(a.shape)}; expected [{n_ids}, n_vocab] "
                          f"(one row per prompt position)")
    if a.dtype != np.float32:
        raise EngineError(f"{spec}: logits are {a.dtype}; expected float32")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise EngineError(f"{spec}: non-finite logit at position {int(bad[0])}, token {int(bad[1])}")
    return a
