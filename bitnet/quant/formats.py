"""The format registry: one class per weight format, registered by defining it.

Everything the project knows about a weight format lives on its class (gguf-py's `quants.py`
has the same shape): the GGUF type id, the block and its bytes, the K multiple the kernels need,
how a tensor's bytes are bound to a `PackedWeight` (`bind`), how rows decode to integer values
(`decode_rows`) and per-block scales (`block_scales`), how a ternary matrix is encoded
(`encodings`), and which reference kernel runs it for each activation scheme (`kernels`). The
loader, the flavor detector, the dispatcher, the synthesiser and the native/CUDA backends all
look the format up here instead of branching on its name.

Subclassing `Format` with a `name` registers one instance in `FORMATS` (`__init_subclass__`);
an intermediate class without its own `name` is not registered. The built-in formats live next
to their codecs (`floats`, `i2s`, `tq`, `rust_port`, `tl`) and are imported on the first lookup.
Adding a format = one class in its own module (plus, optionally, a native kernel).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bitnet.errors import ConfigError, FormatError
from bitnet.gguf.constants import GGMLType

if TYPE_CHECKING:
    from bitnet.gguf.reader import GGUFReader
    from bitnet.quant.weights import PackedWeight

#: modules holding the built-in formats, imported on first lookup, in registry order
BUILTIN_MODULES = ("bitnet.quant.floats", "bitnet.quant.i2s", "bitnet.quant.tq",
                   "bitnet.quant.rust_port", "bitnet.quant.tl")

#: (ternary int8 [out, in], scale) -> the tensor's bytes as a contiguous array
Encode = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class Encoding:
    """One way the synthesiser can write a weight (a format, or one layout of a format)."""

    name: str
    gtype: GGMLType | int  # the type id tensors are written with (an int for an id ggml lacks)
    encode: Encode
    file_type: int  # general.file_type of a model whose projections use this encoding
    #: False when the format has no place for a per-tensor scale (QK256): the synthesiser then
    #: encodes the bare ternary pattern and writes the scale as a `<name>.scale` tensor
    holds_scale: bool = True
    #: bytes of one [out, in] tensor when the ggml type's size rule does not say (type id 36
    #: carries three layouts of different sizes)
    size: Callable[[int, int], int] | None = None
    #: metadata keys a file in this format must carry to be decoded without guessing
    metadata: tuple[tuple[str, object], ...] = ()
    #: metadata that depends on the projection shapes of the model being written ([(out, in)]
    #: -> (key, value) pairs): TL1/TL2 record the kernel config their tiles were permuted by
    shape_metadata: Callable[[list[tuple[int, int]]], tuple[tuple[str, object], ...]] | None = None

    def nbytes(self, out_f: int, in_f: int) -> int:
        if self.size is not None:
            return self.size(out_f, in_f)
        if not isinstance(self.gtype, GGMLType):
            raise ConfigError(f"encoding {self.name!r}: type id {self.gtype} has no ggml size rule; give `size`")
        return self.gtype.nbytes((in_f, out_f))


#: name -> the registered format instance, in registration order
FORMATS: dict[str, Format] = {}


class Format:
    """A weight format. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    type_id: ClassVar[int]  # the GGUF/ggml type id tensors of this format carry
    ternary: ClassVar[bool] = True
    block: ClassVar[int] = 1  # elements per block
    block_bytes: ClassVar[int] = 0  # bytes per block (0: size rule in `nbytes`)
    #: the K (in_features) multiple this format's kernels need (0: none)
    row_multiple: ClassVar[int] = 0
    #: "tensor" (one scale for the whole tensor, PackedWeight.scale), "block" (an f16 d closing
    #: every block, see block_scales) or "none" (float formats)
    scale: ClassVar[str] = "block"
    #: activation profile -> the reference (NumPy) kernel: a function name in
    #: bitnet.kernels.numpy_kernels or a callable (x, w) -> KernelRun. Profile "none" (float
    #: activations) is served for every ternary format by the float-activation kernel.
    kernels: ClassVar[dict[str, str | Callable[..., Any]]] = {}
    #: the weight part of a kernel id (defaults to the name)
    kernel_tag: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in FORMATS and type(FORMATS[cls.name]).__qualname__ != cls.__qualname__:
                raise ConfigError(f"weight format {cls.name!r} is registered twice "
                                  f"({type(FORMATS[cls.name]).__module__} and {cls.__module__})")
            FORMATS[cls.name] = cls()

    # -- sizes and detection ---------------------------------------------------------------
    def nbytes(self, n: int) -> int:
        """Bytes of a tensor of n elements."""
        return n // self.block * self.block_bytes

    def tensor_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of a tensor of this GGUF shape (ne0 first)."""
        return self.nbytes(_prod(shape))

    def applies(self, shape: tuple[int, ...], type_name: str | None) -> bool:
        """Whether a tensor of this type id and shape can hold this format (detection)."""
        return shape[0] % self.block == 0

    def decodes(self, raw: np.ndarray, n: int) -> bool:
        """Whether the bytes are a valid tensor of this format; asked only when byte sizes of
        several candidates coincide."""
        return True

    def check_bytes(self, raw: np.ndarray, n: int, where: str) -> None:
        """Refuse bytes that are this format by size but corrupt (raise FormatError)."""

    # -- loading -------------------------------------------------------------------------------
    def bind(self, reader: GGUFReader, name: str, raw: np.ndarray, out: int, k: int,
             *, strict: bool) -> tuple[np.ndarray, dict[str, Any]]:
        """(the tensor's view a kernel reads, extra PackedWeight fields) for a detected tensor."""
        return raw, {}

    # -- decoding (ternary formats) ----------------------------------------------------------
    def decode_rows(self, w: PackedWeight, r0: int, r1: int) -> np.ndarray:
        """Integer weight values int8 [r1 - r0, K] of output rows r0..r1 (no float matrix)."""
        raise FormatError(f"{w.name}: no integer decoder for flavor {self.name}")

    def lut_rows(self, w: PackedWeight, r0: int, r1: int
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """Rows r0..r1 decoded straight from the packed bytes to float32 for exact integer
        kernels (bitnet.quant.lut), as (v [r1 - r0, K], perm, div): column j holds element
        `perm[j]` (None: the natural order) and its integer value is `v[:, j]` when div is
        None, else `v[:, j] / div[j] - 1` (div: powers of two). None when the format has no
        such decoder. Only exact integer dot products may use it (any summation order gives
        the same integer): the kernel permutes and divides the activations the same way and
        subtracts their sum; `perm` stays inside the format's scale blocks, so per-block sums
        are unchanged too."""
        return None

    def row_bytes(self, k: int) -> int:
        """Bytes one output row of K elements occupies (blocked formats)."""
        return k // self.block * self.block_bytes

    def block_scales(self, w: PackedWeight) -> np.ndarray:
        """Per-block weight scales float32 [out, K/block] for the block-scaled formats, read
        from the scale bytes of each block only (a strided view: no code is decoded). The
        default reads the f16 `d` that closes every block."""
        from bitnet.quant.blocks import raw_blocks

        if self.scale != "block":
            raise FormatError(f"{w.name}: {w.flavor} has no block scales")
        k, bb = w.in_features, self.block_bytes
        blocks = raw_blocks(w.raw, w.out_features * k, self.block, bb, self.name)
        d = np.ascontiguousarray(blocks[:, bb - 2:]).view("<f2")
        return d.astype(np.float32).reshape(w.out_features, k // self.block)

    def row_group(self, w: PackedWeight) -> int:
        """Output rows that must be decoded together (chunks are multiples of this)."""
        return 1

    def tag(self, w: PackedWeight) -> str:
        """The weight part of a kernel id for this tensor."""
        return self.kernel_tag or self.name

    # -- encoding ------------------------------------------------------------------------------
    def encodings(self) -> Iterator[Encoding]:
        """The encodings the synthesiser offers for this format (none by default)."""
        return iter(())

    # -- kernels -------------------------------------------------------------------------------
    def reference_kernel(self, act: str) -> str | Callable[..., Any] | None:
        if act == "none" and self.ternary:
            return "gemm_float_acts_ternary"
        return self.kernels.get(act)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for m in BUILTIN_MODULES:
            importlib.import_module(m)


def get_format(name: str) -> Format:
    """The registered format called `name` (ConfigError listing the known ones otherwise)."""
    _load_builtin()
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown weight format {name!r}; known: {', '.join(FORMATS)}") from None


def all_formats() -> list[Format]:
    """Every registered format: the built-in ones in BUILTIN_MODULES order (whatever order the
    modules happened to be imported in), then the others in registration order."""
    _load_builtin()
    regs = list(FORMATS.values())

    def key(f: Format) -> tuple[int, int]:
        m = type(f).__module__
        return (BUILTIN_MODULES.index(m) if m in BUILTIN_MODULES else len(BUILTIN_MODULES), regs.index(f))

    return sorted(regs, key=key)


def formats_for_type(type_id: int) -> list[Format]:
    """Every registered format stored under this GGUF type id, in registration order."""
    return [f for f in all_formats() if f.type_id == type_id]
