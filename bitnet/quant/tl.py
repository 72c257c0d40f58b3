"""TL1 and TL2: bitnet.cpp's lookup-table formats (ggml types 38 and 39), encoded and decoded.

Source: microsoft/BitNet 16da220, `utils/convert-hf-to-gguf-bitnet.py` (`preprocess_weights_tl1`,
`process_tl1`, `preprocess_weights_tl2`, `preprocess_three_weights_tl2`,
`preprocess_two_weights_tl2`). Both take an [M rows, K columns] weight, keep its sign (|w| < 1e-6
-> 0) and tile-permute it by the (M, K) entry of the kernel config (`bitnet.quant.tl_config`):
BM rows x BK columns per tile, bm-row SIMD blocks. The scale is max|w| (one f32 per tensor).

- TL1: every pair (a, b) of consecutive weights in a row is the 4-bit code 3a + b + 4; a byte
  holds two codes (first in the high nibble). by = 256 / bm. Bytes: M*K/4, then the scale at
  byte M*K/4 and 28 zero bytes (ggml's `n/4 + 32`).
- TL2: the first K3 = K - K % BK columns go in triples (a, b, c): v = 9a + 3b + c, a 4-bit
  index |v| (two per byte) and a sign bit (1 when v < 0) packed 16 to a little-endian uint16,
  bit 15 first; the remaining K2 = K % BK columns go in pairs as in TL1 (tiled with BK = 32,
  bm = 32). Bytes: the indices (M*K3/6), the sign words (M*K3/24 bytes), the pair codes
  (M*K2/4), zeros up to `(K-256)*M/3*5/8 + 256*M/2*4/8` rounded up to 32, then the scale and
  28 zero bytes. Inside each 32-byte row of indices and pair codes, the 8-byte groups 1 and 2
  are swapped (`weight[:, [0, 1, 2, 3], :] = weight[:, [0, 2, 1, 3], :]`).

Every section keeps the BM-row tiles in order, so one permutation of a single BM-row tile
serves all tiles. It is computed once per (flavor, tile) by running the converter's own
reshape/transpose sequence on element indices instead of codes: the encoder gathers codes
through it, the decoder scatters them back. Nothing loops over weights in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np

from bitnet.errors import FormatError
from bitnet.gguf.constants import ggml_type
from bitnet.quant import i2s
from bitnet.quant.formats import Encoding, Format
from bitnet.quant.tl_config import (
    KEY_KERNEL_CONFIG,
    KernelConfig,
    KernelConfigError,
    TileConfig,
    tile_for,
)

SCALE_PAD = 32


# -- the converter's permutations, on indices ------------------------------------------------------
def _swap_groups(x: np.ndarray) -> np.ndarray:
    """[rows of bm=32 entries] with 8-entry groups 1 and 2 swapped."""
    g = x.reshape(-1, 4, 8, *x.shape[2:])
    return g[:, [0, 2, 1, 3]].reshape(x.shape)


@lru_cache(maxsize=64)
def _tl1_perm(BM: int, K: int, BY: int, bm: int) -> np.ndarray:
    """int64 [BM*K/4, 2]: the pair indices (into a [BM, K/2] grid) of each byte's high and low
    nibble, for one BM-row tile (`process_tl1`)."""
    by = 256 // bm
    w: np.ndarray = np.arange(BM * K // 2).reshape(1, BM, K // 2).transpose(0, 2, 1)
    w = w.reshape((1, K // BY, BY // 2, BM)).transpose(0, 1, 3, 2)
    w = w.reshape((1, K // BY, BM // bm, bm, BY // 2)).transpose(0, 1, 2, 4, 3)
    w = w.reshape((1, K // BY, BM // bm, BY // by, by // 2, bm)).transpose(0, 1, 2, 3, 5, 4)
    w = w.reshape((1, K // BY, BM // bm, BY // by, bm // 16, 16, by // 2)).transpose(0, 1, 2, 3, 4, 6, 5)
    w = w.reshape((1, K // BY, BM // bm, BY // by, bm // 16, by // 4, 2, 16)).transpose(0, 1, 2, 3, 4, 5, 7, 6)
    return np.ascontiguousarray(w.reshape(-1, 2))


def _tl2_pair_perm(BM: int, K: int, BY: int, bm: int, by: int, per: int) -> np.ndarray:
    """int64 [BM*K/(2*per), 2]: group indices (into [BM, K/per]) of each byte's two nibbles,
    for the three-weight (per=3) or two-weight (per=2) part of one tile."""
    w: np.ndarray = np.arange(BM * K // per).reshape(1, BM, K // per).transpose(0, 2, 1)
    w = w.reshape((1, K // BY, BY // per, BM)).transpose(0, 1, 3, 2)
    w = w.reshape((1, K // BY, BM // bm, bm, BY // per)).transpose(0, 1, 2, 4, 3)
    w = w.reshape((1, K // BY, BM // bm, BY // by, by // per, bm)).transpose(0, 1, 2, 3, 5, 4)
    w = w.reshape((1, K // BY, BM // bm, BY // by, bm, by // per))  # last axis: (high, low)
    w = w.reshape(-1, bm, 2)
    return np.ascontiguousarray(_swap_groups(w).reshape(-1, 2))


def _tl2_sign_perm(BM: int, K3: int, BY: int, bm: int) -> np.ndarray:
    """int64 [BM*K3/48, 16]: the triple indices (into [BM, K3/3]) of each uint16 sign word's
    bits 15, 14, ..., 0, for one tile."""
    by = 192 // bm
    s: np.ndarray = np.arange(BM * K3 // 3).reshape(1, BM, K3 // 3).transpose(0, 2, 1)
    s = s.reshape((1, K3 // BY, BY // 3, BM)).transpose(0, 1, 3, 2)
    s = s.reshape((1, K3 // BY, BM // bm, bm, BY // 3)).transpose(0, 1, 2, 4, 3)
    s = s.reshape((1, K3 // BY, BM // bm, BY // (by * 4), by // 3 * 4, bm)).transpose(0, 1, 2, 3, 5, 4)
    s = s.reshape((1, K3 // BY, BM // bm, BY // (by * 4), bm, by // 3 * 4)).transpose(0, 1, 2, 3, 5, 4)
    s = s.reshape((1, K3 // BY, BM // bm, BY // (by * 4), by // 3 * 8, bm // 2))
    return np.ascontiguousarray(np.moveaxis(s, -2, -1).reshape(-1, 16))


@lru_cache(maxsize=64)
def _tl2_perms(BM: int, K: int, BK: int, bm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    k2 = K % BK
    k3 = K - k2
    three = _tl2_pair_perm(BM, k3, BK, bm, 192 // bm, 3)
    sign = _tl2_sign_perm(BM, k3, BK, bm)
    two = _tl2_pair_perm(BM, k2, 32, 32, 4, 2) if k2 else None
    return three, sign, two


# -- sizes ---------------------------------------------------------------------------------------------
def tl1_data_bytes(m: int, k: int) -> int:
    return m * k // 4


def tl2_data_bytes(m: int, k: int, tile: TileConfig) -> int:
    """Bytes of the three sections (no padding)."""
    k2 = k % tile.BK
    k3 = k - k2
    return m * k3 // 6 + m * k3 // 24 + m * k2 // 4


def tl2_scale_offset(m: int, k: int) -> int:
    """Where the scale sits: ggml's TL2 size less its 32 scale bytes."""
    return ggml_type("TL2").nbytes((k, m)) - SCALE_PAD


def _tail(scale: float) -> np.ndarray:
    tail = np.zeros(SCALE_PAD, np.uint8)
    tail[:4] = np.array([scale], "<f4").view(np.uint8)
    return tail


def _ternary(t: np.ndarray, what: str) -> np.ndarray:
    t = np.asarray(t)
    if t.ndim != 2:
        raise FormatError(f"{what} encodes a 2-D [rows, cols] ternary matrix, got shape {t.shape}")
    if t.size and (t.min() < -1 or t.max() > 1):
        raise FormatError(f"{what} packs ternary values (-1, 0, +1) only")
    return t.astype(np.int16)


def _nibbles(codes: np.ndarray, perm: np.ndarray, nblk: int) -> np.ndarray:
    """codes [nblk, per-tile groups] uint8 -> bytes [nblk * len(perm)] (high nibble first)."""
    c = codes.reshape(nblk, -1)
    return ((c[:, perm[:, 0]] << 4) | c[:, perm[:, 1]]).astype(np.uint8).reshape(-1)


# -- TL1 --------------------------------------------------------------------------------------------------
def encode_tl1(t: np.ndarray, scale: float, tile: TileConfig) -> np.ndarray:
    """ternary int8 [M, K] and the tensor scale -> the M*K/4 + 32 bytes bitnet.cpp writes."""
    m, k = np.shape(t)
    tile = _matching(tile, m, k, "tl1")
    v = _ternary(t, "TL1").reshape(m, k // 2, 2)
    codes = (3 * v[..., 0] + v[..., 1] + 4).astype(np.uint8)
    body = _nibbles(codes, _tl1_perm(tile.BM, k, tile.BK, tile.bm), m // tile.BM)
    return np.concatenate([body, _tail(scale)])


def _pairs_from_codes(c: np.ndarray, what: str) -> np.ndarray:
    """4-bit pair codes 3a + b + 4 -> int8 [..., 2]."""
    if c.size and c.max() > 8:
        raise FormatError(f"{what}: pair code {int(c.max())} > 8 (valid codes are 0..8): corrupt tensor")
    return np.stack([c // 3, c % 3], axis=-1).astype(np.int8) - np.int8(1)


def _scatter(body: np.ndarray, perm: np.ndarray, nblk: int, groups: int) -> np.ndarray:
    """bytes [nblk * len(perm)] -> codes uint8 [nblk, groups] (inverse of `_nibbles`)."""
    b = body.reshape(nblk, -1)
    c = np.empty((nblk, groups), np.uint8)
    c[:, perm[:, 0]] = b >> 4
    c[:, perm[:, 1]] = b & 15
    return c


def decode_tl1(raw: np.ndarray, m: int, k: int, tile: TileConfig, b0: int = 0, b1: int | None = None) -> np.ndarray:
    """int8 [rows, K] of BM-row tiles b0..b1 (all by default)."""
    tile = _matching(tile, m, k, "tl1")
    b1 = m // tile.BM if b1 is None else b1
    per = tile.BM * k // 4
    body = np.asarray(raw, np.uint8)[b0 * per: b1 * per]
    codes = _scatter(body, _tl1_perm(tile.BM, k, tile.BK, tile.bm), b1 - b0, tile.BM * k // 2)
    return _pairs_from_codes(codes, "TL1").reshape((b1 - b0) * tile.BM, k)


# -- TL2 --------------------------------------------------------------------------------------------------
def encode_tl2(t: np.ndarray, scale: float, tile: TileConfig) -> np.ndarray:
    """ternary int8 [M, K] and the tensor scale -> ggml's TL2 size of bytes, as bitnet.cpp writes them."""
    m, k = np.shape(t)
    tile = _matching(tile, m, k, "tl2")
    v = _ternary(t, "TL2")
    k2 = k % tile.BK
    k3 = k - k2
    nblk = m // tile.BM
    three_p, sign_p, two_p = _tl2_perms(tile.BM, k, tile.BK, tile.bm)
    tri = v[:, :k3].reshape(m, k3 // 3, 3)
    val = 9 * tri[..., 0] + 3 * tri[..., 1] + tri[..., 2]
    parts = [_nibbles(np.abs(val).astype(np.uint8), three_p, nblk)]
    neg = (val < 0).astype(np.uint16).reshape(nblk, -1)[:, sign_p]  # [nblk, words, 16]
    words = (neg << np.arange(15, -1, -1, dtype=np.uint16)).sum(axis=-1, dtype=np.uint16)
    parts.append(np.ascontiguousarray(words, "<u2").view(np.uint8).reshape(-1))
    if k2:
        assert two_p is not None  # _tl2_perms builds it whenever K % BK leaves a remainder
        pr = v[:, k3:].reshape(m, k2 // 2, 2)
        parts.append(_nibbles((3 * pr[..., 0] + pr[..., 1] + 4).astype(np.uint8), two_p, nblk))
    body = np.concatenate(parts)
    pad = np.zeros(tl2_scale_offset(m, k) - body.size, np.uint8)
    return np.concatenate([body, pad, _tail(scale)])


def decode_tl2(raw: np.ndarray, m: int, k: int, tile: TileConfig, b0: int = 0, b1: int | None = None) -> np.ndarray:
    """int8 [rows, K] of BM-row tiles b0..b1 (all by default)."""
    tile = _matching(tile, m, k, "tl2")
    BM = tile.BM
    b1 = m // BM if b1 is None else b1
    nb = b1 - b0
    k2 = k % tile.BK
    k3 = k - k2
    three_p, sign_p, two_p = _tl2_perms(BM, k, tile.BK, tile.bm)
    raw = np.asarray(raw, np.uint8)
    n3, ns, n2 = BM * k3 // 6, BM * k3 // 24, BM * k2 // 4  # bytes per tile and section
    o_s, o_2 = m * k3 // 6, m * k3 // 6 + m * k3 // 24
    idx = _scatter(raw[b0 * n3: b1 * n3], three_p, nb, BM * k3 // 3)
    if idx.size and idx.max() > 13:
        raise FormatError(f"TL2: three-weight index {int(idx.max())} > 13: corrupt tensor")
    words = np.ascontiguousarray(raw[o_s + b0 * ns: o_s + b1 * ns]).view("<u2").reshape(nb, -1)
    neg = np.empty((nb, BM * k3 // 3), np.uint8)
    neg[:, sign_p] = (words[:, :, None] >> np.arange(15, -1, -1, dtype=np.uint16)) & 1
    val = np.where(neg.astype(bool), -idx.astype(np.int16), idx.astype(np.int16)) + 13
    out = np.empty((nb * BM, k), np.int8)
    out[:, :k3] = (np.stack([val // 9, val // 3 % 3, val % 3], axis=-1) - 1).reshape(nb * BM, k3)
    if k2:
        assert two_p is not None  # _tl2_perms builds it whenever K % BK leaves a remainder
        codes = _scatter(raw[o_2 + b0 * n2: o_2 + b1 * n2], two_p, nb, BM * k2 // 2)
        out[:, k3:] = _pairs_from_codes(codes, "TL2").reshape(nb * BM, k2)
    return out


def _matching(tile: TileConfig, m: int, k: int, flavor: str) -> TileConfig:
    if (tile.m, tile.k) != (m, k):
        raise KernelConfigError(f"{flavor.upper()}: kernel config entry is for M={tile.m}, K={tile.k}, "
                                f"the tensor is M={m}, K={k}")
    tile.check(flavor)
    return tile


# -- default tiles for files the harness writes ---------------------------------------------------------
def default_tile(flavor: str, m: int, k: int) -> TileConfig:
    """The tile the synthesiser uses for a shape (recorded in the file's metadata key): the
    largest of the row tiles bitnet.cpp's presets use that divides M, and the first column
    tile its rules allow. A shape no tile fits is a KernelConfigError."""
    bm = 32
    BM = next((c for c in (256, 160, 128, 96, 64, 32) if m % c == 0), 0)
    if flavor == "tl1":
        BK = next((c for c in (128, 64, 256, 32, 16, 8) if k % c == 0), 0)
    else:
        BK = next((c for c in [96, 192, 144, 120, 72, 48, 168, 216, 240, 24] if k >= c and (k % c) % 32 == 0
                   and k % c <= 256), 0)
    tile = TileConfig(m, k, BM, BK, bm)
    tile.check(flavor)
    return tile


def default_config(flavor: str, shapes: list[tuple[int, int]]) -> KernelConfig:
    seen = list(dict.fromkeys(shapes))
    return KernelConfig(tuple(default_tile(flavor, m, k) for m, k in seen), "bitnet.quant.tl.default_tile")


# -- the formats -------------------------------------------------------------------------------------------
class _TL(Format):
    scale = "tensor"
    #: the flavor's codec, set by each subclass (staticmethods of the module's encode/decode)
    _encode: Callable[..., np.ndarray]
    _decode: Callable[..., np.ndarray]
    kernels = {"per-token-absmax": "gemm_per_token"}

    def applies(self, shape, type_name) -> bool:
        return True

    def bind(self, reader, name, raw, out, k, *, strict):
        tile = tile_for(reader, name, out, k, self.name)
        off = self._scale_offset(out, k)
        scale = float(np.asarray(raw[off: off + 4]).view("<f4")[0])
        if not np.isfinite(scale) or scale <= 0:
            raise FormatError(f"{reader.path}: {name}: a {self.name.upper()} tensor, but its scale at byte "
                              f"{off} is {scale!r}, not a positive finite f32: corrupt tensor")
        return raw[: self._data_bytes(out, k, tile)], {"scale": scale, "tile": tile}

    def decode_rows(self, w, r0, r1):
        BM = w.tile.BM
        b0, b1 = r0 // BM, -(-r1 // BM)
        vals = self._decode(w.raw, w.out_features, w.in_features, w.tile, b0, b1)
        return vals[r0 - b0 * BM: r1 - b0 * BM]

    def row_group(self, w) -> int:
        return w.tile.BM

    def encodings(self) -> Iterator[Encoding]:
        flavor, enc = self.name, self._encode

        def encode(t: np.ndarray, s: float) -> np.ndarray:
            m, k = t.shape
            return enc(t, s, default_tile(flavor, m, k))

        yield Encoding(self.name, ggml_type(self.name.upper()), encode, file_type=self.type_id,
                       shape_metadata=lambda shapes: ((KEY_KERNEL_CONFIG, default_config(flavor, shapes).to_ini()),))


class TL1(_TL):
    name, type_id = "tl1", 38

    def nbytes(self, n: int) -> int:
        return i2s.nbytes(n)

    def check_bytes(self, raw, n, where) -> None:
        i2s.check_scale(raw, n, where, self.name)

    def _scale_offset(self, m, k):
        return m * k // 4

    def _data_bytes(self, m, k, tile):
        return tl1_data_bytes(m, k)

    #: `tl2-lut` under the bitnet.cpp-tl1 profile: codegen_tl1's LUT arithmetic is TL2's
    #: three-weight part with pairs (per BK tile, wrapping int16), K % BK == 0 always
    kernels = {"per-token-absmax": "gemm_per_token", "tl2-lut": "gemm_tl2_lut"}

    _encode = staticmethod(encode_tl1)
    _decode = staticmethod(decode_tl1)


class TL2(_TL):
    name, type_id = "tl2", 39

    def applies(self, shape, type_name) -> bool:
        return type_name == "TL2" and shape[0] >= 256  # id 39 is MXFP4 in upstream ggml

    #: `tl2-lut`: bitnet.cpp's LUT-kernel arithmetic (bitnet.kernels.numpy_kernels.gemm_tl2_lut)
    kernels = {"per-token-absmax": "gemm_per_token", "tl2-lut": "gemm_tl2_lut"}

    def tensor_bytes(self, shape):
        return ggml_type("TL2").nbytes(shape)

    def _scale_offset(self, m, k):
        return tl2_scale_offset(m, k)

    def _data_bytes(self, m, k, tile):
        return tl2_data_bytes(m, k, tile)

    _encode = staticmethod(encode_tl2)
    _decode = staticmethod(decode_tl2)
