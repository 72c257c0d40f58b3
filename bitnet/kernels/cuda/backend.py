"""The CUDA backend (row "cuda" of bitnet.kernels.backends): status, activate, select.

Activations are quantized on the host by the NumPy quantizers (the same bits every backend
sees), weights are uploaded once per tensor in their file layout, and the kernel id names the
GPU kernel that ran. Pairs without a GPU kernel return None (NumPy fallback outside strict mode).
"""

from __future__ import annotations

import numpy as np

from bitnet.kernels.activations import per_token_absmax, q8_k
from bitnet.kernels.cuda import KERNEL_IDS, cuda_status, i2s_gemm, tq2_0_gemm
from bitnet.quant.weights import PackedWeight


def status() -> tuple[bool, str]:
    return cuda_status()


def activate() -> None:
    """Nothing beyond what status() did (CuPy imported, the module compiled)."""


def _i2s(x: np.ndarray, w: PackedWeight):
    a = per_token_absmax(x)
    return i2s_gemm(w.name, w.raw, w.out_features, w.in_features, float(np.float32(w.scale)), a.q, a.scale), KERNEL_IDS["i2_s"]


def _tq2(x: np.ndarray, w: PackedWeight):
    a = q8_k(x)
    return tq2_0_gemm(w.name, w.raw, w.out_features, w.in_features, a.q, a.scale), KERNEL_IDS["tq2_0"]


#: (format tag, activation profile) -> GPU kernel (see bitnet.kernels.native.backend.KERNELS)
KERNELS = {("i2s_x86", "per-token-absmax"): _i2s, ("tq2_0", "q8_k-block256"): _tq2}


def select(w: PackedWeight, act: str):
    return KERNELS.get((w.format.tag(w), act))

