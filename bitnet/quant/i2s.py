"""Microsoft I2_S (ggml type 36, bitnet.cpp `src/ggml-bitnet-mad.cpp` `quantize_i2_s`).

One ternary tensor = 2-bit codes (0/1/2 = -1/0/+1; 3 unused) for all n = rows x cols elements,
then ONE f32 scale at byte n/4; the tensor occupies n/4 + 32 bytes (the 28 bytes after the
scale are padding, uninitialised in llama-quantize output). Three code layouts exist in
microsoft/BitNet at revision 16da220 (2026-07-21):

- `x86` (`QK_I2_S = 128`, the default build: `include/gemm-config.h` defines ACT_PARALLEL):
  the flat element index is cut in blocks of 128; element j of block i sits in byte
  `32*i + j % 32` at bit shift `6 - 2*(j // 32)`.
- `arm` (`QK_I2_S = 64`, NEON builds): byte `16*i + j % 16`, shift `6 - 2*(j // 16)`.
- `x86_1x4` (x86 builds with ACT_PARALLEL undefined): rows in groups of four, one byte per
  column holding rows r0..r3 at shifts 6, 4, 2, 0. Needs rows % 4 == 0. The byte size is the
  same as the others, so a file cannot say which layout it uses: this one must be asked for.

Every function is a vectorised view transform; nothing loops over weights in Python.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from bitnet.errors import FormatError
from bitnet.gguf.constants import ggml_type
from bitnet.quant import lut
from bitnet.quant.formats import Encoding, Format

LAYOUTS = {"x86": 128, "arm": 64, "x86_1x4": None}
SCALE_PAD = 32  # bytes after the codes: f32 scale + 28 bytes of padding
#: which code layout a file uses (the byte size cannot say; absent means x86)
KEY_LAYOUT = "bitnet_harness.i2s_layout"


def nbytes(n: int) -> int:
    return n // 4 + SCALE_PAD


def _check(rows: int, cols: int, layout: str) -> None:
    if layout not in LAYOUTS:
        raise FormatError(f"unknown I2_S layout {layout!r}; known: {', '.join(LAYOUTS)}")
    block = LAYOUTS[layout]
    n = rows * cols
    if block is not None and n % block:
        raise FormatError(f"I2_S {layout}: element count {n} ({rows}x{cols}) is not a multiple of {block}")
    if layout == "x86_1x4" and rows % 4:
        # `quantize_i2_s_1x4` asserts nrow % 4 == 0 and nothing about the row length
        raise FormatError(f"I2_S x86_1x4: rows ({rows}) must be a multiple of 4")


def _block(layout: str) -> int:
    b = LAYOUTS[layout]
    if b is None:
        raise FormatError(f"I2_S {layout}: no flat block (rows are grouped by four)")
    return b


def codes_from_ternary(t: np.ndarray) -> np.ndarray:
    """-1/0/+1 (int8) -> codes 0/1/2 (uint8)."""
    if t.size and (t.min() < -1 or t.max() > 1):
        raise FormatError("I2_S packs ternary values (-1, 0, +1) only")
    return (t.astype(np.int8) + 1).view(np.uint8)


def pack_codes(codes: np.ndarray, layout: str = "x86") -> np.ndarray:
    """codes uint8 [rows, cols] (0..2) -> packed bytes (n/4), no scale."""
    rows, cols = codes.shape
    _check(rows, cols, layout)
    c = np.ascontiguousarray(codes, np.uint8)
    if layout == "x86_1x4":
        g = c.reshape(rows // 4, 4, cols)  # [group, row in group, col]
        return (g[:, 0] << 6 | g[:, 1] << 4 | g[:, 2] << 2 | g[:, 3]).reshape(-1)
    q = _block(layout) // 4  # bytes per block
    b = c.reshape(-1, 4, q)  # [block, group, byte]
    return (b[:, 0] << 6 | b[:, 1] << 4 | b[:, 2] << 2 | b[:, 3]).reshape(-1)


def unpack_codes(packed: np.ndarray, rows: int, cols: int, layout: str = "x86") -> np.ndarray:
    """Packed bytes (at least n/4) -> codes uint8 [rows, cols]."""
    _check(rows, cols, layout)
    n = rows * cols
    p = np.asarray(packed, np.uint8)[: n // 4]
    if p.size < n // 4:
        raise FormatError(f"I2_S: {p.size} packed bytes for {n} elements, need {n // 4}")
    shifts = np.array([6, 4, 2, 0], np.uint8)
    if layout == "x86_1x4":
        g = (p.reshape(rows // 4, 1, cols) >> shifts[None, :, None]) & 3  # [group, row, col]
        return g.reshape(rows, cols)
    q = _block(layout) // 4
    b = (p.reshape(-1, 1, q) >> shifts[None, :, None]) & 3  # [block, group, byte]
    return b.reshape(rows, cols)


_UNPACK_CODES = unpack_codes


def pack(ternary: np.ndarray, scale: float | np.floating, layout: str = "x86") -> np.ndarray:
    """ternary int8 [rows, cols] and the tensor scale -> the n/4 + 32 bytes of the tensor."""
    rows, cols = ternary.shape
    packed = pack_codes(codes_from_ternary(ternary), layout)
    tail = np.zeros(SCALE_PAD, np.uint8)
    tail[:4] = np.array([scale], "<f4").view(np.uint8)
    return np.concatenate([packed, tail])


def read_scale(raw: np.ndarray, n: int) -> float:
    """The f32 scale stored at byte n/4."""
    if raw.size < n // 4 + 4:
        raise FormatError(f"I2_S: tensor of {raw.size} bytes has no scale at byte {n // 4}")
    return float(np.asarray(raw[n // 4 : n // 4 + 4]).view("<f4")[0])


def quantize(w: np.ndarray, layout: str = "x86") -> np.ndarray:
    """Float weights -> I2_S bytes, as `quantize_i2_s` does: scale = max|w| (in double), then
    sign only: |w| < 1e-6 -> 0, else +-1. (The converter feeds already-ternary weights times
    the scale, so the sign is all that is left to keep.)"""
    a = np.asarray(w, np.float64)
    scale = float(np.abs(a).max()) if a.size else 0.0
    t = np.where(np.abs(a) < 1e-6, 0, np.where(a * scale > 0, 1, -1)).astype(np.int8)
    return pack(t, np.float32(scale), layout)


def dequantize(raw: np.ndarray, rows: int, cols: int, layout: str = "x86") -> np.ndarray:
    """For tests and diagnostics only: kernels never build this float matrix."""
    codes = unpack_codes(raw, rows, cols, layout)
    return (codes.astype(np.float32) - 1) * np.float32(read_scale(raw, rows * cols))


def valid_bytes(raw: np.ndarray, n: int) -> bool:
    """A positive finite scale and no code 3: the bytes decode as I2_S (or TL1's I2_S part)."""
    scale = read_scale(raw, n)
    codes = np.asarray(raw[: n // 4], np.uint8)
    return bool(np.isfinite(scale) and scale > 0
                and not (((codes[:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3) == 3).any())


def check_scale(raw: np.ndarray, n: int, where: str, what: str) -> None:
    scale = read_scale(raw, n)
    if not np.isfinite(scale) or scale <= 0:
        raise FormatError(f"{where}: an {what} tensor by size, but its scale at byte "
                          f"{n // 4} is {scale!r}, not a positive finite f32: corrupt tensor")


def _pack_layout(ternary: np.ndarray, scale: float, *, layout: str) -> np.ndarray:
    return pack(ternary, scale, layout)


class I2S(Format):
    """Microsoft I2_S: 2-bit codes and one f32 tensor scale; three code layouts."""

    name, type_id = "i2_s", 36
    block, row_multiple, scale = 128, 128, "tensor"
    kernels = {"per-token-absmax": "gemm_per_token"}

    def nbytes(self, n: int) -> int:
        return nbytes(n)

    def applies(self, shape, type_name) -> bool:
        return True  # the size rule decides among the type-36 layouts

    def decodes(self, raw, n) -> bool:
        try:
            return valid_bytes(raw, n)
        except FormatError:
            return False

    def check_bytes(self, raw, n, where) -> None:
        check_scale(raw, n, where, self.name)

    def bind(self, reader, name, raw, out, k, *, strict):
        layout = str(reader.get(KEY_LAYOUT, "x86"))
        if layout not in LAYOUTS:
            raise FormatError(f"{reader.path}: {KEY_LAYOUT} = {layout!r}; known: {list(LAYOUTS)}")
        if layout == "x86_1x4" and out % 4:
            raise FormatError(f"{reader.path}: {name}: x86_1x4 needs rows % 4 == 0, has {out}")
        return raw[: out * k // 4], {"scale": read_scale(raw, out * k), "layout": layout}

    def decode_rows(self, w, r0, r1):
        # every layout keeps rows r0..r1 in bytes r0*k/4..r1*k/4 when K % 128 == 0 (x86, arm)
        # or r0, r1 are multiples of 4 (x86_1x4, see row_group)
        k = w.in_features
        part = w.raw[r0 * k // 4 : r1 * k // 4]
        return unpack_codes(part, r1 - r0, k, w.layout).view(np.int8) - np.int8(1)

    def lut_rows(self, w, r0, r1):
        # bitnet.quant.lut: codes at shifts 6, 4, 2, 0 of each byte; only while unpack_codes is
        # the real one (a planted fault replacing it must reach the kernels, via decode_rows)
        if globals()["unpack_codes"] is not _UNPACK_CODES:
            return None
        k = w.in_features
        part = w.raw[r0 * k // 4 : r1 * k // 4]
        if w.layout == "x86_1x4":  # lanes are rows here: table values, [group, col, row] -> rows
            v = lut.gather(lut.code_table((6, 4, 2, 0)), part)
            return np.ascontiguousarray(v.reshape(-1, k, 4).transpose(0, 2, 1)).reshape(r1 - r0, k), None, None
        block = _block(w.layout)  # byte m of a block holds elements m + (block/4) * g
        perm = lut.block_perm(k, block, 4, block // 4)
        if not lut.LANES_OK:
            return lut.gather(lut.code_table((6, 4, 2, 0)), part).reshape(r1 - r0, k), perm, None
        return lut.lanes(part, 0x030C30C0).reshape(r1 - r0, k), perm, lut.lane_div(k, (6, 4, 2, 0))

    def row_group(self, w) -> int:
        return 4 if w.layout == "x86_1x4" else 1

    def tag(self, w) -> str:
        return f"i2s_{w.layout}"

    def encodings(self) -> Iterator[Encoding]:
        for name, layout in (("i2_s", "x86"), ("i2_s_arm", "arm"), ("i2_s_1x4", "x86_1x4")):
            yield Encoding(name, ggml_type("I2_S"), functools.partial(_pack_layout, layout=layout),
                           file_type=40, metadata=((KEY_LAYOUT, layout),))
