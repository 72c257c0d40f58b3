"""PackedWeight: a projection's bytes as they sit in the file, plus the facts a kernel needs.

`load_weight` is the loader's only way in: it runs flavor detection (`bitnet.quant.flavor`),
checks the row rules the kernels rely on, and returns zero-copy views. Nothing here converts a
ternary weight to float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import FormatError, StrictModeError, strict_enabled
from bitnet.gguf.reader import GGUFReader, TensorInfo
from bitnet.quant import floats, i2s, rust_port
from bitnet.quant.flavor import FlavorDecision, detect_flavor

KEY_I2S_LAYOUT = "bitnet_harness.i2s_layout"
KEY_QK256_LUT = "bitnet_harness.qk256_lut"
TERNARY_FLAVORS = ("i2_s", "tq2_0", "tq1_0", "bitnet32", "qk256", "tl1", "tl2")
#: the K (in_features) multiple each flavor's kernels need
ROW_MULTIPLE = {"i2_s": 128, "tq2_0": 256, "tq1_0": 256, "bitnet32": 32, "qk256": 256}


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
    decision: FlavorDecision | None = None
    int8_cache: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_ternary(self) -> bool:
        return self.flavor in TERNARY_FLAVORS

    @property
    def nbytes(self) -> int:
        """Bytes a kernel reads for one full matmul (the packed tensor)."""
        return int(self.raw.nbytes)

    def float_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows of a FLOAT weight as float32 (never called for ternary flavors)."""
        if self.flavor not in floats.DTYPES:
            raise FormatError(f"{self.name}: {self.flavor} is not a float weight")
        return floats.rows(self.raw, self.flavor, r0, r1)

    def cache_int8(self) -> None:
        """Keep the decoded integer values as int8 [out, in] (4 bytes per packed byte): no
        decoding per call, at 4x the memory of the packed tensor."""
        from bitnet.quant.kernels import _values

        if self.is_ternary and self.int8_cache is None:
            self.int8_cache = np.ascontiguousarray(_values(self, 0, self.out_features))


def load_weight(reader: GGUFReader, name: str, *, strict: bool | None = None) -> PackedWeight:
    """The tensor `name` as a PackedWeight [out, in] after flavor detection."""
    strict = strict_enabled(strict)
    info: TensorInfo = reader.tensor(name)
    if len(info.shape) != 2:
        raise FormatError(f"{reader.path}: {name} has shape {list(info.shape)}; a projection is 2-D (in, out)")
    k, out = info.shape
    span = np.frombuffer(reader._buf, np.uint8, info.span, info.data_offset) if info.span else reader.raw(info)
    decision = detect_flavor(info, alignment=reader.alignment, raw=span, strict=strict)
    f = decision.flavor
    need = ROW_MULTIPLE.get(f)
    if need and k % need:
        raise FormatError(f"{reader.path}: {name} has rows of {k}; {f} kernels need a multiple of {need}")
    if f in ("tl1", "tl2"):
        raise FormatError(
            f"{reader.path}: {name} is {f.upper()}; its tiles are permuted by the (M, K) tile configuration "
            "that bitnet.cpp generates per model (include/kernel_config.ini), which the file does not carry. "
            "TL1/TL2 kernels are not implemented here; convert the model to I2_S."
        )
    raw = span[: decision.expected_bytes]
    if f == "f32":
        return PackedWeight(name, f, out, k, raw.view("<f4").reshape(out, k), decision=decision)
    if f in ("f16", "bf16"):
        return PackedWeight(name, f, out, k, raw.view("<f2" if f == "f16" else "<u2").reshape(out, k), decision=decision)
    if f == "i2_s":
        layout = str(reader.get(KEY_I2S_LAYOUT, "x86"))
        if layout not in i2s.LAYOUTS:
            raise FormatError(f"{reader.path}: {KEY_I2S_LAYOUT} = {layout!r}; known: {list(i2s.LAYOUTS)}")
        if layout == "x86_1x4" and out % 4:
            raise FormatError(f"{reader.path}: {name}: x86_1x4 needs rows % 4 == 0, has {out}")
        return PackedWeight(name, f, out, k, raw[: out * k // 4], scale=i2s.read_scale(raw, out * k),
                            layout=layout, decision=decision)
    if f == "qk256":
        lut = reader.get(KEY_QK256_LUT)
        if lut is None:
            msg = (f"{reader.path}: {name} is QK256 (Rust-port layout) and the file does not say which "
                   f"code table it uses ({KEY_QK256_LUT}); the port's own documents disagree "
                   f"({rust_port.PORT_LUTS}), so it cannot be decoded without guessing")
            raise StrictModeError(msg) if strict else FormatError(msg)
        lut_t = tuple(int(v) for v in np.asarray(lut).tolist())
        if len(lut_t) != 4:
            raise FormatError(f"{reader.path}: {KEY_QK256_LUT} must have 4 entries, got {lut_t}")
        return PackedWeight(name, f, out, k, raw, lut=lut_t, decision=decision)  # type: ignore[arg-type]
    if f in ("tq2_0", "tq1_0", "bitnet32"):
        return PackedWeight(name, f, out, k, raw, decision=decision)
    raise FormatError(f"{reader.path}: {name}: flavor {f} has no loader")  # pragma: no cover


