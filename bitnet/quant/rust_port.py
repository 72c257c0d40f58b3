"""The two I2_S "flavors" that the Rust port (EffortlessMetrics/BitNet-rs) writes under ggml
type id 36, so that files written by that tooling can be read and diagnosed.

Neither is a ggml or bitnet.cpp format; both come from the port's own documents
(`docs/archive/ggml-i2s-implementation-status.md`, its QK256 how-to). They are told apart from
Microsoft's I2_S only by byte size (see `bitnet.quant.flavor`):

- **BitNet32-F16**: blocks of 32 elements = 10 bytes: 8 bytes of 2-bit codes, least
  significant bits first (element j in byte j // 4 at bits 2*(j % 4)), then an f16 block
  scale. We read codes 0/1/2 as -1/0/+1 (code 3 is refused), as I2_S does.
- **QK256** ("GgmlQk256NoScale"): blocks of 256 elements = 64 bytes of LSB-first 2-bit codes,
  no scale in the tensor (the port keeps one in a separate tensor). Its code -> value table is
  NOT from ggml, and the port's own files disagree about it ({-2,-1,+1,+2} in one document,
  {-3,-1,+1,+3} in another). We therefore never guess: decoding takes the table explicitly.
  Files we write use the ternary table {-1, 0, +1} (code 3 unused) and say so in the metadata
  key `bitnet_harness.qk256_lut`; the scale goes in a `<name>.scale` F32 tensor.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bitnet.errors import FormatError, StrictModeError
from bitnet.gguf.constants import ggml_type
from bitnet.quant.blocks import raw_blocks
from bitnet.quant.formats import Encoding, Format

B32 = 32
B32_BYTES = 10
QK256 = 256
QK256_BYTES = 64
TERNARY_LUT = (-1, 0, 1, 0)  # code 3 never written
PORT_LUTS = {"port-2112": (-2, -1, 1, 2), "port-3113": (-3, -1, 1, 3)}
#: the code table a QK256 file says it uses (no default: the port's documents disagree)
KEY_QK256_LUT = "bitnet_harness.qk256_lut"


def bitnet32_nbytes(n: int) -> int:
    return n // B32 * B32_BYTES


def qk256_nbytes(n: int) -> int:
    return n // QK256 * QK256_BYTES


def _lsb_pack(codes: np.ndarray) -> np.ndarray:
    c = np.ascontiguousarray(codes, np.uint8).reshape(-1, 4)
    return c[:, 0] | c[:, 1] << 2 | c[:, 2] << 4 | c[:, 3] << 6


def _lsb_unpack(b: np.ndarray) -> np.ndarray:
    return ((b.reshape(-1, 1) >> np.array([0, 2, 4, 6], np.uint8)) & 3).reshape(-1)


def _check_ternary(t: np.ndarray) -> None:
    if t.size and (t.min() < -1 or t.max() > 1):
        raise FormatError("ternary values (-1, 0, +1) only")


def pack_bitnet32(ternary: np.ndarray, scale: float) -> np.ndarray:
    """ternary [rows, cols] -> BitNet32-F16 blocks, every block scale = scale (as f16)."""
    n = ternary.size
    if n % B32 or ternary.shape[-1] % B32:
        raise FormatError(f"BitNet32-F16: row length {ternary.shape[-1]} is not a multiple of {B32}")
    _check_ternary(ternary)
    codes = _lsb_pack((ternary.astype(np.int8) + 1).view(np.uint8)).reshape(-1, 8)
    d = np.full((codes.shape[0], 1), scale, "<f2").view(np.uint8)
    return np.concatenate([codes, d], axis=1).reshape(-1)


def bitnet32_codes(raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (codes uint8 [n/32, 32], block scales float32 [n/32])."""
    b = raw_blocks(raw, n, B32, B32_BYTES, "BitNet32-F16")
    codes = _lsb_unpack(b[:, :8]).reshape(-1, B32)
    if (codes == 3).any():
        raise FormatError("BitNet32-F16: code 3 found; this reader maps only 0/1/2 = -1/0/+1")
    return codes, b[:, 8:10].copy().view("<f2").astype(np.float32).reshape(-1)


def pack_qk256(ternary: np.ndarray) -> np.ndarray:
    """ternary [rows, cols] -> QK256 codes with the ternary table (code = t + 1)."""
    if ternary.shape[-1] % QK256:
        raise FormatError(f"QK256: row length {ternary.shape[-1]} is not a multiple of {QK256}")
    _check_ternary(ternary)
    return _lsb_pack((ternary.astype(np.int8) + 1).view(np.uint8))


def byte_table(lut: tuple[int, int, int, int]) -> np.ndarray:
    """int8 [256, 4]: the four values an LSB-first byte holds, element order. One gather per
    byte replaces four shifts, four masks and a per-element table lookup."""
    return np.asarray(lut, np.int8)[_lsb_unpack(np.arange(256, dtype=np.uint8)).reshape(256, 4)]


def qk256_values(raw: np.ndarray, n: int, lut: tuple[int, int, int, int]) -> np.ndarray:
    """-> integer weight values int8 [n] through an explicit code table."""
    b = raw_blocks(raw, n, QK256, QK256_BYTES, "QK256")
    # the 4 values of a byte as one int32 word: a 1-D gather of words is ~5x faster than
    # fancy-indexing the [256, 4] table's rows
    words = byte_table(lut).view(np.int32).reshape(-1)
    return np.take(words, b.reshape(-1)).view(np.int8)


class QK256Format(Format):
    """The Rust port's QK256: 2-bit codes in blocks of 256, no scale in the tensor, an explicit
    code table from the file's metadata."""

    name, type_id = "qk256", 36
    block, block_bytes, row_multiple, scale = QK256, QK256_BYTES, QK256, "tensor"
    kernels = {"per-token-absmax": "gemm_per_token"}

    def bind(self, reader, name, raw, out, k, *, strict):
        lut = reader.get(KEY_QK256_LUT)
        if lut is None:
            msg = (f"{reader.path}: {name} is QK256 (Rust-port layout) and the file does not say which "
                   f"code table it uses ({KEY_QK256_LUT}); the port's own documents disagree "
                   f"({PORT_LUTS}), so it cannot be decoded without guessing")
            raise StrictModeError(msg) if strict else FormatError(msg)
        lut_t = tuple(int(v) for v in np.asarray(lut).tolist())
        if len(lut_t) != 4:
            raise FormatError(f"{reader.path}: {KEY_QK256_LUT} must have 4 entries, got {lut_t}")
        return raw, {"lut": lut_t}

    def decode_rows(self, w, r0, r1):
        k = w.in_features
        part = w.raw[r0 * k // 4 : r1 * k // 4]
        return qk256_values(part, (r1 - r0) * k, w.lut).reshape(r1 - r0, k)

    def encodings(self) -> Iterator[Encoding]:
        yield Encoding("qk256", ggml_type("I2_S"), lambda t, s: pack_qk256(t), file_type=40,
                       holds_scale=False, size=lambda o, i: qk256_nbytes(o * i),
                       metadata=((KEY_QK256_LUT, list(TERNARY_LUT)),))


class BitNet32Format(Format):
    """The Rust port's BitNet32-F16: blocks of 32 codes with an f16 scale each."""

    name, type_id = "bitnet32", 36
    block, block_bytes, row_multiple, scale = B32, B32_BYTES, B32, "block"
    kernels = {"per-token-absmax": "gemm_blocked_per_token"}

    def decodes(self, raw, n) -> bool:
        try:
            _, d = bitnet32_codes(raw, n)
        except FormatError:
            return False
        return bool(np.isfinite(d).all() and (d >= 0).all())

    def decode_rows(self, w, r0, r1):
        k = w.in_features
        rb = self.row_bytes(k)
        codes, _ = bitnet32_codes(w.raw[r0 * rb : r1 * rb], (r1 - r0) * k)
        return codes.reshape(r1 - r0, k).view(np.int8) - np.int8(1)

    def encodings(self) -> Iterator[Encoding]:
        yield Encoding("bitnet32", ggml_type("I2_S"), pack_bitnet32, file_type=40,
                       size=lambda o, i: bitnet32_nbytes(o * i))
