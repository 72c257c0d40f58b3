"""Weight formats by name: how a ternary matrix times a per-tensor scale becomes tensor bytes.

The synthesiser writes every weight through this table, so registering a format here makes it
available to `bitnet synth --format`. An encoder never changes the math: the decoded tensor
equals `ternary * scale` up to the format's own rounding of the scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bitnet.errors import ConfigError
from bitnet.gguf.constants import GGMLType, ggml_type

#: (ternary int8 [out, in], scale) -> the tensor's bytes as a contiguous array
Encode = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class WeightFormat:
    name: str
    gtype: GGMLType
    encode: Encode
    file_type: int  # general.file_type of a model whose projections use this format
    #: False when the format has no place for a per-tensor scale (QK256): the synthesiser then
    #: encodes the bare ternary pattern and writes the scale as a `<name>.scale` tensor
    holds_scale: bool = True
    #: bytes of one [out, in] tensor when the ggml type's size rule does not say (type id 36
    #: carries three layouts of different sizes)
    size: Callable[[int, int], int] | None = None
    #: metadata keys a file in this format must carry to be decoded without guessing
    metadata: tuple[tuple[str, object], ...] = ()

    def nbytes(self, out_f: int, in_f: int) -> int:
        if self.size is not None:
            return self.size(out_f, in_f)
        return self.gtype.nbytes((in_f, out_f))


def _float(dtype: str) -> Encode:
    def enc(ternary: np.ndarray, scale: float) -> np.ndarray:
        # a 3-entry lookup (index = code + 1) is ~8x faster than widening and multiplying
        lut = (np.array([-1.0, 0.0, 1.0], np.float32) * np.float32(scale)).astype(dtype)
        return lut[(ternary + 1).view(np.uint8)]

    return enc


FORMATS: dict[str, WeightFormat] = {}


def register(fmt: WeightFormat) -> None:
    FORMATS[fmt.name] = fmt


def _bf16(ternary: np.ndarray, scale: float) -> np.ndarray:
    # round to nearest even, as ggml's FP32_TO_BF16 (bitnet.quant.floats)
    from bitnet.quant.floats import to_bf16_bits

    return to_bf16_bits(_float("<f4")(ternary, scale))


def _register_ternary() -> None:
    from bitnet.quant import i2s, rust_port, tq

    i2s_t = ggml_type("I2_S")
    for name, layout in (("i2_s", "x86"), ("i2_s_arm", "arm"), ("i2_s_1x4", "x86_1x4")):
        register(WeightFormat(
            name, i2s_t, lambda t, s, _l=layout: i2s.pack(t, s, _l), file_type=40,
            metadata=(("bitnet_harness.i2s_layout", layout),),
        ))
    register(WeightFormat("tq2_0", ggml_type("TQ2_0"), tq.ternary_tq2_0, file_type=37))
    register(WeightFormat("tq1_0", ggml_type("TQ1_0"), tq.ternary_tq1_0, file_type=36))
    # the Rust port's layouts, under I2_S's id as the port writes them (see bitnet.quant.rust_port)
    register(WeightFormat("bitnet32", i2s_t, rust_port.pack_bitnet32, file_type=40,
                          size=lambda o, i: rust_port.bitnet32_nbytes(o * i)))
    register(WeightFormat("qk256", i2s_t, lambda t, s: rust_port.pack_qk256(t), file_type=40,
                          holds_scale=False, size=lambda o, i: rust_port.qk256_nbytes(o * i),
                          metadata=(("bitnet_harness.qk256_lut", list(rust_port.TERNARY_LUT)),)))


register(WeightFormat("f32", ggml_type("F32"), _float("<f4"), file_type=0))
register(WeightFormat("f16", ggml_type("F16"), _float("<f2"), file_type=1))
register(WeightFormat("bf16", ggml_type("BF16"), _bf16, file_type=32))
_register_ternary()


def weight_format(name: str) -> WeightFormat:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown weight format {name!r}; known: {', '.join(sorted(FORMATS))}") from None
