"""Registers the CUDA kernels with the dispatcher (backend "cuda").

Activations are quantized on the host by the NumPy quantizers (the same bits every backend
sees), weights are uploaded once per tensor in their file layout, and the kernel id names the
GPU kernel that ran. Pairs without a GPU kernel return None (NumPy fallback outside strict mode).
"""

from __future__ import annotations

import numpy as np

from bitnet.cuda import KERNEL_IDS, cuda_status, i2s_gemm, tq2_0_gemm
from bitnet.quant import dispatch
from bitnet.quant.activations import per_token_absmax, q8_k
from bitnet.quant.weights import PackedWeight

_ok, _why = cuda_status()
if not _ok:
    raise ImportError(f"CUDA backend unavailable: {_why}")


def _i2s(x: np.ndarray, w: PackedWeight):
    a = per_token_absmax(x)
    return i2s_gemm(w.name, w.raw, w.out_features, w.in_features, float(np.float32(w.scale)), a.q, a.scale), KERNEL_IDS["i2_s"]


def _tq2(x: np.ndarray, w: PackedWeight):
    a = q8_k(x)
    return tq2_0_gemm(w.name, w.raw, w.out_features, w.in_features, a.q, a.scale), KERNEL_IDS["tq2_0"]


def select(w: PackedWeight, act: str):
    if w.flavor == "i2_s" and w.layout == "x86" and act == "per-token-absmax":
        return _i2s
    if w.flavor == "tq2_0" and act == "q8_k-block256":
        return _tq2
    return None


dispatch.BACKENDS["cuda"] = select
