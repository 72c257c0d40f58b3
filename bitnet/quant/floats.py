"""F32, F16 and BF16 weights: passthrough codecs (ggml types 0, 1, 30).

Nothing is blocked: the tensor is the row-major [out, in] array in little-endian IEEE (F32,
F16) or bfloat16 (the top 16 bits of an f32). Encoding to BF16 rounds to nearest even and
forces NaN quiet, as ggml's `ggml_compute_fp32_to_bf16` (ggml-impl.h) and gguf-py's
`quants.BF16` do; decoding is exact (bits << 16). Kernels decode float weights a chunk of rows
at a time (`rows`), never the whole matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from bitnet.errors import FormatError
from bitnet.gguf.constants import ggml_type
from bitnet.quant import lut
from bitnet.quant.formats import Encode, Encoding, Format

DTYPES: dict[str, np.dtype] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "bf16": np.dtype("<u2")}


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even, NaN forced quiet."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    u = np.where((u & 0x7FFFFFFF) > 0x7F800000, (u & np.uint32(0xFFFF0000)) | np.uint32(64 << 16), u)
    return ((u.astype(np.uint64) + (0x7FFF + ((u >> 16) & 1))) >> 16).astype("<u2")


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def pack(x: np.ndarray, fmt: str) -> np.ndarray:
    """float32 [out, in] -> the tensor's elements in `fmt` (an array of DTYPES[fmt])."""
    if fmt == "bf16":
        return to_bf16_bits(x)
    try:
        with np.errstate(over="ignore"):  # |x| > 65504 -> inf in F16, as the C cast does
            return np.asarray(x, np.float32).astype(DTYPES[fmt])
    except KeyError:
        raise FormatError(f"unknown float format {fmt!r}; known: {', '.join(DTYPES)}") from None


def unpack(raw: np.ndarray, fmt: str, out_f: int, in_f: int) -> np.ndarray:
    """The tensor's bytes (or a typed view) -> float32 [out, in]."""
    if fmt not in DTYPES:
        raise FormatError(f"unknown float format {fmt!r}; known: {', '.join(DTYPES)}")
    need = out_f * in_f * DTYPES[fmt].itemsize
    b = np.asarray(raw)
    if b.nbytes < need:
        raise FormatError(f"{fmt}: {b.nbytes} bytes for {out_f}x{in_f} elements, need {need}")
    v = b.reshape(-1).view(np.uint8)[:need].view(DTYPES[fmt]).reshape(out_f, in_f)
    if fmt == "bf16":
        return from_bf16_bits(v)
    return v.astype(np.float32)


def rows(view: np.ndarray, fmt: str, r0: int, r1: int) -> np.ndarray:
    """Rows r0..r1 of a typed [out, in] view as float32 (a view for F32)."""
    part = view[r0:r1]
    if fmt == "f32":
        return part
    if fmt == "f16":  # bit for bit part.astype(np.float32), about 1.5x faster (bitnet.quant.lut)
        return lut.widen_f16(part)
    if fmt == "bf16":
        return from_bf16_bits(part)
    raise FormatError(f"unknown float format {fmt!r}; known: {', '.join(DTYPES)}")


# -- the format objects ----------------------------------------------------------------------
def _float_encoder(dtype: str) -> Encode:
    def enc(ternary: np.ndarray, scale: float) -> np.ndarray:
        # a 3-entry lookup (index = code + 1) is ~8x faster than widening and multiplying
        lut = (np.array([-1.0, 0.0, 1.0], np.float32) * np.float32(scale)).astype(dtype)
        return lut[(ternary + 1).view(np.uint8)]

    return enc


def _bf16_encoder(ternary: np.ndarray, scale: float) -> np.ndarray:
    # round to nearest even, as ggml's FP32_TO_BF16
    return to_bf16_bits(_float_encoder("<f4")(ternary, scale))


class FloatFormat(Format):
    """F32 / F16 / BF16: every activation profile multiplies in float (an int8 profile first
    rounds the activations through its quantizer, as BitLinear does)."""

    ternary = False
    scale = "none"
    gtype_name: ClassVar[str]
    file_type: ClassVar[int]

    def nbytes(self, n: int) -> int:
        return n * DTYPES[self.name].itemsize

    def applies(self, shape: tuple[int, ...], type_name: str | None) -> bool:
        return True

    def bind(self, reader, name, raw, out, k, *, strict):
        return raw.view(DTYPES[self.name]).reshape(out, k), {}

    def reference_kernel(self, act: str) -> str:
        return "gemm_float_weights"

    def encodings(self) -> Iterator[Encoding]:
        enc = _bf16_encoder if self.name == "bf16" else _float_encoder(DTYPES[self.name].str)
        yield Encoding(self.name, ggml_type(self.gtype_name), enc, file_type=self.file_type)


class F32(FloatFormat):
    name, type_id, gtype_name, file_type = "f32", 0, "F32", 0


class F16(FloatFormat):
    name, type_id, gtype_name, file_type = "f16", 1, "F16", 1


class BF16(FloatFormat):
    name, type_id, gtype_name, file_type = "bf16", 30, "BF16", 32
