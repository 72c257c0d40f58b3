"""The one table of GGUF value types and ggml tensor types.

Every byte-size fact about a tensor type lives here, so the reader, the writer, the codecs and
the flavor detector cannot disagree. Sources: ggml `docs/gguf.md`, gguf-py `constants.py`
(`GGML_QUANT_SIZES`), bitnet.cpp's llama.cpp fork `ggml/include/ggml.h` and `ggml.c`
(`ggml_nbytes` special cases for I2_S / TL1 / TL2).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_SUPPORTED_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32
KEY_ALIGNMENT = "general.alignment"
KEY_ARCHITECTURE = "general.architecture"


class ValueType(enum.IntEnum):
    """GGUF metadata value types (`gguf_type` in ggml)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


#: NumPy dtypes (little-endian) of the fixed-size value types.
SCALAR_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("<u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}


def nbytes_blocked(block_size: int, type_size: int) -> Callable[[tuple[int, ...]], int]:
    """Size rule of a plain block type: rows of ne0 elements cut into whole blocks."""

    def rule(shape: tuple[int, ...]) -> int:
        n = _prod(shape)
        if shape and shape[0] % block_size:
            raise ValueError(
                f"row length ne0={shape[0]} is not a multiple of the block size {block_size}"
            )
        return n // block_size * type_size

    return rule


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _i2s_nbytes(shape: tuple[int, ...]) -> int:
    # bitnet.cpp fork ggml.c ggml_nbytes: I2_S and TL1 occupy n/4 packed bytes + 32 (f32 scale
    # at byte n/4, the rest padding).
    return _prod(shape) // 4 + 32


def _tl2_nbytes(shape: tuple[int, ...]) -> int:
    # bitnet.cpp fork ggml.c ggml_nbytes, TL2 branch: the first ne0-256 columns go in triples
    # of 5 bits (4-bit index + sign plane), the last 256 in pairs of 4 bits (TL1 style); the sum
    # is rounded up to 32 bytes, then 32 bytes hold the scale.
    if len(shape) < 2:
        ne0, ne1 = shape[0], 1
    else:
        ne0, ne1 = shape[0], _prod(shape[1:])
    if ne0 < 256:
        raise ValueError(f"TL2 needs ne0 >= 256, got {ne0}")
    n = (ne0 - 256) * ne1 // 3 * 5 // 8 + 256 * ne1 // 2 * 4 // 8
    n = (n + 31) // 32 * 32
    return n + 32


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: its id, name and how many bytes a tensor of a shape occupies."""

    id: int
    name: str
    block_size: int
    type_size: int
    origin: str = "ggml"  # "ggml" (upstream) or "bitnet.cpp" (Microsoft's fork)
    size_rule: Callable[[tuple[int, ...]], int] | None = None
    float_dtype: np.dtype | None = None  # set for types that view directly as a NumPy array
    # True for ids that tooling fills with layouts of different sizes (I2_S: Microsoft's,
    # and the Rust port's QK256 / BitNet32-F16): the reader then takes the tensor's span as
    # its size and leaves the decision to bitnet.quant.flavor
    span_sized: bool = False

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes a tensor of GGUF shape (ne0, ne1, ...) occupies; ValueError if illegal."""
        if self.size_rule is not None:
            return self.size_rule(tuple(shape))
        return nbytes_blocked(self.block_size, self.type_size)(tuple(shape))


def _t(id_: int, name: str, bs: int, ts: int, **kw) -> GGMLType:
    return GGMLType(id_, name, bs, ts, **kw)


_UPSTREAM = [
    _t(0, "F32", 1, 4, float_dtype=np.dtype("<f4")),
    _t(1, "F16", 1, 2, float_dtype=np.dtype("<f2")),
    _t(2, "Q4_0", 32, 18),
    _t(3, "Q4_1", 32, 20),
    _t(6, "Q5_0", 32, 22),
    _t(7, "Q5_1", 32, 24),
    _t(8, "Q8_0", 32, 34),
    _t(9, "Q8_1", 32, 40),
    _t(10, "Q2_K", 256, 84),
    _t(11, "Q3_K", 256, 110),
    _t(12, "Q4_K", 256, 144),
    _t(13, "Q5_K", 256, 176),
    _t(14, "Q6_K", 256, 210),
    _t(15, "Q8_K", 256, 292),
    _t(16, "IQ2_XXS", 256, 66),
    _t(17, "IQ2_XS", 256, 74),
    _t(18, "IQ3_XXS", 256, 98),
    _t(19, "IQ1_S", 256, 50),
    _t(20, "IQ4_NL", 32, 18),
    _t(21, "IQ3_S", 256, 110),
    _t(22, "IQ2_S", 256, 82),
    _t(23, "IQ4_XS", 256, 136),
    _t(24, "I8", 1, 1, float_dtype=np.dtype("<i1")),
    _t(25, "I16", 1, 2, float_dtype=np.dtype("<i2")),
    _t(26, "I32", 1, 4, float_dtype=np.dtype("<i4")),
    _t(27, "I64", 1, 8, float_dtype=np.dtype("<i8")),
    _t(28, "F64", 1, 8, float_dtype=np.dtype("<f8")),
    _t(29, "IQ1_M", 256, 56),
    # BF16 has no NumPy dtype: exposed as raw uint16 and widened by the codec.
    _t(30, "BF16", 1, 2),
    _t(34, "TQ1_0", 256, 54),
    _t(35, "TQ2_0", 256, 66),
]

# Microsoft's fork (3rdparty/llama.cpp/ggml/include/ggml.h). Upstream reused 36..38 for types it
# has since removed and gives 39 to MXFP4; these ids therefore mean different things in files
# from the two lineages. We read them as the fork's, because those are the BitNet files.
_BITNET_CPP = [
    _t(36, "I2_S", 1, 1, origin="bitnet.cpp", size_rule=_i2s_nbytes, span_sized=True),
    _t(37, "I8_S", 1, 1, origin="bitnet.cpp"),
    _t(38, "TL1", 1, 1, origin="bitnet.cpp", size_rule=_i2s_nbytes),
    _t(39, "TL2", 1, 1, origin="bitnet.cpp", size_rule=_tl2_nbytes),
]

#: Upstream's MXFP4 shares id 39 with TL2; the reader tells them apart by the tensor's byte span.
MXFP4 = _t(39, "MXFP4", 32, 17)

GGML_TYPES: dict[int, GGMLType] = {t.id: t for t in _UPSTREAM + _BITNET_CPP}
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}

#: Ids whose meaning differs between upstream ggml and bitnet.cpp: id -> alternatives.
AMBIGUOUS_TYPE_IDS: dict[int, tuple[GGMLType, ...]] = {39: (GGML_TYPES[39], MXFP4)}


def ggml_type(key: int | str) -> GGMLType:
    """Look a type up by id or name (case-insensitive); KeyError names the known ones."""
    if isinstance(key, str):
        try:
            return GGML_TYPES_BY_NAME[key.upper()]
        except KeyError:
            raise KeyError(
                f"unknown ggml type name {key!r}; known: {', '.join(GGML_TYPES_BY_NAME)}"
            ) from None
    try:
        return GGML_TYPES[int(key)]
    except KeyError:
        raise KeyError(f"unknown ggml type id {key}") from None
