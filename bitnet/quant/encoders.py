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

    def nbytes(self, out_f: int, in_f: int) -> int:
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


register(WeightFormat("f32", ggml_type("F32"), _float("<f4"), file_type=0))
register(WeightFormat("f16", ggml_type("F16"), _float("<f2"), file_type=1))


def weight_format(name: str) -> WeightFormat:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown weight format {name!r}; known: {', '.join(sorted(FORMATS))}") from None
