"""NumPy reference kernels: y = W x for every weight format, computed the way the format's
engine computes it, without ever materialising the full weight matrix as float (AC12).

Exactness: a ternary code (or a QK256 table value, |v| <= 3) times an int8 activation summed
over K terms is an integer of magnitude <= 3 * 128 * K. For every K below 2^24 / 384 = 43690
(BitNet's largest K is 6912) every partial sum is an integer that float32 holds exactly, so a
float32 BLAS product of the code values and the int8 activations IS the exact integer
accumulation, in any summation order. `EXACT_K_LIMIT` guards that bound; above it the kernels
use int64 arithmetic instead.

Weights are decoded in chunks of rows (`rows_per_chunk`): at most CHUNK_ELEMENTS code values
exist as float32 at any time, whatever the matrix size. Alternatively a PackedWeight can hold
a cached int8 copy of its codes (4x the packed size, no decoding per call); `bench/bench_gemv.py`
measures both.

Kernels are generic over formats: they read integer values through `PackedWeight.values` (the
format's `decode_rows`, or the int8 cache) and block scales through the format's
`block_scales`; which kernel serves which (format, activation profile) pair is the format's
`kernels` table.

Every kernel returns a `KernelRun`: the output AND its own id and the bytes it read, so the
dispatcher records what executed (the id says `i8cache` or `f32cache` when a cached decoded
copy was read instead of the packed bytes, and the bytes are the copy's), never a label chosen
before the call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from bitnet.kernels.activations import QK_K, QuantizedRows
from bitnet.kernels.ids import KernelId
from bitnet.quant.weights import PackedWeight

CHUNK_ELEMENTS = 1 << 18  # 256K code values (1 MB as float32) per chunk: see docs/explanation/kernels.md
EXACT_K_LIMIT = (1 << 24) // (3 * 128)


ACT_TAG = {"none": "f32act", "per-token-absmax": "i8act", "q8_k-block256": "q8k", "tl2-lut": "tl2lut"}


@dataclass(frozen=True)
class KernelRun:
    """What one kernel call produced and what it was: its id and the weight bytes it read."""

    y: np.ndarray  # float32 [T, out]
    kernel_id: KernelId
    bytes_read: int


def weights_tag(w: PackedWeight) -> str:
    """The weight part of a kernel id: the format's tag (I2_S adds its layout), plus `i8cache`
    or `f32cache` when the kernel reads a cached decoded copy rather than the packed bytes."""
    tag = w.format.tag(w)
    if w.f32_cache is not None:
        return f"{tag}_f32cache"
    return f"{tag}_i8cache" if w.int8_cache is not None else tag


def _run(y: np.ndarray, w: PackedWeight, act: str) -> KernelRun:
    """Called by each kernel on its way out: the id is built from the weight data the kernel
    actually decoded (packed bytes or the int8 cache) and the activations it was given."""
    read = w.cache_nbytes or w.nbytes
    return KernelRun(y, KernelId(weights_tag(w), ACT_TAG[act], "gemm", "numpy"), read)


def rows_per_chunk(k: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(k, 1))


def _chunks(w: PackedWeight) -> Iterator[tuple[int, int]]:
    step = rows_per_chunk(w.in_features)
    group = w.format.row_group(w) if w.is_ternary else 1
    if group > 1:
        step = max(group, step // group * group)
    for r0 in range(0, w.out_features, step):
        yield r0, min(r0 + step, w.out_features)


def _threads() -> int:
    """Threads the exact integer kernels split a weight's chunks over: the native kernels'
    count (BITNET_THREADS, else every core), at most 8. Each chunk's products are exact
    integers, so the result cannot depend on which thread computed it or in which order the
    chunks finish."""
    from bitnet.kernels.native import default_threads

    return max(1, min(default_threads(), 8))


@functools.cache
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="bitnet-numpy")


def _each_chunk(w: PackedWeight, fn: Callable[[int, int], None]) -> None:
    """fn(r0, r1) for every chunk of `w` (each writes its own output columns), spread over
    _threads() Python threads: NumPy's table gathers and the one-thread BLAS products release
    the GIL, so two cores decode and multiply two chunks at once."""
    chunks = list(_chunks(w))
    n = min(_threads(), len(chunks))
    if n < 2:
        for r0, r1 in chunks:
            fn(r0, r1)
        return
    step = (len(chunks) + n - 1) // n

    def run(part: list[tuple[int, int]]) -> None:
        for r0, r1 in part:
            fn(r0, r1)

    for f in [_pool(n).submit(run, chunks[i:i + step]) for i in range(0, len(chunks), step)]:
        f.result()  # re-raises a chunk's exception here


#: whether exact integer kernels decode packed bytes straight to float32 (`Format.lut_rows`:
#: uint32 lanes or a byte table, bitnet.quant.lut) when the format can; False = the per-call
#: int8 decode (`decode_rows`) they used before, which the bit-identity tests compare against
#: (`per_call_decode`)
_LUT_DECODE = [True]


@contextmanager
def per_call_decode() -> Iterator[None]:
    """Run the kernels on the int8 per-call decode path (tests: the straight-to-float32 path
    must give the same bytes)."""
    old, _LUT_DECODE[0] = _LUT_DECODE[0], False
    try:
        yield
    finally:
        _LUT_DECODE[0] = old


def _exact_values(w: PackedWeight, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Rows r0..r1 as float32 for exact integer dot products, with their column order and
    divisors (`Format.lut_rows`: value = v / div - 1 when div is given): straight from the
    packed bytes when the format can (no int8 step), else the f32 cache, or the int8 cache
    or `decode_rows` widened."""
    if w.f32_cache is not None:
        return w.f32_cache[r0:r1], None, None
    if w.int8_cache is None and _LUT_DECODE[0]:
        got = w.format.lut_rows(w, r0, r1)
        if got is not None:
            return got
    return w.values(r0, r1).astype(np.float32), None, None


_BLAS_LIBS: list = []


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """OpenBLAS at one thread for the exact integer products (their results cannot depend on
    how BLAS splits them). Its second thread spin-waits after every small GEMM: with 16 tokens
    of prefill on the loaded 2-core VM, one [102, 2560] x [2560, 16] product took 19.8 ms on
    two threads and 0.59 ms on one. Float-weight products keep BLAS's own threads."""
    if not _BLAS_LIBS:
        from threadpoolctl import ThreadpoolController

        _BLAS_LIBS.append(ThreadpoolController().select(user_api="blas").lib_controllers)
    changed = [(c, c.num_threads) for c in _BLAS_LIBS[0] if c.num_threads != 1]
    for c, _ in changed:
        c.set_num_threads(1)
    try:
        yield
    finally:
        for c, n in changed:
            c.set_num_threads(n)


class _PermutedActs:
    """The int8 activations as float32 in the column order of the weight rows they meet and
    divided by the rows' lane divisors (exact: int8 over a power of two), computed once per
    (order, divisors): every chunk of one tensor shares them."""

    def __init__(self, q: np.ndarray, prepare: Callable[[np.ndarray], np.ndarray]):
        self.q, self.prepare = q, prepare
        self._by: dict[tuple[int | None, int | None], np.ndarray] = {}

    def __call__(self, perm: np.ndarray | None, div: np.ndarray | None) -> np.ndarray:
        key = (None if perm is None else id(perm), None if div is None else id(div))
        if key not in self._by:
            a = (self.q if perm is None else self.q[:, perm]).astype(np.float32)
            self._by[key] = self.prepare(a if div is None else a / div)
        return self._by[key]


def _block_sums(q: np.ndarray, nb: int) -> np.ndarray:
    """float32 [nb, 1, T]: the exact sum of each block's int8 activations."""
    t = q.shape[0]
    return q.reshape(t, nb, -1).sum(axis=-1, dtype=np.int64).T.astype(np.float32)[:, None, :]


def _int_dot(vals: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact integer dot products [rows, T] of int8 values and int8 activations."""
    if vals.shape[1] <= EXACT_K_LIMIT:
        return (vals.astype(np.float32) @ q.T.astype(np.float32)).astype(np.int64)
    return vals.astype(np.int64) @ q.T.astype(np.int64)


# -- kernels ----------------------------------------------------------------------------------
def gemm_per_token(x: QuantizedRows, w: PackedWeight) -> KernelRun:
    """Per-tensor-scaled ternary weights (i2_s, qk256 + separate scale) x per-token int8:
    y = (sum_j v_j q_j) / s_t * w_scale, the integer sum exact (bitnet.cpp's I2_S path)."""
    y = np.empty((x.q.shape[0], w.out_features), np.float32)
    wscale = np.float32(w.scale if w.scale is not None else 1.0)
    exact = w.in_features <= EXACT_K_LIMIT
    qT = _PermutedActs(x.q, lambda q: q.T)  # [K, T] in the weights' order
    qsum = x.q.sum(axis=1, dtype=np.int64)  # [T]: the "- 1" of lane-decoded values
    def chunk(r0: int, r1: int) -> None:
        if exact:  # the float32 BLAS product IS the integer sum (see EXACT_K_LIMIT)
            v, perm, div = _exact_values(w, r0, r1)
            acc = (v @ qT(perm, div)).astype(np.int64)  # [rows, T]
            if div is not None:
                acc -= qsum
        else:
            acc = _int_dot(w.values(r0, r1), x.q)
        y[:, r0:r1] = (acc.T.astype(np.float32) / x.scale[:, None]) * wscale

    with _one_blas_thread():
        _each_chunk(w, chunk)
    return _run(y, w, x.profile)


def _wrap16(a: np.ndarray) -> np.ndarray:
    """int64 -> the int16 value a wrapping 16-bit accumulator (`_mm256_add_epi16`) ends with."""
    return (a + 32768) % 65536 - 32768


def gemm_tl2_lut(x: QuantizedRows, w: PackedWeight) -> KernelRun:
    """TL2 weights x `tl2-lut` activations, with the arithmetic of bitnet.cpp's TL2 LUT kernel
    for one token (`three_tbl_impl` / `two_tbl_impl` / `*_qgemm_lut` in `utils/codegen_tl2.py`):
    the LUT entries are exact signed sums of 3 (or 2) int8 activations; per BK-column tile of the
    three-weight part (per 32-column tile of the two-weight part) the looked-up entries are
    summed in a WRAPPING int16 accumulator, and the tile sums in int32; then
    `y = (float)acc / lut_scale * weight_scale` in float. Exact (equal to the integer dot
    product) whenever no tile sum leaves int16, i.e. always for BK <= 258."""
    tile = w.tile
    assert tile is not None  # TL weights are bound with their tile config
    k = w.in_features
    k3 = k - k % tile.BK
    y = np.empty((x.q.shape[0], w.out_features), np.float32)
    wscale = np.float32(w.scale if w.scale is not None else 1.0)
    q = x.q.astype(np.int64)
    for r0, r1 in _chunks(w):
        v = w.values(r0, r1).astype(np.int64)
        parts = []
        if k3:
            t3 = np.einsum("rnk,tnk->rtn", v[:, :k3].reshape(r1 - r0, k3 // tile.BK, tile.BK),
                           q[:, :k3].reshape(-1, k3 // tile.BK, tile.BK))
            parts.append(_wrap16(t3).sum(axis=-1))
        if k > k3:
            t2 = np.einsum("rnk,tnk->rtn", v[:, k3:].reshape(r1 - r0, -1, 32), q[:, k3:].reshape(-1, (k - k3) // 32, 32))
            parts.append(_wrap16(t2).sum(axis=-1))
        acc = sum(parts).astype(np.int32)  # [rows, T]
        y[:, r0:r1] = (acc.T.astype(np.float32) / x.scale[:, None]) * wscale
    return _run(y, w, x.profile)


def gemm_blocked_q8k(x: QuantizedRows, w: PackedWeight) -> KernelRun:
    """Block-scaled weights (TQ1_0, TQ2_0: 256) x Q8_K: per block an exact integer dot, then
    `sumf += (float)sumi * (d_x * d_w)` block after block (ggml_vec_dot_tq*_q8_K_generic)."""
    nb = w.in_features // QK_K
    t = x.q.shape[0]
    dw = w.format.block_scales(w)  # [out, nb]
    qb = _PermutedActs(x.q, lambda q: q.reshape(t, nb, QK_K).transpose(1, 2, 0))  # [nb, 256, T]
    qbsum = _block_sums(x.q, nb)  # [nb, 1, T]
    y = np.empty((t, w.out_features), np.float32)
    def chunk(r0: int, r1: int) -> None:
        v, perm, div = _exact_values(w, r0, r1)  # columns permuted within each 256-block at most
        acc = v.reshape(r1 - r0, nb, QK_K).transpose(1, 0, 2) @ qb(perm, div)  # [nb, rows, T]: exact (|sum| <= 256*128)
        if div is not None:
            acc -= qbsum
        s = np.zeros((r1 - r0, t), np.float32)
        for b in range(nb):  # the float accumulation order of the C loop
            d = (x.scale[:, b][None, :] * dw[r0:r1, b][:, None]).astype(np.float32)
            s = (s + acc[b] * d).astype(np.float32)
        y[:, r0:r1] = s.T

    with _one_blas_thread():
        _each_chunk(w, chunk)
    return _run(y, w, x.profile)


def gemm_blocked_per_token(x: QuantizedRows, w: PackedWeight) -> KernelRun:
    """Block-scaled weights (TQ, BitNet32-F16) x per-token int8: exact per-block integer dots,
    scaled by each block's d, summed in float, divided by the token scale."""
    k = w.in_features
    block = w.format.block
    nb = k // block
    t = x.q.shape[0]
    dw = w.format.block_scales(w)
    qb = _PermutedActs(x.q, lambda q: q.reshape(t, nb, block).transpose(1, 2, 0))
    qbsum = _block_sums(x.q, nb)
    y = np.empty((t, w.out_features), np.float32)
    with _one_blas_thread():
        for r0, r1 in _chunks(w):
            v, perm, div = _exact_values(w, r0, r1)  # columns permuted within each block at most
            acc = v.reshape(r1 - r0, nb, block).transpose(1, 0, 2) @ qb(perm, div)  # [nb, rows, T]: exact
            if div is not None:
                acc -= qbsum
            s = np.einsum("brt,rb->rt", acc, dw[r0:r1], dtype=np.float32)
            y[:, r0:r1] = (s / x.scale[None, :]).T
    return _run(y, w, x.profile)


def gemm_float_weights(x: np.ndarray | QuantizedRows, w: PackedWeight) -> KernelRun:
    """Float weights (F32, F16, BF16), chunked so an F16/BF16 matrix is widened a chunk at a
    time. Quantized activations are used as their quantizer represents them (q / s or q * d):
    the matmul itself is float, the activation rounding is the profile's."""
    act = "none"
    if isinstance(x, QuantizedRows):
        act, x = x.profile, dequantized_acts(x)
    y = np.empty((x.shape[0], w.out_features), np.float32)
    for r0, r1 in _chunks(w):
        y[:, r0:r1] = x @ w.float_rows(r0, r1).T
    return _run(y, w, act)


def gemm_float_acts_ternary(x: np.ndarray, w: PackedWeight) -> KernelRun:
    """Ternary weights x float activations (profile "none"): y = (x . v) * scale per chunk."""
    y = np.empty((x.shape[0], w.out_features), np.float32)
    for r0, r1 in _chunks(w):
        v = w.values(r0, r1).astype(np.float32)
        fmt = w.format
        if fmt.scale == "block":
            v = (v.reshape(r1 - r0, -1, fmt.block) * fmt.block_scales(w)[r0:r1, :, None]).reshape(r1 - r0, -1)
        y[:, r0:r1] = (x @ v.T) * np.float32(w.scale if w.scale is not None else 1.0)
    return _run(y, w, "none")


def dequantized_acts(x: QuantizedRows) -> np.ndarray:
    """Float activations as the quantizer represents them (q / s or q * d)."""
    if x.divide:
        return x.q.astype(np.float32) / x.scale[:, None]
    t, k = x.q.shape
    return (x.q.reshape(t, -1, 256).astype(np.float32) * x.scale[:, :, None]).reshape(t, k)


KernelFn = Callable[[object, PackedWeight], KernelRun]
