"""TL1 and TL2 (bitnet.cpp's lookup-table formats, ggml types 38 and 39): detected, never run.

Their tiles are permuted by the (M, K) tile configuration that bitnet.cpp generates per model
(`include/kernel_config.ini`), which the file does not carry, so a TL tensor is recognised by
its size and refused with that reason when a model binds it.
"""

from __future__ import annotations

from bitnet.errors import FormatError
from bitnet.gguf.constants import ggml_type
from bitnet.quant import i2s
from bitnet.quant.formats import Format


class _TL(Format):
    scale = "tensor"

    def applies(self, shape, type_name) -> bool:
        return True

    def bind(self, reader, name, raw, out, k, *, strict):
        raise FormatError(
            f"{reader.path}: {name} is {self.name.upper()}; its tiles are permuted by the (M, K) tile "
            "configuration that bitnet.cpp generates per model (include/kernel_config.ini), which the file "
            "does not carry. TL1/TL2 kernels are not implemented here; convert the model to I2_S."
        )


class TL1(_TL):
    name, type_id = "tl1", 38

    def nbytes(self, n: int) -> int:
        return i2s.nbytes(n)

    def check_bytes(self, raw, n, where) -> None:
        i2s.check_scale(raw, n, where, self.name)


class TL2(_TL):
    name, type_id = "tl2", 39

    def applies(self, shape, type_name) -> bool:
        return type_name == "TL2"  # id 39 is another type in upstream ggml

    def tensor_bytes(self, shape):
        return ggml_type("TL2").nbytes(shape)
