"""TQ1_0 and TQ2_0 (ggml types 34 and 35; llama.cpp `ggml-quants.c`, gguf-py `quants.py`).

Both cut each row into blocks of 256 with one f16 scale `d = max|x|` per block and store
`round(x / d)` (half away from zero) as ternary codes 0/1/2 = -1/0/+1:

- TQ2_0, 66 bytes: `qs[64]` then `d`. Element `128*h + 32*n + m` is in byte `32*h + m` at bits
  `2*n`.
- TQ1_0, 54 bytes: `qs[48]`, `qh[4]`, `d`. Five trits per `qs` byte, four per `qh` byte, each
  byte holding `ceil(v * 256 / 243)` of the base-3 number v whose most significant trit comes
  first. Bytes 0..31 hold elements `m + 32*l` (l = 0..4), bytes 32..47 hold `160 + m + 16*l`,
  `qh` byte j holds elements `240 + j + 4*l` (l = 0..3). Trit l of byte q decodes as
  `((uint8)(q * 3^l) * 3) >> 8`.

Quantize and dequantize are byte-exact with gguf-py (tested).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bitnet.errors import FormatError
from bitnet.gguf.constants import ggml_type
from bitnet.quant import lut
from bitnet.quant.blocks import raw_blocks
from bitnet.quant.formats import Encoding, Format

QK = 256
TQ2_BYTES = 66
TQ1_BYTES = 54


def _blocks(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.shape[-1] % QK:
        raise FormatError(f"{what}: row length {a.shape[-1]} is not a multiple of {QK}")
    return a.reshape(-1, QK)


def _roundf(v: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's roundf / lroundf)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + np.floor(2 * (a - f)))


def _scale_and_trits(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, 0, 1 / d)
    q = (_roundf(blocks * inv).astype(np.int8) + np.int8(1)).astype(np.uint8)  # codes 0..2
    return d, q


def quantize_tq2_0(x: np.ndarray) -> np.ndarray:
    blocks = _blocks(x, "TQ2_0")
    d, q = _scale_and_trits(blocks)
    return np.concatenate([pack_tq2_0_codes(q), d.astype("<f2").view(np.uint8)], axis=-1).reshape(-1)


def pack_tq2_0_codes(codes: np.ndarray) -> np.ndarray:
    """codes uint8 [nblocks, 256] -> qs [nblocks, 64]."""
    c = codes.reshape(-1, 2, 4, 32)  # [block, h, n, m]
    return (c[:, :, 0] | c[:, :, 1] << 2 | c[:, :, 2] << 4 | c[:, :, 3] << 6).reshape(-1, 64)


def tq2_0_codes(raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 bytes -> (codes uint8 [nblocks, 256], d float32 [nblocks])."""
    b = _raw_blocks(raw, n, TQ2_BYTES, "TQ2_0")
    qs = b[:, :64].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]
    return (qs & 3).reshape(-1, QK), b[:, 64:66].copy().view("<f2").astype(np.float32).reshape(-1)


_TQ2_0_CODES = tq2_0_codes


def dequantize_tq2_0(raw: np.ndarray, n: int) -> np.ndarray:
    codes, d = tq2_0_codes(raw, n)
    return (d[:, None] * (codes.astype(np.int8) - 1).astype(np.float32)).reshape(-1)


_P5 = np.array([81, 27, 9, 3, 1], np.uint8)
_P4 = np.array([81, 27, 9, 3], np.uint8)


def quantize_tq1_0(x: np.ndarray) -> np.ndarray:
    blocks = _blocks(x, "TQ1_0")
    d, q = _scale_and_trits(blocks)
    nb = blocks.shape[0]
    qs0 = (q[:, :160].reshape(nb, 1, 5, 32) * _P5[None, None, :, None]).sum(axis=-2, dtype=np.uint8).reshape(nb, -1)
    qs1 = (q[:, 160:240].reshape(nb, 1, 5, 16) * _P5[None, None, :, None]).sum(axis=-2, dtype=np.uint8).reshape(nb, -1)
    qh = (q[:, 240:].reshape(nb, 1, 4, 4) * _P4[None, None, :, None]).sum(axis=-2, dtype=np.uint8).reshape(nb, -1)
    qs = np.concatenate([qs0, qs1, qh], axis=-1)
    qs = ((qs.astype(np.uint16) * 256 + 242) // 243).astype(np.uint8)
    return np.concatenate([qs, d.astype("<f2").view(np.uint8)], axis=-1).reshape(-1)


def tq1_0_codes(raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 bytes -> (codes uint8 [nblocks, 256], d float32 [nblocks])."""
    b = _raw_blocks(raw, n, TQ1_BYTES, "TQ1_0")
    nb = b.shape[0]
    pw5 = np.array([1, 3, 9, 27, 81], np.uint8)
    t0 = (b[:, :32].reshape(nb, 1, 32) * pw5[None, :, None]).reshape(nb, -1)  # l-major: m + 32 l
    t1 = (b[:, 32:48].reshape(nb, 1, 16) * pw5[None, :, None]).reshape(nb, -1)
    th = (b[:, 48:52].reshape(nb, 1, 4) * pw5[None, :4, None]).reshape(nb, -1)
    q = np.concatenate([t0, t1, th], axis=-1)
    codes = ((q.astype(np.uint16) * 3) >> 8).astype(np.uint8)
    return codes, b[:, 52:54].copy().view("<f2").astype(np.float32).reshape(-1)


def dequantize_tq1_0(raw: np.ndarray, n: int) -> np.ndarray:
    codes, d = tq1_0_codes(raw, n)
    return (d[:, None] * (codes.astype(np.int8) - 1).astype(np.float32)).reshape(-1)


def _raw_blocks(raw: np.ndarray, n: int, block_bytes: int, what: str) -> np.ndarray:
    return raw_blocks(raw, n, QK, block_bytes, what)


def ternary_tq2_0(ternary: np.ndarray, scale: float) -> np.ndarray:
    """Encode an exact ternary matrix times one scale: each block's d is the scale rounded to
    f16 (a block of all zeros stores d = 0, as quantizing zeros does)."""
    return _ternary_encode(ternary, scale, quantize_tq2_0)


def ternary_tq1_0(ternary: np.ndarray, scale: float) -> np.ndarray:
    return _ternary_encode(ternary, scale, quantize_tq1_0)


def _ternary_encode(ternary: np.ndarray, scale: float, quant) -> np.ndarray:
    if ternary.shape[-1] % QK:
        raise FormatError(f"row length {ternary.shape[-1]} is not a multiple of {QK}")
    # w = t * s quantizes back to exactly t with d = s (round(t*s * (1/s)) == t for t in -1..1)
    return quant(ternary.astype(np.float32) * np.float32(scale))


class _TQ(Format):
    """Blocks of 256 with an f16 d closing each block; Q8_K activations in llama.cpp."""

    block, row_multiple, scale = QK, QK, "block"
    kernels = {"q8_k-block256": "gemm_blocked_q8k", "per-token-absmax": "gemm_blocked_per_token"}
    file_type: int

    def decode_rows(self, w, r0, r1):
        k = w.in_features
        rb = self.row_bytes(k)
        codes, _ = self.codes(w.raw[r0 * rb : r1 * rb], (r1 - r0) * k)
        return codes.reshape(r1 - r0, k).view(np.int8) - np.int8(1)

    def codes(self, raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def encodings(self) -> Iterator[Encoding]:
        enc = ternary_tq2_0 if self.name == "tq2_0" else ternary_tq1_0
        yield Encoding(self.name, ggml_type(self.name.upper()), enc, file_type=self.file_type)


class TQ2_0(_TQ):
    name, type_id, block_bytes, file_type = "tq2_0", 35, TQ2_BYTES, 37

    def codes(self, raw, n):
        return tq2_0_codes(raw, n)

    def lut_rows(self, w, r0, r1):
        # bitnet.quant.lut: qs byte 32h + m holds element 128h + 32n + m at bits 2n; the
        # permutation stays inside each 256-block (and its scale d). Only while this module's
        # tq2_0_codes is the real one: a planted fault (crossval.faults) that replaces it must
        # reach the kernels, through decode_rows
        if globals()["tq2_0_codes"] is not _TQ2_0_CODES:
            return None
        k, rb = w.in_features, self.row_bytes(w.in_features)
        qs = raw_blocks(w.raw[r0 * rb : r1 * rb], (r1 - r0) * k, QK, TQ2_BYTES, self.name)[:, :64]
        perm = lut.block_perm(k, QK, 4, 32)
        if not lut.LANES_OK:
            return lut.gather(lut.code_table((0, 2, 4, 6)), qs).reshape(r1 - r0, k), perm, None
        return lut.lanes(qs, 0xC0300C03).reshape(r1 - r0, k), perm, lut.lane_div(k, (0, 2, 4, 6))


class TQ1_0(_TQ):
    name, type_id, block_bytes, file_type = "tq1_0", 34, TQ1_BYTES, 36

    def codes(self, raw, n):
        return tq1_0_codes(raw, n)
