"""CUDA kernels (AC15): exact integer parts against NumPy; skipped cleanly without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.kernels.cuda import cuda_status

pytestmark = [pytest.mark.ac15, pytest.mark.gpu]

ok, why = cuda_status()
needs_gpu = pytest.mark.skipif(not ok, reason=f"CUDA backend unavailable: {why}")


def pack_i2s_x86(codes: np.ndarray) -> np.ndarray:
    """codes uint8 [out, K] in 0..2 -> I2_S x86 bytes (spec layout, written independently)."""
    out, k = codes.shape
    blocks = codes.reshape(out, k // 128, 4, 32)  # [row, block, group, byte]
    shifts = np.array([6, 4, 2, 0], np.uint8)[None, None, :, None]
    return (blocks << shifts).sum(axis=2, dtype=np.uint8).reshape(-1)


def pack_tq2_0(codes: np.ndarray, d: np.ndarray) -> np.ndarray:
    """codes uint8 [out, K] in 0..2, d float16 [out, K/256] -> TQ2_0 blocks."""
    out, k = codes.shape
    b = codes.reshape(out, k // 256, 2, 4, 32)  # [row, block, h, n, m]
    qs = (b << (2 * np.arange(4, dtype=np.uint8))[None, None, None, :, None]).sum(axis=3, dtype=np.uint8)
    qs = qs.reshape(out, k // 256, 64)
    blocks = np.concatenate([qs, d.astype("<f2").view(np.uint8).reshape(out, k // 256, 2)], axis=2)
    return blocks.reshape(-1)


def test_status_is_a_reason_not_a_crash():
    assert isinstance(why, str) and why


@needs_gpu
@pytest.mark.parametrize("out,k,t", [(64, 128, 1), (640, 2560, 1), (300, 2560, 3), (2560, 6912 // 128 * 128, 2)])
def test_i2s_exact(out, k, t):
    from bitnet.kernels.cuda import i2s_gemm

    rng = np.random.default_rng(out + k + t)
    codes = rng.integers(0, 3, (out, k), dtype=np.uint8)
    xq = rng.integers(-128, 128, (t, k), dtype=np.int8)
    xs = rng.uniform(1, 100, t).astype(np.float32)
    raw = np.concatenate([pack_i2s_x86(codes), np.zeros(32, np.uint8)])
    y = i2s_gemm(f"t{out}x{k}x{t}", raw, out, k, 0.75, xq, xs)
    exact = (codes.astype(np.int64) - 1) @ xq.T.astype(np.int64)  # [out, T]
    expected = (exact.T.astype(np.float32) / xs[:, None]) * np.float32(0.75)
    np.testing.assert_array_equal(y, expected)


@needs_gpu
@pytest.mark.parametrize("out,k,t", [(32, 256, 1), (640, 2560, 2)])
def test_tq2_0_exact(out, k, t):
    from bitnet.kernels.cuda import tq2_0_gemm

    rng = np.random.default_rng(k + t)
    codes = rng.integers(0, 3, (out, k), dtype=np.uint8)
    d = rng.uniform(0.01, 1, (out, k // 256)).astype(np.float16)
    xq = rng.integers(-127, 128, (t, k), dtype=np.int8)
    xd = rng.uniform(0.001, 0.1, (t, k // 256)).astype(np.float32)
    y = tq2_0_gemm(f"tq{out}x{k}x{t}", pack_tq2_0(codes, d), out, k, xq, xd)
    blk = ((codes.astype(np.int64) - 1).reshape(out, 1, k // 256, 256) * xq.astype(np.int64).reshape(1, t, k // 256, 256)).sum(-1)
    scale = d.astype(np.float32)[:, None, :] * xd[None, :, :]  # [out, T, nb]
    expected = np.zeros((t, out), np.float32)
    for b in range(k // 256):  # the same float order as the kernel: block by block
        expected += (blk[:, :, b].astype(np.float32) * scale[:, :, b]).T
    np.testing.assert_array_equal(y, expected)
