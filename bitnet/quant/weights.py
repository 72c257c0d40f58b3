"""PackedWeight: a projection's bytes as they sit in the file, plus the facts a kernel needs.

`load_weight` is the loader's only way in: it runs flavor detection (`bitnet.quant.flavor`),
checks the K multiple the format's kernels rely on, lets the format bind the bytes
(`Format.bind`: layout, scale, code table) and returns zero-copy views. Nothing here converts a
ternary weight to float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import FormatError, strict_enabled
from bitnet.gguf.reader import GGUFReader, TensorInfo
from bitnet.quant import floats, rust_port
from bitnet.quant.flavor import FlavorDecision, detect_flavor
from bitnet.quant.formats import Format, get_format
from bitnet.quant.tl_config import TileConfig


@dataclass(eq=False)
class PackedWeight:
    name: str
    flavor: str
    out_features: int
    in_features: int
    raw: np.ndarray  # uint8 view of the packed bytes, or the float view for f32/f16/bf16 bits
    scale: float | None = None  # per-tensor scale inside the tensor (I2_S)
    layout: str = "x86"  # I2_S code layout
    lut: tuple[int, int, int, int] = rust_port.TERNARY_LUT  # QK256 code table
    tile: TileConfig | None = None  # TL1/TL2 kernel config entry the tiles were permuted by
    decision: FlavorDecision | None = None
    int8_cache: np.ndarray | None = field(default=None, repr=False)
    #: float32 [out, in] copy of the weight's values (ternary integers, or a widened F16/BF16
    #: matrix): what an exact kernel multiplies, kept instead of rebuilt per call
    f32_cache: np.ndarray | None = field(default=None, repr=False)

    @property
    def format(self) -> Format:
        """The registered format object of this weight's flavor."""
        return get_format(self.flavor)

    @property
    def is_ternary(self) -> bool:
        return self.format.ternary

    @property
    def nbytes(self) -> int:
        """Bytes a kernel reads for one full matmul (the packed tensor)."""
        return int(self.raw.nbytes)

    def float_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows of a FLOAT weight as float32 (never called for ternary flavors)."""
        if self.flavor not in floats.DTYPES:
            raise FormatError(f"{self.name}: {self.flavor} is not a float weight")
        if self.f32_cache is not None:
            return self.f32_cache[r0:r1]
        return floats.rows(self.raw, self.flavor, r0, r1)

    def values(self, r0: int, r1: int) -> np.ndarray:
        """Integer weight values int8 [r1 - r0, K] of output rows r0..r1: from the int8 cache
        when there is one, else decoded from the packed bytes by the format."""
        if self.int8_cache is not None:
            return self.int8_cache[r0:r1]
        if self.f32_cache is not None:  # exact small integers: the cast back is lossless
            return self.f32_cache[r0:r1].astype(np.int8)
        return self.format.decode_rows(self, r0, r1)

    def cache_int8(self) -> None:
        """Keep the decoded integer values as int8 [out, in] (4 bytes per packed byte): no
        decoding per call, at 4x the memory of the packed tensor."""
        if self.is_ternary and self.int8_cache is None:
            self.int8_cache = np.ascontiguousarray(self.format.decode_rows(self, 0, self.out_features))

    def cache_f32(self, rows_per_step: int = 4096) -> None:
        """Keep the weight's values as float32 [out, in] (16x the packed bytes of a 2-bit
        ternary tensor, 2x an F16 one): an exact kernel then multiplies them without decoding
        or widening anything per call. Built a block of rows at a time (no full-size
        temporaries); F32 weights are already float32 and get none."""
        if self.f32_cache is not None or self.flavor == "f32":
            return
        c = np.empty((self.out_features, self.in_features), np.float32)
        group = self.format.row_group(self) if self.is_ternary else 1
        step = max(group, rows_per_step // group * group)
        for r0 in range(0, self.out_features, step):
            r1 = min(r0 + step, self.out_features)
            c[r0:r1] = self.values(r0, r1) if self.is_ternary else floats.rows(self.raw, self.flavor, r0, r1)
        self.f32_cache = c

    @property
    def cache_nbytes(self) -> int:
        """Bytes of the decoded copies this weight holds (0 when it decodes per call)."""
        return sum(int(c.nbytes) for c in (self.int8_cache, self.f32_cache) if c is not None)


def load_weight(reader: GGUFReader, name: str, *, strict: bool | None = None) -> PackedWeight:
    """The tensor `name` as a PackedWeight [out, in] after flavor detection."""
    strict = strict_enabled(strict)
    info: TensorInfo = reader.tensor(name)
    if len(info.shape) != 2:
        raise FormatError(f"{reader.path}: {name} has shape {list(info.shape)}; a projection is 2-D (in, out)")
    k, out = info.shape
    span = np.frombuffer(reader._buf, np.uint8, info.span, info.data_offset) if info.span else reader.raw(info)
    decision = detect_flavor(info, alignment=reader.alignment, raw=span, strict=strict)
    fmt = get_format(decision.flavor)
    need = fmt.row_multiple
    if need and k % need:
        raise FormatError(f"{reader.path}: {name} has rows of {k}; {fmt.name} kernels need a multiple of {need}")
    raw, extra = fmt.bind(reader, name, span[: decision.expected_bytes], out, k, strict=strict)
    return PackedWeight(name, fmt.name, out, k, raw, decision=decision, **extra)
