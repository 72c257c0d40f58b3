"""The backend table: which kernel sets exist, whether each can run here, and how to switch one
on. Nothing happens when a backend module is imported; `activate` does what a backend needs
(building the native kernels, capping BLAS threads, compiling the CUDA module) when a run
selects it.

A backend module provides three functions:

- `status() -> (usable, reason)`: whether it can run here and, if not, why;
- `activate() -> None`: get ready to run (called once, when the backend is selected);
- `select(w, act) -> kernel | None`: the kernel `(x_f32, w) -> (y, KernelId)` for a weight
  and an activation profile, or None when it has none (the dispatcher then falls back to the
  format's NumPy kernel outside strict mode).

Adding a backend = one module with those functions and one row in `BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from bitnet.errors import ConfigError

if TYPE_CHECKING:
    from bitnet.kernels.ids import KernelId
    from bitnet.quant.weights import PackedWeight

BackendKernel = Callable[[np.ndarray, "PackedWeight"], "tuple[np.ndarray, KernelId]"]
Selector = Callable[["PackedWeight", str], "BackendKernel | None"]


@dataclass(frozen=True)
class Backend:
    name: str
    module: str | None  # None: the NumPy reference kernels (always there, no selector)
    summary: str

    def _mod(self) -> ModuleType:
        assert self.module is not None
        return importlib.import_module(self.module)

    def status(self) -> tuple[bool, str]:
        if self.module is None:
            return True, "NumPy reference kernels"
        return self._mod().status()

    def activate(self) -> Selector | None:
        """Make the backend ready and return its selector; ConfigError when it cannot run."""
        if self.module is None:
            return None
        ok, why = self.status()
        if not ok:
            raise ConfigError(f"backend {self.name!r} is not available: {why}")
        mod = self._mod()
        mod.activate()
        return mod.select


#: every backend, by name
BACKENDS: dict[str, Backend] = {
    b.name: b for b in (
        Backend("numpy", None, "NumPy reference kernels (every format)"),
        Backend("native", "bitnet.kernels.native.backend", "C kernels built with cffi (AVX2/VNNI, scalar)"),
        Backend("cuda", "bitnet.kernels.cuda.backend", "CUDA kernels through CuPy"),
    )
}


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None


def status(name: str) -> tuple[bool, str]:
    return backend(name).status()


def activate(name: str) -> Selector | None:
    return backend(name).activate()
