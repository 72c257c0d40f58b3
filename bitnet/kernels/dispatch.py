"""The kernel dispatcher: the one place that picks a kernel and the one place that records what
ran.

`matmul(x, w, act)` quantizes the activations with the requested profile, looks up the kernel
registered for (backend, weight flavor, activation profile), runs it, and appends a
`KernelRecord` to `KERNEL_LOG` with the id of the kernel that actually executed (the kernel
returns it: ids are never chosen before the call), the weight bytes it read (the packed tensor,
or the int8 cache when `PackedWeight.cache_int8()` made one), the rows it processed and the
time measured around the activation quantization and the kernel. A backend
that has no kernel for a key falls back to NumPy only outside strict mode, and the record then
names the NumPy kernel, so receipts cannot claim a native or GPU kernel that did not run.

Kernel ids are `bitnet.kernels.ids.KernelId` values, rendered in the log, e.g.
`i2s_x86_i8act_gemm_numpy`, `tq2_0_q8k_gemm_numpy`, `f16_f32act_gemm_numpy`. Which NumPy kernel
serves a (weight format, activation profile) pair is the format's own `kernels` table
(`bitnet.quant.formats`); which accelerated kernel, the active backend's `select`
(`bitnet.kernels.backends`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from bitnet.errors import ConfigError, FormatError, StrictModeError, strict_enabled
from bitnet.kernels import backends
from bitnet.kernels import numpy_kernels as K
from bitnet.kernels.activations import QuantizedRows, quantize_activations
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.quant.weights import PackedWeight

ACT_PROFILES = ("none", "per-token-absmax", "q8_k-block256", "tl2-lut")

#: a NumPy kernel: (activations as the profile left them, weight) -> KernelRun
Kernel = Callable[..., K.KernelRun]


def numpy_kernel(w: PackedWeight, act: str) -> Kernel:
    """The format's NumPy kernel for a (weight flavor, activation profile) pair.

    Float weights (F32/F16/BF16) always multiply in float; with an int8 profile their
    activations are first rounded through that quantizer (the `reference` profile quantizes
    the input of every projection, as BitLinear does). A ternary weight with profile "none"
    multiplies float activations by the decoded integer values (no activation rounding)."""
    k = w.format.reference_kernel(act)
    if k is None:
        raise FormatError(f"{w.name}: no kernel for {w.flavor} weights with {act} activations")
    return getattr(K, k) if isinstance(k, str) else k


# -- the active backend (per thread) ------------------------------------------------------------
_state = threading.local()


def set_backend(name: str) -> None:
    """Make `name` this thread's backend (activating it: ConfigError when it cannot run here)."""
    _state.selector = backends.activate(name)
    _state.backend = name


def get_backend() -> str:
    b = getattr(_state, "backend", None)
    if b is None:
        from bitnet.settings import settings

        b = activate(settings().backend or "numpy")
    return b


def activate(name: str, *, strict: bool | None = None, who: str = "bitnet", stderr=None) -> str:
    """Make `name` this thread's backend and return the one that runs. `cpu` means the native
    kernels when they build here, else NumPy with one line on stderr saying why (never silently)
    and a StrictModeError in strict mode. The one resolver of `cpu`: the CLI's --backend and
    BITNET_BACKEND in library use both come here."""
    if name != "cpu":
        set_backend(name)
        return name
    try:
        set_backend("native")
        return "native"
    except ConfigError as e:
        if strict_enabled(strict):
            raise StrictModeError(f"backend cpu: the native backend is unavailable ({e}); strict mode "
                                  "refuses the NumPy fallback") from None
        import sys

        print(f"{who}: native backend unavailable ({e}); using numpy", file=stderr or sys.stderr)
        set_backend("numpy")
        return "numpy"


def matmul(x: np.ndarray, w: PackedWeight, profile: str = "per-token-absmax", *,
           strict: bool | None = None) -> np.ndarray:
    """y [T, out] = x [T, in] times w, activations treated by `profile`."""
    if profile not in ACT_PROFILES:
        raise FormatError(f"unknown activation profile {profile!r}; known: {ACT_PROFILES}")
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] != w.in_features:
        raise FormatError(f"{w.name}: activations of shape {x.shape} for a weight of {w.in_features} inputs")
    backend = get_backend()
    native_fn = None
    if backend != "numpy":
        native_fn = _state.selector(w, profile)
        if native_fn is None and strict_enabled(strict):
            raise StrictModeError(f"{w.name}: backend {backend} has no kernel for {w.flavor} x {profile}; "
                                  "strict mode refuses the NumPy fallback")
    fn = None if native_fn is not None else numpy_kernel(w, profile)  # refuse before timing
    t0 = time.perf_counter()
    if native_fn is not None:
        # backend kernels quantize the activations themselves and say which variant ran
        y, kernel_id = native_fn(x, w)
        bytes_read = w.nbytes
    else:
        xa: np.ndarray | QuantizedRows = x if profile == "none" else quantize_activations(x, profile)
        assert fn is not None
        run = fn(xa, w)  # the kernel names itself and the bytes it read
        y, kernel_id, bytes_read = run.y, run.kernel_id, run.bytes_read
    KERNEL_LOG.record(kernel_id, bytes_read=bytes_read, rows=x.shape[0], seconds=time.perf_counter() - t0)
    return y
