"""`reference[:PROFILE][@BACKEND]`: our own engine (bitnet.engine), in this process.

PROFILE is a numerics profile (`reference`, `llama.cpp`, `bitnet.cpp`; default: inferred from
the model as `bitnet run` does); BACKEND the kernels (`numpy` default, `native`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bitnet.engines.protocol import (
    Capabilities,
    Engine,
    EngineError,
    EngineInfo,
    EngineOutput,
    check_logits,
)
from bitnet.errors import BitNetError, ConfigError

#: (arch, weight format) pairs our loader reads from a file without being told more
#: (the I2_S ARM and 1x4 layouts cannot be told from the bytes, so they are not claimed)
ARCHS = ("bitnet-b1.58", "bitnet")
FORMATS = ("f32", "f16", "bf16", "i2_s", "tq1_0", "tq2_0", "bitnet32", "qk256")


def from_spec(spec: str, arg: str) -> ReferenceEngine:
    profile, _, backend = arg.partition("@")
    return ReferenceEngine(spec, profile or None, backend or "numpy")


def _family(fmt: str) -> str:
    from bitnet.model.profiles import flavor_family

    return flavor_family(fmt)


class ReferenceEngine(Engine):
    kind = "reference"

    def __init__(self, spec: str, profile: str | None = None, backend: str = "numpy", strict: bool | None = None,
                 apply_corrections: bool = False):
        super().__init__(spec)
        from bitnet.model.profiles import get_profile

        if profile is not None:
            get_profile(profile)  # unknown names fail at the spec, not at load
        if backend not in ("numpy", "native", "cuda"):
            raise ConfigError(f"{spec}: unknown backend {backend!r}; expected numpy, native or cuda")
        self.profile, self.backend, self.strict = profile, backend, strict
        self.apply_corrections = apply_corrections
        self._engine: Any = None
        loads = tuple((a, f) for a in ARCHS for f in FORMATS if self._profile_reads(f))
        self.capabilities = Capabilities(logits=True, greedy=True, tokenize=True, loads=loads, layers=True,
                                         layer_forcing=True)

    def _profile_reads(self, fmt: str) -> bool:
        if self.profile is None:
            return True
        from bitnet.model.profiles import get_profile

        return _family(fmt) in get_profile(self.profile).act

    def load(self, model) -> None:
        super().load(model)
        from bitnet.engine import Engine as OurEngine
        from bitnet.kernels import dispatch

        dispatch.set_backend(self.backend)
        assert self.model is not None  # set by super().load
        try:
            self._engine = OurEngine(self.model, profile=self.profile, strict=self.strict,
                                     apply_corrections=self.apply_corrections)
        except BitNetError as e:
            raise EngineError(f"{self.spec}: {type(e).__name__}: {e}") from None

    def _e(self):
        if self._engine is None:
            raise EngineError(f"{self.spec}: load(model) first")
        from bitnet.kernels import dispatch

        dispatch.set_backend(self.backend)  # thread-local: the caller may run us in a worker thread
        return self._engine

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        e = self._e()
        try:
            return check_logits(self.spec, e.logits([int(i) for i in ids]), len(ids))
        except BitNetError as err:
            raise EngineError(f"{self.spec}: {type(err).__name__}: {err}") from None

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        from bitnet.engine import SamplerConfig

        e = self._e()
        r = e.generate([int(i) for i in ids], max_tokens=n, sampler=SamplerConfig(greedy=True), ignore_eog=True)
        return [int(t) for t in r.ids]

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        return self._e().encode(text, add_special=add_special, parse_special=parse_special)

    def evaluate(self, ids: Sequence[int], n_greedy: int = 0) -> EngineOutput:
        t0 = time.perf_counter()
        lg = self.logits(ids)
        g = self.greedy(ids, n_greedy) if n_greedy else []
        return EngineOutput(lg, g, time.perf_counter() - t0)

    def layer_outputs(self, ids: Sequence[int]) -> np.ndarray:
        from bitnet.model.layerwise import engine_l_out

        return engine_l_out(self._e().model, [int(i) for i in ids]).astype(np.float32)

    def forced_layer_outputs(self, ids: Sequence[int], l_out: np.ndarray) -> np.ndarray:
        from bitnet.model.layerwise import forced_outputs

        return forced_outputs(self._e().model, [int(i) for i in ids], np.asarray(l_out, np.float32))

    def named_outputs(self, ids: Sequence[int]) -> dict[tuple[int, str], np.ndarray]:
        """Every sub-block boundary of every layer, keyed (layer, op) (crossval.layers.SUBLAYER_OPS;
        our forward pass recorded, bitnet.model.record): the reference side of sub-layer forcing."""
        from bitnet.model.record import recording

        ids = [int(i) for i in ids]
        m = self._e().model
        with recording() as rec:
            m.forward(np.asarray(ids, np.int64), m.new_cache(), 0, all_logits=False)
        return {(k[0], k[1]): v for k, v in rec.by_key().items() if k[0] is not None}

    def sublayer_forced(self, ids: Sequence[int], named: dict) -> dict[tuple[int, str], np.ndarray]:
        """Our layers under sub-layer forcing on another engine's `named_outputs` (every
        sub-block continues from its values; bitnet.model.layerwise.sublayer_forced_outputs):
        every op of every layer as we computed it, keyed (layer, op)."""
        from bitnet.model.layerwise import sublayer_forced_outputs

        return sublayer_forced_outputs(self._e().model, [int(i) for i in ids], named)

    @property
    def corrections(self) -> list[dict]:
        """Validation corrections applied at load (`apply_corrections`); parity receipts record them."""
        return list(self._engine.model.corrections) if self._engine is not None else []

    @property
    def numerics(self) -> str:
        """The profile in use: the one asked for, else the model's default once loaded."""
        if self._engine is not None:
            return self._engine.model.profile.name
        return self.profile or "inferred"

    def describe(self) -> EngineInfo:
        from bitnet import __version__

        return EngineInfo(self.spec, "bitnet-harness reference", __version__,
                          f"backend {self.backend}", self.numerics)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.model.close()
            self._engine = None
