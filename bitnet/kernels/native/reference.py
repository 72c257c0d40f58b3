"""An exact NumPy model of the native kernels, written from the layouts in
shared/spec/FORMATS.md and independent of both the C code and bitnet.quant: it unpacks the
ternary codes of a tensor as it sits in the file, quantizes the activations with the same
definitions (int8 per token, Q8_K per 256-block), takes the integer dot products in int64 and
then applies the float steps in the kernels' order, in float32. The tests require the native
kernels to match it bit for bit; the benchmark times it as the "NumPy int path".
"""

from __future__ import annotations

import numpy as np

# ---- unpackers: codes 0/1/2 (= -1/0/+1) in element order, shape [out, in] -----------------


def unpack_i2s(raw: np.ndarray, out: int, k: int) -> tuple[np.ndarray, float]:
    """Microsoft I2_S, x86 layout: 128-element blocks of 32 bytes; element j of block i in byte
    i*32 + j%32 at shift 6 - 2*(j//32); the f32 weight scale at byte n/4."""
    n = out * k
    b = np.asarray(raw, np.uint8)[: n // 4].reshape(out, k // 128, 1, 32)
    shifts = np.array([6, 4, 2, 0], np.uint8).reshape(1, 1, 4, 1)
    codes = ((b >> shifts) & 3).reshape(out, k)
    scale = float(np.asarray(raw, np.uint8)[n // 4: n // 4 + 4].view(np.float32)[0])
    return codes, scale


def unpack_tq2_0(raw: np.ndarray, out: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0: 66-byte blocks of 256, qs[64] then f16 d; element 128h+32n+m in byte 32h+m at
    bits 2n. Returns (codes [out, k], d [out, k/256] as float32)."""
    blk = np.asarray(raw, np.uint8)[: out * k // 256 * 66].reshape(out, k // 256, 66)
    qs = blk[:, :, :64].reshape(out, k // 256, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 1, 4, 1)
    codes = ((qs >> shifts) & 3).reshape(out, k)
    d = blk[:, :, 64:66].copy().view(np.float16)[..., 0].astype(np.float32)
    return codes, d


_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


def _trits(b: np.ndarray, n: int) -> np.ndarray:
    """digit l of each byte, l = 0..n-1, on a new axis -2: ((b * 3^l mod 256) * 3) >> 8."""
    q = (b[..., None, :].astype(np.uint16) * _POW3[:n, None]) & 0xFF
    return ((q * 3) >> 8).astype(np.uint8)


def unpack_tq1_0(raw: np.ndarray, out: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0: 54-byte blocks of 256: qs[48] (5 base-3 digits a byte), qh[4] (4 digits), f16 d.
    qs[0:32] hold elements 32l+m, qs[32:48] hold 160+16l+m, qh hold 240+4l+j."""
    blk = np.asarray(raw, np.uint8)[: out * k // 256 * 54].reshape(out, k // 256, 54)
    a = _trits(blk[:, :, 0:32], 5).reshape(out, k // 256, 160)
    b = _trits(blk[:, :, 32:48], 5).reshape(out, k // 256, 80)
    c = _trits(blk[:, :, 48:52], 4).reshape(out, k // 256, 16)
    codes = np.concatenate([a, b, c], axis=2).reshape(out, k)
    d = blk[:, :, 52:54].copy().view(np.float16)[..., 0].astype(np.float32)
    return codes, d


# ---- activation quantizers ----------------------------------------------------------------


def quant_i8_s(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """per token: max = max(1e-5, max|x|) in double, s = f32(127/max), q = nearest-even(x*s)
    clamped to [-128, 127], act_sum = sum(q)."""
    x = np.asarray(x, np.float32)
    mx = np.maximum(np.abs(x.astype(np.float64)).max(axis=1), 1e-5)
    s = (127.0 / mx).astype(np.float32)
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)
    return q, s, q.astype(np.int64).sum(axis=1)


def quant_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q8_K per 256-block: max = signed value of largest magnitude (first on ties),
    iscale = f32(-127/max), q = min(127, nearest(iscale*x)), d = f32(1/iscale); all-zero -> 0.
    Returns (q [T, K], d [T, K/256], bsums [T, K/16])."""
    x = np.asarray(x, np.float32)
    t, k = x.shape
    xb = x.reshape(t, k // 256, 256)
    idx = np.abs(xb).argmax(axis=2)  # first index of the largest magnitude
    mx = np.take_along_axis(xb, idx[..., None], axis=2)[..., 0]
    zero = mx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127.0) / np.where(zero, np.float32(1), mx)).astype(np.float32)
        q = np.minimum(np.rint(xb * iscale[..., None]), 127).astype(np.int8)
        d = np.where(zero, np.float32(0), np.float32(1.0) / np.where(zero, np.float32(1), iscale)).astype(np.float32)
    q[zero] = 0
    bsums = q.reshape(t, k // 16, 16).astype(np.int64).sum(axis=2)
    return q.reshape(t, k), d, bsums


# ---- exact GEMMs ---------------------------------------------------------------------------


def gemm_i2s(x: np.ndarray, raw: np.ndarray, out: int, k: int) -> np.ndarray:
    """y = f32(sum_j (code_j - 1) q_j) / s * weight_scale, integer part in int64."""
    codes, wscale = unpack_i2s(raw, out, k)
    q, s, _ = quant_i8_s(x)
    acc = q.astype(np.int64) @ (codes.astype(np.int64) - 1).T  # [T, out]
    return (acc.astype(np.float32) / s[:, None]) * np.float32(wscale)


def gemm_tq_q8k(x: np.ndarray, raw: np.ndarray, fmt: str, out: int, k: int) -> np.ndarray:
    """ggml_vec_dot_tq*_q8_K (generic): per block an exact integer dot, then
    sumf += f32(sumi) * (d_x * d_w) block after block, in float32."""
    codes, dw = (unpack_tq2_0 if fmt == "tq2_0" else unpack_tq1_0)(raw, out, k)
    q, dx, _ = quant_q8_k(x)
    nb = k // 256
    tw = (codes.astype(np.int64) - 1).reshape(out, nb, 256)
    qb = q.astype(np.int64).reshape(-1, nb, 256)
    sumi = np.einsum("tbj,obj->tob", qb, tw)  # [T, out, nb], exact in int64
    sumf = np.zeros((q.shape[0], out), np.float32)
    for b in range(nb):
        d = dx[:, b, None] * dw[None, :, b]  # f32 * f32 -> f32
        sumf = sumf + sumi[:, :, b].astype(np.float32) * d
    return sumf


def matmul(x: np.ndarray, raw: np.ndarray, fmt: str, out: int, k: int) -> np.ndarray:
    """The reference for native_matmul(x, raw, fmt, out, k, <its profile>)."""
    x = np.atleast_2d(np.asarray(x, np.float32))
    if fmt == "i2_s":
        return gemm_i2s(x, raw, out, k)
    return gemm_tq_q8k(x, raw, fmt, out, k)
