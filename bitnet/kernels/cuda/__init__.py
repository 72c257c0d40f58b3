"""CUDA backend (optional, `pip install -e '.[cuda]'`): ternary GEMM kernels run through CuPy.

Weights are uploaded once per tensor, in their file layout; activations are quantized on the
host by the same quantizers the NumPy kernels use, so the integer part of every dot product is
the same on both backends. `cuda_status()` says whether a device is usable and why not; nothing
here pretends to run on a GPU that is not there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.errors import BridgeError
from bitnet.kernels.ids import KernelId

KERNEL_SOURCE = Path(__file__).with_name("kernels.cu")
ROWS_PER_BLOCK = 8


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(usable, reason): CuPy importable, a device present, the kernels compile."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e.name}); install the 'cuda' extra"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return False, f"no CUDA device available ({type(e).__name__}: {e})"
    if n == 0:
        return False, "no CUDA device available"
    try:
        _module()
    except Exception as e:
        return False, f"CUDA kernels failed to compile: {e}"
    return True, f"{n} CUDA device(s)"


@functools.lru_cache(maxsize=1)
def _module():
    import cupy

    return cupy.RawModule(code=KERNEL_SOURCE.read_text(), options=("-std=c++17",))


def require_cuda():
    ok, why = cuda_status()
    if not ok:
        raise BridgeError(f"CUDA backend unavailable: {why}")
    import cupy

    return cupy


@dataclass(frozen=True)
class GPUFingerprint:
    name: str
    compute_capability: str
    driver_version: str | None  # the NVIDIA driver (nvidia-smi), None when it cannot be read
    cuda_driver_api: str  # the CUDA version the driver supports
    memory_bytes: int

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability,
                "driver": self.driver_version, "cuda_driver_api": self.cuda_driver_api,
                "memory_bytes": self.memory_bytes}


def _nvidia_driver_version(device: int) -> str | None:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, f"--id={device}", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def gpu_fingerprint(device: int = 0) -> GPUFingerprint:
    """Read from the CUDA runtime of the device that runs the kernels."""
    cupy = require_cuda()
    props = cupy.cuda.runtime.getDeviceProperties(device)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    api = cupy.cuda.runtime.driverGetVersion()
    return GPUFingerprint(name, f"{props['major']}.{props['minor']}", _nvidia_driver_version(device),
                          f"{api // 1000}.{(api % 1000) // 10}", int(props["totalGlobalMem"]))


class DeviceWeights:
    """Device copies of packed weight tensors, uploaded on first use, keyed by tensor name."""

    def __init__(self) -> None:
        self._dev: dict[str, object] = {}

    def get(self, name: str, raw: np.ndarray):
        cupy = require_cuda()
        if name not in self._dev:
            self._dev[name] = cupy.asarray(np.ascontiguousarray(raw))
        return self._dev[name]


DEVICE_WEIGHTS = DeviceWeights()


def _launch(kernel_name: str, out: int, t: int, args: tuple) -> None:
    cupy = require_cuda()
    k = _module().get_function(kernel_name)
    grid = ((out + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK, t)
    k(grid, (32, ROWS_PER_BLOCK), args)
    cupy.cuda.get_current_stream().synchronize()


def i2s_gemm(name: str, raw: np.ndarray, out: int, k: int, wscale: float,
             xq: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """I2_S x86 layout x per-token int8: xq int8 [T, K], xs float32 [T] (127/max) -> [T, out]."""
    cupy = require_cuda()
    if k % 128:
        raise BridgeError(f"{name}: I2_S needs K % 128 == 0, got {k}")
    t = xq.shape[0]
    w = DEVICE_WEIGHTS.get(name, raw[: out * k // 4])
    y = cupy.empty((t, out), cupy.float32)
    _launch("i2s_x86_gemm", out, t, (w, cupy.asarray(np.ascontiguousarray(xq, np.int8)),
                                      cupy.asarray(np.ascontiguousarray(xs, np.float32)), y,
                                      np.int32(out), np.int32(k), np.float32(wscale)))
    return cupy.asnumpy(y)


def tq2_0_gemm(name: str, raw: np.ndarray, out: int, k: int, xq: np.ndarray, xd: np.ndarray) -> np.ndarray:
    """TQ2_0 x Q8_K: xq int8 [T, K], xd float32 [T, K/256] block scales -> [T, out]."""
    cupy = require_cuda()
    if k % 256:
        raise BridgeError(f"{name}: TQ2_0 needs K % 256 == 0, got {k}")
    t = xq.shape[0]
    w = DEVICE_WEIGHTS.get(name, raw)
    y = cupy.empty((t, out), cupy.float32)
    _launch("tq2_0_q8k_gemm", out, t, (w, cupy.asarray(np.ascontiguousarray(xq, np.int8)),
                                        cupy.asarray(np.ascontiguousarray(xd, np.float32)), y,
                                        np.int32(out), np.int32(k)))
    return cupy.asnumpy(y)


#: kernel ids as recorded by the dispatcher when these ran
KERNEL_IDS = {"i2_s": KernelId("i2s_x86", "", "gemm", "cuda"), "tq2_0": KernelId("tq2_0", "q8k", "gemm", "cuda")}
